import numpy as np
import pytest
from tarot.app.compare import paired_difference


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


def test_seed_bootstrap_reduces_to_items_for_one_seed_and_widens_with_seed_noise():
    from tarot import paired_difference_seeds

    rng = np.random.default_rng(0)
    items = rng.normal(size=400)
    other = items + 0.2 + 0.3 * rng.normal(size=400)
    one = paired_difference_seeds([other], [items], n_resamples=2000)
    ref = paired_difference(other, items, n_resamples=2000)
    assert (one.mean, one.low, one.high, one.verdict) == pytest.approx((ref.mean, ref.low, ref.high, ref.verdict))
    # consistent per-item gain, but the seeds disagree a lot: the seed level must widen the interval
    base = [rng.normal(size=300) for _ in range(4)]
    shifts = [0.5, -0.3, 0.6, -0.4]
    a = [b + s + 0.05 * rng.normal(size=300) for b, s in zip(base, shifts)]
    two = paired_difference_seeds(a, base, n_resamples=4000)
    pooled = paired_difference(np.concatenate(a), np.concatenate(base), n_resamples=4000)
    assert two.mean == pytest.approx(np.mean(shifts), abs=0.02)
    assert pooled.verdict == "no measurable difference" or pooled.high - pooled.low < two.high - two.low
    assert two.high - two.low > 3 * (pooled.high - pooled.low)
    assert two.verdict == "no measurable difference"
    # the same gain in every seed is found
    a2 = [b + 0.3 + 0.05 * rng.normal(size=300) for b in base]
    assert paired_difference_seeds(a2, base, n_resamples=2000).verdict == "better"


def test_seed_bootstrap_rejects_mismatched_inputs():
    from tarot import paired_difference_seeds

    with pytest.raises(ValueError, match="same seeds"):
        paired_difference_seeds([np.ones(3)] * 2, [np.ones(3)] * 3)
    with pytest.raises(ValueError, match="seed 1"):
        paired_difference_seeds([np.ones(3), np.ones(3)], [np.ones(3), np.ones(4)])
    with pytest.raises(ValueError, match="NaN"):
        paired_difference_seeds([np.array([1.0, np.nan])], [np.ones(2)])


def test_method_verdict_needs_every_baseline_beaten():
    from tarot import method_verdict

    rng = np.random.default_rng(1)
    noise = [rng.normal(size=200) for _ in range(3)]
    scores = {
        "tarot": [n - 1.0 for n in noise],  # a loss: lower is better
        "random": [n + 0.0 for n in noise],
        "strong": [n - 1.0 + 0.001 * rng.normal(size=200) for n in noise],  # ties with tarot
        "weak": [n + 2.0 for n in noise],
    }
    win = method_verdict(scores, ["tarot"], ["random", "weak"], "NLL", higher_is_better=False, n_resamples=2000)
    assert win["winner"] == "tarot" and win["text"].startswith("TAROT wins on NLL")
    assert "against random" in win["text"] and "3 seeds" in win["text"]
    lose = method_verdict(scores, ["tarot"], ["random", "strong", "weak"], "NLL", higher_is_better=False,
                          n_resamples=2000)
    assert lose["winner"] is None and lose["text"].startswith("TAROT does not win on NLL")
    assert "no measurable difference from strong" in lose["text"]
    assert {(c["method"], c["baseline"]) for c in lose["comparisons"]} == {("tarot", b) for b in
                                                                          ("random", "strong", "weak")}
    with pytest.raises(ValueError, match="no scores"):
        method_verdict(scores, ["tarot"], ["missing"], "NLL")
