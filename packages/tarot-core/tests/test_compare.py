import numpy as np
import pytest
from tarot.compare import paired_difference


def test_identical_methods_tie_with_a_zero_interval():
    a = np.random.default_rng(0).integers(0, 2, 100)
    r = paired_difference(a, a.copy())
    assert (r.mean, r.low, r.high, r.n) == (0.0, 0.0, 0.0, 100)
    assert r.verdict == "no measurable difference"


def test_interval_matches_the_normal_approximation_for_many_items():
    rng = np.random.default_rng(1)
    b = rng.normal(size=4000)
    a = b + 0.05 + rng.normal(scale=1.0, size=4000)
    r = paired_difference(a, b, seed=3)
    d = a - b
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    assert r.mean == pytest.approx(d.mean())
    assert r.high - r.low == pytest.approx(2 * half, rel=0.1)
    assert r.low < d.mean() < r.high
    assert r.verdict == "better"


def test_pairing_sees_a_small_consistent_gain_that_unpaired_noise_hides():
    rng = np.random.default_rng(2)
    base = rng.normal(scale=3.0, size=200)  # item difficulty dominates the scores
    a, b = base + 0.2 + rng.normal(scale=0.1, size=200), base
    assert paired_difference(a, b).verdict == "better"
    unpaired_half = 1.96 * np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert unpaired_half > 0.2  # the two means alone could not separate the methods


def test_losses_flip_the_sign_and_worse_is_reported():
    b = np.full(50, 2.0)
    a = b + np.linspace(0.1, 0.3, 50)  # a has the higher loss on every item
    r = paired_difference(a, b, higher_is_better=False)
    assert r.mean == pytest.approx(-0.2)
    assert r.high < 0 and r.verdict == "worse"
    assert paired_difference(b, a, higher_is_better=False).verdict == "better"


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 2, 80), rng.integers(0, 2, 80)
    assert paired_difference(a, b, seed=7) == paired_difference(a, b, seed=7)


@pytest.mark.parametrize("a,b,msg", [([1, 0], [1], "same items"), ([], [], "zero items"),
                                     ([1.0, np.nan], [0.0, 1.0], "NaN")])
def test_bad_inputs(a, b, msg):
    with pytest.raises(ValueError, match=msg):
        paired_difference(a, b)
