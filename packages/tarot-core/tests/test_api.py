"""The front door tarot.select and SelectionResult persistence."""

import json

import numpy as np
import pytest
import tarot
from tarot.features.store import FeatureStore


@pytest.fixture(scope="module")
def mix():
    return tarot.make_mixture(n_per_mode=80, n_off_target=160, n_targets=60, seed=2)


def test_select_fixed_size_roundtrip(tmp_path, mix):
    res = tarot.select(mix.candidates, mix.targets, method="fixed_size", ratio=0.1, weighting=True,
                       candidate_sources=mix.candidate_sources, progress=False)
    assert res.size == int(0.1 * len(mix.candidates))
    assert res.weights.sum() == 2 * res.size and res.weights.min() >= 1
    assert res.config["method"] == "fixed_size" and res.config["selector_options"]["fill_rounds"] == 12
    assert set(res.composition()) <= {"mode0", "mode1", "mode2", "off_target"}
    out = res.save(tmp_path / "sel")
    back = tarot.SelectionResult.load(out)
    assert np.array_equal(back.indices, res.indices) and np.array_equal(back.weights, res.weights)
    assert back.ot_distance == pytest.approx(res.ot_distance)
    assert back.config == json.loads(json.dumps(res.config))
    assert back.composition() == res.composition()
    with pytest.raises(ValueError):
        back.weights[0] = 5  # read-only
    res.save(tmp_path / "sel")  # overwrite in place works
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["sel"]


def test_save_keeps_what_it_did_not_write_and_refuses_foreign_folders(tmp_path, mix):
    a = tarot.select(mix.candidates, mix.targets, method="random", n=10, seed=0, progress=False)
    b = tarot.select(mix.candidates, mix.targets, method="topk_mean", n=20, progress=False)
    out = a.save(tmp_path / "sel")
    (out / "report").mkdir()
    (out / "report" / "index.html").write_text("<p>mine</p>")
    b.save(out)  # a result folder with a sub-folder (a report) is replaced file by file
    back = tarot.SelectionResult.load(out)
    assert back.method == "topk_mean" and np.array_equal(back.indices, b.indices)
    assert (out / "report" / "index.html").read_text() == "<p>mine</p>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sel"]  # no temporary or .old folder left
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="is not a saved SelectionResult"):
        a.save(foreign)
    assert [p.name for p in foreign.iterdir()] == ["todo.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        a.save(tmp_path / "file")
    (out / "result.json").unlink()  # a save interrupted between its two renames: the next save completes it
    a.save(out)
    assert tarot.SelectionResult.load(out).method == "random"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "notes", "sel"]
    b.save(out, extra_files={"config.yaml": "method: topk_mean\n"})  # written with the result, before its marker
    assert (out / "config.yaml").read_text() == "method: topk_mean\n"
    for bad in ("result.json", "../escape.txt"):
        with pytest.raises(ValueError, match="extra file name"):
            b.save(out, extra_files={bad: "x"})
    assert tarot.SelectionResult.load(out).method == "topk_mean" and not (tmp_path / "escape.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "notes", "sel"]  # no temporary folder left


def test_select_from_store(tmp_path, mix):
    store = FeatureStore.from_arrays(tmp_path / "store", {"candidate": mix.candidates, "target": mix.targets},
                                     sources={"candidate": mix.candidate_sources})
    res = tarot.select(FeatureStore.open(tmp_path / "store"), method="topk_mean", n=25, progress=False)
    assert res.size == 25 and res.candidate_sources == mix.candidate_sources
    assert res.config["store"].endswith("store")
    assert store.dim == mix.candidates.shape[1]


@pytest.mark.parametrize("kwargs,msg", [
    (dict(method="fixed_size"), "exactly one"),
    (dict(method="fixed_size", ratio=0.1, n=5), "exactly one"),
    (dict(method="fixed_size", ratio="auto"), "only available"),
    (dict(method="otm", ratio=0.2), "estimates the ratio"),
    (dict(method="fixed_size", ratio=1.5), "ratio"),
    (dict(method="nope", ratio=0.1), "unknown method"),
    (dict(method="topk_mean", ratio=0.1, space="bogus"), "space"),
])
def test_select_argument_errors(mix, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        tarot.select(mix.candidates, mix.targets, progress=False, **kwargs)


def test_feature_magnitude_does_not_matter(mix):
    """Reference defects B3/B4: features ~1e-6 and the same ×1e6 give identical selections."""
    small = (mix.candidates * 1e-6).astype(np.float32)
    small_t = (mix.targets * 1e-6).astype(np.float32)
    a = tarot.select(small, small_t, method="fixed_size", n=40, progress=False)
    b = tarot.select(small * 1e6, small_t * 1e6, method="fixed_size", n=40, progress=False)
    assert np.array_equal(a.indices, b.indices)
    with pytest.raises(TypeError, match="float16"):
        tarot.select(mix.candidates.astype(np.float16), mix.targets, method="random", n=3)


def test_each_method_runs_through_the_front_door(mix):
    groups = [f"g{i % 3}" for i in range(len(mix.targets))]
    for method in ("random", "topk_mean", "less", "round_robin", "fixed_size"):
        res = tarot.select(mix.candidates, mix.targets, method=method, n=30, target_groups=groups, progress=False)
        assert res.size == 30 and res.method == method and res.ot_distance is not None
    res = tarot.select(mix.candidates, mix.targets, method="otm", ratio="auto", progress=False, folds=5)
    assert 0 < res.ratio <= 1 and len(res.diagnostics["otm"]["folds"]) == 5
    raw = tarot.select(mix.candidates, mix.targets, method="topk_mean", n=30, space="raw", whiten_features=False,
                       progress=False)
    assert raw.config["space"] == "raw" and raw.config["whiten"] is False


def test_final_solve_warm_started_from_the_last_fill_round_equals_a_cold_solve(monkeypatch):
    """fixed_size hands its last fill-round solve (rows in solve order) to the front door, which extends it to the
    final selection and puts the potentials back in sorted order; the value and potentials equal a cold solve's."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 8))
    cand = (centres[rng.integers(0, 4, 600)] + 0.4 * rng.normal(size=(600, 8))).astype(np.float32)
    tgt = (centres[rng.integers(0, 2, 40)] + 0.4 * rng.normal(size=(40, 8))).astype(np.float32)
    kw = dict(method="fixed_size", n=130, eps=1e-2, progress=False, diagnose=False)  # 130 = 3 layers of 40 + a fill
    cold = tarot.select(cand, tgt, **kw)
    assert not cold.diagnostics["ot"]["warm_started"]  # small problems start from exact duals either way
    monkeypatch.setattr("tarot.api.SPARSE_MIN_ENTRIES", 0)  # take the warm path on this small problem
    warm = tarot.select(cand, tgt, **kw)
    assert warm.diagnostics["ot"]["warm_started"] and warm.diagnostics["fill_rounds"]
    np.testing.assert_array_equal(warm.indices, cold.indices)
    assert warm.ot_distance == pytest.approx(cold.ot_distance, rel=1e-7)
    fw, fc = warm.potentials - warm.potentials.mean(), cold.potentials - cold.potentials.mean()
    np.testing.assert_allclose(fw, fc, atol=1e-6)
