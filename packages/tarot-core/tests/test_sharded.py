"""Selection on the shards of a sharded featurization without merging them (tarot.features.sharded)."""

from __future__ import annotations

import numpy as np
import pytest
import tarot
from _tiny_models import CELoss, Samples, TinyNet
from tarot import FeatureStore, GradientFeaturizer, featurize_to_store
from tarot.app.cli import main
from tarot.errors import StoreError
from tarot.features.sharded import RowConcat, ShardedStore, open_store


def _parts(rng, sizes, d=5):
    return [rng.normal(size=(n, d)).astype(np.float32) for n in sizes]


def test_row_concat_reads_like_the_concatenated_array():
    rng = np.random.default_rng(0)
    parts = _parts(rng, [4, 0, 7, 3])
    whole = np.concatenate(parts)
    rc = RowConcat(parts)
    assert rc.shape == whole.shape and rc.dtype == np.float32 and len(rc) == 14 and rc.ndim == 2
    for key in (slice(0, 14), slice(2, 9), slice(3, 4), slice(11, None), slice(None, 0), slice(1, 13, 3),
                slice(-5, None), 5, -1, np.array([13, 0, 4, 4, 10]), np.arange(14) % 3 == 0, [2, 11]):
        np.testing.assert_array_equal(rc[key], whole[key])
    np.testing.assert_array_equal(rc[2:9, 1:3], whole[2:9, 1:3])
    np.testing.assert_array_equal(np.asarray(rc), whole)
    assert np.asarray(rc, dtype=np.float64).dtype == np.float64
    with pytest.raises(IndexError):
        rc[np.array([14])]
    with pytest.raises(ValueError, match="one width"):
        RowConcat([np.zeros((2, 3)), np.zeros((2, 4))])


def _shards(tmp_path, world: int, n: int = 60):
    feat = GradientFeaturizer(TinyNet(), CELoss(), proj_dim=8, seed=0)
    data = {"candidate": Samples(n, seed=1), "target": Samples(12, seed=2)}
    labels = {"sources": {"candidate": ["a" if i % 3 else "b" for i in range(n)]},
              "groups": {"target": ["x" if i % 2 else "y" for i in range(12)]}}
    for rank in range(world):
        featurize_to_store(feat, data, tmp_path / "shards", None, batch_size=7, progress=False, shard=(rank, world),
                           **labels)
    merged = FeatureStore.merge(sorted((tmp_path / "shards").iterdir()), tmp_path / "merged")
    return tmp_path / "shards", merged


@pytest.mark.parametrize(("method", "kw"), [
    ("fixed_size", dict(ratio=0.3, weighting=True)),
    ("otm", dict(ratio="auto")),
    ("topk_mean", dict(ratio=0.2)),
    ("less", dict(ratio=0.2)),
    ("fixed_size", dict(ratio=0.3, whiten_features=False)),
])
def test_selection_on_shards_equals_selection_on_the_merged_store(tmp_path, method, kw):
    shards, merged = _shards(tmp_path, world=3)
    sharded = open_store(shards)
    assert isinstance(sharded, ShardedStore) and len(sharded.shards) == 3
    assert sharded.count("candidate") == 60 and sharded.dim == merged.dim
    assert sharded.sources("candidate") == merged.sources("candidate")
    assert sharded.groups("target") == merged.groups("target")
    np.testing.assert_array_equal(np.asarray(sharded.features("candidate")), np.asarray(merged.features("candidate")))
    opts = dict(method=method, seed=0, eps=0.05, progress=False, **kw)
    a, b = tarot.select(sharded, **opts), tarot.select(merged, **opts)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert (a.weights is None) == (b.weights is None)
    if a.weights is not None:
        np.testing.assert_array_equal(a.weights, b.weights)
    assert a.ot_distance == b.ot_distance
    assert a.composition() == b.composition()


def test_open_store_prefers_a_merged_store_and_refuses_incomplete_shards(tmp_path):
    shards, merged = _shards(tmp_path, world=2, n=20)
    assert isinstance(open_store(merged.path), FeatureStore)
    feat = GradientFeaturizer(TinyNet(), CELoss(), proj_dim=8, seed=0)
    data = {"candidate": Samples(20, seed=1), "target": Samples(12, seed=2)}
    featurize_to_store(feat, data, tmp_path / "partial", None, batch_size=7, progress=False, shard=(0, 2))
    with pytest.raises(StoreError, match="missing shard rank"):
        open_store(tmp_path / "partial")
    with pytest.raises(StoreError):
        open_store(tmp_path / "nothing-here")


def test_cli_select_and_estimate_on_shards(tmp_path, capsys):
    shards, _ = _shards(tmp_path, world=2, n=30)
    assert main(["estimate", "--store", str(shards), "--gflops", "50"]) == 0
    assert "N=30, M=12" in capsys.readouterr().out
    out = tmp_path / "sel"
    assert main(["select", "--store", str(shards), "--method", "fixed_size", "--ratio", "0.2", "--out", str(out),
                 "--no-progress", "--set", "eps=0.05"]) == 0
    res = tarot.SelectionResult.load(out)
    assert res.size == 6
