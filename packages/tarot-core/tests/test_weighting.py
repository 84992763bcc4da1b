"""Potential weighting (spec §10): sign, invariances, integer repeats, OTM union moved toward the proportions."""

import numpy as np
import pytest
import tarot
import torch
from tarot.geometry.whitening import whiten
from tarot.ot import entropic_ot
from tarot.weighting import RepeatSampler, WeightedSubset, potential_weights, repeat_counts, repeat_indices


@pytest.fixture(scope="module")
def overcovered():
    """A selection that over-covers mode 0 of the mixture."""
    m = tarot.make_mixture(seed=1)
    Zc, Zt, _ = whiten(m.candidates, m.targets)
    modes = m.candidate_modes
    idx = np.sort(np.concatenate([np.flatnonzero(modes == 0)[:200], np.flatnonzero(modes == 1)[:40],
                                  np.flatnonzero(modes == 2)[:40]]))
    return m, Zc, Zt, idx


def test_weighted_ot_below_uniform_below_flipped(overcovered):
    m, Zc, Zt, idx = overcovered
    base = entropic_ot(Zc[idx], Zt, value_tol=1e-8)
    a = potential_weights(base.f, beta=0.5)
    a_flip = potential_weights(base.f, beta=-0.5)
    w = entropic_ot(Zc[idx], Zt, a=a, value_tol=1e-8).value
    flip = entropic_ot(Zc[idx], Zt, a=a_flip, value_tol=1e-8).value
    assert w < base.value < flip
    # lower potential -> larger weight; the over-covered mode loses mass
    shares = m.mode_shares(idx, a)
    assert shares["mode0"] < m.mode_shares(idx)["mode0"]


def test_weights_invariant_to_shift_and_scale():
    f = np.random.default_rng(0).normal(size=50)
    a = potential_weights(f)
    assert np.allclose(a, potential_weights(f + 123.4))
    assert np.allclose(a, potential_weights(f * 7.5))
    assert a.sum() == pytest.approx(1.0)
    assert np.argmax(a) == np.argmin(f)
    clipped = potential_weights(f, beta=3.0, max_ratio=4.0)
    assert clipped.max() / clipped.min() <= 4.0 + 1e-9


@pytest.mark.parametrize("total,rmin", [(None, 1), (500, 0), (333, 2)])
def test_repeat_counts_sum_and_floor(total, rmin):
    a = potential_weights(np.random.default_rng(1).normal(size=97), beta=1.0)
    r = repeat_counts(a, total=total, min_repeats=rmin)
    assert r.sum() == (2 * 97 if total is None else total)
    assert r.min() >= rmin
    with pytest.raises(ValueError, match="min_repeats"):
        repeat_counts(a, total=10, min_repeats=1)


def test_otm_weighting_moves_union_toward_proportions():
    m = tarot.make_mixture(seed=0)
    res = tarot.select(m.candidates, m.targets, method="otm", ratio="auto", weighting=True, progress=False)

    def l1(w):
        sh = m.mode_shares(res.indices, w)
        return sum(abs(sh[f"mode{i}"] - p) for i, p in enumerate(m.proportions)) + sh["off_target"]

    assert l1(res.probabilities) < l1(None)
    assert l1(res.weights) < l1(None)
    assert res.diagnostics["weighted_ot"] < res.ot_distance
    assert not res.weights.flags.writeable


def test_weighted_subset_sampler_and_repeat_indices():
    data = torch.utils.data.TensorDataset(torch.arange(10.0))
    res = tarot.SelectionResult(indices=np.array([1, 4, 7]), method="x", n_candidates=10, ratio=0.3,
                                weights=np.array([1, 3, 2]), merged_targets=2, target_repeats=2)
    targets = torch.utils.data.TensorDataset(torch.tensor([100.0, 200.0]))
    ds = WeightedSubset(data, res, targets=targets)
    assert [float(ds[i][0]) for i in range(len(ds))] == [1, 4, 4, 4, 7, 7, 100, 100, 200, 200]
    assert list(repeat_indices(res)) == [1, 4, 4, 4, 7, 7]
    sampler = RepeatSampler(res, seed=3)
    assert sorted(sampler) == [1, 4, 4, 4, 7, 7]
    assert list(RepeatSampler(res, seed=3)) == list(sampler)
    with pytest.raises(ValueError, match="merges the targets"):
        WeightedSubset(data, res)
