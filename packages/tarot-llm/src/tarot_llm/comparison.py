"""Does TAROT win? Question-by-question comparison of the OT selections with the baselines.

Every method is evaluated on the same questions, so the comparison is paired (:func:`tarot.paired_difference`):
accuracy (or exact match) and, for multiple choice, the gold answer's negative log-likelihood, which moves long before
the argmax does on a small model. The verdict is computed from the intervals, never written by hand: a method is called
better or worse only when the bootstrap interval of the paired difference excludes zero.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tarot.compare import paired_difference

from .io import DataError

OT_METHODS = ("fixed_size", "otm")
BASELINES = ("random", "less", "base")


def _items(path: Path) -> dict[tuple, dict]:
    rec = json.loads(path.read_text())
    if "items" not in rec:
        raise FileNotFoundError(f"{path}: no per-question items (written by an older tarot-llm); rerun evaluate")
    return {(i["task"], i["doc_id"], i.get("doc_hash")): i for i in rec["items"]}


def compare_methods(eval_dir: str | Path, groups: list[str], names: list[str], seed: int = 0) -> list[dict[str, Any]]:
    """Paired comparisons of every OT method against every baseline present in ``names``, per task group.

    Reads ``<eval_dir>/<name>.<group>.json`` (written by :func:`tarot_llm.evaluation.evaluate_to_file`).

    Returns
    -------
    list of dict
        ``{group, method, baseline, n, accuracy: PairedDifference fields, gold_nll: ... or None}``; the accuracy
        difference is in points of the metric (fraction × 100 would be percentage points).

    Raises
    ------
    DataError
        If two models were evaluated on different questions (different limits or task files).
    """
    eval_dir = Path(eval_dir)
    rows = []
    for group in groups:
        loaded = {n: _items(eval_dir / f"{n}.{group}.json") for n in names
                  if (eval_dir / f"{n}.{group}.json").exists()}
        for m in (x for x in OT_METHODS if x in loaded):
            for b in (x for x in BASELINES if x in loaded):
                a_items, b_items = loaded[m], loaded[b]
                if set(a_items) != set(b_items):
                    raise DataError(f"{group}: {m} and {b} were evaluated on different questions "
                                     f"({len(a_items)} vs {len(b_items)}); evaluate both with the same limit")
                keys = sorted(a_items, key=str)
                acc = paired_difference([a_items[k]["score"] for k in keys], [b_items[k]["score"] for k in keys],
                                        seed=seed)
                nll = None
                if all("gold_nll" in a_items[k] and "gold_nll" in b_items[k] for k in keys):
                    nll = paired_difference([a_items[k]["gold_nll"] for k in keys],
                                            [b_items[k]["gold_nll"] for k in keys], higher_is_better=False,
                                            seed=seed).to_dict()
                rows.append({"group": group, "method": m, "baseline": b, "n": len(keys),
                             "accuracy": acc.to_dict(), "gold_nll": nll})
    return rows


def _fmt(d: dict, scale: float, unit: str, digits: int) -> str:
    if d["low"] == d["high"] == d["mean"] == 0.0:
        return "identical on every question"
    return (f"{scale * d['mean']:+.{digits}f}{unit} (95 % CI {scale * d['low']:+.{digits}f} … "
            f"{scale * d['high']:+.{digits}f}): {d['verdict']}")


def _summary(rows: list[dict[str, Any]], key: str, what: str) -> str:
    """One sentence on whether any OT method beat (or lost to) a selection baseline on ``key``."""
    got = [r for r in rows if r[key] is not None and r["baseline"] != "base"]
    sizes = ", ".join(f"{n} {g}" for g, n in sorted({(r["group"], r["n"]) for r in got}))
    if got and all(r[key]["low"] == r[key]["high"] == r[key]["mean"] == 0.0 for r in got):
        return f"{what.capitalize()} cannot separate the methods: every model scores every question the same ({sizes})."
    won = sorted({f"{r['method']} over {r['baseline']} ({r['group']})" for r in got if r[key]["verdict"] == "better"})
    lost = sorted({f"{r['method']} below {r['baseline']} ({r['group']})" for r in got if r[key]["verdict"] == "worse"})
    vs = " or ".join(sorted({r["baseline"] for r in got})) or "the base model"
    if won and not lost:
        return f"TAROT measurably wins on {what}: {'; '.join(won)}."
    if lost and not won:
        return f"TAROT does not win on {what}: it is measurably worse for {'; '.join(lost)}."
    if won and lost:
        return f"Mixed result on {what}: better for {'; '.join(won)}, worse for {'; '.join(lost)}."
    return (f"TAROT does not win on {what} in this run: no OT selection is measurably better or worse than {vs} "
            f"(paired bootstrap over the questions: {sizes}).")


def verdict_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Plain sentences: whether TAROT won on accuracy, then on the gold-answer NLL (multiple choice), then one line
    per comparison. Baselines are ``random`` and ``less``; the base model is listed but not part of the headline."""
    if not rows:
        return ["No comparison: no OT method and baseline were both evaluated."]
    lines = [_summary(rows, "accuracy", "accuracy")]
    if any(r["gold_nll"] is not None for r in rows):
        lines.append(_summary(rows, "gold_nll", "the gold answer's NLL"))
    for r in rows:
        line = f"{r['method']} vs {r['baseline']} on {r['group']} ({r['n']} questions): accuracy " + _fmt(
            r["accuracy"], 100.0, " points", 1)
        if r["gold_nll"] is not None:
            line += "; gold-answer NLL lower by " + _fmt(r["gold_nll"], 1.0, " nats", 4)
        lines.append(line)
    lines.append("The intervals cover the choice of questions only: each method was trained once, so differences "
                 "between training runs (seeds) are not in them.")
    return lines
