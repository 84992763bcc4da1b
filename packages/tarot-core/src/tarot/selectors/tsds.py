r"""TSDS baseline (Liu et al., *TSDS: Data Selection for Task-Specific Model Finetuning*, NeurIPS 2024).

TSDS turns selection into a probability distribution p over the candidates that trades off matching the targets
(an optimal-transport cost from the target measure to p) against diversity (a kernel-density penalty that spreads
mass away from near-duplicates), then draws the training sample from p with replacement. Our re-implementation of
the authors' algorithm, on the same whitened unit rows as every other selector (Euclidean distance
:math:`d = \sqrt{2 - 2s}`):

1. every target j keeps its ``max_k`` nearest candidates, distances :math:`d_{j0} \le d_{j1} \le \dots`;
2. every candidate c in the union of those lists gets a density
   :math:`\kappa_c = \sum_{c'} \max(0, 1 - \|z_c - z_{c'}\|^2/\sigma^2)` over its ``kde_k`` nearest members of
   the union (itself included, so κ ≥ 1); near-duplicates share their mass through weights :math:`w = 1/\kappa`;
3. a common level s fixes how far down its list every target spreads its mass 1/M: with cumulative weights
   :math:`W_j(k) = \sum_{i\le k} w_{ji}`, events :math:`(j, k)` are visited in increasing :math:`W_j(k)`; each
   updates target j's marginal transport cost :math:`c_j = d_{j,k+1}\,W_j(k) - \sum_{i \le k} d_{ji} w_{ji}`
   (the extra cost of pushing mass one neighbour further), and the sweep stops once
   :math:`\frac{\alpha}{C}\sum_j c_j \ge (1-\alpha) M`; s is the level of the stopping event;
4. target j gives :math:`w_{jk}/(M s)` to each neighbour k up to its last visited depth and the rest of its 1/M to
   the next one; p is the sum over targets;
5. n draws from p with replacement (seeded): the selected indices and their repeat counts.

``alpha`` weighs the transport cost: ``alpha`` → 1 keeps the mass on each target's nearest neighbours (alignment),
``alpha`` → 0 spreads it further down the lists (diversity); ``C`` is on the scale of the distances (1 for unit
rows). A baseline, clearly labelled: it is not part of TAROT.
"""

from __future__ import annotations

import numpy as np

from tarot.geometry.scoring import topk_neighbors
from tarot.options import TSDSOptions
from tarot.selectors.base import Selection, check_budget


def _densities(candidates: np.ndarray, members: np.ndarray, kde_k: int, sigma: float) -> np.ndarray:
    """Triangular-kernel KDE of every member over its ``kde_k`` nearest members (cosine → squared distance)."""
    if sigma == 0:
        return np.ones(len(members))
    Z = np.asarray(candidates[members], dtype=np.float32)
    sims, _ = topk_neighbors(Z, Z, min(kde_k, len(members)))
    d2 = np.clip(2.0 - 2.0 * sims.astype(np.float64), 0.0, None)
    return np.clip(1.0 - d2 / sigma**2, 0.0, None).sum(axis=1)


def tsds_probabilities(candidates: np.ndarray, targets: np.ndarray, *, alpha: float = 0.5, C: float = 1.0,
                       sigma: float = 0.75, max_k: int = 5000, kde_k: int = 1000) -> tuple[np.ndarray, dict]:
    """The TSDS sampling distribution p over the candidates (steps 1–4 of the module docstring)."""
    N, M = candidates.shape[0], targets.shape[0]
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"tsds: alpha must lie in (0, 1), got {alpha}")
    if C <= 0 or sigma < 0:
        raise ValueError(f"tsds: C must be > 0 and sigma >= 0, got C={C}, sigma={sigma}")
    K = int(min(max_k, max(N // 10, 2), N))
    if K < 2:
        raise ValueError(f"tsds needs at least 2 candidates per target list, got N={N}")
    kde_k = int(min(kde_k, max(N // 10, 1)))
    sims, idx = topk_neighbors(candidates, targets, K)
    dist = np.sqrt(np.clip(2.0 - 2.0 * sims.astype(np.float64), 0.0, None))  # [M, K], ascending per row
    members, inverse = np.unique(idx, return_inverse=True)
    kappa = _densities(candidates, members, kde_k, sigma)[inverse.reshape(idx.shape)]
    w = 1.0 / kappa
    # events (j, k) for k = 0 .. K-2, visited in increasing cumulative weight W_j(k); ties: depth, then target
    W = np.cumsum(w, axis=1)[:, : K - 1]
    Dw = np.cumsum(dist * w, axis=1)[:, : K - 1]
    cost = dist[:, 1:K] * W - Dw  # c_j after event (j, k)
    prev = np.concatenate([np.zeros((M, 1)), cost[:, :-1]], axis=1)
    flat = np.lexsort((np.repeat(np.arange(M), K - 1), np.tile(np.arange(K - 1), M), W.ravel()))
    total = np.cumsum((cost - prev).ravel()[flat])
    hit = np.flatnonzero(alpha / C * total >= (1.0 - alpha) * M)
    stop = int(hit[0]) if len(hit) else len(flat) - 1
    s = float(W.ravel()[flat[stop]])
    last = np.zeros(M, dtype=np.int64)
    done = flat[:stop] if len(hit) else flat
    np.maximum.at(last, done // (K - 1), done % (K - 1))
    p = np.zeros(N)
    keep = np.arange(K)[None, :] <= last[:, None]
    share = np.where(keep, w / (M * s), 0.0)
    np.add.at(p, idx[keep], share[keep])
    rest = np.clip(1.0 / M - share.sum(axis=1), 0.0, None)
    np.add.at(p, idx[np.arange(M), last + 1], rest)
    info = {"neighbours_per_target": K, "kde_neighbours": kde_k, "level": s, "stopped": bool(len(hit)),
            "mean_depth": float(last.mean() + 1), "near_duplicates_mean": float(np.mean(kappa) - 1.0)}
    return p / p.sum(), info


def tsds(candidates: np.ndarray, targets: np.ndarray, n: int, *, alpha: float = 0.5, C: float = 1.0,
         sigma: float = 0.75, max_k: int = 5000, kde_k: int = 1000, seed: int = 0) -> Selection:
    """TSDS selection: ``n`` draws with replacement from :func:`tsds_probabilities` (seeded); the distinct indices
    with their draw counts as repeat counts (``Selection.counts``)."""
    n = check_budget(n, candidates.shape[0])
    TSDSOptions(alpha=alpha, C=C, sigma=sigma, max_k=max_k, kde_k=kde_k)  # bounds checked in one place
    p, info = tsds_probabilities(candidates, targets, alpha=alpha, C=C, sigma=sigma, max_k=max_k, kde_k=kde_k)
    draws = np.random.default_rng(seed).multinomial(n, p)
    idx = np.flatnonzero(draws)
    return Selection(indices=idx, scores=p, counts=draws[idx].astype(np.int64),
                     diagnostics={"tsds": {**info, "draws": int(n), "distinct": int(len(idx)), "alpha": alpha}})
