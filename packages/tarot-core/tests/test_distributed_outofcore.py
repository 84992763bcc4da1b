"""Out-of-core selection: features read through memmaps block by block, whitened rows written to memmapped temporary
files beyond the memory budget, and results identical to the in-RAM path."""

from __future__ import annotations

import numpy as np
import pytest
import tarot
from tarot import FeatureStore
from tarot.features import outofcore
from tarot.features.outofcore import memory_budget, output_arrays, parse_bytes, temp_memmap
from tarot.geometry.scoring import topk_neighbors
from tarot.geometry.whitening import Whitener, whiten

N, M, K = 300, 40, 8


class RecordingRows:
    """Read-only row container over an array that records how many rows every read touches (duck-typed like the
    arrays whitening and scoring accept: ``shape``, ``ndim``, ``dtype`` and row slicing)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr, self.reads = arr, []

    shape = property(lambda self: self.arr.shape)
    ndim = property(lambda self: self.arr.ndim)
    dtype = property(lambda self: self.arr.dtype)

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise AssertionError(f"out-of-core code must read contiguous row blocks, got index {key!r}")
        block = np.asarray(self.arr[key])
        self.reads.append(block.shape[0])
        return block


def _store(tmp_path) -> FeatureStore:
    rng = np.random.default_rng(0)
    centre = rng.normal(size=K)
    cand = rng.normal(size=(N, K)) @ rng.normal(size=(K, K)) + centre
    tgt = rng.normal(size=(M, K)) * 0.5 + centre + 0.3
    groups = [f"g{i % 3}" for i in range(M)]
    sources = ["near" if i % 4 == 0 else "far" for i in range(N)]
    return FeatureStore.from_arrays(tmp_path / "store", {"candidate": cand, "target": tgt},
                                    sources={"candidate": sources}, groups={"target": groups})


def test_parse_bytes_and_budget(monkeypatch):
    assert parse_bytes(4096) == 4096 and parse_bytes("4096") == 4096
    assert parse_bytes("512M") == 512 * 1024**2 and parse_bytes("8G") == 8 * 1024**3
    assert parse_bytes("1.5GiB") == int(1.5 * 1024**3) and parse_bytes("2kb") == 2048
    for bad in ("lots", "-1G", -5, True):
        with pytest.raises(ValueError, match="memory size"):
            parse_bytes(bad)
    monkeypatch.setenv(outofcore.BUDGET_ENV, "3M")
    assert memory_budget() == 3 * 1024**2 and memory_budget("1K") == 1024
    monkeypatch.setenv(outofcore.BUDGET_ENV, "nope")
    with pytest.raises(ValueError, match=r"\$TAROT_MEMORY_BUDGET: cannot parse memory size 'nope'"):
        memory_budget()
    monkeypatch.delenv(outofcore.BUDGET_ENV)
    assert memory_budget() > 0


def test_output_arrays_spill_the_large_ones_to_unlinked_memmaps(tmp_path):
    big, small = (1000, K), (10, K)
    a, b = output_arrays([big, small], memory_budget_bytes=10 * K * 4 + 1, workdir=tmp_path)
    assert isinstance(a, np.memmap) and not isinstance(b, np.memmap)
    assert a.shape == big and b.shape == small and a.dtype == np.float32
    assert list(tmp_path.iterdir()) == []  # the backing file has no name: freed with the array
    a[:] = 1.5
    assert float(a.sum()) == 1.5 * 1000 * K
    c, d = output_arrays([big, small], memory_budget_bytes="1G")
    assert not isinstance(c, np.memmap) and not isinstance(d, np.memmap)
    assert all(isinstance(x, np.memmap) for x in output_arrays([big, small], memory_budget_bytes=0, workdir=tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        temp_memmap((2, 2), workdir=tmp_path / "missing")


def test_transform_into_memmap_equals_in_ram(tmp_path):
    store = _store(tmp_path)
    X = store.features("candidate")
    assert isinstance(X, np.memmap)
    w = Whitener.fit(X, block_rows=64)
    ram = w.transform(np.array(X), block_rows=64)
    out = np.lib.format.open_memmap(tmp_path / "z.npy", mode="w+", dtype=np.float32, shape=X.shape)
    got = w.transform(X, block_rows=64, out=out)
    assert got is out
    np.testing.assert_array_equal(np.load(tmp_path / "z.npy"), ram)  # flushed to disk
    with pytest.raises(ValueError, match=r"out has shape \(3, 8\), expected \(300, 8\)"):
        w.transform(X, out=np.empty((3, K), dtype=np.float32))


def test_whitening_and_topk_stream_blocks_from_the_store(tmp_path):
    store = _store(tmp_path)
    C, T = RecordingRows(store.features("candidate")), RecordingRows(store.features("target"))
    Zc, Zt, w = whiten(C, T, block_rows=64, memory_budget=0, workdir=tmp_path)
    assert isinstance(Zc, np.memmap) and isinstance(Zt, np.memmap)
    assert max(C.reads) <= 64 and max(T.reads) <= 64
    assert sum(C.reads) >= 2 * N  # one pass for the statistics, one for the transform: no full copy
    ram_c, ram_t, ram_w = whiten(np.array(store.features("candidate")), np.array(store.features("target")),
                                 block_rows=64, memory_budget="1G")
    assert not isinstance(ram_c, np.memmap)
    np.testing.assert_array_equal(w.mean, ram_w.mean)
    np.testing.assert_array_equal(w.chol, ram_w.chol)
    np.testing.assert_array_equal(np.asarray(Zc), ram_c)
    np.testing.assert_array_equal(np.asarray(Zt), ram_t)
    R = RecordingRows(Zc)
    s_stream, i_stream = topk_neighbors(R, Zt, 5, block_rows=50, target_block=16)
    assert max(R.reads) <= 50
    s_ram, i_ram = topk_neighbors(ram_c, ram_t, 5)
    np.testing.assert_array_equal(i_stream, i_ram)
    np.testing.assert_array_equal(s_stream, s_ram)


@pytest.mark.parametrize("method, opts", [("fixed_size", {"ratio": 0.1, "weighting": True}),
                                          ("topk_mean", {"n": 25}),
                                          ("otm", {"ratio": "auto", "folds": 2, "max_depth": 4})])
def test_select_on_a_store_out_of_core_equals_in_ram(tmp_path, monkeypatch, method, opts):
    store = _store(tmp_path)
    spilled = []
    real = outofcore.temp_memmap

    def spy(shape, dtype=np.float32, workdir=None):
        spilled.append(tuple(shape))
        return real(shape, dtype, workdir)

    monkeypatch.setattr(outofcore, "temp_memmap", spy)
    monkeypatch.setenv(outofcore.BUDGET_ENV, str(M * K * 4))  # the targets fit in RAM, the candidates do not
    disk = tarot.select(store, method=method, progress=False, **opts)
    assert spilled == [(N, K)]
    monkeypatch.setenv(outofcore.BUDGET_ENV, "1G")
    ram = tarot.select(np.array(store.features("candidate")), np.array(store.features("target")), method=method,
                       progress=False, target_groups=store.groups("target"),
                       candidate_sources=store.sources("candidate"), candidate_ids=store.ids("candidate"), **opts)
    assert spilled == [(N, K)]
    np.testing.assert_array_equal(disk.indices, ram.indices)
    assert disk.ot_distance == ram.ot_distance
    if disk.weights is not None:
        np.testing.assert_array_equal(disk.weights, ram.weights)
    assert disk.composition() == ram.composition()
    assert 0 < len(disk.indices) < N
