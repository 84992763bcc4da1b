r"""Whitening moments and nearest-neighbour lists merged across ``torch.distributed`` ranks.

When the candidates are spread over processes — every rank holds a contiguous row range, e.g. its own shard of a
sharded featurization — the two passes over all candidates that selection needs can run where the rows are and be
merged, instead of gathering the features in one place:

- **Whitening moments.** Every rank streams its rows into :class:`~tarot.geometry.whitening.RunningMoments` (count,
  mean, centred scatter and the sums the shrinkage rules need); one ``all_gather`` of the :math:`1 + 2k + k^2 + 1`
  numbers per rank, merged in rank order with the exact pairwise update, gives every rank the moments of all rows
  (:func:`allgather_moments`) and so the same :class:`~tarot.geometry.whitening.Whitener`
  (:func:`fit_whitener_across_ranks`). It equals a one-process fit up to floating-point rounding (the sums are
  grouped differently; tested to 1e-10).
- **Top-k lists.** Every rank computes each target's top-k among its own rows (:func:`~tarot.geometry.scoring.
  topk_neighbors`), shifts the indices by its row offset, and one ``all_gather`` of the ``[M, k]`` scores and indices
  lets every rank keep the best k of the ``world · k`` per target, in the same (score descending, index ascending)
  order as a one-process search (:func:`topk_across_ranks`; tested equal to it).

Every rank must call these functions together (they are collectives) with the same targets. Without an initialised
process group they compute the one-process result.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tarot.geometry.scoring import _ordered, topk_neighbors
from tarot.geometry.whitening import (
    BLOCK_ROWS,
    RunningMoments,
    Whitener,
    check_fit_on,
    check_float_features,
    iter_blocks,
)

__all__ = ["allgather_moments", "fit_whitener_across_ranks", "row_offset", "topk_across_ranks"]


def _dist() -> Any:
    dist = torch.distributed
    return dist if dist.is_available() and dist.is_initialized() else None


def _world(group: Any) -> int:
    dist = _dist()
    return 1 if dist is None else dist.get_world_size(group)


def row_offset(n_local: int, group: Any = None) -> tuple[int, int]:
    """(first global row of this rank, total rows over all ranks) when rank r holds rows in rank order."""
    dist = _dist()
    if dist is None:
        return 0, int(n_local)
    counts = [torch.zeros(1, dtype=torch.int64) for _ in range(_world(group))]
    dist.all_gather(counts, torch.tensor([int(n_local)], dtype=torch.int64), group=group)
    sizes = [int(c.item()) for c in counts]
    rank = dist.get_rank(group)
    return int(sum(sizes[:rank])), int(sum(sizes))


def _pack(mom: RunningMoments) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([[float(mom.count)], mom.mean, mom.m2.ravel(), [mom.s4], mom.b3]))


def _unpack(vec: torch.Tensor, dim: int) -> RunningMoments:
    v = vec.numpy()
    k2 = dim * dim
    return RunningMoments(dim=dim, count=int(round(v[0])), mean=v[1 : 1 + dim].copy(),
                          m2=v[1 + dim : 1 + dim + k2].reshape(dim, dim).copy(), s4=float(v[1 + dim + k2]),
                          b3=v[2 + dim + k2 :].copy())


def allgather_moments(mom: RunningMoments, group: Any = None) -> RunningMoments:
    """The moments of all ranks' rows, merged in rank order (the same on every rank); ``mom`` is not changed."""
    dist = _dist()
    if dist is None:
        return RunningMoments(dim=mom.dim).merge(mom)
    vec = _pack(mom)
    parts = [torch.empty_like(vec) for _ in range(_world(group))]
    dist.all_gather(parts, vec, group=group)
    merged = RunningMoments(dim=mom.dim)
    for part in parts:
        merged.merge(_unpack(part, mom.dim))
    return merged


def fit_whitener_across_ranks(
    local_candidates: np.ndarray,
    targets: np.ndarray,
    *,
    ridge: float | str = "auto",
    fit_on: str = "both",
    block_rows: int = BLOCK_ROWS,
    group: Any = None,
) -> Whitener:
    """The :class:`~tarot.geometry.whitening.Whitener` of all ranks' candidates (and the targets, which every rank
    holds and which are counted once), as :func:`~tarot.geometry.whitening.whiten` fits it with ``fit_on``."""
    check_fit_on(fit_on)
    check_float_features(local_candidates, "candidate features")
    check_float_features(targets, "target features")
    dim = targets.shape[1]
    local = RunningMoments(dim=dim)
    if fit_on != "targets":
        for block in iter_blocks(local_candidates, block_rows):
            local.update(block)
    merged = allgather_moments(local, group=group)
    if fit_on != "candidates":
        for block in iter_blocks(targets, block_rows):
            merged.update(block)
    if merged.count == 0:
        raise ValueError("cannot fit whitening on zero rows")
    w = Whitener.from_moments(merged, ridge=ridge)
    w.diagnostics["fit_on"] = fit_on
    w.diagnostics["ranks"] = _world(group)
    return w


def topk_across_ranks(
    local_candidates: np.ndarray,
    targets: np.ndarray,
    k: int,
    *,
    offset: int | None = None,
    group: Any = None,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Each target's top-``k`` candidates over all ranks (scores ``[M, k]`` float32, global indices ``[M, k]``
    int64), the same on every rank and equal to :func:`~tarot.geometry.scoring.topk_neighbors` on all rows.

    ``offset`` is this rank's first global row (default: from :func:`row_offset`); ``kwargs`` go to
    ``topk_neighbors`` (block sizes, progress)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_local = local_candidates.shape[0]
    start, total = row_offset(n_local, group)  # (0, n_local) without a process group
    if offset is not None:
        start = int(offset)
    m = targets.shape[0]
    scores = np.full((m, k), -np.inf, dtype=np.float32)
    index = np.full((m, k), -1, dtype=np.int64)
    if n_local:
        s, i = topk_neighbors(local_candidates, targets, k, **kwargs)
        scores[:, : s.shape[1]], index[:, : i.shape[1]] = s, i + start
    dist = _dist()
    if dist is None:
        return scores[:, : min(k, n_local)], index[:, : min(k, n_local)]
    world = _world(group)
    s_parts = [torch.empty((m, k), dtype=torch.float32) for _ in range(world)]
    i_parts = [torch.empty((m, k), dtype=torch.int64) for _ in range(world)]
    dist.all_gather(s_parts, torch.from_numpy(scores), group=group)
    dist.all_gather(i_parts, torch.from_numpy(index), group=group)
    vals, idx = torch.cat(s_parts, 1), torch.cat(i_parts, 1)
    # padding (-inf, -1) sorts after every real entry; at least min(k, total) real entries exist per target
    idx = torch.where(torch.isinf(vals), torch.iinfo(torch.int64).max, idx)
    vals, idx = _ordered(vals, idx)
    keep = min(k, total)
    return vals[:, :keep].numpy().copy(), idx[:, :keep].numpy().copy()
