"""The certified sparse OT backend (tarot.sparse_ot) against the dense solver and the exact EMD."""

import warnings

import numpy as np
import pytest
import tarot.sparse_ot as sparse_ot
from _tiny_models import unit_rows
from tarot.ot import entropic_ot, exact_ot, softmin_potential, warm_start
from tarot.sparse_ot import build_support, certify, coarse_duals, multiscale_duals


@pytest.fixture(scope="module")
def clouds():
    rng = np.random.default_rng(3)
    # a lopsided mixture: the target's second mode is under-supplied, so mass must travel past nearest neighbours
    centres = unit_rows(rng, 3, 12)
    X = unit_rows(rng, 360, 12) * 0.6 + np.repeat(centres[[0, 0, 1]], 120, axis=0)
    Y = unit_rows(rng, 240, 12) * 0.6 + np.repeat(centres[[0, 1, 1, 2]], 60, axis=0)
    return X / np.linalg.norm(X, axis=1, keepdims=True), Y / np.linalg.norm(Y, axis=1, keepdims=True)


def test_sparse_value_equals_dense_at_the_reference_eps(clouds):
    X, Y = clouds
    kw = dict(tol=1e-5, value_tol=1e-11, max_iter=5000, init=None)
    dense = entropic_ot(X, Y, backend="dense", **kw)
    sparse = entropic_ot(X, Y, backend="sparse", **kw)
    assert sparse.backend == "sparse" and sparse.certificate["certified"]
    assert sparse.certificate["entries"] < 0.5 * X.shape[0] * Y.shape[0]  # it really is sparse
    assert sparse.stages[0]["eps"] == pytest.approx(16e-4)  # from the exact duals of a thinned problem: 16·eps
    assert abs(dense.value - sparse.value) < 1e-7
    assert abs(dense.value_linear - sparse.value_linear) < 1e-6


def test_sparse_potentials_equal_dense_where_they_are_determined(clouds):
    # at eps = 1e-2 the potentials are unique and well conditioned: both solvers converge to them
    X, Y = clouds
    kw = dict(eps=1e-2, tol=1e-10, value_tol=None, max_iter=20000, init=None)
    dense = entropic_ot(X, Y, backend="dense", **kw)
    sparse = entropic_ot(X, Y, backend="sparse", **kw)
    assert dense.converged and sparse.converged and sparse.certificate["certified"]
    for mine, theirs in ((dense.f, sparse.f), (dense.g, sparse.g)):
        assert np.abs((mine - mine.mean()) - (theirs - theirs.mean())).max() < 1e-6


def test_sparse_potentials_satisfy_the_full_softmin_identity(clouds):
    # the certificate says every entry outside the support carries < e^-30 of its product mass, so the soft-min
    # over ALL pairs equals the one over the support
    X, Y = clouds
    res = entropic_ot(X, Y, backend="sparse", value_tol=1e-10, max_iter=5000)
    assert np.abs(softmin_potential(Y, X, res.f, eps=res.eps) - res.g).max() < 1e-10
    assert np.abs(softmin_potential(X, Y, res.g, eps=res.eps) - res.f).max() < 2 * res.eps * res.violation * len(X)
    assert res.value == pytest.approx(res.f.mean() + res.g.mean(), abs=1e-12)


def test_certificate_finds_what_a_too_small_support_misses(clouds):
    X, Y = clouds
    sup = build_support(X, Y, k_row=1, k_col=1)  # nearest neighbours only: the under-supplied mode is cut off
    dense = entropic_ot(X, Y, backend="dense", tol=1e-5, value_tol=1e-11, max_iter=5000, init=None)
    from tarot.sparse_ot import solve_on_support

    a, b = np.full(len(X), 1 / len(X)), np.full(len(Y), 1 / len(Y))
    f, g, _ = solve_on_support(sup, a, b, np.zeros(len(X)), dense.g.copy(), [1e-4], max_iter=200, tol=1e-5,
                               stage_iter=30, stage_tol=1e-2, overrelax=1.8, value_tol=None)
    size = sup.size
    added, mass, _ = certify(sup, X, Y, a, b, f, g, 1e-4, k_row=4, k_max=32)
    assert added > 0 and mass > 1e-3 and sup.size > size and sup.checked_rows > 0
    res = entropic_ot(X, Y, backend="sparse", support=sup, init=(f, g), tol=1e-5, value_tol=1e-11, max_iter=5000)
    assert res.certificate["certified"]
    assert abs(res.value - dense.value) < 1e-7


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_certify_keeps_every_cheap_pair_and_leaves_safe_floors(clouds, dtype):
    """Against brute force over all pairs: each checked row gains every pair whose reduced cost is below
    (TAU + ADD_MARGIN)·ε (its k_max cheapest when it has more, with their left-out mass bounded), at least k_row
    pairs, and a floor that is a lower bound of the key C_ij − g_j of every pair still outside the support."""
    X, Y = (z.astype(dtype) for z in clouds)
    eps, k_row, k_max = 1e-3, 4, 40  # some rows have more cheap pairs than k_max, some fewer than k_row
    sup = build_support(X, Y, k_row=1, k_col=1)
    a, b = np.full(len(X), 1 / len(X)), np.full(len(Y), 1 / len(Y))
    rng = np.random.default_rng(0)
    C = np.sqrt(np.clip(2 - 2 * clouds[0] @ clouds[1].T, 0, None))
    g = rng.normal(scale=0.01, size=len(Y))
    f = (C - g).min(1) + rng.uniform(0, 400 * eps, size=len(X))  # rows at various distances from their minimum
    f[:5] = (C[:5] - g).max(1)  # far-off rows: every pair is cheap
    _, _, beyond = certify(sup, X, Y, a, b, f, g, eps, k_row=k_row, k_max=k_max)
    checked = sup.row_ref == len(sup.g_refs) - 1
    assert checked.mean() > 0.9  # rows whose old floor cleared the limit were rightly skipped
    inside = np.zeros(C.shape, dtype=bool)
    inside[sup.rows, sup.cols] = True
    red = C - g[None, :] - f[:, None]
    cheap = red < (sparse_ot.TAU + sparse_ot.ADD_MARGIN) * eps
    count = cheap.sum(1)
    assert (inside.sum(1)[checked] >= k_row).all()
    crowded = (count > k_max) & checked
    assert crowded[:5].all() and (count[checked] < k_row).any() and ((count >= k_row) & ~crowded & checked).any()
    tol = 1e-5 if dtype == np.float32 else 1e-12  # the float32 keys' rounding
    assert (inside | ~cheap)[~crowded].all()  # every cheap pair of an ordinary (or unchecked) row is in
    for i in np.flatnonzero(crowded):  # crowded rows: their k_max cheapest are in
        assert inside[i, np.argsort(red[i])[: k_max - 1]].all()
    key = C - np.stack(sup.g_refs)[sup.row_ref]  # each row's floor is on the keys of its own reference g
    assert (key[~inside] >= np.broadcast_to(sup.row_floor[:, None], C.shape)[~inside] - tol).all()
    left = a[:, None] * b[None, :] * np.exp(-np.maximum(red, 0) / eps)
    assert left[crowded][~inside[crowded]].sum() <= beyond * (1 + 1e-6)


def test_grown_problem_reuses_and_extends_the_support(clouds):
    X, Y = clouds
    kw = dict(backend="sparse", tol=1e-5, value_tol=1e-11, max_iter=5000)
    first = entropic_ot(X[:300], Y, **kw)
    grown = entropic_ot(X, Y, init=warm_start(first, X, Y, eps=1e-4, emd_max_entries=0), support=first.support,
                        **kw)
    assert grown.support is first.support and grown.support.n == len(X)
    assert grown.certificate["certified"]
    assert abs(grown.value - entropic_ot(X, Y, **kw).value) < 1e-7


def test_weighted_sources_and_float32_features(clouds):
    X, Y = clouds
    a = np.random.default_rng(0).uniform(0.5, 1.5, len(X))
    a /= a.sum()
    kw = dict(a=a, tol=1e-5, value_tol=1e-11, max_iter=5000, init=None)
    dense = entropic_ot(X, Y, backend="dense", **kw)
    assert abs(entropic_ot(X, Y, backend="sparse", **kw).value - dense.value) < 1e-7
    # float32 features: products in float32 (cost error ~1e-7 here), sums in float64
    single = entropic_ot(X.astype(np.float32), Y.astype(np.float32), backend="sparse", **kw)
    assert single.f.dtype == np.float64 and abs(single.value - dense.value) < 1e-5


def test_sparse_value_approaches_emd_as_eps_shrinks(clouds):
    X, Y = clouds
    emd = exact_ot(X, Y)
    gaps = [abs(entropic_ot(X, Y, eps=e, backend="sparse", value_tol=1e-12, max_iter=5000).value_linear - emd)
            for e in (1e-2, 1e-3, 1e-4)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-4


def test_coarse_duals_are_the_exact_duals_of_a_small_problem(clouds):
    X, Y = clouds
    a, b = np.full(len(X), 1 / len(X)), np.full(len(Y), 1 / len(Y))
    g = coarse_duals(X, Y, a, b)  # small enough: the whole problem, no subsampling
    f = (np.sqrt(np.clip(2 - 2 * X @ Y.T, 0, None)) - g[None, :]).min(axis=1)  # c-transform
    assert f @ a + g @ b == pytest.approx(exact_ot(X, Y), abs=1e-9)  # the exact dual optimum
    g_sub = coarse_duals(X, Y, a, b, max_entries=6000)  # ~1/14 of the pairs: an estimate, still near
    f_sub = (np.sqrt(np.clip(2 - 2 * X @ Y.T, 0, None)) - g_sub[None, :]).min(axis=1)
    assert f_sub @ a + g_sub @ b <= exact_ot(X, Y) + 1e-9  # any c-concave pair is dual feasible: a lower bound


def test_multiscale_cold_start_recurses_and_reaches_the_dense_solution(clouds, monkeypatch):
    # with a tiny threshold the cold start solves 180 x 120 (sparse), whose own start solves 90 x 60 from the
    # exact duals: two half-resolution levels, each extended to every target by the soft c-transform
    X, Y = clouds
    a, b = np.full(len(X), 1 / len(X)), np.full(len(Y), 1 / len(Y))
    monkeypatch.setattr(sparse_ot, "MULTISCALE_MIN_ENTRIES", 12_000)
    calls = []
    real = sparse_ot.sparse_entropic_ot

    def spy(Xs, Ys, *args, **kw):
        calls.append((len(Xs), len(Ys)))
        return real(Xs, Ys, *args, **kw)

    monkeypatch.setattr(sparse_ot, "sparse_entropic_ot", spy)
    kw = dict(tol=1e-5, value_tol=1e-11, max_iter=5000, stage_iter=30, stage_tol=1e-2, overrelax=1.8)
    g0 = multiscale_duals(X, Y, a, b, eps=1e-4, **kw)
    assert calls == [(180, 120), (90, 60)]
    dense = entropic_ot(X, Y, backend="dense", tol=1e-5, value_tol=1e-11, max_iter=5000, init=None)
    # the half-resolution potentials are an estimate: near the full problem's, up to the constant shift
    centred = (g0 - g0.mean()) - (dense.g - dense.g.mean())
    assert 0 < np.median(np.abs(centred)) < 0.05, np.median(np.abs(centred))
    calls.clear()
    res = entropic_ot(X, Y, backend="sparse", init=None, tol=1e-5, value_tol=1e-11, max_iter=5000)
    assert calls[0] == (360, 240) and (180, 120) in calls  # the cold solve started from the coarser problem
    assert res.certificate["certified"] and abs(res.value - dense.value) < 1e-7
    # its duals are at eps already: the schedule begins at MULTISCALE_START·eps, not at 16·eps as after exact duals
    assert res.stages[0]["eps"] == pytest.approx(sparse_ot.MULTISCALE_START * 1e-4)


def test_multiscale_start_takes_its_own_targets_potentials_from_the_half_problem(clouds, monkeypatch):
    # the half problem's last update already set its targets' g to the soft c-transform of its f; only the other
    # targets are computed, and the whole vector equals the soft c-transform over every sampled source
    X, Y = clouds
    a, b = np.full(len(X), 1 / len(X)), np.full(len(Y), 1 / len(Y))
    seen = {}
    real = sparse_ot.sparse_entropic_ot

    def spy(Xs, Ys, *args, **kw):
        out = real(Xs, Ys, *args, **kw)
        seen.setdefault("half", out)
        return out

    asked = []
    real_ct = sparse_ot._soft_ctransform

    def spy_ct(P, src, f, a_s, eps, targets=None):
        asked.append(None if targets is None else targets.copy())
        return real_ct(P, src, f, a_s, eps, targets=targets)

    monkeypatch.setattr(sparse_ot, "sparse_entropic_ot", spy)
    monkeypatch.setattr(sparse_ot, "_soft_ctransform", spy_ct)
    kw = dict(tol=1e-5, value_tol=1e-11, max_iter=5000, stage_iter=30, stage_tol=1e-2, overrelax=1.8)
    g0 = multiscale_duals(X, Y, a, b, eps=1e-4, **kw)
    rng = np.random.default_rng([0, len(X), len(Y)])  # the draws of multiscale_duals
    src = np.sort(rng.choice(len(X), size=len(X) // 2, replace=False))
    tgt = np.sort(rng.choice(len(Y), size=len(Y) // 2, replace=False))
    rest = np.setdiff1d(np.arange(len(Y)), tgt)
    assert len(asked) == 1 and np.array_equal(asked[0], rest)  # only the targets the half problem did not have
    assert np.array_equal(g0[tgt], seen["half"].g)
    P = sparse_ot.Products(X, Y)
    full = real_ct(P, src, seen["half"].f, np.full(len(src), 1 / len(src)), 1e-4)
    assert np.array_equal(real_ct(P, src, seen["half"].f, np.full(len(src), 1 / len(src)), 1e-4, targets=rest),
                          full[rest])
    # the half problem's soft-min runs over its certified support only: the pairs left out carry < e^-30 of the sum
    assert np.max(np.abs(g0 - full)) < 1e-12, np.max(np.abs(g0 - full))


def test_products_cache_returns_the_products_and_computes_each_row_once(clouds):
    X, Y = (np.asarray(z, dtype=np.float32) for z in clouds)
    direct = X @ Y.T
    P = sparse_ot.Products(X, Y, cache_bytes=X.shape[0] * Y.shape[0] * 4)
    assert P.cached and not P.complete
    computed = []
    real = P._compute
    P._compute = lambda idx: computed.append(idx) or real(idx)
    rows = np.array([3, 4, 5, 200, 201, 359])
    assert np.allclose(P.rows(rows).numpy(), direct[rows], atol=1e-6)
    assert np.allclose(P.rows(slice(0, 10)).numpy(), direct[:10], atol=1e-6)  # rows 3-5 come from the cache
    P.fill()
    assert P.complete
    n_calls = len(computed)
    assert np.allclose(P.rows(slice(0, 360)).numpy(), direct, atol=1e-6) and len(computed) == n_calls
    src, tgt = np.array([1, 7, 300]), np.array([0, 5, 239])
    assert np.allclose(P.block(src, tgt).numpy(), direct[np.ix_(src, tgt)], atol=1e-6)
    assert np.allclose(P.columns(src, slice(2, 9)).numpy(), direct[np.ix_(src, np.arange(2, 9))].T, atol=1e-6)
    sub = P.subset(src, tgt)
    assert sub.complete and np.array_equal(sub.rows(slice(0, 3)).numpy(), P.block(src, tgt).numpy())
    assert len(computed) == n_calls  # the sub-problem and the columns came from the cache too
    # too large for the budget: nothing kept, every request computed; a sub-problem keeps its own when they fit
    Q = sparse_ot.Products(X, Y, cache_bytes=X.shape[0] * Y.shape[0] * 4 - 1)
    assert not Q.cached and Q.subset(src, tgt).cached and not Q.subset(src, tgt).complete
    assert not sparse_ot.Products(X, Y, cache_bytes=len(src) * len(tgt) * 4 - 1).subset(src, tgt).cached
    assert np.allclose(Q.columns(src, slice(2, 9), Q.sources(src)).numpy(), direct[np.ix_(src, np.arange(2, 9))].T,
                       atol=1e-6)


@pytest.mark.parametrize("start", ["multiscale", "coarse"])
def test_cached_and_recomputed_products_give_the_same_solution(clouds, monkeypatch, start):
    X, Y = (np.asarray(z, dtype=np.float32) for z in clouds)
    monkeypatch.setattr(sparse_ot, "MULTISCALE_MIN_ENTRIES", 12_000)
    a, b = np.full(len(X), 1 / len(X)), np.full(len(Y), 1 / len(Y))
    kw = dict(eps=1e-4, tol=1e-5, value_tol=1e-11, max_iter=5000, stage_iter=30, stage_tol=1e-2, overrelax=1.8,
              init=None, eps_start=None, cold_start=start)
    cached = sparse_ot.sparse_entropic_ot(X, Y, a, b, cache_bytes=1 << 30, **kw)
    computed = sparse_ot.sparse_entropic_ot(X, Y, a, b, cache_bytes=0, **kw)
    assert cached.certified and computed.certified
    assert abs(float(a @ cached.f + b @ cached.g) - float(a @ computed.f + b @ computed.g)) < 1e-9
    assert cached.support.size == computed.support.size


def test_an_uncertified_multiscale_start_is_solved_again_from_the_coarse_one(clouds, monkeypatch):
    X, Y = clouds
    a, b = np.full(len(X), 1 / len(X)), np.full(len(Y), 1 / len(Y))
    kw = dict(eps=1e-4, tol=1e-5, max_iter=5000, stage_iter=30, stage_tol=1e-2, overrelax=1.8, value_tol=1e-11,
              init=None, eps_start=None, max_rounds=2)
    assert sparse_ot.sparse_entropic_ot(X, Y, a, b, cold_start="coarse", **kw).cold_start == "coarse"
    monkeypatch.setattr(sparse_ot, "MULTISCALE_MIN_ENTRIES", 0)
    # potentials unrelated to the problem: two certificate rounds do not repair the support they key
    monkeypatch.setattr(sparse_ot, "multiscale_duals", lambda X, Y, a, b, **_: np.random.default_rng(0).uniform(
        0, 1, len(Y)))
    bad = sparse_ot.sparse_entropic_ot(X, Y, a, b, cold_start="multiscale", **kw)
    assert not bad.certified and bad.cold_start == "multiscale"
    res = sparse_ot.sparse_entropic_ot(X, Y, a, b, cold_start="auto", **kw)
    assert res.certified and res.cold_start.startswith("coarse (the multiscale start ended uncertified")
    dense = entropic_ot(X, Y, backend="dense", tol=1e-5, value_tol=1e-11, max_iter=5000, init=None)
    assert abs(float(a @ res.f + b @ res.g) - dense.value) < 1e-7
    with pytest.raises(ValueError, match="cold_start"):
        sparse_ot.sparse_entropic_ot(X, Y, a, b, cold_start="exact", **kw)


def test_auto_backend_and_errors(clouds):
    X, Y = clouds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert entropic_ot(X, Y, sparse_min_entries=0, value_tol=1e-7).backend == "sparse"
        assert entropic_ot(X, Y, value_tol=1e-7).backend == "dense"  # small: the dense solver
    with pytest.raises(ValueError, match="WFD"):
        entropic_ot(X, Y, backend="sparse", cost="sqeuclidean")
    with pytest.raises(ValueError, match="sum to 1"):
        entropic_ot(X, Y, backend="sparse", a=np.ones(len(X)))


# ------------------------------------------------------------------------------------------ the kernel's pieces
def _random_support(rng, n=40, m=25, per_row=6):
    from tarot.sparse_ot import Support

    rows = np.repeat(np.arange(n), per_row)
    cols = rng.integers(0, m, size=n * per_row)
    sup = Support(n=n, m=m, rows=np.zeros(0, np.int64), cols=np.zeros(0, np.int64), cost=np.zeros(0),
                  row_floor=np.zeros(n), row_ref=np.zeros(n, np.int64), g_refs=[np.zeros(m)],
                  col_floor=np.zeros(m), f_ref=np.zeros(n))
    sup.merge(rows, cols, rng.random(len(rows)))
    return sup


def test_merge_equals_a_sorted_union_and_reports_first_new_occurrences():
    rng = np.random.default_rng(0)
    sup = _random_support(rng)
    before = {(int(r), int(c)): w for r, c, w in zip(sup.rows, sup.cols, sup.cost)}
    rows, cols = rng.integers(0, 40, 300), rng.integers(0, 25, 300)  # duplicates inside and with E
    cost = rng.random(300)
    new = sup.merge(rows, cols, cost)
    expect = dict(before)
    want_new = np.zeros(300, dtype=bool)
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        if (r, c) not in expect:
            expect[(r, c)] = cost[i]
            want_new[i] = True
    keys = sorted(expect)
    assert np.array_equal(new, want_new)
    assert np.array_equal(sup.rows, [k[0] for k in keys]) and np.array_equal(sup.cols, [k[1] for k in keys])
    assert np.array_equal(sup.cost, [expect[k] for k in keys])  # an existing entry keeps its cost
    assert not sup.merge(rows, cols, cost).any()  # nothing new the second time


def test_structure_gives_the_column_order():
    sup = _random_support(np.random.default_rng(1))
    indptr, colptr, perm = sup.structure()
    assert np.array_equal(perm, np.lexsort((sup.rows, sup.cols)))  # by column, then row
    assert np.array_equal(colptr, np.searchsorted(sup.cols[perm], np.arange(sup.m + 1)))
    assert np.array_equal(indptr, np.searchsorted(sup.rows, np.arange(sup.n + 1)))


def test_kernel_softmins_and_absorb_equal_a_direct_computation():
    from tarot.sparse_ot import _Kernel, _segment_softmin

    rng = np.random.default_rng(2)
    sup = _random_support(rng)
    eps = 0.05
    a, b = rng.dirichlet(np.ones(sup.n)), rng.dirichlet(np.ones(sup.m))
    f, g = rng.normal(size=sup.n) * 0.1, rng.normal(size=sup.m) * 0.1
    ker = _Kernel(sup, b)
    dense = np.full((sup.n, sup.m), np.inf)
    dense[sup.rows, sup.cols] = sup.cost
    with np.errstate(divide="ignore"):
        rows = -eps * np.log((b * np.exp((g - dense) / eps)).sum(1))
        cols = -eps * np.log((a[:, None] * np.exp((f[:, None] - dense) / eps)).sum(0))
    assert np.allclose(ker.softmin_rows(g, np.log(b), eps), rows, atol=1e-12)
    assert np.allclose(ker.softmin_cols(f, np.log(a), eps), cols, atol=1e-12, equal_nan=False)
    assert np.isinf(cols[np.bincount(sup.cols, minlength=sup.m) == 0]).all()  # empty columns: +inf on both sides
    f_abs = ker.absorb(f, g, eps, exact=True)
    assert np.allclose(f_abs, rows)
    K = ker.K.toarray()
    assert np.allclose(K[sup.rows, sup.cols], np.exp((rows[sup.rows] + g[sup.cols] - sup.cost) / eps))
    assert np.allclose(K @ b, 1.0)  # exact absorb: every row of K·b sums to one
    # a segment reduction with an empty segment in the middle
    out = _segment_softmin(np.array([0.0, 1.0, 2.0]), np.array([0, 1, 1]), np.array([1, 0, 2]), 1.0)
    assert out[0] == pytest.approx(0.0) and np.isinf(out[1]) and out[2] == pytest.approx(-np.logaddexp(1.0, 2.0))


def test_sparse_solve_shows_a_progress_bar_when_asked(clouds, capsys):
    X, Y = clouds
    entropic_ot(X, Y, backend="sparse", tol=1e-5, value_tol=1e-9, progress=True)
    assert "sparse OT 360 x 240" in capsys.readouterr().err
    entropic_ot(X, Y, backend="sparse", tol=1e-5, value_tol=1e-9)
    assert "sparse OT" not in capsys.readouterr().err


def test_support_beyond_the_memory_budget_stops_with_a_clear_error(clouds, monkeypatch):
    from tarot.errors import SupportTooLargeError
    from tarot.sparse_ot import BYTES_PER_ENTRY

    X, Y = clouds
    ok = entropic_ot(X, Y, backend="sparse", value_tol=1e-7)
    needed = ok.certificate["entries"]
    # the budget of $TAROT_MEMORY_BUDGET bounds the support: a tenth of what this problem needs is refused
    monkeypatch.setenv("TAROT_MEMORY_BUDGET", str(needed * BYTES_PER_ENTRY // 10))
    with pytest.raises(SupportTooLargeError, match=r"sparse OT 360 x 240: the support holds [\d,]+ pairs .*"
                       r"TAROT_MEMORY_BUDGET.*eps=0.0001"):
        entropic_ot(X, Y, backend="sparse", value_tol=1e-7)
    monkeypatch.setenv("TAROT_MEMORY_BUDGET", str(needed * BYTES_PER_ENTRY))  # exactly enough: solved as before
    assert entropic_ot(X, Y, backend="sparse", value_tol=1e-7).value == ok.value


def test_solves_sharing_one_products_cache_equal_separate_solves(clouds):
    # the front door's uniform and re-weighted solves of one selection share the products: same results as two
    # solves that each compute their own, and the cache is filled once
    X, Y = (np.asarray(z, dtype=np.float32) for z in clouds)
    w = np.random.default_rng(4).integers(1, 4, len(X)).astype(np.float64)
    kw = dict(eps=1e-4, tol=1e-5, value_tol=1e-9, backend="sparse")
    shared = sparse_ot.Products(X, Y, 1 << 30)
    for a in (None, w / w.sum()):
        alone = entropic_ot(X, Y, a=a, **kw)
        together = entropic_ot(X, Y, a=a, products=shared, **kw)
        assert together.value == alone.value and np.array_equal(together.f, alone.f)
    assert shared.complete
    with pytest.raises(ValueError, match="products are for 360 x 240 points; this problem has 359 x 240"):
        entropic_ot(X[:-1], Y, products=shared, **kw)


def test_certify_checks_only_the_hot_targets_of_rows_that_fail_by_their_drift(clouds):
    """A few targets' potentials drift far (hot), the rest not at all: rows whose floor clears the limit except for
    the hot targets are checked against those alone. Brute force over all pairs: every row left unrecomputed has no
    pair outside the support below the limit, such rows exist although the largest drift fails them all, and rows
    with a cheap pair among the hot targets are recomputed."""
    X, Y = clouds
    C = np.sqrt(np.clip(2 - 2 * X @ Y.T, 0, None))
    sup = build_support(X, Y, k_row=24, k_col=1)  # keyed by g = 0: floors are costs
    f = C.min(1)
    gap = sup.row_floor - f
    eps = float(np.median(gap)) / 36  # about half of the rows clear 30 ε by their floors alone
    lim = sparse_ot.TAU * eps
    hot = np.array([7, 100, 201])  # 3 of 240 targets, below HOT_FRACTION
    g = np.zeros(len(Y))
    g[hot] = 20 * eps
    need_all = gap - g.max() < lim  # the bound through the largest drift
    inside = np.zeros(C.shape, dtype=bool)
    inside[sup.rows, sup.cols] = True
    red = C - g[None, :] - f[:, None]
    relaxed = gap >= lim
    unsafe_hot = relaxed & (red[:, hot] < lim).any(1)
    assert (need_all & relaxed & ~unsafe_hot).any() and (need_all & unsafe_hot).any()
    assert (sup.col_floor - g < lim).any()  # the column floors do not certify every row at once
    a, b = np.full(len(X), 1 / len(X)), np.full(len(Y), 1 / len(Y))
    certify(sup, X, Y, a, b, f, g, eps, k_row=4, k_max=60)
    kept = sup.row_ref == 0  # rows the round left as they were
    assert np.array_equal(kept, ~need_all | (relaxed & ~unsafe_hot))
    assert (red[kept][~inside[kept]] >= lim - 1e-12).all()
    assert sup.checked_rows == int((~kept).sum())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("block_rows", [7, 40])  # 40: the first block's column lists come from a top-k
def test_built_lists_are_the_smallest_keys_of_brute_force(clouds, dtype, block_rows, monkeypatch):
    """Against every pair: over several row blocks (the column lists merged block by block) each row holds its
    k_row smallest keys C_ij − g_j, or every key within delta of its smallest up to k_cap; each column its k_col
    smallest C_ij − f_i with f_i the row's smallest key; every floor bounds the keys left out and is the largest
    one kept."""
    monkeypatch.setattr(sparse_ot, "BLOCK_ENTRIES", block_rows * 240)  # several blocks: their lists are merged
    X, Y = (z.astype(dtype) for z in clouds)
    C = np.sqrt(np.clip(2 - 2 * clouds[0] @ clouds[1].T, 0, None))
    rng = np.random.default_rng(5)
    g = rng.normal(scale=0.02, size=len(Y))
    key = C - g[None, :]
    delta = float(np.quantile(np.sort(key, 1)[:, 5] - key.min(1), 0.7))  # 30 % of rows have > 5 keys within delta
    k_row, k_col, k_cap = 5, 6, 12
    sup = build_support(X, Y, k_row=k_row, k_col=k_col, g_ref=g, delta=delta, k_cap=k_cap)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    f = key.min(1)
    assert np.abs(sup.f_ref - f).max() < tol
    inside = np.zeros(C.shape, dtype=bool)
    inside[sup.rows, sup.cols] = True
    assert np.abs(sup.cost - C[sup.rows, sup.cols]).max() < tol  # costs from the products' precision
    within = (key <= f[:, None] + delta).sum(1)
    wide = within > k_row
    assert wide.any() and (~wide).any() and (within > k_cap).any()
    kept = np.minimum(np.maximum(within, k_row), k_cap)
    order = np.argsort(key, 1)
    col_key = C - f[:, None]
    col_order = np.argsort(col_key, 0)
    col_lists = np.zeros(C.shape, dtype=bool)
    np.put_along_axis(col_lists, col_order[:k_col], True, axis=0)
    for i in range(len(X)):
        own = inside[i] & ~col_lists[i]  # what the row list must have brought in
        assert own.sum() <= kept[i]
        assert inside[i, order[i, : kept[i] - 1]].all()  # (the kth may tie with the next one in float32)
        assert sup.row_floor[i] == pytest.approx(np.sort(key[i])[kept[i] - 1], abs=tol)
        assert (key[i, ~inside[i]] >= sup.row_floor[i] - tol).all()
    assert inside[col_order[: k_col - 1], np.arange(len(Y))].all()
    assert np.allclose(sup.col_floor, np.sort(col_key, 0)[k_col - 1], atol=tol)
    assert (col_key[~inside] >= np.broadcast_to(sup.col_floor, C.shape)[~inside] - tol).all()


def test_large_solves_keep_freed_memory_and_small_ones_do_not(clouds, monkeypatch):
    from tarot.features import allocator

    X, Y = clouds
    a, b = np.full(len(X), 1 / len(X)), np.full(len(Y), 1 / len(Y))
    depths = []
    real = sparse_ot._sparse_entropic_ot

    def spy(*args, **kw):
        depths.append(allocator._depth)
        return real(*args, **kw)

    monkeypatch.setattr(sparse_ot, "_sparse_entropic_ot", spy)
    kw = dict(eps=1e-3, tol=1e-5, max_iter=5000, stage_iter=500, stage_tol=1e-3, overrelax=1.0, value_tol=None,
              init=None, eps_start=None, cold_start="coarse")
    small = sparse_ot.sparse_entropic_ot(X, Y, a, b, **kw)
    monkeypatch.setattr(sparse_ot, "MULTISCALE_MIN_ENTRIES", len(X) * len(Y) - 1)
    large = sparse_ot.sparse_entropic_ot(X, Y, a, b, **kw)
    assert depths == [0, 1] and allocator._depth == 0
    assert np.array_equal(large.f, small.f) and np.array_equal(large.g, small.g)  # where arrays live, not what
