"""Target (validation) sets with subtask labels: MMLU and BBH, from LESS's files or lm-eval's embedded exemplars.

Every target is a :class:`TargetExample`: a user ``query``, the start of the assistant reply (``assistant_prefix``)
and the ``completion`` that carries the loss, plus ``subtask`` (MMLU subject / BBH task) so that the ``less`` selector
(max over subtasks) and TAROT both work on them (``llm.md`` §6).
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from .io import DataError, read_jsonl

LETTERS = ("A", "B", "C", "D")

BBH_TASKS = (
    "date_understanding", "logical_deduction_five_objects", "movie_recommendation", "multistep_arithmetic_two",
    "object_counting", "word_sorting", "hyperbaton", "sports_understanding", "boolean_expressions",
    "tracking_shuffled_objects_seven_objects", "ruin_names", "tracking_shuffled_objects_three_objects",
    "causal_judgement", "reasoning_about_colored_objects", "logical_deduction_seven_objects", "temporal_sequences",
    "salient_translation_error_detection", "tracking_shuffled_objects_five_objects", "geometric_shapes",
    "disambiguation_qa", "dyck_languages", "navigate", "formal_fallacies", "web_of_lies", "snarks",
    "penguins_in_a_table", "logical_deduction_three_objects",
)


@dataclass
class TargetExample:
    """One target example; the loss is on ``completion`` only."""

    id: str
    dataset: str
    subtask: str
    query: str
    assistant_prefix: str
    completion: str

    def to_record(self) -> dict:
        """The jsonl record written by ``tarot-llm`` (``targets.jsonl``)."""
        return asdict(self)


def load_targets_jsonl(path: str | os.PathLike) -> list[TargetExample]:
    """Read targets written by :func:`write_targets` (every field required)."""
    path = Path(path)
    out = []
    fields = ("id", "dataset", "subtask", "query", "assistant_prefix", "completion")
    for lineno, rec in read_jsonl(path):
        missing = [f for f in fields if not isinstance(rec.get(f), str)]
        if missing:
            raise DataError(f"{path}:{lineno}: missing or non-string field(s) {', '.join(missing)} in a target record")
        if not rec["completion"].strip():
            raise DataError(f"{path}:{lineno}: empty completion (the target's loss would be undefined)")
        out.append(TargetExample(**{f: rec[f] for f in fields}))
    if not out:
        raise DataError(f"{path}: no target examples")
    return out


# ------------------------------------------------------------------------------------------------------------ MMLU
def subject_words(subject: str) -> str:
    """``"high_school_physics"`` -> ``"high school physics"``."""
    return " ".join(subject.split("_"))


def mmlu_target(subject: str, question: str, options: list[str], letter: str, idx: int) -> TargetExample:
    """One zero-shot MMLU target in LESS's format (double space after "about", answer ``" X"``)."""
    prompt = ("The following are multiple choice questions (with answers) about "
              + "".join(" " + w for w in subject.split("_")) + ".\n\n" + question)
    for lab, opt in zip(LETTERS, options):
        prompt += f"\n{lab}. {opt}"
    prompt += "\nAnswer:"
    return TargetExample(id=f"mmlu_{subject}_{idx}", dataset="mmlu", subtask=subject, query=prompt,
                         assistant_prefix="The answer is:", completion=" " + letter)


def mmlu_subjects(data_dir: str | os.PathLike) -> list[str]:
    """Sorted subject names = stems of ``<data_dir>/test/<subject>_test.csv``."""
    test = Path(data_dir) / "test"
    subjects = sorted(p.name[: -len("_test.csv")] for p in test.glob("*_test.csv"))
    if not subjects:
        raise DataError(f"{test}: no <subject>_test.csv files (expected LESS's eval/mmlu layout)")
    return subjects


def read_mmlu_csv(path: str | os.PathLike) -> list[tuple[str, list[str], str]]:
    """Rows ``(question, [A, B, C, D], letter)`` of a header-less 6-column MMLU CSV."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if len(row) != 6:
                raise DataError(f"{path}:{lineno}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
            if row[5].strip() not in LETTERS:
                raise DataError(f"{path}:{lineno}: answer {row[5]!r} is not one of A, B, C, D")
            rows.append((row[0], row[1:5], row[5].strip()))
    return rows


def build_mmlu_targets(data_dir: str | os.PathLike, subjects: list[str] | None = None,
                       per_subject: int = 5) -> list[TargetExample]:
    """MMLU targets from ``<data_dir>/dev/<subject>_dev.csv`` (LESS: 57 subjects × 5 = 285), grouped by subject.

    Parameters
    ----------
    data_dir
        The ``eval/mmlu`` directory (``dev/`` and ``test/`` inside).
    subjects
        Subset of subjects (each must exist), default all.
    per_subject
        First rows of each dev file used.
    """
    known = mmlu_subjects(data_dir)
    chosen = known if subjects is None else list(subjects)
    for s in chosen:
        if s not in known:
            raise DataError(f"{Path(data_dir) / 'test'}: unknown MMLU subject {s!r} (no {s}_test.csv; "
                            f"{len(known)} subjects found)")
    out = []
    for s in sorted(chosen):
        dev = Path(data_dir) / "dev" / f"{s}_dev.csv"
        if not dev.exists():
            raise DataError(f"{dev}: missing dev file for subject {s!r}")
        rows = read_mmlu_csv(dev)[:per_subject]
        if len(rows) < per_subject:
            raise DataError(f"{dev}: {len(rows)} rows, expected at least {per_subject}")
        out += [mmlu_target(s, q, opts, a, i) for i, (q, opts, a) in enumerate(rows)]
    return out


# ------------------------------------------------------------------------------------------------------------- BBH
def bbh_targets_from_exemplars(task: str, description: str, exemplars: list[str]) -> list[TargetExample]:
    """LESS's BBH rule (``llm.md`` §6.2): target i = exemplar i, the other two exemplars in context.

    Each exemplar is ``"Q: …\\nA: …"``; split at the first ``"\\nA:"`` into question and answer.
    """
    if len(exemplars) != 3:
        raise DataError(f"BBH task {task!r}: {len(exemplars)} exemplars, expected exactly 3")
    parts = []
    for k, ex in enumerate(exemplars):
        if "\nA:" not in ex:
            raise DataError(f"BBH task {task!r}: exemplar {k} has no '\\nA:' separating question and answer")
        q, a = ex.split("\nA:", 1)
        if not a.strip():
            raise DataError(f"BBH task {task!r}: exemplar {k} has an empty answer")
        parts.append((q, a))
    out = []
    for i, (q, a) in enumerate(parts):
        icl = "".join(parts[j][0] + "\nA:" + parts[j][1] + "\n\n" for j in range(3) if j != i)
        out.append(TargetExample(id=f"bbh_{task}_{i}", dataset="bbh", subtask=task,
                                 query=description.strip() + "\n\n" + icl + q, assistant_prefix="A:", completion=a))
    return out


def build_bbh_targets(path: str | os.PathLike, tasks: list[str] | None = None) -> list[TargetExample]:
    """BBH targets from LESS's ``bbh-three-shot.json`` (``{task: prompt_text}``; 27 tasks × 3 = 81)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{task_name: prompt_text}}")
    chosen = list(data) if tasks is None else list(tasks)
    out = []
    for task in chosen:
        if task not in data:
            raise DataError(f"{path}: unknown BBH task {task!r} ({len(data)} tasks in the file)")
        chunks = str(data[task]).split("\n\n")
        n_ex = sum(1 for c in chunks if c.startswith("Q:"))
        if n_ex != 3 or len(chunks) < 4:
            raise DataError(f"{path}: BBH task {task!r} has {n_ex} exemplars ('Q: …' blocks), expected "
                            "a description followed by exactly 3")
        out += bbh_targets_from_exemplars(task, "\n\n".join(chunks[:-3]), chunks[-3:])
    return out


# ------------------------------------------------------------------------------- lm-eval's embedded exemplars
class _IgnoreTags(yaml.SafeLoader):
    pass


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: None)


def lm_eval_task_dir() -> Path:
    """``lm_eval/tasks`` of the installed lm-eval (found without importing it)."""
    from .models import package_dir

    return package_dir("lm_eval") / "tasks"


def read_lm_eval_yaml(path: Path) -> dict:
    """Load an lm-eval task YAML, ignoring ``!function`` tags."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_IgnoreTags)


def bbh_lm_eval_exemplars(tasks: list[str] | None = None) -> dict[str, dict]:
    """``{task: {"description", "samples": [{input, target}]*3}}`` from lm-eval's ``bbh/cot_fewshot``."""
    d = lm_eval_task_dir() / "bbh" / "cot_fewshot"
    found = {}
    for p in sorted(d.glob("*.yaml")):
        if p.name.startswith("_"):
            continue
        cfg = read_lm_eval_yaml(p)
        found[cfg["dataset_name"]] = {"description": cfg.get("description", ""),
                                      "samples": cfg["fewshot_config"]["samples"]}
    if tasks is not None:
        unknown = [t for t in tasks if t not in found]
        if unknown:
            raise DataError(f"{d}: unknown BBH task(s) {', '.join(unknown)}")
        found = {t: found[t] for t in tasks}
    return found


def build_bbh_targets_lm_eval(tasks: list[str] | None = None) -> list[TargetExample]:
    """BBH targets from lm-eval 0.4.13's embedded CoT exemplars (27 × 3 = 81), in LESS's task order.

    Exemplar text = ``"Q: " + input + "\\nA: Let's think step by step. " + target`` (``llm.md`` §6.3).
    """
    ex = bbh_lm_eval_exemplars(tasks)
    order = [t for t in BBH_TASKS if t in ex] + [t for t in ex if t not in BBH_TASKS]
    out = []
    for task in order:
        texts = ["Q: " + s["input"] + "\nA: Let's think step by step. " + s["target"] for s in ex[task]["samples"]]
        out += bbh_targets_from_exemplars(task, ex[task]["description"], texts)
    return out


_ANSWER = re.compile(r"answer is \(([A-Z])\)")


def parse_flan_mmlu_question(text: str) -> tuple[str, list[str]] | None:
    """Split ``"stem\\n(A) … (B) … (C) … (D) …"`` (one line or one option per line) into stem and 4 options."""
    d = text.rfind("(D)")
    c = text.rfind("(C)", 0, d)
    b = text.rfind("(B)", 0, c)
    a = text.rfind("(A)", 0, b)
    if min(a, b, c, d) < 0:
        return None
    stem = text[:a].strip()
    opts = [text[a + 3: b].strip(), text[b + 3: c].strip(), text[c + 3: d].strip(), text[d + 3:].strip()]
    if not stem or not all(opts):
        return None
    return stem, opts


def build_mmlu_targets_lm_eval(subjects: list[str] | None = None) -> tuple[list[TargetExample], list[str]]:
    """MMLU targets from lm-eval 0.4.13's ``mmlu/flan_cot_fewshot`` exemplars (282 questions, 57 subjects).

    Returns
    -------
    targets, dropped
        The targets grouped by sorted subject, and one line per exemplar that could not be used (e.g. the
        ``college_chemistry`` exemplar whose answer is "(E)").
    """
    d = lm_eval_task_dir() / "mmlu" / "flan_cot_fewshot"
    by_subject = {}
    for p in sorted(d.glob("mmlu_*.yaml")):
        cfg = read_lm_eval_yaml(p)
        by_subject[cfg["dataset_name"]] = (p, cfg["fewshot_config"]["samples"])
    if subjects is not None:
        unknown = [s for s in subjects if s not in by_subject]
        if unknown:
            raise DataError(f"{d}: unknown MMLU subject(s) {', '.join(unknown)} ({len(by_subject)} known)")
    out, dropped = [], []
    for s in sorted(subjects if subjects is not None else by_subject):
        path, samples = by_subject[s]
        for k, smp in enumerate(samples):
            parsed = parse_flan_mmlu_question(smp["question"])
            answers = _ANSWER.findall(smp["target"])
            if parsed is None:
                dropped.append(f"{path.name} sample {k}: options (A)-(D) not found")
                continue
            if not answers or answers[-1] not in LETTERS:
                dropped.append(f"{path.name} sample {k}: final answer {answers[-1] if answers else None!r} "
                               "is not one of A-D")
                continue
            out.append(mmlu_target(s, parsed[0], parsed[1], answers[-1], k))
    return out, dropped
