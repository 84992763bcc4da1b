"""Selection diagnostics (tarot.diagnostics) and their place in results and reports."""

import numpy as np
import pytest
import tarot
from tarot.diagnostics import selection_diagnostics
from tarot.geometry.whitening import whiten
from tarot.ot import entropic_ot
from tarot.selectors import fixed_size, topk_mean


@pytest.fixture(scope="module")
def mix():
    m = tarot.make_mixture(seed=0)
    Zc, Zt, _ = whiten(m.candidates, m.targets)
    return m, Zc, Zt


def test_collapsed_selection_leaves_target_clusters_uncovered(mix):
    m, Zc, Zt = mix
    top = topk_mean(Zc, Zt, 150).indices  # piles onto the dominant mode
    fs = fixed_size(Zc, Zt, 150).indices
    d_top = selection_diagnostics(Zc, Zt, top, n_clusters=3)
    d_fs = selection_diagnostics(Zc, Zt, fs, n_clusters=3)
    assert len(d_top["clusters"]["uncovered"]) >= 1 and d_fs["clusters"]["uncovered"] == []
    assert d_fs["clusters"]["share_l1"] < d_top["clusters"]["share_l1"]
    assert sum(g["target_share"] for g in d_fs["clusters"]["groups"]) == pytest.approx(1.0)
    assert sum(g["selection_share"] for g in d_top["clusters"]["groups"]) == pytest.approx(1.0)
    assert d_top["overlap"]["topk_mean"]["shared_fraction"] == 1.0
    assert d_top["overlap"]["random_expected_fraction"] == pytest.approx(150 / Zc.shape[0])


def test_coverage_ess_and_determinism(mix):
    _, Zc, Zt = mix
    far = -Zt  # targets opposite to their own modes: the pool covers them worse than they cover each other
    d_far = selection_diagnostics(Zc, far, np.arange(50))
    d_near = selection_diagnostics(Zc, Zt, np.arange(50))
    assert d_near["target_coverage"]["fraction_covered_by_pool"] > d_far["target_coverage"]["fraction_covered_by_pool"]
    assert d_near["weights"]["effective_sample_size"] == 50 and d_near["weights"]["ess_fraction"] == 1.0
    counts = np.ones(50, dtype=np.int64)
    counts[0] = 51  # one sample carries half of the repeats
    d_w = selection_diagnostics(Zc, Zt, np.arange(50), counts)
    assert d_w["weights"]["effective_sample_size"] == pytest.approx(100**2 / (51**2 + 49))
    again = selection_diagnostics(Zc, Zt, np.arange(50), counts)
    assert again == d_w


def test_front_door_records_diagnostics_and_weighted_ot_from_realised_counts(mix, tmp_path):
    m, _, _ = mix
    res = tarot.select(m.candidates, m.targets, method="fixed_size", ratio=0.1, weighting=True, progress=False)
    d = res.diagnostics
    assert {"target_coverage", "clusters", "weights", "overlap"} <= set(d["selection"])
    Zc, Zt, _ = whiten(m.candidates, m.targets)
    realised = res.weights / res.weights.sum()
    v = entropic_ot(Zc[res.indices], Zt, a=realised, tol=1e-3, value_tol=1e-7).value
    assert d["weighted_ot"] == pytest.approx(v, rel=1e-6)
    assert d["weighted_ot_continuous"] != d["weighted_ot"]  # measured: a small problem (measure_continuous="auto")
    assert "weighted_ot_continuous_skipped" not in d
    assert d["whitening"]["ridge_rule"].startswith("auto")
    never = tarot.select(m.candidates, m.targets, method="fixed_size", ratio=0.1, weighting=True, progress=False,
                         measure_continuous="never").diagnostics
    assert never["weighted_ot_continuous"] is None and "never" in never["weighted_ot_continuous_skipped"]
    assert never["weighted_ot"] == d["weighted_ot"]
    with pytest.raises(ValueError, match="measure_continuous"):
        tarot.select(m.candidates, m.targets, method="fixed_size", ratio=0.1, weighting=True, progress=False,
                     measure_continuous="sometimes")
    tarot.write_report(res, tmp_path / "rep")
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "Selection diagnostics" in page and "whitening_spectrum.png" in page
    assert (tmp_path / "rep" / "whitening_spectrum.png").is_file()
    quiet = tarot.select(m.candidates, m.targets, method="random", ratio=0.1, diagnose=False, progress=False)
    assert "selection" not in quiet.diagnostics


def test_continuous_weights_are_measured_on_small_problems_only_by_default(mix, monkeypatch):
    """measure_continuous="auto" skips the continuous-weights solve above the dense solver's size (here the limit is
    lowered so that the tiny mixture counts as large); "always" measures it anyway."""
    m, _, _ = mix
    monkeypatch.setattr("tarot.api.SPARSE_MIN_ENTRIES", 10)
    kw = dict(method="fixed_size", ratio=0.1, weighting=True, progress=False, diagnose=False)
    auto = tarot.select(m.candidates, m.targets, **kw).diagnostics
    assert auto["weighted_ot_continuous"] is None and "pairs >" in auto["weighted_ot_continuous_skipped"]
    always = tarot.select(m.candidates, m.targets, measure_continuous="always", **kw).diagnostics
    assert always["weighted_ot_continuous"] is not None and always["weighted_ot"] == auto["weighted_ot"]


def test_equal_repeat_counts_reuse_the_uniform_solve(mix, monkeypatch):
    """beta = 0 gives every selected sample the same repeat count: the realised measure is the uniform one, so its
    OT value is the selection's, and no second solve runs; with beta > 0 the counts differ and it is solved."""
    m, _, _ = mix
    calls = []
    real = tarot.api.entropic_ot
    monkeypatch.setattr("tarot.api.entropic_ot", lambda *a, **k: calls.append(k.get("a")) or real(*a, **k))
    kw = dict(method="fixed_size", ratio=0.1, weighting=True, progress=False, diagnose=False,
              measure_continuous="never")
    flat = tarot.select(m.candidates, m.targets, beta=0.0, **kw)
    assert np.all(flat.weights == 2) and len(calls) == 1 and calls[0] is None
    assert flat.diagnostics["weighted_ot"] == flat.ot_distance and flat.diagnostics["weighted_ot_is_uniform"]
    calls.clear()
    tilted = tarot.select(m.candidates, m.targets, beta=0.5, **kw)
    assert len(set(tilted.weights.tolist())) > 1 and len(calls) == 2 and calls[1] is not None
    assert "weighted_ot_is_uniform" not in tilted.diagnostics
    assert tilted.diagnostics["weighted_ot"] != tilted.ot_distance


def test_nearest_targets_from_the_solves_products_equal_a_fresh_computation(monkeypatch):
    # the front door hands the diagnostics every selected row's nearest target from the products its OT solves
    # kept (ties: the lower index, as the diagnostics' own argmax); the selection diagnostics are then the same
    import tarot.api as api
    from tarot.diagnostics import _nearest_target
    from tarot.sparse_ot import Products

    rng = np.random.default_rng(6)
    Zc = rng.integers(-2, 3, (300, 5)).astype(np.float32)  # integer rows: exact products with ties
    Zt = rng.integers(-2, 3, (40, 5)).astype(np.float32)
    idx = np.sort(rng.choice(300, 60, replace=False))
    P = Products(Zc[idx], Zt, 1 << 20)
    assert api._nearest_targets(P) is None  # an empty cache gives nothing; the diagnostics compute their own
    P.fill()
    near = api._nearest_targets(P)
    assert np.array_equal(near, _nearest_target(Zc[idx], Zt))
    assert selection_diagnostics(Zc, Zt, idx, nearest_target=near) == selection_diagnostics(Zc, Zt, idx)
    assert api._nearest_targets(None) is None
