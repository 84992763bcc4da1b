"""Does TAROT win? Question-by-question comparison of the OT selections with the baselines.

Every method is evaluated on the same questions, so the comparison is paired: accuracy (or exact match) and, for
multiple choice, the gold answer's negative log-likelihood, which moves long before the argmax does on a small model.
With several training seeds (``train.seeds``) the interval is a two-level bootstrap over seeds and questions
(:func:`tarot.paired_difference_seeds`); with one seed it covers the questions only. The verdict is computed from the
intervals, never written by hand: TAROT *wins* on a metric only when one OT method is measurably better than every
baseline present (random, LESS and the base model) on a task group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tarot.app.compare import paired_difference_seeds

from .io import DataError

OT_METHODS = ("fixed_size", "otm")
BASELINES = ("random", "less", "base")


def _items(path: Path) -> dict[tuple, dict]:
    rec = json.loads(path.read_text())
    if "items" not in rec:
        raise FileNotFoundError(f"{path}: no per-question items (written by an older tarot-llm); rerun evaluate")
    return {(i["task"], i["doc_id"], i.get("doc_hash")): i for i in rec["items"]}


def run_name(method: str, seed: int, seeds: list[int] | None) -> str:
    """Name of one training run: the method itself with a single seed, ``<method>-seed<k>`` with several."""
    return method if not seeds or len(seeds) == 1 else f"{method}-seed{seed}"


def compare_methods(eval_dir: str | Path, groups: list[str], names: list[str], seeds: list[int] | None = None,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Paired comparisons of every OT method against every baseline present in ``names``, per task group.

    Reads ``<eval_dir>/<run>.<group>.json`` (written by :func:`tarot_llm.evaluation.evaluate_to_file`), where
    ``<run>`` is :func:`run_name` of each method and seed (the base model has one evaluation, used for every seed).

    Returns
    -------
    list of dict
        ``{group, method, baseline, n, seeds, accuracy: PairedDifference fields, gold_nll: ... or None}``; the
        accuracy difference is in points of the metric (fraction × 100 would be percentage points).

    Raises
    ------
    DataError
        If two models were evaluated on different questions (different limits or task files).
    """
    eval_dir = Path(eval_dir)
    seed_list = list(seeds) if seeds else [0]
    rows = []
    for group in groups:
        loaded: dict[str, list[dict[tuple, dict]]] = {}
        for n in names:
            files = [eval_dir / f"{'base' if n == 'base' else run_name(n, s, seed_list)}.{group}.json"
                     for s in seed_list]
            if all(f.exists() for f in files):
                loaded[n] = [_items(f) for f in files]
        for m in (x for x in OT_METHODS if x in loaded):
            for b in (x for x in BASELINES if x in loaded):
                keys = sorted(loaded[m][0], key=str)
                for name in (m, b):
                    for per_seed in loaded[name]:
                        if set(per_seed) != set(keys):
                            raise DataError(f"{group}: {m} and {b} were evaluated on different questions "
                                            f"({len(keys)} vs {len(per_seed)}); evaluate both with the same limit")

                acc = paired_difference_seeds(_scores(loaded[m], keys, "score"), _scores(loaded[b], keys, "score"),
                                              seed=seed)
                nll = None
                if all("gold_nll" in it[k] for name in (m, b) for it in loaded[name] for k in keys):
                    nll = paired_difference_seeds(_scores(loaded[m], keys, "gold_nll"),
                                                  _scores(loaded[b], keys, "gold_nll"), higher_is_better=False,
                                                  seed=seed).to_dict()
                rows.append({"group": group, "method": m, "baseline": b, "n": len(keys), "seeds": len(seed_list),
                             "accuracy": acc.to_dict(), "gold_nll": nll})
    return rows


def _scores(per_seed: list[dict[tuple, dict]], keys: list[tuple], field: str) -> list[list[float]]:
    """``field`` of every question in ``keys``, one list per training seed."""
    return [[items[k][field] for k in keys] for items in per_seed]


def _fmt(d: dict, scale: float, unit: str, digits: int) -> str:
    if d["low"] == d["high"] == d["mean"] == 0.0:
        return "identical on every question"
    return (f"{scale * d['mean']:+.{digits}f}{unit} (95 % CI {scale * d['low']:+.{digits}f} … "
            f"{scale * d['high']:+.{digits}f}): {d['verdict']}")


def _summary(rows: list[dict[str, Any]], key: str, what: str) -> str:
    """One sentence: does an OT method beat *every* baseline present on ``key`` in some task group?"""
    got = [r for r in rows if r[key] is not None]
    sizes = ", ".join(f"{n} {g}" for g, n in sorted({(r["group"], r["n"]) for r in got}))
    if got and all(r[key]["low"] == r[key]["high"] == r[key]["mean"] == 0.0 for r in got):
        return f"{what.capitalize()} cannot separate the methods: every model scores every question the same ({sizes})."
    wins = []
    for g in sorted({r["group"] for r in got}):
        for m in sorted({r["method"] for r in got if r["group"] == g}):
            mine = [r for r in got if r["group"] == g and r["method"] == m]
            if all(r[key]["verdict"] == "better" for r in mine):
                worst = min(mine, key=lambda r: r[key]["mean"])
                w = worst[key]
                wins.append(f"{m} on {g} is measurably better than every baseline "
                            f"({', '.join(r['baseline'] for r in mine)}; smallest margin {w['mean']:+.4g} "
                            f"against {worst['baseline']}, 95 % CI {w['low']:+.4g} … {w['high']:+.4g})")
    lost = sorted({f"{r['method']} below {r['baseline']} ({r['group']})" for r in got if r[key]["verdict"] == "worse"})
    if wins:
        return f"TAROT wins on {what}: " + "; ".join(wins) + "."
    if lost:
        return f"TAROT does not win on {what}: it is measurably worse for {'; '.join(lost)}."
    vs = ", ".join(sorted({r["baseline"] for r in got})) or "the baselines"
    return (f"TAROT does not win on {what} in this run: no OT selection is measurably better than every baseline "
            f"({vs}; paired bootstrap: {sizes}).")


def verdict_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Plain sentences: whether TAROT won on accuracy, then on the gold-answer NLL (multiple choice), then one line
    per comparison. A win needs one OT method better than every baseline present (random, less, base)."""
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
    n_seeds = max(r.get("seeds", 1) for r in rows)
    if n_seeds > 1:
        lines.append(f"The intervals cover the questions and {n_seeds} training seeds per method (two-level "
                     "bootstrap); the base model is evaluated once.")
    else:
        lines.append("The intervals cover the choice of questions only: each method was trained once, so differences "
                     "between training runs (seeds) are not in them.")
    return lines
