r"""Algorithm 2 — OTM: OT-distance minimisation over neighbourhood depth; estimates the selection ratio (spec §9).

For each of K folds of the targets (shuffled like scikit-learn's ``KFold(K, shuffle=True, random_state=seed)``), the
fold's targets T_sel grow a neighbourhood C_d = ∪_{t∈T_sel} top-d(t) (only neighbours with cosine > ``min_score``) and
the OT distance v_d = OT_ε(uniform on C_d, uniform on T_eval) to the *other* folds is tracked. The fold keeps the
**argmin** depth d*_f (the reference keeps the depth that failed to improve, defect B5) and stops after ``patience``
non-improving depths. The selection is ∪_f C_{d*_f}; its size fixes the ratio.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from tarot.geometry.scoring import topk_neighbors
from tarot.options import OTMOptions
from tarot.ot import entropic_ot, warm_start
from tarot.selectors.base import NeighbourLayers, Selection

ValueFn = Callable[[np.ndarray, np.ndarray, int], float]
log = logging.getLogger(__name__)


def kfold_splits(n_targets: int, n_folds: int, seed: int) -> list[np.ndarray]:
    """Test folds of ``KFold(n_folds, shuffle=True, random_state=seed)``: a ``RandomState(seed)`` shuffle of
    ``arange(n)``, cut into consecutive folds whose first ``n % K`` get one extra element."""
    if not 2 <= n_folds <= n_targets:
        raise ValueError(f"OTM needs 2 <= folds <= number of targets ({n_targets}), got {n_folds}")
    idx = np.arange(n_targets)
    np.random.RandomState(seed).shuffle(idx)
    sizes = np.full(n_folds, n_targets // n_folds)
    sizes[: n_targets % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [idx[bounds[i] : bounds[i + 1]] for i in range(n_folds)]


def otm(
    candidates: np.ndarray,
    targets: np.ndarray,
    n: int | None = None,
    *,
    folds: int = 10,
    fold_seed: int = 42,
    min_score: float | None = 0.0,
    patience: int = 0,
    min_improvement: float = 0.0,
    max_depth: int | None = None,
    eps: float = 1e-4,
    ot_tol: float = 1e-5,
    ot_value_tol: float | None = 1e-7,
    ot_max_iter: int = 2000,
    value_fn: ValueFn | None = None,
    progress: bool = True,
) -> Selection:
    """Run OTM and return the union of the per-fold argmin neighbourhoods.

    Parameters
    ----------
    candidates, targets : numpy.ndarray
        Whitened unit rows.
    n : None
        OTM estimates its own size; passing a budget is an error (use ``fixed_size``).
    folds, fold_seed : int
        Target folds (reference: 10, seed 42).
    min_score : float or None
        Only neighbours with cosine > ``min_score`` enter C_d (reference: 0, i.e. WFD < √2); None disables. A fold
        none of whose targets has such a neighbour (common when rows < dims) falls back to rank-based
        neighbourhoods (``min_score=None``) for that fold; the fallback is logged and listed in
        ``diagnostics["otm"]["rank_fallback_folds"]``, so OTM always returns a non-empty selection.
    patience : int
        Non-improving depths tolerated after the best one (reference: 0).
    min_improvement : float
        A depth improves only if v_d < best − min_improvement.
    max_depth : int, optional
        Depth cap; hitting it is reported in the diagnostics (``capped_folds``).
    value_fn : callable, optional
        ``value_fn(members, eval_targets, depth) -> float`` replacing the OT value (for tests of the stop rule).

    Returns
    -------
    Selection
        ``diagnostics["otm"]["folds"]``: per fold ``depths``, ``sizes``, ``values``, ``best_depth``, ``best_value``,
        ``stop_reason``.
    """
    if n is not None:
        raise ValueError("otm estimates the selection size itself; pass ratio='auto' (or use fixed_size for a budget)")
    OTMOptions(folds=folds, fold_seed=fold_seed, min_score=min_score, patience=patience,
               min_improvement=min_improvement, max_depth=max_depth, ot_max_iter=ot_max_iter)
    N, M = candidates.shape[0], targets.shape[0]
    splits = kfold_splits(M, folds, fold_seed)
    chosen = np.zeros(N, dtype=bool)
    nearest = np.full(M, np.nan)
    fold_diags, capped, fallback = [], [], []
    # every fold's first neighbour lists in one pass over the candidates (deeper ones per fold, when needed)
    first_scores, first_index = topk_neighbors(candidates, targets, 32, progress=progress)
    bar = tqdm(total=folds, desc="OTM folds", disable=not progress)
    for fi, sel_targets in enumerate(splits):
        eval_targets = np.setdiff1d(np.arange(M), sel_targets)
        T_eval = targets[eval_targets]
        layers = NeighbourLayers(candidates, targets[sel_targets], depth=32, min_score=min_score,
                                 known=(first_scores[sel_targets], first_index[sel_targets]))
        nearest[sel_targets] = layers.scores[:, 0]
        fold_min_score = min_score
        if min_score is not None and len(layers.layer(1)) == 0:
            layers = NeighbourLayers(candidates, targets[sel_targets], depth=32, min_score=None,
                                     known=(first_scores[sel_targets], first_index[sel_targets]))
            fold_min_score = None
            fallback.append(fi)
        best, best_depth, best_members = np.inf, 0, np.zeros(0, dtype=np.int64)
        depths, sizes, values = [], [], []
        prev_size, since_best, stop = 0, 0, "exhausted"
        members_prev = np.zeros(0, dtype=np.int64)
        warm = None
        d = 0
        while True:
            d += 1
            if max_depth is not None and d > max_depth:
                stop = "max_depth"
                capped.append(fi)
                break
            if d > layers.depth and layers.exhausted:
                break
            layers.ensure_depth(d)
            new = layers.layer(d)
            if len(new) == 0:
                stop = "exhausted" if prev_size > 0 or d > 1 else "no_neighbours"
                break
            members = np.concatenate([members_prev, new])  # ordered: earlier depths first (warm-start alignment)
            if value_fn is not None:
                v = float(value_fn(np.sort(members), eval_targets, d))
            else:
                X = candidates[members]
                warm = entropic_ot(X, T_eval, eps=eps, tol=ot_tol, value_tol=ot_value_tol, max_iter=ot_max_iter,
                                   init=warm_start(warm, X, T_eval, eps=eps), support=getattr(warm, "support", None))
                v = warm.value
            depths.append(d)
            sizes.append(int(len(members)))
            values.append(v)
            members_prev, prev_size = members, len(members)
            if v < best - min_improvement:
                best, best_depth, best_members, since_best = v, d, members, 0
            else:
                since_best += 1
                if since_best > patience:
                    stop = "no_improvement"
                    break
        chosen[best_members] = True
        fold_diags.append({"fold": fi, "depths": depths, "sizes": sizes, "values": values, "best_depth": best_depth,
                           "best_value": None if not np.isfinite(best) else best, "best_size": int(len(best_members)),
                           "stop_reason": stop, "n_select_targets": int(len(sel_targets)),
                           "min_score": fold_min_score})
        bar.update()
    bar.close()
    idx = np.flatnonzero(chosen)
    if fallback:
        log.warning("OTM: %d of %d folds had no candidate with whitened cosine > %g to any of their targets; they "
                    "used rank-based neighbourhoods (min_score=None)", len(fallback), folds, min_score)
    if len(idx) == 0:  # cannot happen: depth 1 of a rank-based fold always holds a candidate with a finite value
        raise RuntimeError("OTM selected nothing although every fold had neighbours (non-finite OT values?)")
    diag = {"otm": {"folds": fold_diags, "n_folds": folds, "fold_seed": fold_seed, "patience": patience,
                    "min_score": min_score, "capped_folds": capped, "rank_fallback_folds": fallback,
                    "estimated_ratio": len(idx) / N}}
    return Selection(indices=idx, diagnostics=diag, nearest=nearest)
