"""Baseline selectors: random, topk_mean (DsDm/LESS greedy), less (max over subtasks), round_robin (spec §11)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from tarot.geometry.scoring import mean_scores, top_n_by_score
from tarot.geometry.whitening import unit_rows
from tarot.options import RoundRobinOptions
from tarot.selectors.base import NeighbourLayers, Selection, check_budget
from tarot.selectors.rounds import distinct_rounds


def random_selection(candidates: np.ndarray, targets: np.ndarray, n: int, *, seed: int = 0) -> Selection:
    """Uniform sample of exactly ``n`` candidates without replacement (``numpy.random.default_rng(seed)``)."""
    n = check_budget(n, candidates.shape[0])
    idx = np.sort(np.random.default_rng(seed).choice(candidates.shape[0], size=n, replace=False))
    return Selection(indices=idx, diagnostics={"seed": seed})


def topk_mean(candidates: np.ndarray, targets: np.ndarray, n: int) -> Selection:
    r"""Keep the ``n`` candidates with the highest mean cosine :math:`\frac1M\sum_j s_{ij}` (ties: lower index)."""
    n = check_budget(n, candidates.shape[0])
    scores = mean_scores(candidates, targets)
    return Selection(indices=top_n_by_score(scores, n), scores=scores)


def _checkpoints(x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One 2-D array (ndarray, memmap or a sharded store's row view) is one checkpoint; a list holds one per
    checkpoint."""
    if getattr(x, "ndim", None) == 2:
        return [cast(np.ndarray, x)]
    return list(x)


def less(
    candidates: np.ndarray | Sequence[np.ndarray],
    targets: np.ndarray | Sequence[np.ndarray],
    n: int,
    *,
    target_groups: Sequence | None = None,
    checkpoint_weights: Sequence[float] | None = None,
) -> Selection:
    r"""LESS selection: :math:`\text{score}_i = \max_s \sum_c \bar w_c \langle \hat g_{i,c}, m_{s,c}\rangle`.

    Parameters
    ----------
    candidates, targets : array or list of arrays
        One feature matrix per checkpoint (a single array means one checkpoint). Rows are L2-normalised per
        checkpoint here (LESS does not whiten).
    target_groups : sequence, optional
        Subtask label of every target; without labels all targets form one group (then this equals a per-checkpoint
        ``topk_mean`` in raw space).
    checkpoint_weights : sequence of float, optional
        w_c (LESS: mean learning rate of each epoch); normalised to sum to 1.
    """
    cands, tgts = _checkpoints(candidates), _checkpoints(targets)
    if len(cands) != len(tgts):
        raise ValueError(f"less: {len(cands)} candidate checkpoints but {len(tgts)} target checkpoints")
    n = check_budget(n, cands[0].shape[0])
    w = np.ones(len(cands)) if checkpoint_weights is None else np.asarray(checkpoint_weights, dtype=np.float64)
    if w.shape != (len(cands),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"less: checkpoint_weights must be {len(cands)} non-negative numbers with a positive sum")
    w = w / w.sum()
    groups = ["all"] * tgts[0].shape[0] if target_groups is None else list(target_groups)
    names = sorted(set(map(str, groups)))
    total = np.zeros((cands[0].shape[0], len(names)))
    for wc, C, T in zip(w, cands, tgts):
        Cn = unit_rows(C, np.float64)
        Tn = unit_rows(T, np.float64)
        labels = np.asarray([str(g) for g in groups])
        if len(labels) != Tn.shape[0]:
            raise ValueError(f"less: {len(labels)} target group labels for {Tn.shape[0]} targets")
        centres = np.stack([Tn[labels == g].mean(axis=0) for g in names], axis=1)
        total += wc * (Cn @ centres)
    scores = total.max(axis=1)
    return Selection(indices=top_n_by_score(scores, n), scores=scores,
                     diagnostics={"groups": len(names), "checkpoints": len(cands)})


def round_robin(candidates: np.ndarray, targets: np.ndarray, n: int, *, layers: str = "unique",
                progress: bool = False) -> Selection:
    """Targets take turns (in target order) picking candidates until n.

    ``layers="unique"`` (default): each target takes its nearest not-yet-selected candidate — the distinct rounds of
    :func:`~tarot.selectors.rounds.unique_rounds`, the last round cut in target order (fixed_size with the partial
    layer filled in target order instead of by OT potentials). ``layers="rank"``: the reference's order, rank by
    rank, where a target whose r-th neighbour is already taken adds nothing in round r.
    """
    n = check_budget(n, candidates.shape[0])
    RoundRobinOptions(layers=layers)  # choices checked in one place
    if layers == "unique":
        rounds = distinct_rounds(candidates, targets, n, progress=progress)
        return Selection(indices=np.sort(np.concatenate(rounds.picks)[:n]), nearest=rounds.nearest,
                         diagnostics={"depth": len(rounds.picks), "neighbour_refills": rounds.stats})
    nb = NeighbourLayers(candidates, targets, depth=max(4, 2 * -(-n // targets.shape[0])), progress=progress)
    taken = np.zeros(candidates.shape[0], dtype=bool)
    count, r = 0, 0
    while count < n:
        r += 1
        nb.ensure_depth(r)
        for c in nb.index[:, r - 1]:
            if not taken[c]:
                taken[c] = True
                count += 1
                if count == n:
                    break
    return Selection(indices=np.flatnonzero(taken), diagnostics={"depth": r})


__all__ = ["random_selection", "topk_mean", "less", "round_robin"]
