"""Paired comparison of two methods evaluated on the same items (questions, scenes, images).

Downstream evaluations of data selection are small and noisy: a 100-question benchmark has a binomial standard error
of about 5 points, so a one-point gap between two selections means nothing by itself. Because every method is scored
on the *same* items, the per-item differences :math:`d_i = a_i - b_i` carry far less noise than the two scores do
separately. :func:`paired_difference` reports their mean with a seeded bootstrap confidence interval (``scipy.stats.
bootstrap``, percentile method) and a verdict that only says "better" or "worse" when the interval excludes zero.
"""

from __future__ import annotations

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
