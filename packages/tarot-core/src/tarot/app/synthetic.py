"""Synthetic feature mixtures with known structure, for tests, the core demo and benchmarks.

A *mode* is a group of ``clusters_per_mode`` unit directions scattered (``spread``) around the mode's own axis; a
sample of a mode picks one of its directions and adds isotropic Gaussian noise, then the row is L2-normalised.
Because the many directions of all modes spread over every dimension, the pooled covariance is close to isotropic
and the mode structure survives whitening (a few tight clusters along a few axes would be flattened by it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Mixture:
    """Candidates and targets drawn from known modes.

    Attributes
    ----------
    candidates, targets : numpy.ndarray
        float32 rows, [N, d] and [M, d].
    candidate_modes, target_modes : numpy.ndarray
        Mode of each row (0…n_target_modes−1; ``-1`` marks the off-target mode of the candidate pool).
    proportions : tuple
        Target mode proportions.
    """

    candidates: np.ndarray
    targets: np.ndarray
    candidate_modes: np.ndarray
    target_modes: np.ndarray
    proportions: tuple
    config: dict = field(default_factory=dict)

    @property
    def candidate_sources(self) -> list[str]:
        """Per-candidate source labels ``mode0``… and ``off_target``."""
        return ["off_target" if m < 0 else f"mode{m}" for m in self.candidate_modes]

    def mode_shares(self, indices: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        """Share of the (optionally weighted) selection per target mode and off-target."""
        w = np.ones(len(indices)) if weights is None else np.asarray(weights, dtype=np.float64)
        modes = self.candidate_modes[np.asarray(indices, dtype=np.int64)]
        total = float(w.sum())
        out = {f"mode{m}": float(w[modes == m].sum() / total) for m in range(len(self.proportions))}
        out["off_target"] = float(w[modes < 0].sum() / total)
        return out


def make_mixture(
    n_per_mode: int = 300,
    n_off_target: int = 600,
    n_targets: int = 200,
    proportions: tuple[float, ...] = (0.6, 0.3, 0.1),
    dim: int = 16,
    clusters_per_mode: int = 6,
    spread: float = 0.8,
    noise: float = 0.12,
    seed: int = 0,
) -> Mixture:
    """Draw the §9 mixture: target modes with ``proportions``, candidates ``n_per_mode`` per mode plus an off-target
    mode of ``n_off_target`` rows.

    Target counts per mode are rounded with largest remainders so that they sum to ``n_targets``.
    """
    if abs(sum(proportions) - 1.0) > 1e-9:
        raise ValueError(f"proportions must sum to 1, got {proportions}")
    rng = np.random.default_rng(seed)
    n_modes = len(proportions)
    axes = rng.normal(size=(n_modes + 1, 1, dim))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    centres = axes + spread * rng.normal(size=(n_modes + 1, clusters_per_mode, dim)) / np.sqrt(dim)
    centres /= np.linalg.norm(centres, axis=-1, keepdims=True)

    def draw(mode: int, count: int) -> np.ndarray:
        pick = rng.integers(0, clusters_per_mode, size=count)
        x = centres[mode, pick] + noise * rng.normal(size=(count, dim))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    raw = np.asarray(proportions) * n_targets
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n_targets - counts.sum()]:
        counts[i] += 1
    cand = [draw(m, n_per_mode) for m in range(n_modes)] + [draw(n_modes, n_off_target)]
    cand_modes = np.concatenate([np.full(n_per_mode, m) for m in range(n_modes)] + [np.full(n_off_target, -1)])
    tgt = [draw(m, c) for m, c in enumerate(counts)]
    tgt_modes = np.concatenate([np.full(c, m) for m, c in enumerate(counts)])
    cfg = dict(n_per_mode=n_per_mode, n_off_target=n_off_target, n_targets=n_targets, proportions=list(proportions),
               dim=dim, clusters_per_mode=clusters_per_mode, spread=spread, noise=noise, seed=seed)
    return Mixture(
        candidates=np.concatenate(cand).astype(np.float32),
        targets=np.concatenate(tgt).astype(np.float32),
        candidate_modes=cand_modes,
        target_modes=tgt_modes,
        proportions=tuple(proportions),
        config=cfg,
    )
