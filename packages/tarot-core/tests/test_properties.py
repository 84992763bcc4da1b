"""Property-based tests (hypothesis) of tarot.select's invariants on generated feature sets: a selection is a set of
distinct candidate indices of the requested size, repeat weights are positive integers with the documented sum, and a
deterministic method's selection follows a permutation of the candidates."""

from __future__ import annotations

import numpy as np
import tarot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# derandomized: the same examples on every run, so that CI is reproducible (the database is off for the same reason)
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    """Candidates [N, k] and targets [M, k] around a few centres, a seed and a budget 1 <= n <= N."""
    seed = draw(st.integers(0, 2**16))
    n_cand = draw(st.integers(8, 60))
    n_tgt = draw(st.integers(2, 12))
    dim = draw(st.integers(2, 10))
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(draw(st.integers(1, 4)), dim))
    cand = centres[rng.integers(0, len(centres), n_cand)] + draw(st.floats(0.05, 1.0)) * rng.normal(size=(n_cand, dim))
    tgt = centres[rng.integers(0, len(centres), n_tgt)] + 0.2 * rng.normal(size=(n_tgt, dim))
    n = draw(st.integers(1, n_cand))
    return cand.astype(np.float32), tgt.astype(np.float32), n, seed


@SETTINGS
@given(problems(), st.sampled_from(["random", "topk_mean", "round_robin", "fixed_size", "less"]))
def test_a_selection_is_distinct_candidates_of_the_budget(problem, method):
    cand, tgt, n, seed = problem
    res = tarot.select(cand, tgt, method=method, n=n, seed=seed, progress=False, diagnose=False)
    idx = np.asarray(res.indices)
    assert len(idx) == n and len(np.unique(idx)) == n
    assert idx.min() >= 0 and idx.max() < len(cand)
    assert res.ratio == n / len(cand)


@SETTINGS
@given(problems(), st.integers(1, 3), st.integers(0, 30))
def test_weights_are_positive_integers_with_the_documented_sum(problem, min_repeats, extra):
    cand, tgt, n, seed = problem
    res = tarot.select(cand, tgt, method="fixed_size", n=n, seed=seed, weighting=True, min_repeats=min_repeats,
                       total_repeats=min_repeats * n + extra, progress=False, diagnose=False)
    w = np.asarray(res.weights)
    assert w.dtype.kind == "i" and len(w) == n and (w >= min_repeats).all() and (w >= 1).all()
    assert int(w.sum()) == min_repeats * n + extra
    default = tarot.select(cand, tgt, method="fixed_size", n=n, seed=seed, weighting=True, progress=False,
                           diagnose=False)
    assert int(np.asarray(default.weights).sum()) == 2 * n  # the default total: twice the selection size


@SETTINGS
@given(problems())
def test_otm_returns_distinct_candidates(problem):
    cand, tgt, _, seed = problem
    res = tarot.select(cand, tgt, method="otm", ratio="auto", seed=seed, progress=False, diagnose=False,
                       folds=2 if len(tgt) < 4 else 3)
    idx = np.asarray(res.indices)
    assert len(idx) >= 1 and len(np.unique(idx)) == len(idx) and idx.max() < len(cand)


@SETTINGS
@given(problems(), st.integers(0, 2**16))
def test_topk_mean_follows_a_permutation_of_the_candidates(problem, perm_seed):
    """Up to ties in the scores, permuting the candidates permutes the selection (in raw space: whitening's
    float32 statistics would be summed in another order)."""
    cand, tgt, n, seed = problem
    perm = np.random.default_rng(perm_seed).permutation(len(cand))
    a = tarot.select(cand, tgt, method="topk_mean", n=n, space="raw", whiten_features=False, progress=False,
                     diagnose=False)
    b = tarot.select(cand[perm], tgt, method="topk_mean", n=n, space="raw", whiten_features=False, progress=False,
                     diagnose=False)
    scores = np.asarray(a.scores)
    cut = np.sort(scores)[::-1][n - 1]
    clear = np.abs(scores - cut) > 1e-5  # candidates not tied with the cut-off score
    picked_a = set(np.asarray(a.indices)[clear[np.asarray(a.indices)]])
    picked_b = {int(perm[i]) for i in np.asarray(b.indices) if clear[perm[i]]}
    assert picked_a == picked_b
