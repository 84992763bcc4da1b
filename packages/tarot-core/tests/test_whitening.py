"""Whitening (spec §4): covariance ≈ I, Mahalanobis cosines, scale invariance, streamed = one-shot statistics."""

import numpy as np
import pytest
from tarot.geometry.whitening import RunningMoments, Whitener, whiten


def _rotated_gaussian(n, k, lo, hi, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(k, k)))
    ev = np.logspace(np.log10(lo), np.log10(hi), k)
    return (rng.normal(size=(n, k)) * np.sqrt(ev)) @ Q.T + rng.normal(size=k) * 5


@pytest.mark.parametrize("lo,hi,ridge", [(1e-1, 1e1, 1e-5), (1e-3, 1e2, 1e-8)])
def test_whitened_covariance_is_identity(lo, hi, ridge):
    X = _rotated_gaussian(5000, 64, lo, hi)
    w = Whitener.fit(X, ridge=ridge, block_rows=700)
    Z = w.transform(X, normalize=False, dtype=np.float64)
    cov = np.cov(Z.T, bias=True)
    assert np.abs(cov - np.eye(64)).max() < 1e-3
    assert np.abs(Z.mean(0)).max() < 1e-8


def test_transposed_whitening_would_fail():
    """Reference defect B2: X·L⁻¹ instead of X·L⁻ᵀ does not whiten."""
    X = _rotated_gaussian(5000, 16, 1e-2, 1e2)
    w = Whitener.fit(X)
    Linv = np.linalg.inv(w.chol)
    wrong = (X - w.mean) @ Linv
    assert np.abs(np.cov(wrong.T, bias=True) - np.eye(16)).max() > 0.1


def test_cosines_equal_mahalanobis_zca_cosines():
    X = _rotated_gaussian(3000, 32, 1e-3, 1e2, seed=1)
    w = Whitener.fit(X, ridge=1e-5)
    Z = w.transform(X[:200], dtype=np.float64)
    cov = np.cov(X.T, bias=True)
    cov_l = cov + 1e-5 * np.trace(cov) / 32 * np.eye(32)
    ev, V = np.linalg.eigh(cov_l)
    zca = (X[:200] - X.mean(0)) @ V @ np.diag(ev**-0.5) @ V.T
    zca /= np.linalg.norm(zca, axis=1, keepdims=True)
    assert np.abs(Z @ Z.T - zca @ zca.T).max() < 1e-6


@pytest.mark.parametrize("c", [1e-8, 1.0, 1e4])
def test_global_scale_invariance(c):
    """Reference defect B3: the relative ridge makes whitening independent of the feature scale."""
    X = _rotated_gaussian(2000, 24, 1e-2, 1e1, seed=2)
    base = Whitener.fit(X).transform(X, dtype=np.float64)
    scaled = Whitener.fit(X * c).transform(X * c, dtype=np.float64)
    assert np.abs(base - scaled).max() < 1e-6


def test_streamed_statistics_equal_one_shot():
    X = _rotated_gaussian(4321, 20, 1e-2, 1e2, seed=3) + 1e3
    mom = RunningMoments(20)
    for s in range(0, len(X), 333):
        mom.update(X[s : s + 333])
    mu = X.mean(0)
    cov = (X - mu).T @ (X - mu) / len(X)
    assert np.allclose(mom.mean, mu, rtol=1e-10, atol=0)
    assert np.abs(mom.covariance - cov).max() / np.abs(cov).max() < 1e-10


def test_fit_on_options_and_fp16_refused():
    rng = np.random.default_rng(0)
    C = rng.normal(size=(300, 8)).astype(np.float32)
    T = rng.normal(size=(200, 8)).astype(np.float32) + 1.0
    Zc, Zt, w = whiten(C, T, fit_on="targets")
    assert np.allclose(w.mean, T.astype(np.float64).mean(0))
    assert np.allclose(np.linalg.norm(Zc, axis=1), 1.0, atol=1e-5)
    with pytest.raises(TypeError, match="float16"):
        whiten(C.astype(np.float16), T)
    with pytest.raises(ValueError, match="fit_on"):
        whiten(C, T, fit_on="nope")


def test_rank_deficient_fit_warns_and_raises_ridge_when_needed():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 40))  # n < k: singular covariance
    with pytest.warns(RuntimeWarning, match="< 2k"):
        w = Whitener.fit(X, ridge=0.0)
    assert w.ridge > 0.0
    assert w.diagnostics["ridge_used"] == w.ridge


# ----------------------------------------------------------------------------- ridge chosen from the data


@pytest.mark.parametrize("n,k", [(500, 20), (300, 64), (40, 120)])
def test_shrinkage_rules_equal_scikit_learn(n, k):
    from sklearn.covariance import ledoit_wolf_shrinkage, oas
    from tarot.geometry.whitening import ledoit_wolf_shrinkage as lw
    from tarot.geometry.whitening import oas_shrinkage

    X = _rotated_gaussian(n, k, 1e-2, 1e1, seed=n) + 3.0
    mom = RunningMoments(k)
    for s in range(0, n, 77):  # streamed in uneven blocks
        mom.update(X[s : s + 77])
    assert lw(mom) == pytest.approx(ledoit_wolf_shrinkage(X), rel=1e-9, abs=1e-12)
    assert oas_shrinkage(mom) == pytest.approx(oas(X)[1], rel=1e-9, abs=1e-12)
    w = Whitener.fit(X, ridge="ledoit_wolf")
    rho = w.diagnostics["shrinkage"]
    assert w.diagnostics["ridge_used"] == pytest.approx(rho / (1 - rho))
    # the ridge form is the shrunk covariance of scikit-learn up to a factor: identical whitened unit rows
    from sklearn.covariance import ShrunkCovariance

    S = ShrunkCovariance(shrinkage=rho).fit(X).covariance_
    ev, V = np.linalg.eigh(S)
    Zs = (X - X.mean(0)) @ V / np.sqrt(ev)
    Zs /= np.linalg.norm(Zs, axis=1, keepdims=True)
    Zw = w.transform(X, dtype=np.float64)
    assert np.abs(Zw @ Zw[:5].T - Zs @ Zs[:5].T).max() < 1e-6


def test_moments_of_shards_merge_exactly_in_any_order():
    X = _rotated_gaussian(3000, 16, 1e-2, 1e2, seed=4) + 50.0
    parts = [X[:1000], X[1000:1100], X[1100:2999], X[2999:]]
    merged = [RunningMoments.of_block(parts[i]) for i in (2, 0, 3, 1)]
    total = merged[0]
    for m in merged[1:]:
        total.merge(m)
    Y = X - X.mean(0)
    sq = (Y**2).sum(1)
    assert total.count == 3000
    assert np.allclose(total.mean, X.mean(0), rtol=1e-12)
    assert np.abs(total.m2 - Y.T @ Y).max() / np.abs(Y.T @ Y).max() < 1e-10
    assert total.sum_fourth == pytest.approx(float(sq @ sq), rel=1e-10)
    assert np.abs(total.b3 - Y.T @ sq).max() / np.abs(Y.T @ sq).max() < 1e-8
    with pytest.raises(ValueError, match="dimension"):
        total.merge(RunningMoments(3))


@pytest.mark.parametrize("n,k", [(2000, 64), (300, 256)])
def test_auto_ridge_keeps_sqrt_n_effective_dimensions(n, k):
    from tarot.geometry.whitening import ridge_degrees_of_freedom

    X = _rotated_gaussian(n, k, 1e-4, 1e2, seed=5)
    w = Whitener.fit(X)  # the default rule
    d = w.diagnostics
    assert d["ridge_rule"].startswith("auto") and d["ridge_requested"] == "auto"
    assert d["df"] == pytest.approx(np.sqrt(n), rel=1e-6)
    ev = np.linalg.eigvalsh(np.cov(X.T, bias=True))
    assert ridge_degrees_of_freedom(ev, w.ridge) == pytest.approx(np.sqrt(n), rel=1e-6)
    assert d["eigenvalues"] == sorted(d["eigenvalues"], reverse=True) and len(d["eigenvalues"]) == k
    assert d["effective_rank"] == pytest.approx(ev.sum() ** 2 / (ev**2).sum(), rel=1e-9)
    assert 0 < d["shrinkage_equivalent"] < 1 and "warning" not in d  # no rows < 2k warning for a data-chosen ridge
    # scale invariant: the same ridge for c·X
    assert Whitener.fit(X * 1e-6).ridge == pytest.approx(w.ridge, rel=1e-6)


def test_auto_ridge_on_few_directions_is_tiny_and_bad_values_are_refused():
    X = _rotated_gaussian(5000, 8, 1e-1, 1e1, seed=6)  # 8 dims < sqrt(5000): every direction is whitened
    w = Whitener.fit(X)
    assert w.ridge <= 1e-8
    for bad, err in (("lw", ValueError), (-1.0, ValueError), (float("nan"), ValueError), (True, TypeError)):
        with pytest.raises(err, match="ridge"):
            Whitener.fit(X, ridge=bad)


def test_as_unit_rows_passes_unit_rows_through_and_normalises_the_rest(tmp_path):
    import warnings

    from tarot.geometry.whitening import as_tensor, as_unit_rows, unit_rows

    rng = np.random.default_rng(0)
    x = unit_rows(rng.normal(size=(300, 16)))
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")  # read-only, already unit rows: used where it lies, no copy
    assert as_unit_rows(mm, block_rows=64) is mm
    off = x.copy()
    off[250] *= 1.0 + 1e-5  # one row off by more than atol, in the last block: a normalised copy
    out = as_unit_rows(off, block_rows=64)
    assert out is not off and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert as_unit_rows(x.astype(np.float64)).dtype == np.float32  # other dtypes are converted
    nan = x.copy()
    nan[3, 0] = np.nan
    assert as_unit_rows(nan) is not nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about wrapping read-only memory: as_tensor copies it
        t = as_tensor(mm[:10])
    assert np.array_equal(t.numpy(), x[:10])
    w = np.ones((4, 3), dtype=np.float32)
    assert as_tensor(w).data_ptr() == w.ctypes.data  # writable memory is wrapped, not copied
