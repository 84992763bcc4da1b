"""Per-layer factorised gradient features: equal to the Kronecker projection of the loop's per-sample gradients,
batch = loop, the non-batch-first and mixed-use checks, the JL property, the store path and its refusals."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from _tiny_models import CELoss, Samples, TinyNet, batch_of
from tarot.features.factorized import FactorizedGradientFeaturizer, gradient_featurizer
from tarot.features.featurize import featurize_to_store
from tarot.features.gradients import GradientFeaturizer
from torch import nn
from torch.func import functional_call


class ConvNet(nn.Module):
    """Conv (bias) -> BatchNorm -> in-place ReLU -> Conv (no bias, identity output side) -> pool -> Linear -> LayerNorm
    -> one Linear called twice -> head: every case the hooks must get right."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 40, 3, stride=2, padding=1, bias=False)
        self.l1 = nn.Linear(40, 48)
        self.ln = nn.LayerNorm(48)
        self.shared = nn.Linear(48, 48)
        self.head = nn.Linear(48, 5)
        with torch.no_grad():
            self.bn.running_mean.normal_()
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.c1(x)), inplace=True)
        h = torch.relu_(self.c2(h)).mean((-2, -1))
        h = self.ln(torch.tanh(self.l1(h)))
        h = torch.tanh(self.shared(torch.tanh(self.shared(h))))
        return self.head(h)


class ImageCE:
    def loss(self, model, params, buffers, sample):
        out = functional_call(model, {**params, **buffers}, (sample["x"].unsqueeze(0),))
        return F.cross_entropy(out, sample["y"].unsqueeze(0))

    def losses(self, model, params, buffers, batch):
        out = functional_call(model, {**params, **buffers}, (batch["x"],))
        return F.cross_entropy(out, batch["y"], reduction="none")


def images(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 3, 8, 8, generator=g), "y": torch.randint(0, 5, (n,), generator=g)}


def quiet(*args, **kwargs) -> FactorizedGradientFeaturizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return FactorizedGradientFeaturizer(*args, **kwargs)


def kronecker_reference(fz: FactorizedGradientFeaturizer, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """P_out [G_W | g_b] P_in^T per layer, from full per-sample gradients."""
    out = {}
    for ly in fz.layers:
        n = next(iter(grads.values())).shape[0]
        parts = []
        if ly.weight is not None:
            parts.append(grads[ly.weight].reshape(n, ly.d_out, -1))
        if ly.bias is not None:
            parts.append(grads[ly.bias].reshape(n, ly.d_out, 1))
        g = torch.cat(parts, dim=-1)
        p_in = torch.eye(ly.d_in) if ly.p_in is None else ly.p_in
        p_out = torch.eye(ly.d_out) if ly.p_out is None else ly.p_out
        out[ly.name] = p_out @ g @ p_in.T
    return out


@pytest.mark.parametrize("mode", ["batch", "loop"])
def test_blocks_equal_the_kronecker_projection_of_the_loop_gradients(mode):
    model = ConvNet()
    data = images()
    fz = quiet(model, ImageCE(), proj_dim=64, factor_dim=16, mode=mode)
    assert [ly.name for ly in fz.layers] == ["c1", "c2", "l1", "shared", "head"]
    c1 = fz.layers[0]
    assert (c1.d_in, c1.p_out is None) == (3 * 9 + 1, True)  # 8 output channels <= 16: not projected
    assert fz.left_out == ["bn.weight", "bn.bias", "ln.weight", "ln.bias"]
    grads = GradientFeaturizer(model, ImageCE(), proj_dim=8, mode="loop").per_sample_grads(data)
    ref = kronecker_reference(fz, grads)
    got = fz.per_sample_grads(data)
    for name, r in ref.items():
        assert got[name].shape == (6, *r.shape[1:])
        torch.testing.assert_close(got[name], r, rtol=1e-4, atol=1e-6 * float(r.abs().max()))
    feats = fz.project(got)
    mix = torch.cat([got[ly.name].reshape(6, -1) for ly in fz.layers], dim=1) @ fz.projector.mix.matrix()
    torch.testing.assert_close(feats, mix, rtol=1e-4, atol=1e-5)


def test_batch_equals_loop_and_does_not_depend_on_the_batch_split():
    model = ConvNet()
    data = images(7, seed=3)
    batch = quiet(model, ImageCE(), proj_dim=32, factor_dim=16, mode="batch").featurize_batch(data)
    loop = quiet(model, ImageCE(), proj_dim=32, factor_dim=16, mode="loop").featurize_batch(data)
    torch.testing.assert_close(batch, loop, rtol=1e-4, atol=1e-5)
    again = quiet(model, ImageCE(), proj_dim=32, factor_dim=16, mode="batch")
    parts = torch.cat([again.featurize_batch({k: v[i:i + 3] for k, v in data.items()}) for i in (0, 3, 6)])
    torch.testing.assert_close(parts, batch, rtol=1e-4, atol=1e-5)


def test_bias_only_and_identity_sides_on_tiny_net():
    model = TinyNet()
    data = Samples(5, seed=1)
    fz = FactorizedGradientFeaturizer(model, CELoss(), proj_dim=16, params=["fc1.bias", "fc2.*"], factor_dim=4)
    assert [(ly.name, ly.weight, ly.bias, ly.d_in) for ly in fz.layers] == [
        ("fc1", None, "fc1.bias", 1), ("fc2", "fc2.weight", "fc2.bias", 9)]
    assert fz.mode == "loop"  # CELoss has no batched losses
    grads = GradientFeaturizer(model, CELoss(), proj_dim=8, mode="loop").per_sample_grads(batch_of(data))
    ref = kronecker_reference(fz, grads)
    got = fz.per_sample_grads(batch_of(data))
    for name, r in ref.items():
        torch.testing.assert_close(got[name], r, rtol=1e-4, atol=1e-7)


class SeqFirst(nn.Module):
    """A sequence-first layer stack: inputs [B, T, d] are transposed to [T, B, d] before the Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.a(x.transpose(0, 1)))  # [T, B, 6]
        return self.b(h).mean(0)


class SeqCE(ImageCE):
    pass


def test_not_batch_first_model_is_refused_in_batch_mode_and_falls_back_in_auto():
    model = SeqFirst()
    g = torch.Generator().manual_seed(0)
    data = {"x": torch.randn(4, 4, 4, generator=g), "y": torch.randint(0, 3, (4,), generator=g)}  # T == B: looks fine
    with pytest.raises(ValueError, match="not batch-first|mixes samples"):
        FactorizedGradientFeaturizer(model, SeqCE(), proj_dim=8, mode="batch").per_sample_grads(data)
    auto = FactorizedGradientFeaturizer(model, SeqCE(), proj_dim=8)
    with pytest.warns(RuntimeWarning, match="falling back to loop"):
        feats = auto.featurize_batch(data)
    assert auto.mode == "loop"
    loop = FactorizedGradientFeaturizer(model, SeqCE(), proj_dim=8, mode="loop").featurize_batch(data)
    torch.testing.assert_close(feats, loop)
    grads = GradientFeaturizer(model, SeqCE(), proj_dim=8, mode="loop").per_sample_grads(data)
    ref = kronecker_reference(auto, grads)
    got = auto.per_sample_grads(data)
    for name, r in ref.items():
        torch.testing.assert_close(got[name], r, rtol=1e-4, atol=1e-7)


class FunctionalUse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 3)
        self.other = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.other(x), self.lin.weight, self.lin.bias)  # lin's forward never runs


def test_layer_used_without_its_forward_and_uncoverable_params_are_errors():
    data = Samples(3, seed=0)
    fz = FactorizedGradientFeaturizer(FunctionalUse(), CELoss(), proj_dim=8)
    with pytest.raises(ValueError, match="forward of layer 'lin'"):
        fz.per_sample_grads(batch_of(data))
    with pytest.raises(ValueError, match="'bn.weight'.*cannot cover"):
        FactorizedGradientFeaturizer(TinyNet(), CELoss(), proj_dim=8, params=["fc1.*", "bn.*"])
    with pytest.warns(RuntimeWarning, match="left out"):
        fz = FactorizedGradientFeaturizer(TinyNet(), CELoss(), proj_dim=8)
    assert fz.config()["left_out"] == ["bn.weight", "bn.bias"]
    mha = nn.Sequential(nn.Linear(4, 4))
    mha.add_module("attn", nn.MultiheadAttention(4, 2))
    with pytest.warns(RuntimeWarning):
        names = [ly.name for ly in FactorizedGradientFeaturizer(mha, CELoss(), proj_dim=8).layers]
    assert names == ["0"]  # out_proj of nn.MultiheadAttention is read through F.multi_head_attention_forward
    with pytest.raises(ValueError, match="mode must be"):
        FactorizedGradientFeaturizer(TinyNet(), CELoss(), proj_dim=8, params=["fc*"], mode="vmap")
    with pytest.raises(TypeError, match="losses"):
        FactorizedGradientFeaturizer(TinyNet(), CELoss(), proj_dim=8, params=["fc*"], mode="batch")


def test_inner_products_survive_like_a_dense_projection():
    """Cosines between real per-sample gradients of the covered layers survive the factorised projection."""
    model = ConvNet()
    data = images(24, seed=7)
    fz = quiet(model, ImageCE(), proj_dim=1024, factor_dim=32)
    grads = GradientFeaturizer(model, ImageCE(), proj_dim=8, mode="loop").per_sample_grads(data)
    flat = torch.cat([grads[n].reshape(24, -1) for n in fz.param_names], dim=1)
    exact = F.normalize(flat, dim=1) @ F.normalize(flat, dim=1).T
    y = F.normalize(fz.featurize_batch(data), dim=1)
    dense = GradientFeaturizer(model, ImageCE(), proj_dim=1024, params=fz.param_names, mode="loop")
    yd = F.normalize(dense.featurize_batch(data), dim=1)
    err, err_dense = float((y @ y.T - exact).abs().max()), float((yd @ yd.T - exact).abs().max())
    assert err < 0.3 and err < 3 * err_dense + 0.05, (err, err_dense)
    iu = torch.triu_indices(24, 24, 1)
    corr = torch.corrcoef(torch.stack([(y @ y.T)[iu[0], iu[1]], exact[iu[0], iu[1]]]))[0, 1]
    assert corr > 0.9, corr


def test_store_records_the_factorised_projector_and_refuses_preconditioners(tmp_path, capsys):
    model = TinyNet()
    data = Samples(10, seed=2)
    fz = FactorizedGradientFeaturizer(model, CELoss(), proj_dim=8, params=["fc*"], seed=3)
    store = featurize_to_store(fz, {"candidate": data}, tmp_path / "s", None, batch_size=4, progress=False)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["projector"]["type"] == "factorized" and manifest["projector"]["seed"] == 3
    assert [ly["name"] for ly in manifest["projector"]["layers"]] == ["fc1", "fc2"]
    expect = fz.featurize_batch(batch_of(data)).numpy()
    torch.testing.assert_close(torch.from_numpy(store.features("candidate")[:].astype("float32")),
                               torch.from_numpy(expect), rtol=1e-5, atol=1e-5)

    from tarot.app.cli import main

    assert main(["inspect", str(tmp_path / "s")]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "projector" in ln)
    assert "type=factorized" in line and "layers=[2 entries]" in line and "mix=rademacher" in line

    def adam(grads, ck):
        return grads

    with pytest.raises(ValueError, match="takes no preconditioner"):
        featurize_to_store(fz, {"candidate": data}, tmp_path / "p", None, batch_size=4, progress=False,
                           precondition={"candidate": adam})
    with pytest.raises(ValueError, match="do not factorise"):
        fz.featurize_batch(batch_of(data), precondition=adam)


def test_gradient_featurizer_builds_what_the_config_names():
    model = TinyNet()
    dense = gradient_featurizer(model, CELoss(), 16, projector="dense", mode="batch")
    assert isinstance(dense, GradientFeaturizer) and dense.projector.kind == "rademacher" and dense.mode == "vmap"
    sparse = gradient_featurizer(model, CELoss(), 16, projector="sjlt", mode="loop")
    assert sparse.projector.kind == "sjlt" and sparse.mode == "loop"
    fact = gradient_featurizer(model, ImageCE(), 16, projector="factorized", params=["fc*"], mode="vmap",
                               factor_dim=4)
    assert isinstance(fact, FactorizedGradientFeaturizer) and fact.mode == "batch" and fact.factor_dim == 4
    with pytest.raises(ValueError, match="projector must be one of"):
        gradient_featurizer(model, CELoss(), 16, projector="hadamard")
    with pytest.raises(ValueError, match="mode must be"):
        gradient_featurizer(model, CELoss(), 16, mode="fast")


def tiny_bench_case():
    """A BenchCase for the featurization benchmark's --case path (the ConvNet above, batch mode available)."""
    from tarot.app.bench_featurize import BenchCase

    return BenchCase(name="Tiny ConvNet", model=ConvNet(), adapter=ImageCE(), batch=images(4), proj_dim=16,
                     baseline=("the same adapter again", ImageCE()))


def test_featurization_benchmark_case_reports_every_projector(tmp_path):
    from tarot.app.bench_featurize import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert main(["--case", "test_factorized:tiny_bench_case", "--repeat", "1", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "featurize_tiny.md").read_text()
    for row in ("per-sample gradients, vmap", "per-sample gradients, loop, the same adapter again",
                "featurize_batch, dense, vmap", "featurize_batch, sjlt, vmap",
                "featurize_batch, factorized, batch mode"):
        assert f"| {row} |" in text, row
    assert "- factorized is " in text and "left out" in text and "- vmap / loop gradients:" in text


def test_featurization_benchmark_cnn_report_times_both_allocator_settings(tmp_path):
    from tarot.app.bench_featurize import main

    assert main(["--repeat", "1", "--batch", "4", "--proj-dim", "64", "--skip-lora", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "featurize.md").read_text()
    for row in ("per-sample gradients, vmap (allocator default)", "per-sample gradients, loop (allocator default)",
                "featurize_batch, sjlt (allocator default)", "per-sample gradients, vmap", "per-sample gradients, loop",
                "featurize_batch, sjlt", "featurize_batch, factorized (factor_dim=32, batch mode)"):
        assert f"| {row} |" in text, row
    assert "- with the allocator's default (every large array mapped afresh)" in text
    assert "LoRA-size" not in text
