"""Selectors: each takes whitened unit features and a budget and returns a :class:`Selection`.

=============  =====================================================================================================
``random``     uniform without replacement, seeded
``topk_mean``  DsDm/LESS-style greedy: the n highest mean cosines to the targets
``less``       LESS: max over target groups (subtasks) of the mean cosine, per-checkpoint normalised features
``round_robin`` targets take turns picking their nearest not-yet-selected candidate
``fixed_size`` Algorithm 1: neighbourhood layers by rank, the partial layer filled by smallest OT potential
``otm``        Algorithm 2: k-fold OT-distance minimisation over neighbourhood depth; estimates the ratio
``tsds``       baseline (Liu et al. 2024): KNN-KDE-regularised OT sampling distribution, n draws with replacement
=============  =====================================================================================================
"""

from collections.abc import Callable

from tarot.selectors.base import Selection
from tarot.selectors.baselines import less, random_selection, round_robin, topk_mean
from tarot.selectors.fixed_size import fixed_size
from tarot.selectors.otm import otm
from tarot.selectors.tsds import tsds

# every selector is called as selector(candidates, targets, budget, **its options)
SELECTORS: dict[str, Callable[..., Selection]] = {
    "random": random_selection,
    "topk_mean": topk_mean,
    "less": less,
    "round_robin": round_robin,
    "fixed_size": fixed_size,
    "otm": otm,
    "tsds": tsds,
}

__all__ = ["SELECTORS", "Selection", "fixed_size", "less", "otm", "random_selection", "round_robin", "topk_mean",
           "tsds"]
