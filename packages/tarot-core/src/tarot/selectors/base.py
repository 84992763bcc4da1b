"""Shared pieces of the selectors: the :class:`Selection` record, budget checks and neighbour layers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tarot.geometry.scoring import topk_neighbors


@dataclass
class Selection:
    """What a selector returns (the front door turns it into a :class:`tarot.SelectionResult`).

    Attributes
    ----------
    indices : numpy.ndarray
        Sorted unique candidate indices.
    scores : numpy.ndarray or None
        Per-candidate scores for score-based selectors.
    warm : (numpy.ndarray, OTResult) or None
        The selector's last OT solve of a growing selection: the candidate rows it was solved on, in its row order,
        followed by the rows added after it (together: the final selection, unsorted), and its
        :class:`tarot.ot.OTResult`. The front door warm-starts the final solve from it (potentials and sparse
        support) instead of starting cold.
    counts : numpy.ndarray or None
        Repeat counts aligned with ``indices`` for selectors that sample with replacement (``tsds``); they become
        the result's weights.
    diagnostics : dict
        Selector-specific details.
    nearest : numpy.ndarray or None
        Every target's largest cosine to any candidate, when the selector's neighbour lists hold it (the selection
        diagnostics then need no pass of their own over the candidates).
    """

    indices: np.ndarray
    scores: np.ndarray | None = None
    warm: tuple[np.ndarray, object] | None = None
    diagnostics: dict = field(default_factory=dict)
    counts: np.ndarray | None = None
    nearest: np.ndarray | None = None


def check_budget(n: int, n_candidates: int) -> int:
    """Validate a selection size: 1 ≤ n ≤ N."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise TypeError(f"budget n must be an integer, got {type(n).__name__}")
    if not 1 <= n <= n_candidates:
        raise ValueError(f"budget n={n} is outside [1, {n_candidates}] (the number of candidates)")
    return int(n)


class NeighbourLayers:
    """Rank layers of a set of targets over the candidates, with depth that grows on demand.

    ``first_rank[c]`` is the smallest rank r (1-based) at which candidate c appears among the top-r neighbours of any
    of the targets (optionally counting only neighbours with cosine > ``min_score``); candidates never reached within
    the computed depth have rank ``inf``. Layer r is ``{c : first_rank[c] == r}``: the round-robin union over
    targets of their r-th neighbours minus earlier layers (spec §8). Depth doubles when more is needed, so no fixed
    cap silently truncates a selection (reference defect B9).
    """

    def __init__(self, candidates: np.ndarray, targets: np.ndarray, depth: int = 16,
                 min_score: float | None = None, progress: bool = False,
                 known: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.candidates, self.targets = candidates, targets
        self.n = candidates.shape[0]
        self.min_score = min_score
        self.progress = progress
        self.depth = 0
        self.recomputations = 0
        self._compute(max(1, min(depth, self.n)), known)

    def _compute(self, depth: int, known: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Top-``depth`` lists by one streamed pass, or ``known`` lists (scores, indices) computed beforehand, e.g.
        for several target groups in one pass."""
        scores, idx = known if known is not None else topk_neighbors(self.candidates, self.targets, depth,
                                                                      progress=self.progress)
        self.scores, self.index = scores, idx
        self.depth = idx.shape[1]
        self.recomputations += 1
        ranks = np.broadcast_to(np.arange(1, self.depth + 1, dtype=np.float64), idx.shape)
        if self.min_score is not None:
            ranks = np.where(scores > self.min_score, ranks, np.inf)
        first = np.full(self.n, np.inf)
        np.minimum.at(first, idx.ravel(), ranks.ravel())
        self.first_rank = first

    @property
    def exhausted(self) -> bool:
        """True when the depth covers every candidate for every target."""
        return self.depth >= self.n

    def ensure_depth(self, depth: int) -> None:
        """Recompute with at least ``depth`` neighbours per target (doubling)."""
        if depth <= self.depth or self.exhausted:
            return
        new = self.depth
        while new < depth:
            new *= 2
        self._compute(min(new, self.n))

    def members_up_to(self, r: int) -> np.ndarray:
        """Candidates whose first rank is ≤ r (sorted)."""
        self.ensure_depth(r)
        return np.flatnonzero(self.first_rank <= r)

    def layer(self, r: int) -> np.ndarray:
        """Candidates whose first rank is exactly r (sorted)."""
        self.ensure_depth(r)
        return np.flatnonzero(self.first_rank == r)
