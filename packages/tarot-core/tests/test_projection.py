"""Tests for tarot.features.projection: determinism, chunking, norm preservation (algorithm.md §3)."""

import numpy as np
import pytest
import torch
from tarot.features.projection import ROW_TILE, Projector

CHUNKS = [50, 300, 7]  # p = 357; with block_rows=64 the middle chunk spans several blocks


def _x(n: int = 37, p: int = sum(CHUNKS), seed: int = 0) -> torch.Tensor:
    return torch.randn(n, p, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_same_bits_for_any_batch_split_and_shard(kind):
    proj = Projector(CHUNKS, 96, seed=3, kind=kind, block_rows=64)
    x = _x()
    full = proj.project(x)
    halves = torch.cat([proj.project(x[:18]), proj.project(x[18:])])
    singles = torch.cat([proj.project(x[i : i + 1]) for i in range(len(x))])
    # a different "process": a fresh projector with caching disabled, projecting shards of 5 rows
    other = Projector(CHUNKS, 96, seed=3, kind=kind, block_rows=64, cache_bytes=0)
    shards = torch.cat([other.project(x[i : i + 5]) for i in range(0, len(x), 5)])
    assert full.dtype == torch.float32 and full.shape == (37, 96)
    for y in (halves, singles, shards):
        assert torch.equal(full, y)


def test_projection_depends_on_seed_and_kind_only_through_blocks():
    a = Projector(CHUNKS, 32, seed=1, block_rows=64).matrix()
    b = Projector(CHUNKS, 32, seed=1, block_rows=64).matrix()
    c = Projector(CHUNKS, 32, seed=2, block_rows=64).matrix()
    g = Projector(CHUNKS, 32, seed=1, kind="gaussian", block_rows=64).matrix()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (sum(CHUNKS), 32)
    assert set(a.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(a, g)
    # different chunks draw different blocks (no repeated streams)
    assert not torch.equal(a[:50], a[50:100])


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_chunked_projection_equals_stacked_matrix(kind):
    proj = Projector(CHUNKS, 64, seed=5, kind=kind, block_rows=64)
    x = _x(9)
    chunks = [x[:, :50], x[:, 50:350], x[:, 350:]]
    dense = (x.double() @ proj.matrix().double()).float()
    got = proj.project_chunks(chunks)
    assert torch.allclose(got, dense, rtol=1e-5, atol=1e-5 * dense.abs().max().item())
    assert torch.equal(got, proj.project(x))


def test_norm_preserved_in_expectation():
    x = _x(40, 500, seed=1)
    k = 1024
    unscaled = Projector(500, k, seed=0).project(x)
    ratio = (unscaled.double().pow(2).sum(1) / k) / x.double().pow(2).sum(1)
    # Rademacher JL: Var(|Px|^2/k / |x|^2) <= 2/k -> sd ~0.044 per row; mean over 40 rows ~0.007
    assert abs(ratio.mean().item() - 1.0) < 0.03
    assert (ratio - 1.0).abs().max().item() < 0.25
    scaled = Projector(500, k, seed=0, scale=True).project(x)
    assert torch.allclose(scaled.pow(2).sum(1), unscaled.pow(2).sum(1) / k, rtol=1e-4)
    gauss = Projector(500, k, seed=0, kind="gaussian").project(x)
    g_ratio = (gauss.double().pow(2).sum(1) / k) / x.double().pow(2).sum(1)
    assert abs(g_ratio.mean().item() - 1.0) < 0.03


def test_entry_statistics():
    m = Projector(4000, 256, seed=9).matrix()
    assert abs(m.mean().item()) < 0.01
    g = Projector(4000, 256, seed=9, kind="gaussian").matrix()
    assert abs(g.mean().item()) < 0.01 and abs(g.std().item() - 1.0) < 0.01


def test_config_roundtrip_and_layout():
    proj = Projector(CHUNKS, 48, seed=11, block_rows=64, chunk_names=["a", "b", "c"])
    cfg = proj.config()
    assert cfg["type"] == "rademacher" and cfg["seed"] == 11 and cfg["input_dim"] == 357 and cfg["proj_dim"] == 48
    assert cfg["chunk_sizes"] == CHUNKS and cfg["chunk_names"] == ["a", "b", "c"] and cfg["block_rows"] == 64
    again = Projector.from_config(cfg)
    assert torch.equal(again.matrix(), proj.matrix())
    assert [proj.num_blocks(c) for c in range(3)] == [1, 5, 1]
    assert proj.generate_block(1, 4).shape == (300 - 4 * 64, 48)
    assert ROW_TILE >= 8


def test_block_cache_respects_budget():
    proj = Projector([64, 64], 16, seed=0, block_rows=64, cache_bytes=64 * 16 * 4)
    b0 = proj.block(0, 0)
    assert proj.block(0, 0) is b0  # cached
    b1 = proj.block(1, 0)
    assert proj.block(1, 0) is not b1  # over budget: regenerated each time
    assert torch.equal(proj.block(1, 0), b1)
    proj.clear_cache()
    assert proj.block(0, 0) is not b0


def test_bad_inputs_raise():
    proj = Projector(CHUNKS, 8)
    with pytest.raises(ValueError, match=r"\[B, 357\]"):
        proj.project(torch.zeros(2, 356))
    with pytest.raises(ValueError, match="expected 3 chunks"):
        proj.project_chunks([torch.zeros(2, 50)])
    with pytest.raises(ValueError, match="kind"):
        Projector(10, 4, kind="sparse")
    with pytest.raises(ValueError, match="positive"):
        Projector([10, 0], 4)


def test_one_dimensional_input_and_fp64_input():
    proj = Projector(20, 8, seed=0)
    x = np.arange(20, dtype=np.float64)
    y = proj.project(torch.from_numpy(x))
    assert y.shape == (8,) and y.dtype == torch.float32
    assert torch.equal(y, proj.project(torch.from_numpy(x).float().unsqueeze(0))[0])


def test_single_chunk_contributions_sum_to_the_projection():
    proj = Projector(CHUNKS, 40, seed=2, block_rows=64)
    x = _x(6)
    parts = [x[:, :50], x[:, 50:350], x[:, 350:]]
    total = sum(proj.project_chunk(c, parts[c]) for c in range(3))
    assert torch.allclose(total, proj.project(x), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match=r"chunk 1 expects input of shape \[B, 300\]"):
        proj.project_chunk(1, parts[0])
