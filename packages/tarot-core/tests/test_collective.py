"""Whitening moments and top-k lists merged across 2 gloo processes equal the one-process results
(tarot.geometry.collective)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tarot.geometry.collective import allgather_moments, fit_whitener_across_ranks, row_offset, topk_across_ranks
from tarot.geometry.scoring import topk_neighbors
from tarot.geometry.whitening import RunningMoments, Whitener, whiten

N, M, D, K = 301, 23, 12, 9
SPLIT = (170, 131)  # rows of rank 0 and rank 1


def _data():
    rng = np.random.default_rng(3)
    cand = (rng.normal(size=(N, D)) @ rng.normal(size=(D, D))).astype(np.float32)
    cand[40] = cand[250]  # an exact tie across the two ranks
    tgt = rng.normal(size=(M, D)).astype(np.float32)
    return cand, tgt


def _rank_main(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        cand, tgt = _data()
        lo = 0 if rank == 0 else SPLIT[0]
        local = cand[lo : lo + SPLIT[rank]]
        offset, total = row_offset(len(local))
        w = fit_whitener_across_ranks(local, tgt, ridge="auto", block_rows=64)
        zc, zt = w.transform(local), w.transform(tgt)
        scores, index = topk_across_ranks(zc, zt, K, block_rows=50)
        mom = allgather_moments(RunningMoments.of_block(local))
        np.savez(f"{out}/rank{rank}.npz", offset=offset, total=total, mean=w.mean, chol=w.chol, ridge=w.ridge,
                 zc=zc, zt=zt, scores=scores, index=index, count=mom.count, m2=mom.m2)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_merge_moments_whitening_and_topk_like_one_process(tmp_path):
    mp.spawn(_rank_main, args=(2, f"file://{tmp_path}/pg", str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (np.load(tmp_path / f"rank{r}.npz") for r in (0, 1))
    cand, tgt = _data()
    assert (int(r0["offset"]), int(r1["offset"]), int(r0["total"])) == (0, SPLIT[0], N)
    # moments: the same merged values on both ranks, equal to one pass over all rows
    ref = RunningMoments.of_block(cand)
    for r in (r0, r1):
        assert int(r["count"]) == N
        np.testing.assert_allclose(r["m2"], ref.m2, rtol=1e-10, atol=1e-9)
    # whitening: same transform as the one-process fit on candidates ∪ targets
    zc_ref, zt_ref, w_ref = whiten(cand, tgt, ridge="auto", block_rows=64)
    for r in (r0, r1):
        np.testing.assert_allclose(r["mean"], w_ref.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(r["chol"], w_ref.chol, rtol=1e-9, atol=1e-12)
        assert float(r["ridge"]) == pytest.approx(w_ref.ridge, rel=1e-9)
    zc = np.concatenate([r0["zc"], r1["zc"]])
    np.testing.assert_allclose(zc, zc_ref, atol=1e-5)
    # top-k: both ranks hold the global lists, equal to one search over all (locally whitened) rows
    s_ref, i_ref = topk_neighbors(zc, r0["zt"], K)
    for r in (r0, r1):
        np.testing.assert_array_equal(r["index"], i_ref)
        np.testing.assert_array_equal(r["scores"], s_ref)


def test_without_a_process_group_the_functions_are_the_one_process_ones():
    cand, tgt = _data()
    assert row_offset(len(cand)) == (0, N)
    w = fit_whitener_across_ranks(cand, tgt, block_rows=64)
    _, _, w_ref = whiten(cand, tgt, block_rows=64)
    np.testing.assert_allclose(w.chol, w_ref.chol, rtol=1e-12)
    zc, zt = w.transform(cand), w.transform(tgt)
    np.testing.assert_array_equal(topk_across_ranks(zc, zt, K)[1], topk_neighbors(zc, zt, K)[1])
    only_cand = fit_whitener_across_ranks(cand, tgt, fit_on="candidates")
    np.testing.assert_allclose(only_cand.mean, Whitener.fit(cand).mean, rtol=1e-12)
    with pytest.raises(ValueError, match="fit_on"):
        fit_whitener_across_ranks(cand, tgt, fit_on="all")
