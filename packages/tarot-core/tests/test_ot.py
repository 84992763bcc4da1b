"""Entropic OT (spec §7): value vs exact EMD, soft-min identity, dense = blocked, ε → 0, potential sign."""

import warnings

import numpy as np
import ot as pot
import pytest
import torch
from _tiny_models import unit_rows
from tarot.ot import cost_block, entropic_ot, eps_schedule, exact_ot, softmin_potential, warm_start


@pytest.fixture(scope="module")
def clouds():
    rng = np.random.default_rng(0)
    return unit_rows(rng, 200, 16), unit_rows(rng, 150, 16)


def test_value_close_to_exact_emd(clouds):
    X, Y = clouds
    emd = exact_ot(X, Y)
    res = entropic_ot(X, Y, tol=1e-5, value_tol=1e-10, max_iter=5000)
    assert res.converged or res.value_settled
    assert abs(res.value - emd) < 1e-3
    assert abs(res.value_linear - emd) < 1e-3


def test_softmin_identity_of_potentials(clouds):
    X, Y = clouds
    # converged problem: both identities hold to 1e-8
    res = entropic_ot(X, Y, eps=1e-2, tol=1e-9, max_iter=20000, init=None)
    assert res.converged
    assert np.abs(softmin_potential(X, Y, res.g, eps=res.eps) - res.f).max() < 1e-8
    assert np.abs(softmin_potential(Y, X, res.f, eps=res.eps) - res.g).max() < 1e-8
    # at the reference eps the last update makes g exact and leaves f within eps·(marginal violation)
    res = entropic_ot(X, Y, value_tol=1e-10)
    assert np.abs(softmin_potential(Y, X, res.f, eps=res.eps) - res.g).max() < 1e-10
    assert np.abs(softmin_potential(X, Y, res.g, eps=res.eps) - res.f).max() < 2 * res.eps * res.violation * len(X)
    assert res.value == pytest.approx(res.f.mean() + res.g.mean(), abs=1e-12)


def test_dense_and_blocked_paths_agree(clouds):
    X, Y = clouds
    kw = dict(tol=1e-5, value_tol=1e-11, max_iter=3000, init=None)
    dense = entropic_ot(X, Y, backend="dense", **kw)
    blocked = entropic_ot(X, Y, backend="blocked", block_rows=37, cache_bytes=0, **kw)
    assert abs(dense.value - blocked.value) < 1e-7
    assert np.abs((dense.f - dense.f.mean()) - (blocked.f - blocked.f.mean())).max() < 1e-6
    assert dense.backend == "dense" and blocked.backend == "blocked"


def test_emd_warm_start_and_scaling_reach_the_same_problem(clouds):
    X, Y = clouds
    a = entropic_ot(X, Y, init="emd", value_tol=1e-11, max_iter=3000)
    b = entropic_ot(X, Y, init=None, value_tol=1e-11, max_iter=3000)
    assert a.stages[0]["eps"] == 1e-4 and len(b.stages) > 5
    assert abs(a.value - b.value) < 1e-7


def test_warm_start_of_a_growing_problem(clouds):
    X, Y = clouds
    prev = entropic_ot(X[:120], Y, value_tol=1e-9)
    assert warm_start(None, X, Y, eps=1e-4, emd_max_entries=0) == "auto"
    assert warm_start(prev, X, Y, eps=1e-4) == "auto"  # small: exact duals instead
    f0, g0 = warm_start(prev, X, Y, eps=1e-4, emd_max_entries=0)
    assert np.array_equal(f0[:120], prev.f) and g0 is prev.g
    np.testing.assert_allclose(f0[120:], softmin_potential(X[120:], Y, prev.g, eps=1e-4), rtol=0, atol=0)
    assert warm_start(prev, X[:120], Y, eps=1e-4, emd_max_entries=0)[0] is prev.f  # nothing added
    assert warm_start(prev, X[:100], Y, eps=1e-4, emd_max_entries=0) == "auto"  # fewer rows: not a growth
    res = entropic_ot(X, Y, init=(f0, g0), value_tol=1e-9, max_iter=3000)
    assert abs(res.value - entropic_ot(X, Y, value_tol=1e-9, max_iter=3000).value) < 1e-6


def test_matches_pot_sinkhorn_log_at_moderate_eps(clouds):
    X, Y = clouds
    eps = 0.05
    C = cost_block(torch.from_numpy(X), torch.from_numpy(Y), "wfd").numpy()
    a, b = pot.unif(len(X)), pot.unif(len(Y))
    plan = pot.bregman.sinkhorn_log(a, b, C, eps, numItermax=20000, stopThr=1e-12)
    ours = entropic_ot(X, Y, eps=eps, tol=1e-10, max_iter=20000, init=None)
    assert abs(ours.value_linear - float((plan * C).sum())) < 1e-7


def test_sinkhorn_value_approaches_emd_as_eps_shrinks(clouds):
    X, Y = clouds
    X, Y = X[:60], Y[:50]
    emd = exact_ot(X, Y)
    gaps = [abs(entropic_ot(X, Y, eps=e, value_tol=1e-12, max_iter=5000).value_linear - emd)
            for e in (1e-1, 1e-2, 1e-3)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-3


def test_sign_moving_mass_to_low_potential_lowers_emd(clouds):
    X, Y = clouds
    res = entropic_ot(X, Y, value_tol=1e-10)
    C = cost_block(torch.from_numpy(X), torch.from_numpy(Y), "wfd").numpy()
    n = len(X)
    order = np.argsort(res.f)
    k = n // 10
    low, high = order[:k], order[-k:]
    base = np.full(n, 1.0 / n)
    towards_low = base.copy()
    towards_low[high] -= 0.5 / n
    towards_low[low] += 0.5 / n
    towards_high = base.copy()
    towards_high[low] -= 0.5 / n
    towards_high[high] += 0.5 / n
    b = pot.unif(len(Y))
    e0, e_low, e_high = (pot.emd2(w, b, C) for w in (base, towards_low, towards_high))
    assert e_low < e0 < e_high


def test_weights_validation_and_schedule():
    rng = np.random.default_rng(1)
    X, Y = unit_rows(rng, 5, 3), unit_rows(rng, 4, 3)
    with pytest.raises(ValueError, match="sum to 1"):
        entropic_ot(X, Y, a=np.ones(5))
    with pytest.raises(ValueError, match="dimensions differ"):
        entropic_ot(X, unit_rows(rng, 4, 2))
    with pytest.raises(TypeError, match="float16"):
        entropic_ot(X.astype(np.float16), Y)
    sched = eps_schedule(1e-4, 4.0)
    assert sched[0] == 4.0 and sched[-1] == 1e-4
    assert all(abs(s / t - 4.0) < 1e-12 for s, t in zip(sched[:-2], sched[1:-1]))


def test_nonconvergence_is_reported_not_hidden(clouds):
    X, Y = clouds
    with pytest.warns(RuntimeWarning, match="did not reach"):
        res = entropic_ot(X, Y, init=None, tol=1e-12, max_iter=3)
    assert not res.converged
    assert res.violation > 1e-12


def test_a_settled_value_is_not_called_converged_marginals(clouds):
    X, Y = clouds
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # settling on the value was asked for: no warning
        res = entropic_ot(X, Y, init=None, tol=1e-12, value_tol=1e-3)
    assert res.value_settled and res.stages[-1]["stop"] == "value"
    assert not res.converged and res.violation > 1e-12  # the marginals are not within tol, and it says so
    d = res.diagnostics()
    assert d["converged"] is False and d["value_settled"] is True and d["tol"] == 1e-12
    tight = entropic_ot(X, Y, eps=1e-2, tol=1e-9, max_iter=20000, init=None)
    assert tight.converged and not tight.value_settled and tight.violation < 1e-9
