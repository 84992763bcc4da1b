"""Paired comparison of two methods evaluated on the same items (questions, scenes, images).

Downstream evaluations of data selection are small and noisy: a 100-question benchmark has a binomial standard error
of about 5 points, so a one-point gap between two selections means nothing by itself. Because every method is scored
on the *same* items, the per-item differences :math:`d_i = a_i - b_i` carry far less noise than the two scores do
separately. :func:`paired_difference` reports their mean with a seeded bootstrap confidence interval (``scipy.stats.
bootstrap``, percentile method) and a verdict that only says "better" or "worse" when the interval excludes zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

VERDICTS = ("better", "worse", "no measurable difference")


@dataclass(frozen=True)
class PairedDifference:
    """Mean paired difference ``a - b`` (sign-adjusted so that positive = ``a`` is better) and its interval.

    Attributes
    ----------
    mean
        :math:`\\bar d = \\frac1n\\sum_i s\\,(a_i - b_i)` with :math:`s = +1` if higher is better else :math:`-1`.
    low, high
        Bootstrap ``confidence`` interval of :math:`\\bar d` (resampling items with replacement).
    n
        Number of paired items.
    verdict
        ``"better"`` if ``low > 0``, ``"worse"`` if ``high < 0``, else ``"no measurable difference"``.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def paired_difference(a, b, higher_is_better: bool = True, confidence: float = 0.95, n_resamples: int = 9999,
                      seed: int = 0) -> PairedDifference:
    """Compare per-item scores ``a`` and ``b`` of two methods on the same items.

    Parameters
    ----------
    a, b
        Per-item scores (same length, same item order), e.g. 0/1 correctness or a per-item loss.
    higher_is_better
        ``False`` for losses (NLL): the difference is then ``b - a`` so that positive still means ``a`` is better.
    confidence
        Two-sided level of the bootstrap interval.
    n_resamples, seed
        Bootstrap resamples and the seed of their generator (the result is deterministic).

    Returns
    -------
    PairedDifference

    Raises
    ------
    ValueError
        If the inputs differ in length, are empty, or hold non-finite values.
    """
    from scipy.stats import bootstrap

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same items: {a.size} vs {b.size} scores")
    if a.size == 0:
        raise ValueError("paired comparison of zero items")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired comparison: scores contain NaN or inf")
    d = (a - b) if higher_is_better else (b - a)
    mean = float(d.mean())
    if np.ptp(d) == 0.0:  # every item differs by the same amount: the interval is that single value
        low = high = mean
    else:
        ci = bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                       random_state=np.random.default_rng(seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
    verdict = VERDICTS[0] if low > 0 else VERDICTS[1] if high < 0 else VERDICTS[2]
    return PairedDifference(mean=mean, low=low, high=high, n=int(d.size), confidence=confidence, verdict=verdict)


def _as_seed_items(x: Any, name: str) -> list[np.ndarray]:
    """One float64 vector of per-item scores per seed (a 1-D input is one seed)."""
    if isinstance(x, np.ndarray) and x.ndim == 1:
        x = [x]
    if isinstance(x, np.ndarray) and x.ndim == 2:
        x = list(x)
    rows = [np.asarray(r, dtype=np.float64).ravel() for r in x]
    if not rows:
        raise ValueError(f"paired comparison: {name} has no seeds")
    return rows


def paired_difference_seeds(a: Any, b: Any, higher_is_better: bool = True, confidence: float = 0.95,
                            n_resamples: int = 9999, seed: int = 0) -> PairedDifference:
    r"""Paired comparison over training seeds *and* evaluation items (a two-level bootstrap).

    Parameters
    ----------
    a, b
        Per-seed sequences (or ``[seeds, items]`` arrays) of per-item scores. Seed ``s`` of ``a`` is paired with seed
        ``s`` of ``b`` and must score the same items in the same order (seeds may score different items, e.g. when
        every seed rebuilds the scenario).
    higher_is_better, confidence, n_resamples, seed
        As in :func:`paired_difference`.

    Returns
    -------
    PairedDifference
        ``mean`` is :math:`\bar d = \frac1S\sum_s \frac1{n_s}\sum_i d_{s,i}` (sign-adjusted); ``n`` counts all
        paired (seed, item) scores. The interval resamples seeds with replacement and, independently for every
        drawn seed, its items with replacement, so it covers both the training noise between seeds and the
        sampling of evaluation items. With one seed it reduces to an item bootstrap.

    Raises
    ------
    ValueError
        Different numbers of seeds, different item counts within a seed, empty seeds or non-finite scores.
    """
    A, B = _as_seed_items(a, "a"), _as_seed_items(b, "b")
    if len(A) != len(B):
        raise ValueError(f"paired comparison needs the same seeds: {len(A)} vs {len(B)}")
    diffs = []
    for s, (ra, rb) in enumerate(zip(A, B)):
        if ra.shape != rb.shape:
            raise ValueError(f"paired comparison, seed {s}: {ra.size} vs {rb.size} scores (not the same items)")
        if ra.size == 0:
            raise ValueError(f"paired comparison, seed {s}: zero items")
        if not (np.isfinite(ra).all() and np.isfinite(rb).all()):
            raise ValueError(f"paired comparison, seed {s}: scores contain NaN or inf")
        diffs.append((ra - rb) if higher_is_better else (rb - ra))
    mean = float(np.mean([d.mean() for d in diffs]))
    n = int(sum(d.size for d in diffs))
    if len(diffs) == 1:
        single = paired_difference(diffs[0], np.zeros_like(diffs[0]), True, confidence, n_resamples, seed)
        return PairedDifference(mean=mean, low=single.low, high=single.high, n=n, confidence=confidence,
                                verdict=single.verdict)
    if all(np.ptp(d) == 0.0 for d in diffs) and len({float(d[0]) for d in diffs}) == 1:
        low = high = mean
    else:
        rng = np.random.default_rng(seed)
        S = len(diffs)
        # item-bootstrap means of every seed: [S, R]
        item_means = np.stack([d[rng.integers(0, d.size, size=(n_resamples, d.size))].mean(1) for d in diffs])
        pick_seed = rng.integers(0, S, size=(n_resamples, S))
        pick_col = rng.integers(0, n_resamples, size=(n_resamples, S))
        stats = item_means[pick_seed, pick_col].mean(1)
        alpha = (1.0 - confidence) / 2.0
        low, high = (float(v) for v in np.quantile(stats, [alpha, 1.0 - alpha]))
    verdict = VERDICTS[0] if low > 0 else VERDICTS[1] if high < 0 else VERDICTS[2]
    return PairedDifference(mean=mean, low=low, high=high, n=n, confidence=confidence, verdict=verdict)


def method_verdict(scores: Mapping[str, Any], methods: Sequence[str], baselines: Sequence[str], metric: str,
                   higher_is_better: bool = True, confidence: float = 0.95, n_resamples: int = 9999,
                   seed: int = 0) -> dict[str, Any]:
    """Does TAROT win? Every method of ``methods`` against every baseline, by :func:`paired_difference_seeds`.

    A method *wins* only when its interval against **every** baseline lies above zero. Among several winners the one
    with the largest smallest margin is named.

    Parameters
    ----------
    scores
        ``name -> per-seed per-item scores`` for every method and baseline (same seeds, same items per seed).
    methods, baselines
        Names of the TAROT rows and of the rows they must beat (e.g. random, topk_mean, all candidates, the target
        set alone, the field's trivial baseline).
    metric
        Name of the metric, used in the text (e.g. ``"brier-FDE (m)"``).

    Returns
    -------
    dict
        ``comparisons`` (one record per method × baseline: method, baseline and the :class:`PairedDifference`
        fields), ``winner`` (a method name or None), ``metric``, ``higher_is_better``, ``seeds`` and ``text``: one
        sentence naming the metric, the margin and its interval.
    """
    missing = [m for m in (*methods, *baselines) if m not in scores]
    if missing:
        raise ValueError(f"method_verdict: no scores for {missing}")
    if not methods or not baselines:
        raise ValueError("method_verdict needs at least one method and one baseline")
    comps: list = []
    worst: dict = {}
    for m in methods:
        for b in baselines:
            pd = paired_difference_seeds(scores[m], scores[b], higher_is_better, confidence, n_resamples, seed)
            comps.append({"method": m, "baseline": b, **pd.to_dict()})
            if m not in worst or pd.mean < worst[m][1].mean:
                worst[m] = (b, pd)
    winners = [m for m in methods if all(c["verdict"] == "better" for c in comps if c["method"] == m)]
    seeds = len(_as_seed_items(scores[methods[0]], methods[0]))
    sense = "higher" if higher_is_better else "lower"
    pct = f"{100 * confidence:g} %"
    if winners:
        w = max(winners, key=lambda m: worst[m][1].low)
        b, pd = worst[w]
        text = (f"TAROT wins on {metric} ({sense} is better): {w} is measurably better than every baseline "
                f"({', '.join(baselines)}); its smallest margin is {pd.mean:+.4g} against {b} ({pct} interval "
                f"{pd.low:+.4g} … {pd.high:+.4g}, {seeds} seeds).")
    else:
        w = max(methods, key=lambda m: worst[m][1].mean)
        lost = [c for c in comps if c["method"] == w and c["verdict"] != "better"]
        detail = "; ".join(f"{c['verdict']} than {c['baseline']} ({c['mean']:+.4g}, {pct} interval "
                           f"{c['low']:+.4g} … {c['high']:+.4g})" if c["verdict"] == "worse" else
                           f"no measurable difference from {c['baseline']} ({c['mean']:+.4g}, {c['low']:+.4g} … "
                           f"{c['high']:+.4g})" for c in lost)
        text = (f"TAROT does not win on {metric} ({sense} is better, {seeds} seeds): no TAROT row is measurably "
                f"better than every baseline. Closest: {w}: {detail}.")
    return {"metric": metric, "higher_is_better": higher_is_better, "seeds": seeds, "confidence": confidence,
            "winner": w if winners else None, "winners": winners, "comparisons": comps, "text": text}
