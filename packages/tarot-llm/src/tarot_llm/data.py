"""Instruction-data schemas (LESS's two jsonl line formats) and converters from the raw upstream formats.

Accepted line schemas (``llm.md`` §1.1):

1. chat: ``{"dataset": str, "id": str, "messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``
2. completion: ``{"prompt": str, "completion": str}`` (``dataset`` and ``id`` optional)

Converters (``llm.md`` §1.2) turn Dolly-15k, OpenAssistant-1 message rows and FLAN v2 / CoT ``inputs``/``targets``
records into the chat schema. Every error is one line naming the file and line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import DataError, read_jsonl, write_jsonl

ROLES = ("system", "user", "assistant")


@dataclass
class InstructionExample:
    """One training example in either schema.

    Attributes
    ----------
    id
        Sample id (from the file, or ``<file stem>_<line>`` when absent).
    dataset
        Per-sample source label (``dataset`` field, or the file stem when absent).
    messages
        Chat turns (chat schema), else ``None``.
    prompt, completion
        Completion schema fields, else ``None``.
    """

    id: str
    dataset: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    completion: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The jsonl record (the schema it was read in)."""
        rec: dict[str, Any] = {"dataset": self.dataset, "id": self.id}
        if self.messages is not None:
            rec["messages"] = self.messages
        else:
            rec["prompt"] = self.prompt
            rec["completion"] = self.completion
        rec.update(self.meta)
        return rec


def validate_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """Check a ``messages`` list and return it with plain-``str`` fields.

    Rules: a non-empty list of objects with a known ``role`` and non-empty string ``content``; an optional system
    message first, then user and assistant alternating starting with user; at least one assistant turn.

    Parameters
    ----------
    messages
        The value of the ``messages`` field.
    where
        ``file:line`` prefix for the error message.
    """
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    out = []
    for k, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise DataError(f"{where}: messages[{k}] must be an object with 'role' and 'content'")
        if "role" not in msg:
            raise DataError(f"{where}: messages[{k}] is missing 'role' (expected one of {', '.join(ROLES)})")
        role = msg["role"]
        if role not in ROLES:
            raise DataError(f"{where}: messages[{k}] has unknown role {role!r} (expected one of {', '.join(ROLES)})")
        content = msg.get("content")
        if not isinstance(content, str) or not content.strip():
            raise DataError(f"{where}: messages[{k}] ({role}) has empty or missing 'content'")
        out.append({"role": role, "content": content})
    turns = out[1:] if out[0]["role"] == "system" else out
    for k, msg in enumerate(turns):
        expected = "user" if k % 2 == 0 else "assistant"
        if msg["role"] != expected:
            pos = k + (len(out) - len(turns))
            raise DataError(f"{where}: messages[{pos}] has role {msg['role']!r} but {expected!r} was expected "
                            "(turns must alternate user/assistant after an optional leading system message)")
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{where}: no assistant message (nothing to train on)")
    return out


def parse_record(rec: dict, where: str, default_dataset: str, default_id: str) -> InstructionExample:
    """Validate one jsonl record in either schema and build an :class:`InstructionExample`."""
    dataset = str(rec.get("dataset", default_dataset))
    sid = str(rec.get("id", default_id))
    if "messages" in rec:
        return InstructionExample(id=sid, dataset=dataset, messages=validate_messages(rec["messages"], where))
    if "prompt" in rec or "completion" in rec:
        prompt, completion = rec.get("prompt"), rec.get("completion")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where}: empty or missing 'prompt' (expected a non-empty string)")
        if not isinstance(completion, str) or not completion.strip():
            raise DataError(f"{where}: empty or missing 'completion' (expected a non-empty string)")
        return InstructionExample(id=sid, dataset=dataset, prompt=prompt, completion=completion)
    raise DataError(f"{where}: expected either a 'messages' list or 'prompt' and 'completion' fields")


def load_instruction_jsonl(path: str | os.PathLike) -> list[InstructionExample]:
    """Read one LESS-style jsonl file (both schemas may be mixed) and validate every line."""
    path = Path(path)
    out: list[InstructionExample] = []
    for lineno, rec in read_jsonl(path):
        out.append(parse_record(rec, f"{path}:{lineno}", path.stem.removesuffix("_data"), f"{path.stem}_{lineno}"))
    if not out:
        raise DataError(f"{path}: no examples (empty file)")
    return out


def load_pool(paths: list[str | os.PathLike]) -> list[InstructionExample]:
    """Read several jsonl files into one pool, in the given order; ids must be unique across files."""
    pool: list[InstructionExample] = []
    seen: dict[str, str] = {}
    for p in paths:
        for ex in load_instruction_jsonl(p):
            if ex.id in seen:
                raise DataError(f"{p}: duplicate sample id {ex.id!r} (first seen in {seen[ex.id]})")
            seen[ex.id] = str(p)
            pool.append(ex)
    return pool


# ----------------------------------------------------------------------------------------------------- converters
def _need(rec: dict, keys: tuple[str, ...], where: str, what: str) -> None:
    missing = [k for k in keys if k not in rec]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(map(repr, missing))}; a {what} record needs "
                        f"{', '.join(keys)}")


def _nonempty(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {name!r} is empty (expected non-empty text)")
    return value


def convert_dolly(path: str | os.PathLike, dataset: str = "dolly") -> list[InstructionExample]:
    """Convert databricks-dolly-15k jsonl (``instruction, context, response, category``) to the chat schema.

    user = instruction, plus ``"\\n\\n" + context`` when the context is non-empty; assistant = response.
    """
    path = Path(path)
    out: list[InstructionExample] = []
    for lineno, rec in read_jsonl(path):
        where = f"{path}:{lineno}"
        _need(rec, ("instruction", "response"), where, "Dolly")
        user = _nonempty(rec["instruction"], where, "instruction")
        ctx = rec.get("context") or ""
        if not isinstance(ctx, str):
            raise DataError(f"{where}: field 'context' must be a string")
        if ctx.strip():
            user = user + "\n\n" + ctx
        resp = _nonempty(rec["response"], where, "response")
        meta = {"category": rec["category"]} if "category" in rec else {}
        out.append(InstructionExample(id=f"{dataset}_{len(out)}", dataset=dataset, meta=meta,
                                      messages=[{"role": "user", "content": user},
                                                {"role": "assistant", "content": resp}]))
    return out


def convert_inputs_targets(path: str | os.PathLike, dataset: str) -> list[InstructionExample]:
    """Convert FLAN v2 / CoT records (``inputs``, ``targets``) to chat (user = inputs, assistant = targets)."""
    path = Path(path)
    out: list[InstructionExample] = []
    for lineno, rec in read_jsonl(path):
        where = f"{path}:{lineno}"
        _need(rec, ("inputs", "targets"), where, f"{dataset} (inputs/targets)")
        out.append(InstructionExample(
            id=f"{dataset}_{len(out)}", dataset=dataset,
            messages=[{"role": "user", "content": _nonempty(rec["inputs"], where, "inputs")},
                      {"role": "assistant", "content": _nonempty(rec["targets"], where, "targets")}]))
    return out


_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def _flatten_oasst_tree(root: dict, where: str) -> list[dict]:
    """The messages of one OASST1 tree (``prompt`` with nested ``replies``) as rows with ``parent_id`` set from the
    nesting (a ``parent_id`` the file gives must agree with it)."""
    out, stack = [], [(root, None)]
    while stack:
        msg, parent = stack.pop()
        if not isinstance(msg, dict):
            raise DataError(f"{where}: a message of the tree is a {type(msg).__name__}, expected an object")
        given = msg.get("parent_id", parent)
        if given != parent:
            raise DataError(f"{where}: message {msg.get('message_id')!r} has parent_id {given!r} but is nested under "
                            f"{parent!r}")
        replies = msg.get("replies") or []
        if not isinstance(replies, list):
            raise DataError(f"{where}: 'replies' of message {msg.get('message_id')!r} is not a list")
        out.append({**{k: v for k, v in msg.items() if k != "replies"}, "parent_id": parent})
        stack.extend((r, msg.get("message_id")) for r in reversed(replies))
    return out


def convert_oasst1(path: str | os.PathLike, dataset: str = "oasst1",
                   lang: str | None = None) -> list[InstructionExample]:
    """Convert OpenAssistant-1 message rows into one conversation per message tree.

    Trees are built from ``parent_id``; deleted messages and messages whose ``review_result`` is false are dropped
    together with their subtrees. From the root (a prompter message) the path follows, at every branch, the child with
    the best (lowest) ``rank`` (unranked children last, ties by file order), down to a leaf; a trailing prompter
    message is dropped. Trees whose path has no assistant reply are skipped.

    Both released layouts are read: message rows (``*.messages.jsonl``: one message per line with ``message_id,
    parent_id, message_tree_id, role, text, rank, deleted, review_result``...) and trees (``*.trees.jsonl``: one tree
    per line, ``{"message_tree_id", "tree_state", "prompt": {message..., "replies": [message..., ...]}}``, whose
    messages are flattened with the parent taken from the nesting).

    Parameters
    ----------
    path
        jsonl of message rows or of message trees.
    lang
        Keep only trees whose root has this ``lang`` (``None`` keeps all).
    """
    path = Path(path)
    rows: dict[str, dict] = {}
    line_of: dict[str, int] = {}
    order: list[str] = []
    def messages():
        for lineno, line in read_jsonl(path):
            if isinstance(line, dict) and isinstance(line.get("prompt"), dict):  # a tree (trees.jsonl)
                yield from ((lineno, m) for m in _flatten_oasst_tree(line["prompt"], f"{path}:{lineno}"))
            else:
                yield lineno, line

    for lineno, rec in messages():
        where = f"{path}:{lineno}"
        _need(rec, ("message_id", "parent_id", "role", "text"), where, "OASST1 message")
        if rec["role"] not in _OASST_ROLES:
            raise DataError(f"{where}: unknown role {rec['role']!r} (expected 'prompter' or 'assistant')")
        _nonempty(rec["text"], where, "text")
        mid = str(rec["message_id"])
        if mid in rows:
            raise DataError(f"{where}: duplicate message_id {mid!r}")
        rows[mid], line_of[mid] = rec, lineno
        order.append(mid)
    children: dict[str, list[str]] = {}
    roots = []
    for mid in order:
        rec = rows[mid]
        if rec.get("deleted") or rec.get("review_result") is False:
            continue
        parent = rec["parent_id"]
        if parent is None:
            roots.append(mid)
        else:
            if str(parent) not in rows:
                raise DataError(f"{path}:{line_of[mid]}: parent_id {parent!r} does not exist in the file")
            children.setdefault(str(parent), []).append(mid)

    position = {m: i for i, m in enumerate(order)}

    def rank_key(m: str) -> tuple[int, float, int]:
        r = rows[m].get("rank")
        return (r is None, float(r) if r is not None else 0.0, position[m])

    out: list[InstructionExample] = []
    for root in roots:
        if lang is not None and rows[root].get("lang") != lang:
            continue
        path_ids = [root]
        while children.get(path_ids[-1]):
            path_ids.append(min(children[path_ids[-1]], key=rank_key))
        if rows[path_ids[-1]]["role"] == "prompter":
            path_ids.pop()
        if len(path_ids) < 2:
            continue
        msgs = []
        for k, mid in enumerate(path_ids):
            role = _OASST_ROLES[rows[mid]["role"]]
            expected = "user" if k % 2 == 0 else "assistant"
            if role != expected:
                raise DataError(f"{path}:{line_of[mid]}: message {mid!r} has role {rows[mid]['role']!r} where "
                                f"{'prompter' if expected == 'user' else 'assistant'!r} was expected "
                                "(turns must alternate)")
            msgs.append({"role": role, "content": rows[mid]["text"]})
        tree = str(rows[root].get("message_tree_id", root))
        out.append(InstructionExample(id=f"{dataset}_{len(out)}", dataset=dataset, messages=msgs,
                                      meta={"message_tree_id": tree}))
    return out


CONVERTERS = {
    "dolly": lambda p: convert_dolly(p),
    "oasst1": lambda p: convert_oasst1(p),
    "flan_v2": lambda p: convert_inputs_targets(p, "flan_v2"),
    "cot": lambda p: convert_inputs_targets(p, "cot"),
}


def convert_file(kind: str, src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Convert one raw file with the converter ``kind`` and write LESS's chat jsonl to ``dst`` atomically.

    Returns the number of examples written.
    """
    if kind not in CONVERTERS:
        raise DataError(f"unknown converter {kind!r} (expected one of {', '.join(CONVERTERS)})")
    examples = CONVERTERS[kind](src)
    if not examples:
        raise DataError(f"{src}: no examples after conversion")
    write_jsonl(dst, (ex.to_record() for ex in examples))
    return len(examples)
