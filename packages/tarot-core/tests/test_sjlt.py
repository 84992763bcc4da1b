"""The sparse JL projector (kind="sjlt"): the dense matrix it stands for, the JL property on random and on real
(per-sample gradient) inputs, bitwise determinism across batch sizes and chunkings, and its config round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_models import CELoss, Samples, TinyNet, batch_of
from tarot import GradientFeaturizer, Projector


def test_each_input_coordinate_has_one_signed_entry_per_output_group():
    p = Projector([37, 20], 64, seed=3, kind="sjlt", nnz=4, block_rows=16)
    P = p.matrix()  # [p, k]
    assert P.shape == (57, 64)
    nz = (P != 0).reshape(57, 4, 16).sum(-1)
    assert (nz == 1).all()  # exactly one nonzero in each of the 4 groups of 16 outputs
    assert torch.allclose(P[P != 0].abs(), torch.full((57 * 4,), (64 / 4) ** 0.5))
    x = torch.randn(5, 57)
    assert torch.allclose(p.project(x), x @ P, atol=1e-4)


def test_jl_property_on_random_inputs():
    torch.manual_seed(0)
    x = torch.randn(40, 5000)
    p = Projector(5000, 1024, seed=1, kind="sjlt", nnz=4, scale=True)
    y = p.project(x)
    ratio = y.norm(dim=1) ** 2 / x.norm(dim=1) ** 2
    assert (ratio - 1).abs().max() < 0.2  # k = 1024: distortion ~ sqrt(2/k) per vector
    gx, gy = x @ x.T, y @ y.T
    off = ~torch.eye(40, dtype=torch.bool)
    cos_x = gx / x.norm(dim=1)[:, None] / x.norm(dim=1)[None]
    cos_y = gy / y.norm(dim=1)[:, None] / y.norm(dim=1)[None]
    assert (cos_x - cos_y)[off].abs().max() < 0.15


def test_jl_property_on_real_per_sample_gradients():
    """Cosines between real per-sample gradients survive the sparse projection as well as the dense one."""
    model = TinyNet()
    data = Samples(24, seed=5)
    exact = GradientFeaturizer(model, CELoss(), proj_dim=16, seed=0)
    grads = exact.per_sample_grads(batch_of(data))
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)
    cos = torch.nn.functional.normalize(flat, dim=1)
    cos = cos @ cos.T
    errors = {}
    for kind in ("rademacher", "sjlt"):
        feat = GradientFeaturizer(model, CELoss(), proj_dim=512, seed=0, projector=kind)
        y = torch.nn.functional.normalize(feat.featurize_batch(batch_of(data)), dim=1)
        errors[kind] = float((y @ y.T - cos).abs().max())
    assert errors["sjlt"] < 0.25 and errors["sjlt"] < 2.5 * errors["rademacher"] + 0.05, errors


@pytest.mark.parametrize("rows", [1, 3, 17])
def test_bitwise_identical_across_batch_sizes_and_chunkings(rows):
    torch.manual_seed(2)
    x = torch.randn(17, 300)
    p = Projector([100, 200], 96, seed=9, kind="sjlt", nnz=3, block_rows=64)
    full = p.project(x)
    parts = torch.cat([p.project(x[i : i + rows]) for i in range(0, 17, rows)])
    assert torch.equal(full, parts)
    again = Projector.from_config(p.config())
    assert again.config() == p.config() and again.config()["nnz"] == 3
    assert torch.equal(again.project(x), full)


def test_sjlt_options_are_checked():
    with pytest.raises(ValueError, match="nnz >= 1 dividing proj_dim=100"):
        Projector(10, 100, kind="sjlt", nnz=3)
    with pytest.raises(ValueError, match="nnz is an option of kind 'sjlt'"):
        Projector(10, 100, kind="rademacher", nnz=4)


def test_sjlt_is_much_cheaper_per_batch_than_dense_in_flops():
    """Not a timing: the sparse blocks hold 2·nnz numbers per input coordinate instead of k."""
    dense = Projector(10_000, 1024, seed=0)
    sparse = Projector(10_000, 1024, seed=0, kind="sjlt")
    d_vals = sum(dense.generate_block(0, b).numel() for b in range(dense.num_blocks(0)))
    s_vals = sum(sparse.generate_block(0, b).numel() for b in range(sparse.num_blocks(0)))
    assert d_vals == 10_000 * 1024 and s_vals == 10_000 * 8
    assert np.isclose(s_vals / d_vals, 8 / 1024)
