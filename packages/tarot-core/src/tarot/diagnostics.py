r"""Selection diagnostics: what a selection covers, how concentrated its weights are, how it relates to simpler
selections — computed the same way for every method (:func:`selection_diagnostics`).

All quantities are on whitened unit rows (cosine :math:`s_{ij} = \langle\hat z_i, \hat z_j\rangle`):

``target_coverage``
    for every target j, its nearest candidate in the whole pool (:math:`\max_i s_{ij}`) and its nearest *other*
    target (:math:`\max_{j'\ne j} s_{jj'}`). A target is *covered by the pool* when its nearest candidate is at
    least as close as its nearest other target (the pool holds something as similar to it as the target set
    itself does); ``fraction_positive`` counts targets with any candidate of positive cosine (WFD < √2).
``clusters``
    the targets are grouped by k-means (seeded) into ``n_clusters`` groups; every selected candidate is assigned to
    the group of its nearest target. A group is *uncovered* when it holds at least 5 % of the targets but receives
    less than a quarter of that share of the selection (by realised repeat counts). The list names each group's
    target share, selection share and size.
``weights``
    effective sample size :math:`(\sum_i r_i)^2 / \sum_i r_i^2` of the realised repeat counts and its fraction of
    the selection size (1 = uniform).
``overlap``
    Jaccard overlap and fraction shared with ``topk_mean`` of the same size and with one seeded random selection of
    the same size (whose expected fraction is n/N).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tarot.geometry.scoring import mean_scores, top_n_by_score, topk_neighbors


def _nearest_other_target(Zt: np.ndarray, block: int = 2048) -> np.ndarray:
    """max_{j' ≠ j} ⟨ẑ_j, ẑ_j'⟩ for every target, in blocks (never an M×M matrix beyond ``block`` rows)."""
    M = Zt.shape[0]
    out = np.full(M, -np.inf)
    if M < 2:
        return out
    T = np.asarray(Zt, dtype=np.float32)
    for s in range(0, M, block):
        S = T[s : s + block] @ T.T
        S[np.arange(S.shape[0]), np.arange(s, s + S.shape[0])] = -np.inf
        out[s : s + S.shape[0]] = S.max(axis=1)
    return out


def _nearest_target(Zsel: np.ndarray, Zt: np.ndarray, block: int = 8192) -> np.ndarray:
    """Index of the nearest target of every row of ``Zsel`` (ties: lower index)."""
    T = np.asarray(Zt, dtype=np.float32)
    out = np.empty(Zsel.shape[0], dtype=np.int64)
    for s in range(0, Zsel.shape[0], block):
        out[s : s + block] = np.argmax(np.asarray(Zsel[s : s + block], dtype=np.float32) @ T.T, axis=1)
    return out


def _target_clusters(Zt: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    from scipy.cluster.vq import kmeans2

    if n_clusters <= 1:
        return np.zeros(Zt.shape[0], dtype=np.int64)
    _, labels = kmeans2(np.asarray(Zt, dtype=np.float64), n_clusters, minit="++", seed=seed)
    return labels.astype(np.int64)


def selection_diagnostics(Zc: np.ndarray, Zt: np.ndarray, indices: np.ndarray, counts: np.ndarray | None = None,
                          seed: int = 0, n_clusters: int | None = None,
                          nearest: np.ndarray | None = None,
                          nearest_target: np.ndarray | None = None) -> dict[str, Any]:
    """Coverage, cluster, weight and overlap diagnostics of one selection (see the module docstring).

    Parameters
    ----------
    Zc, Zt : numpy.ndarray
        Whitened unit candidate [N, k] and target [M, k] rows (the space the selection was made in).
    indices : numpy.ndarray
        Selected candidate indices.
    counts : numpy.ndarray, optional
        Realised repeat counts aligned with ``indices`` (None: one each).
    seed : int
        Seed of the k-means and of the random comparison selection.
    n_clusters : int, optional
        Target groups (default min(8, max(1, M // 10))).
    nearest : numpy.ndarray, optional
        Every target's largest cosine to any candidate, when the selector already has it (NaN entries are
        computed here); otherwise one streamed pass over the candidates computes it.
    nearest_target : numpy.ndarray, optional
        The nearest target of every selected row (aligned with ``indices``), when the caller has it (e.g. from the
        products an OT solve kept); otherwise computed here.
    """
    N, M = Zc.shape[0], Zt.shape[0]
    idx = np.asarray(indices, dtype=np.int64)
    n = len(idx)
    r = np.ones(n) if counts is None else np.asarray(counts, dtype=np.float64)
    best_cand = np.full(M, np.nan) if nearest is None else np.asarray(nearest, dtype=np.float64).copy()
    missing = np.flatnonzero(np.isnan(best_cand))
    if len(missing):
        best_cand[missing] = topk_neighbors(Zc, Zt[missing], 1)[0][:, 0]
    best_tgt = _nearest_other_target(Zt)
    covered = best_cand >= best_tgt
    out: dict[str, Any] = {
        "target_coverage": {
            "fraction_covered_by_pool": float(covered.mean()),
            "fraction_positive": float((best_cand > 0).mean()),
            "nearest_candidate_cosine_median": float(np.median(best_cand)),
            "nearest_other_target_cosine_median": float(np.median(best_tgt)) if M > 1 else None,
        }
    }
    k = min(8, max(1, M // 10)) if n_clusters is None else int(n_clusters)
    labels = _target_clusters(Zt, k, seed)
    t_share = np.bincount(labels, minlength=k) / M
    if n:
        near = _nearest_target(Zc[idx], Zt) if nearest_target is None else np.asarray(nearest_target, np.int64)
        assigned = labels[near]
        s_share = np.bincount(assigned, weights=r, minlength=k) / r.sum()
    else:
        s_share = np.zeros(k)
    groups = [{"cluster": c, "targets": int(round(t_share[c] * M)), "target_share": float(t_share[c]),
               "selection_share": float(s_share[c])} for c in range(k)]
    out["clusters"] = {
        "n_clusters": k,
        "groups": groups,
        "uncovered": [g["cluster"] for g in groups if g["target_share"] >= 0.05
                      and g["selection_share"] < 0.25 * g["target_share"]],
        "share_l1": float(np.abs(t_share - s_share).sum()),
    }
    ess = float(r.sum() ** 2 / (r**2).sum()) if n else 0.0
    out["weights"] = {"effective_sample_size": ess, "ess_fraction": ess / n if n else 0.0,
                      "max_repeat": int(r.max()) if n else 0}
    overlap: dict[str, Any] = {}
    if 0 < n < N:
        sel = set(idx.tolist())
        top = set(top_n_by_score(mean_scores(Zc, Zt), n).tolist())
        rnd = set(np.random.default_rng(seed).choice(N, size=n, replace=False).tolist())
        for name, other in (("topk_mean", top), ("random", rnd)):
            inter = len(sel & other)
            overlap[name] = {"shared_fraction": inter / n, "jaccard": inter / len(sel | other)}
        overlap["random_expected_fraction"] = n / N
    out["overlap"] = overlap
    return out
