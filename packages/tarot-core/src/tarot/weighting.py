r"""Data weighting from OT potentials (spec §10) and helpers to train on a weighted selection.

One entropic mirror-descent step on :math:`a \mapsto \mathrm{OT}_\varepsilon(a, b)`, whose gradient is the potential
f of the current selection measure:

.. math::

    z_i = \frac{f_i - \bar f}{\operatorname{std}(f) + 10^{-12}}, \qquad
    w_i = e^{-\beta z_i}, \qquad a_i = w_i / \textstyle\sum_j w_j.

**Lower potential ⇒ larger weight** (those samples serve under-supplied targets). The standardisation makes the
weights invariant to the arbitrary shift f → f + t and to a rescaling f → c·f (c > 0). Integer repeat counts give
every selected sample ``r_min`` and distribute the rest by largest remainders so that Σ r_i = R exactly (defaults
R = 2n, r_min = 1: nothing is dropped).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def potential_weights(f: np.ndarray, beta: float = 0.5, max_ratio: float | None = None) -> np.ndarray:
    """Normalised weights a ∝ exp(−β·standardise(f)); optional clip of max/min weight ratio."""
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 1 or len(f) == 0:
        raise ValueError(f"potentials must be a non-empty 1-D array, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("potentials contain NaN or inf")
    z = (f - f.mean()) / (f.std() + 1e-12)
    logw = -beta * z
    if max_ratio is not None:
        if max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
        logw = np.maximum(logw, logw.max() - np.log(max_ratio))
    w = np.exp(logw - logw.max())
    return w / w.sum()


def repeat_counts(a: np.ndarray, total: int | None = None, min_repeats: int = 1) -> np.ndarray:
    """Integer repeats r with Σ r = ``total`` (default 2n) and r ≥ ``min_repeats``, by largest remainders.

    Every sample gets ``min_repeats``; the remaining R − r_min·n are shared in proportion to ``a`` (floors first,
    then +1 for the largest fractional parts, ties to the lower index).
    """
    a = np.asarray(a, dtype=np.float64)
    n = len(a)
    total = 2 * n if total is None else int(total)
    if min_repeats < 0:
        raise ValueError(f"min_repeats must be >= 0, got {min_repeats}")
    rest = total - min_repeats * n
    if rest < 0:
        raise ValueError(f"total repeats {total} < min_repeats × n = {min_repeats * n}")
    share = a / a.sum() * rest
    base = np.floor(share).astype(np.int64)
    left = rest - int(base.sum())
    order = np.lexsort((np.arange(n), -(share - base)))
    base[order[:left]] += 1
    return base + min_repeats


def repeat_indices(result, include_targets: bool = False) -> np.ndarray:
    """Flat candidate index list with every selected index repeated by its weight (sorted).

    With ``include_targets`` and a result that merges targets, target j is appended as ``-(j + 1)`` … — use
    :class:`WeightedSubset` for mixed candidate/target data sets instead.
    """
    idx = np.repeat(result.indices, result.repeat_counts())
    if include_targets and result.merged_targets:
        tgt = -(np.arange(result.merged_targets) + 1)
        idx = np.concatenate([idx, np.repeat(tgt, result.target_repeats)])
    return idx


class WeightedSubset(Dataset):
    """The selected candidates, each repeated by its weight, optionally followed by the merged target samples.

    Parameters
    ----------
    candidates : Dataset
        The full candidate data set the result's indices refer to.
    result : SelectionResult
    targets : Dataset, optional
        Required when the result merges targets (``result.merged_targets > 0``).
    """

    def __init__(self, candidates: Dataset, result, targets: Dataset | None = None) -> None:
        if len(candidates) != result.n_candidates:  # type: ignore[arg-type]
            raise ValueError(f"candidate data set has {len(candidates)} items, the selection was made on "  # type: ignore[arg-type]
                             f"{result.n_candidates}")
        if result.merged_targets and targets is None:
            raise ValueError("the selection merges the targets into training: pass targets=<target data set>")
        if targets is not None and result.merged_targets and len(targets) != result.merged_targets:  # type: ignore[arg-type]
            raise ValueError(f"target data set has {len(targets)} items, the result merged {result.merged_targets}")  # type: ignore[arg-type]
        self.candidates, self.targets = candidates, targets
        self.index = np.repeat(result.indices, result.repeat_counts())
        self.target_index = (np.repeat(np.arange(result.merged_targets), result.target_repeats)
                             if result.merged_targets else np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.index) + len(self.target_index)

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        if i < len(self.index):
            return self.candidates[int(self.index[i])]
        return self.targets[int(self.target_index[i - len(self.index)])]  # type: ignore[index]


class RepeatSampler(Sampler[int]):
    """Sampler over the candidate data set that yields every selected index ``weight`` times per epoch, shuffled
    with a seeded generator (use with ``DataLoader(candidates, sampler=RepeatSampler(result))``)."""

    def __init__(self, result, shuffle: bool = True, seed: int = 0) -> None:
        self.index = np.repeat(result.indices, result.repeat_counts())
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self):
        order = np.arange(len(self.index))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.index), generator=g).numpy()
        return iter(self.index[order].tolist())

