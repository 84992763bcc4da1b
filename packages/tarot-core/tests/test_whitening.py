"""Whitening (spec §4): covariance ≈ I, Mahalanobis cosines, scale invariance, streamed = one-shot statistics."""

import numpy as np
import pytest
from tarot.whitening import RunningMoments, Whitener, whiten


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
