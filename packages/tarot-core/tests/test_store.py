"""Tests for tarot.features.store.FeatureStore: from_arrays round trip, read-only access, fp16 refusal (B4), errors."""

import json

import numpy as np
import pytest
from tarot import FeatureStore, StoreError


def _arrays(n=7, m=12, k=5, seed=0):
    rng = np.random.default_rng(seed)
    return {"candidate": rng.standard_normal((n, k)).astype(np.float32), "target": rng.standard_normal((m, k))}


def test_from_arrays_round_trip(tmp_path):
    arr = _arrays()
    ids = {"candidate": [f"c{i}" for i in range(7)]}
    sources = {"candidate": ["a", "b", "a", "a", "b", "c", "c"]}
    groups = {"target": ["g1"] * 4 + ["g2"] * 8}
    FeatureStore.from_arrays(tmp_path / "s", arr, ids=ids, sources=sources, groups=groups)
    store = FeatureStore.open(tmp_path / "s")
    assert store.splits == ["candidate", "target"] and store.dim == 5 and store.complete and len(store) == 19
    x = store.features("candidate")
    assert isinstance(x, np.memmap) and x.dtype == np.float32 and x.shape == (7, 5)
    assert np.array_equal(x, arr["candidate"])
    assert np.array_equal(store.features("target"), arr["target"].astype(np.float32))  # fp64 input cast to fp32
    with pytest.raises(ValueError):
        x[0, 0] = 1.0  # read-only
    assert store.ids("candidate") == ids["candidate"] and store.ids("target") == [str(i) for i in range(12)]
    assert store.sources("candidate") == sources["candidate"] and store.sources("target") is None
    assert store.groups("target") == groups["target"] and store.groups("candidate") is None
    assert np.load(tmp_path / "s" / "target.npy").shape == (12, 5)  # plain .npy files
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert man["status"] == "complete" and man["dtype"] == "float32" and man["splits"]["target"]["count"] == 12
    assert {"numpy", "python"} <= set(man["created_with"])
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]  # no temporary manifest left
    with pytest.raises(KeyError, match="no split 'val'"):
        store.features("val")


def test_fp16_refused_unless_requested(tmp_path):
    half = {"candidate": np.ones((3, 4), dtype=np.float16)}
    with pytest.raises(StoreError, match="float16: refused"):
        FeatureStore.from_arrays(tmp_path / "h", half)
    store = FeatureStore.from_arrays(tmp_path / "h2", half, allow_fp16=True)
    assert store.features("candidate").dtype == np.float32


def test_invalid_arrays_refused(tmp_path):
    bad = _arrays()
    bad["candidate"][4, 2] = np.nan
    with pytest.raises(StoreError, match="row 4 has non-finite"):
        FeatureStore.from_arrays(tmp_path / "a", bad)
    with pytest.raises(StoreError, match="different dims"):
        FeatureStore.from_arrays(tmp_path / "b", {"candidate": np.zeros((2, 3)), "target": np.zeros((2, 4))})
    with pytest.raises(StoreError, match="2-D"):
        FeatureStore.from_arrays(tmp_path / "c", {"candidate": np.zeros(3)})
    with pytest.raises(StoreError, match="not allowed"):
        FeatureStore.from_arrays(tmp_path / "d", {"../x": np.zeros((2, 3))})
    with pytest.raises(StoreError, match="ids of split 'target' are not unique: 'x' appears at rows 1 and 2"):
        FeatureStore.from_arrays(tmp_path / "f", _arrays(m=3), ids={"target": ["y", "x", "x"]})
    with pytest.raises(StoreError, match="2 labels for 7 rows"):
        FeatureStore.from_arrays(tmp_path / "e", _arrays(), ids={"candidate": ["a", "b"]})


def test_duplicate_ids_in_an_edited_manifest_are_refused_on_open(tmp_path):
    import json

    store = FeatureStore.from_arrays(tmp_path / "s", _arrays(m=3), ids={"target": ["a", "b", "c"]})
    mf = store.path / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["ids"]["target"] = ["a", "b", "a"]
    mf.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"manifest.json: ids of split 'target' are not unique: 'a' appears at rows "
                                         r"0 and 2"):
        FeatureStore.open(store.path)


def test_overwrite_and_open_errors(tmp_path):
    FeatureStore.from_arrays(tmp_path / "s", _arrays())
    with pytest.raises(StoreError, match="already holds a feature store"):
        FeatureStore.from_arrays(tmp_path / "s", _arrays(seed=1))
    store = FeatureStore.from_arrays(tmp_path / "s", _arrays(seed=1), overwrite=True)
    assert np.array_equal(store.features("candidate"), _arrays(seed=1)["candidate"])
    with pytest.raises(StoreError, match="manifest.json does not exist"):
        FeatureStore.open(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(StoreError, match="format 'other'"):
        FeatureStore.open(tmp_path / "junk")


def test_incomplete_store_refuses_reads(tmp_path):
    man = FeatureStore.build_manifest(4, {"candidate": 3}, checkpoints=[{"name": "c", "weight": 1.0, "path": None}])
    store = FeatureStore.create_or_resume(tmp_path / "s", man)
    feats, mask = store.open_partial("candidate", 0)
    FeatureStore.write_rows(feats, mask, slice(0, 2), np.ones((2, 4), dtype=np.float32))
    with pytest.raises(StoreError, match=r"incomplete \(split 'candidate' rows done per checkpoint: c: 2/3\)"):
        FeatureStore.open(tmp_path / "s").features("candidate")
    with pytest.raises(StoreError, match="2/3 rows done"):
        store.finalize()
    FeatureStore.write_rows(feats, mask, slice(2, 3), np.full((1, 4), 3.0, dtype=np.float32))
    store.finalize()
    reopened = FeatureStore.open(tmp_path / "s")
    assert np.array_equal(reopened.features("candidate"), np.array([[1.0] * 4, [1.0] * 4, [3.0] * 4], np.float32))


def test_merge_rejects_non_shards(tmp_path):
    FeatureStore.from_arrays(tmp_path / "s", _arrays())
    with pytest.raises(StoreError, match="is not a shard"):
        FeatureStore.merge([tmp_path / "s"], tmp_path / "out")
