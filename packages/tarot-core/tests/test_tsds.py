"""TSDS baseline (Liu et al. 2024): probabilities, the alpha trade-off, near-duplicate penalty, front door."""

import numpy as np
import pytest
import tarot
from tarot.geometry.whitening import unit_rows, whiten
from tarot.selectors.tsds import tsds, tsds_probabilities


def _cloud(seed=0):
    rng = np.random.default_rng(seed)
    C = unit_rows(rng.normal(size=(400, 8)), np.float64)
    T = unit_rows(C[:20] + 0.05 * rng.normal(size=(20, 8)), np.float64)  # targets next to the first 20 candidates
    return C, T


def test_probabilities_are_a_distribution_near_the_targets():
    C, T = _cloud()
    p, info = tsds_probabilities(C, T, max_k=40, kde_k=40)
    assert p.shape == (400,) and p.min() >= 0 and p.sum() == pytest.approx(1.0)
    assert p[:20].sum() > 2 * 20 / 400  # more than twice a uniform distribution's share
    aligned, _ = tsds_probabilities(C, T, alpha=0.99, max_k=40, kde_k=40)
    assert aligned[:20].sum() > 0.95  # all but pure alignment: each target's own near copy
    near = np.argsort(-(C @ T.T).max(1))[:100]  # the quarter of the pool closest to some target
    assert p[near].sum() > 0.5 > 100 / 400
    assert info["neighbours_per_target"] == 40


def test_alpha_trades_alignment_for_diversity():
    C, T = _cloud()
    spread = {}
    for a in (0.05, 0.5, 0.95):
        p, info = tsds_probabilities(C, T, alpha=a, max_k=40, kde_k=40)
        spread[a] = (np.count_nonzero(p > 1e-12), info["mean_depth"])
    # small alpha (diversity) spreads the mass over more candidates, deeper down every target's list
    assert spread[0.05][0] >= spread[0.5][0] >= spread[0.95][0]
    assert spread[0.05][1] > spread[0.5][1] > spread[0.95][1]
    with pytest.raises(ValueError, match="alpha"):
        tsds_probabilities(C, T, alpha=1.0)


def test_near_duplicates_share_their_mass():
    C, T = _cloud(1)
    dup = np.concatenate([C, np.repeat(C[:1], 9, axis=0)])  # candidate 0 appears ten times
    p_plain, _ = tsds_probabilities(C, T, sigma=0.3, max_k=30, kde_k=30)
    p_dup, _ = tsds_probabilities(dup, T, sigma=0.3, max_k=30, kde_k=30)
    copies = np.r_[0, np.arange(400, 409)]
    assert p_dup[copies].sum() < 3 * p_plain[0]  # ten copies do not get ten times the mass
    p_nokde, _ = tsds_probabilities(dup, T, sigma=0.0, max_k=30, kde_k=30)
    assert p_nokde[copies].sum() > p_dup[copies].sum()


def test_selection_draws_n_samples_and_front_door_uses_them_as_repeats():
    C, T = _cloud(2)
    sel = tsds(C, T, 60, seed=3, max_k=40, kde_k=40)
    assert sel.counts.sum() == 60 and len(sel.indices) == len(np.unique(sel.indices)) <= 60
    again = tsds(C, T, 60, seed=3, max_k=40, kde_k=40)
    assert np.array_equal(sel.indices, again.indices) and np.array_equal(sel.counts, again.counts)
    Cf, Tf = C.astype(np.float32), T.astype(np.float32)
    res = tarot.select(Cf, Tf, method="tsds", n=60, progress=False, max_k=40, kde_k=40)
    assert res.weights.sum() == 60 and res.diagnostics["tsds"]["draws"] == 60
    assert res.diagnostics["weighted_ot"] is not None and res.scores.shape == (400,)
    with pytest.raises(ValueError, match="weights its samples itself"):
        tarot.select(Cf, Tf, method="tsds", n=60, weighting=True, progress=False)
    Zc, Zt, _ = whiten(Cf, Tf)
    assert tsds(Zc, Zt, 60).counts.sum() == 60
