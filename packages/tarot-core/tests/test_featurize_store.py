"""Tests for tarot.featurize_to_store: checkpoint sums (B1), resume, shards + merge, M > N (B9), preconditioners."""

import numpy as np
import pytest
import torch
from _tiny_models import CELoss, Samples, TinyNet, batch_of, perturbed_state
from tarot import Checkpoint, FeatureStore, GradientFeaturizer, StoreError, featurize_to_store

K = 16


def _feat(model=None, seed=0, precondition=None):
    return GradientFeaturizer(model or TinyNet(), CELoss(), proj_dim=K, seed=seed, precondition=precondition)


def _data(n_cand=13, n_tgt=9, fail_at=None):
    return {"candidate": Samples(n_cand, seed=10, fail_at=fail_at), "target": Samples(n_tgt, seed=11)}


def _direct(model, state, ds, seed=0):
    """Features of the whole data set at a given state, one batch, no store."""
    model.load_state_dict(state)
    return _feat(model, seed).featurize_batch(batch_of(ds)).numpy().astype(np.float64)


def _files_equal(a: FeatureStore, b: FeatureStore) -> None:
    for split in a.splits:
        assert (a.path / f"{split}.npy").read_bytes() == (b.path / f"{split}.npy").read_bytes(), split


def test_two_checkpoints_give_weighted_sum_in_any_order(tmp_path):
    model = TinyNet()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    sd1, sd2 = perturbed_state(model, 1), perturbed_state(model, 2)
    torch.save(sd1, tmp_path / "ck1.pt")
    ckpts = [
        Checkpoint("ep1", path=str(tmp_path / "ck1.pt"), weight=1.0),
        Checkpoint("ep2", state_dict=sd2, weight=0.5),
    ]
    data = _data()
    store = featurize_to_store(_feat(model), data, tmp_path / "a", ckpts, batch_size=4, progress=False)
    assert store.complete and store.splits == ["candidate", "target"] and store.dim == K
    for k, v in model.state_dict().items():  # original weights restored
        assert torch.equal(v, original[k]), k
    for split, ds in data.items():
        f1, f2 = _direct(TinyNet(), sd1, ds), _direct(TinyNet(), sd2, ds)
        got = np.asarray(store.features(split), dtype=np.float64)
        expect = 1.0 * f1 + 0.5 * f2
        assert np.abs(got - expect).max() <= 1e-5 * np.abs(expect).max()
        assert np.abs(got - f2).max() > 1e-2 * np.abs(f2).max()  # not the last checkpoint alone
    rev = featurize_to_store(_feat(model), data, tmp_path / "b", ckpts[::-1], batch_size=4, progress=False)
    _files_equal(store, rev)
    man = store.manifest
    assert [c["name"] for c in man["checkpoints"]] == ["ep1", "ep2"]
    assert [c["weight"] for c in man["checkpoints"]] == [1.0, 0.5]
    assert man["projector"]["seed"] == 0 and man["dtype"] == "float32" and man["status"] == "complete"
    assert not (tmp_path / "a" / "partial").exists()


def test_stateless_and_partial_checkpoints_use_the_original_weights(tmp_path):
    model = TinyNet()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    sd1 = perturbed_state(model, 1)
    partial = {k: v for k, v in perturbed_state(model, 2).items() if k.startswith("fc2.")}
    ckpts = [Checkpoint("c1", state_dict=sd1), Checkpoint("now"), Checkpoint("fc2", state_dict=partial, strict=False)]
    data = {"candidate": Samples(5, seed=4)}
    store = featurize_to_store(_feat(model), data, tmp_path / "s", ckpts, batch_size=2, progress=False)
    ds = data["candidate"]
    expect = (
        _direct(TinyNet(), sd1, ds) + _direct(TinyNet(), original, ds) + _direct(TinyNet(), {**original, **partial}, ds)
    )
    got = np.asarray(store.features("candidate"), dtype=np.float64)
    assert np.abs(got - expect).max() <= 1e-5 * np.abs(expect).max()


def test_resume_after_crash_is_byte_identical(tmp_path):
    ckpts = [Checkpoint("c1", state_dict=perturbed_state(TinyNet(), 1)), Checkpoint("c2", state_dict=None)]
    ref = featurize_to_store(_feat(), _data(), tmp_path / "ref", ckpts, batch_size=3, progress=False)
    crashing = _data(fail_at=7)  # row 7: inside the third batch of the candidate split
    with pytest.raises(RuntimeError, match="simulated crash at row 7"):
        featurize_to_store(_feat(), crashing, tmp_path / "run", ckpts, batch_size=3, progress=False)
    broken = FeatureStore.open(tmp_path / "run")
    assert not broken.complete
    assert broken.progress()["candidate"] == {"c1": 6, "c2": 0}
    with pytest.raises(StoreError, match="incomplete") as err:
        broken.features("candidate")
    assert "\n" not in str(err.value) and "c1: 6/13" in str(err.value)
    crashing["candidate"].fail_at = None
    crashing["candidate"].reads = 0
    done = featurize_to_store(_feat(), crashing, tmp_path / "run", ckpts, batch_size=3, progress=False)
    assert crashing["candidate"].reads == 13 + 13 - 6  # finished batches of c1 were not recomputed
    _files_equal(ref, done)
    assert done.ids("candidate") == ref.ids("candidate")
    # a complete store is returned as is
    again = featurize_to_store(_feat(), crashing, tmp_path / "run", ckpts, batch_size=3, progress=False)
    assert again.complete


def test_resume_with_different_arguments_is_refused(tmp_path):
    data = _data(fail_at=None)
    data["candidate"].fail_at = 5
    with pytest.raises(RuntimeError):
        featurize_to_store(_feat(), data, tmp_path / "s", None, batch_size=3, progress=False)
    data["candidate"].fail_at = None
    with pytest.raises(StoreError, match="'batch_size'"):
        featurize_to_store(_feat(), data, tmp_path / "s", None, batch_size=4, progress=False)
    with pytest.raises(StoreError, match="'projector'"):
        featurize_to_store(_feat(seed=1), data, tmp_path / "s", None, batch_size=3, progress=False)


def test_two_shards_merged_equal_single_process(tmp_path):
    ckpts = [Checkpoint("c1", state_dict=perturbed_state(TinyNet(), 3), weight=2.0), Checkpoint("c2")]
    data = _data(n_cand=11, n_tgt=14)
    labels = {
        "ids": {"candidate": [f"c{i}" for i in range(11)], "target": [f"t{i}" for i in range(14)]},
        "sources": {"candidate": ["a" if i % 3 else "b" for i in range(11)]},
        "groups": {"target": ["g1"] * 5 + ["g2"] * 9},
    }
    single = featurize_to_store(_feat(), data, tmp_path / "single", ckpts, batch_size=3, progress=False, **labels)
    for rank in (0, 1):
        sh = featurize_to_store(
            _feat(), data, tmp_path / "shards", ckpts, batch_size=3, shard=(rank, 2), progress=False, **labels
        )
        assert sh.path.name == f"shard-{rank:05d}-of-00002"
        assert 0 < sh.count("candidate") < 11
    merged = FeatureStore.merge(tmp_path / "shards", tmp_path / "merged")
    _files_equal(single, merged)
    for split in single.splits:
        assert merged.ids(split) == single.ids(split)
        assert merged.sources(split) == single.sources(split)
        assert merged.groups(split) == single.groups(split)
    assert merged.groups("target")[-1] == "g2" and merged.sources("target") is None
    with pytest.raises(StoreError, match="already holds"):
        FeatureStore.merge(tmp_path / "shards", tmp_path / "merged")


def test_merge_carries_kept_per_checkpoint_arrays(tmp_path):
    ckpts = [Checkpoint("c1", state_dict=perturbed_state(TinyNet(), 3), weight=2.0), Checkpoint("c2")]
    data = _data(n_cand=11, n_tgt=14)
    single = featurize_to_store(_feat(), data, tmp_path / "single", ckpts, batch_size=3, progress=False,
                                keep_partials=True)
    for rank in (0, 1):
        featurize_to_store(_feat(), data, tmp_path / "shards", ckpts, batch_size=3, shard=(rank, 2), progress=False,
                           keep_partials=True)
    merged = FeatureStore.merge(tmp_path / "shards", tmp_path / "merged")
    for split in single.splits:
        for ci in range(2):
            want, got = single.partial_paths(split, ci), merged.partial_paths(split, ci)
            assert np.array_equal(np.load(want[0]), np.load(got[0]))
            assert np.load(got[1]).all()
    # shards without kept partials merge without them
    for rank in (0, 1):
        featurize_to_store(_feat(), data, tmp_path / "bare", ckpts, batch_size=3, shard=(rank, 2), progress=False)
    bare = FeatureStore.merge(tmp_path / "bare", tmp_path / "merged_bare")
    assert not bare.partial_paths("candidate", 0)[0].exists()


def test_merge_refuses_mismatched_or_missing_shards(tmp_path):
    data = _data(n_cand=8, n_tgt=6)
    featurize_to_store(_feat(seed=0), data, tmp_path / "p", None, batch_size=2, shard=(0, 2), progress=False)
    with pytest.raises(StoreError, match=r"missing shard rank\(s\) \[1\] of world size 2"):
        FeatureStore.merge(tmp_path / "p", tmp_path / "m1")
    featurize_to_store(_feat(seed=1), data, tmp_path / "p", None, batch_size=2, shard=(1, 2), progress=False)
    with pytest.raises(StoreError, match="differs .* in 'projector'"):
        FeatureStore.merge(tmp_path / "p", tmp_path / "m2")
    assert not (tmp_path / "m2" / "manifest.json").exists()
    with pytest.raises(StoreError, match="no shard-XXXXX-of-XXXXX"):
        FeatureStore.merge(tmp_path / "nothing-here", tmp_path / "m3")


def test_more_targets_than_candidates_round_trip_every_row(tmp_path):
    data = _data(n_cand=5, n_tgt=23)
    ids = {"target": [f"tgt-{i}" for i in range(23)]}
    store = featurize_to_store(_feat(), data, tmp_path / "s", None, batch_size=4, ids=ids, progress=False)
    store = FeatureStore.open(tmp_path / "s")
    assert store.count("target") == 23 and store.count("candidate") == 5
    assert store.ids("target") == ids["target"] and store.ids("candidate") == [str(i) for i in range(5)]
    model = TinyNet()
    for split, ds in data.items():
        expect = _direct(model, model.state_dict(), ds)
        got = np.asarray(store.features(split), dtype=np.float64)
        assert got.shape == expect.shape
        assert np.abs(got - expect).max() <= 1e-5 * np.abs(expect).max()
        assert (np.abs(got).sum(axis=1) > 0).all()  # every row written


def test_preconditioner_applied_to_configured_split_only(tmp_path):
    calls = []

    def double(grads, checkpoint):
        calls.append(checkpoint.name)
        return {k: 2.0 * v for k, v in grads.items()}

    data = _data(n_cand=6, n_tgt=5)
    plain = featurize_to_store(_feat(), data, tmp_path / "plain", None, batch_size=4, progress=False)
    pre = featurize_to_store(
        _feat(), data, tmp_path / "pre", None, batch_size=4, precondition={"candidate": double}, progress=False
    )
    assert calls == ["current", "current"]  # two candidate batches, no target batch
    np.testing.assert_allclose(pre.features("candidate"), 2.0 * np.asarray(plain.features("candidate")), rtol=1e-6)
    assert np.array_equal(pre.features("target"), plain.features("target"))
    assert pre.manifest["precondition"]["target"] is None and "double" in pre.manifest["precondition"]["candidate"]
    # the featurizer's own preconditioner applies to every split when no dict is given
    both = featurize_to_store(_feat(precondition=double), data, tmp_path / "both", None, batch_size=4, progress=False)
    np.testing.assert_allclose(both.features("target"), 2.0 * np.asarray(plain.features("target")), rtol=1e-6)


def test_splits_sharing_a_data_set_compute_gradients_once(tmp_path):
    """The same target data set under two preconditioners: one gradient pass, same bytes as featurizing apart."""

    class Counting(GradientFeaturizer):
        calls = 0

        def per_sample_grads(self, batch):
            Counting.calls += 1
            return super().per_sample_grads(batch)

    def double(grads, checkpoint):
        return {k: 2.0 * v for k, v in grads.items()}

    model = TinyNet()
    ckpts = [Checkpoint(f"c{i}", state_dict=perturbed_state(model, i)) for i in (1, 2)]
    cand, tgt = Samples(6, seed=10), Samples(5, seed=11)
    kw = dict(checkpoints=ckpts, batch_size=4, precondition={"candidate": double, "target_pre": double},
              progress=False, keep_partials=True)
    shared = featurize_to_store(Counting(model, CELoss(), proj_dim=K), {"candidate": cand, "target": tgt,
                                "target_pre": tgt}, tmp_path / "shared", **kw)
    assert Counting.calls == 2 * (2 + 2)  # per checkpoint: 2 candidate batches + 2 target batches, not 2 + 2 + 2
    Counting.calls = 0
    apart = featurize_to_store(Counting(model, CELoss(), proj_dim=K), {"candidate": cand, "target": tgt,
                               "target_pre": Samples(5, seed=11)}, tmp_path / "apart", **kw)
    assert Counting.calls == 2 * (2 + 2 + 2)
    _files_equal(shared, apart)
    np.testing.assert_allclose(shared.features("target_pre"), 2.0 * np.asarray(shared.features("target")), rtol=1e-6)


def test_argument_validation(tmp_path):
    data = _data(n_cand=4, n_tgt=4)
    with pytest.raises(ValueError, match="unique"):
        featurize_to_store(_feat(), data, tmp_path / "x", [Checkpoint("a"), Checkpoint("a")], 2, progress=False)
    with pytest.raises(StoreError, match="3 labels for 4 rows"):
        featurize_to_store(_feat(), data, tmp_path / "y", None, 2, ids={"candidate": ["a", "b", "c"]}, progress=False)
    with pytest.raises(ValueError, match="unknown split"):
        featurize_to_store(_feat(), data, tmp_path / "z", None, 2, groups={"tgt": ["a"] * 4}, progress=False)


def test_less_on_a_store_with_per_checkpoint_features_is_less_proper(tmp_path, caplog):
    """tarot.select(store, method="less") uses the kept per-checkpoint features and the checkpoints' weights (LESS:
    per-checkpoint normalisation, weighted cosines); on summed features it says that it is a one-checkpoint LESS."""
    import tarot
    from tarot.selectors import SELECTORS

    ckpts = [Checkpoint("c1", state_dict=perturbed_state(TinyNet(), 3), weight=2.0),
             Checkpoint("c2", state_dict=perturbed_state(TinyNet(), 4), weight=0.5)]
    data = {"candidate": Samples(24, seed=10), "target": Samples(6, seed=11)}
    kept = featurize_to_store(_feat(), data, tmp_path / "kept", ckpts, batch_size=5, progress=False,
                              keep_partials=True)
    per_ck = [kept.checkpoint_features(s) for s in ("candidate", "target")]
    assert kept.checkpoint_weights() == [2.0, 0.5] and len(per_ck[0]) == 2 and per_ck[0][0].shape == (24, K)
    res = tarot.select(kept, method="less", n=6, progress=False)
    ref = SELECTORS["less"](per_ck[0], per_ck[1], 6, checkpoint_weights=[2.0, 0.5])
    assert np.array_equal(res.indices, np.sort(ref.indices))
    assert res.diagnostics["less"]["per_checkpoint"] and res.diagnostics["less"]["checkpoint_weights"] == [2.0, 0.5]
    assert res.config["selector_options"]["checkpoint_weights"] == [2.0, 0.5]
    # the summed features alone: a different computation, said so in the diagnostics and the log
    summed = featurize_to_store(_feat(), data, tmp_path / "summed", ckpts, batch_size=5, progress=False)
    assert summed.checkpoint_features("candidate") is None
    with caplog.at_level("WARNING", logger="tarot.api"):
        res2 = tarot.select(summed, method="less", n=6, progress=False)
    assert not res2.diagnostics["less"]["per_checkpoint"] and "keep_partials=True" in caplog.text
    one = SELECTORS["less"](np.asarray(summed.features("candidate")), np.asarray(summed.features("target")), 6)
    assert np.array_equal(res2.indices, np.sort(one.indices))


def test_a_merge_killed_midway_leaves_no_store_and_the_rerun_is_exact(tmp_path, monkeypatch):
    """A crash after the arrays but before the manifest: the output is not a store (it cannot be opened or taken
    for complete), and merging again gives the store an uninterrupted merge gives."""
    ckpts = [Checkpoint("c1", state_dict=perturbed_state(TinyNet(), 3), weight=2.0), Checkpoint("c2")]
    data = _data(n_cand=11, n_tgt=6)
    for rank in (0, 1):
        featurize_to_store(_feat(), data, tmp_path / "shards", ckpts, batch_size=3, shard=(rank, 2), progress=False)
    clean = FeatureStore.merge(tmp_path / "shards", tmp_path / "clean")

    def crash(self, shards, counts):
        raise KeyboardInterrupt  # the process dies here (kill -9 leaves the same files behind)

    with monkeypatch.context() as m:
        m.setattr(FeatureStore, "_merge_partials", crash)
        with pytest.raises(KeyboardInterrupt):
            FeatureStore.merge(tmp_path / "shards", tmp_path / "merged")
    assert (tmp_path / "merged" / "candidate.npy").is_file() and not (tmp_path / "merged" / "manifest.json").exists()
    with pytest.raises(StoreError, match="is not a feature store"):
        FeatureStore.open(tmp_path / "merged")
    again = FeatureStore.merge(tmp_path / "shards", tmp_path / "merged")
    assert again.complete
    _files_equal(clean, again)
