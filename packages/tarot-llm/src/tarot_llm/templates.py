"""Chat templates and tokenisation with the prompt masked out of the loss (``llm.md`` §1.3).

Two templates:

``tulu``
    LESS's default: ``<|system|>\\n…\\n``, ``<|user|>\\n…\\n``, ``<|assistant|>\\n…<eos>\\n``.
``chat``
    The tokenizer's own chat template (``apply_chat_template``; SmolLM2 uses ChatML).

Labels equal the input ids except at prompt positions, which are ``-100``. Boundaries come from re-tokenising
prefixes (as LESS does); :func:`encode_messages` reports whether every prefix tokenised to a prefix of the full
sequence, so instability is visible instead of silently shifting the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import InstructionExample

IGNORE = -100
TEMPLATES = ("tulu", "chat")


@dataclass
class Encoded:
    """Token ids, labels (``-100`` = masked) and whether the prefix boundaries were stable."""

    input_ids: list[int]
    labels: list[int]
    stable: bool

    @property
    def n_trained(self) -> int:
        """Number of label positions that carry loss."""
        return sum(1 for x in self.labels if x != IGNORE)


def _check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r} (expected one of {', '.join(TEMPLATES)})")


def render_tulu(messages: list[dict[str, str]], eos: str) -> str:
    """Concatenate messages in the tulu format used by LESS / open-instruct."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append("<|system|>\n" + m["content"].strip() + "\n")
        elif m["role"] == "user":
            parts.append("<|user|>\n" + m["content"].strip() + "\n")
        elif m["role"] == "assistant":
            parts.append("<|assistant|>\n" + m["content"].strip() + eos + "\n")
        else:
            raise ValueError(f"unknown role {m['role']!r}")
    return "".join(parts)


def _render(tokenizer, messages, template: str, generation_prompt: bool) -> str:
    if template == "tulu":
        return render_tulu(messages, tokenizer.eos_token or "") + ("<|assistant|>\n" if generation_prompt else "")
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _tok(tokenizer, text: str, template: str, max_length: int) -> list[int]:
    # tulu strings get the tokenizer's special tokens (BOS); chat-template strings already carry theirs
    return tokenizer(text, add_special_tokens=(template == "tulu"), truncation=True,
                     max_length=max_length)["input_ids"]


def encode_messages(tokenizer, messages: list[dict[str, str]], template: str = "tulu",
                    max_length: int = 2048) -> Encoded:
    """Tokenise a conversation; only assistant content (with its end-of-turn tokens) is trained on.

    For every non-assistant message i, positions ``[len(tok(render(m[:i]))), len(tok(render(m[:i+1]) + gen)))`` are
    masked, where ``gen`` is the assistant header when message i+1 is an assistant turn.
    """
    _check_template(template)
    ids = _tok(tokenizer, _render(tokenizer, messages, template, False), template, max_length)
    labels = list(ids)
    stable = True
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            continue
        start = 0 if i == 0 else len(_tok(tokenizer, _render(tokenizer, messages[:i], template, False),
                                          template, max_length))
        nxt_assistant = i + 1 < len(messages) and messages[i + 1]["role"] == "assistant"
        end_ids = _tok(tokenizer, _render(tokenizer, messages[: i + 1], template, nxt_assistant), template, max_length)
        if end_ids != ids[: len(end_ids)]:
            stable = False
        for k in range(start, min(len(end_ids), len(ids))):
            labels[k] = IGNORE
    return Encoded(ids, labels, stable)


def encode_completion(tokenizer, prompt: str, completion: str, max_length: int = 2048, add_eos: bool = True,
                      join_space: bool = True) -> Encoded:
    """Tokenise ``prompt + completion`` with the prompt positions masked.

    With ``join_space`` a single space is inserted when neither side has whitespace at the junction (LESS's rule for
    the completion schema). Target builders pass fully rendered prompts with ``add_eos=False, join_space=False``.
    """
    sep = " " if join_space and not (prompt[-1:].isspace() or completion[:1].isspace()) else ""
    text = prompt + sep + completion + ((tokenizer.eos_token or "") if add_eos else "")
    ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    p_ids = tokenizer(prompt, truncation=True, max_length=max_length)["input_ids"]
    labels = [IGNORE] * min(len(p_ids), len(ids)) + ids[len(p_ids):]
    return Encoded(ids, labels, p_ids == ids[: len(p_ids)])


def encode_example(tokenizer, ex: InstructionExample, template: str = "tulu", max_length: int = 2048) -> Encoded:
    """Encode either schema (chat messages with ``template``; completion records with LESS's rule)."""
    if ex.messages is not None:
        return encode_messages(tokenizer, ex.messages, template, max_length)
    return encode_completion(tokenizer, ex.prompt or "", ex.completion or "", max_length)


def wrap_query(tokenizer, query: str, assistant_prefix: str, template: str = "tulu") -> str:
    """Render a single user query plus the start of the assistant reply (used for MMLU/BBH target prompts)."""
    _check_template(template)
    if template == "tulu":
        return "<|user|>\n" + query + "\n<|assistant|>\n" + assistant_prefix
    return tokenizer.apply_chat_template([{"role": "user", "content": query}], tokenize=False,
                                         add_generation_prompt=True) + assistant_prefix
