"""Tests for tarot.features.gradients.GradientFeaturizer: vmap == loop, parameter selection, eval mode, fallback."""

import pytest
import torch
from _tiny_models import CELoss, NotVmappableLoss, Samples, TinyNet, batch_of
from tarot import Checkpoint, GradientFeaturizer, LossAdapter, Projector


def _rel_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return (a - b).abs().max().item() <= tol * max(b.abs().max().item(), 1e-12)


@pytest.mark.parametrize("params", [None, ["fc2.*"], ["fc1.weight", "bn.*"]])
def test_vmap_and_loop_gradients_agree(params):
    model = TinyNet()
    batch = batch_of(Samples(10, seed=1))
    fv = GradientFeaturizer(model, CELoss(), proj_dim=32, seed=0, params=params, mode="vmap")
    fl = GradientFeaturizer(model, CELoss(), proj_dim=32, seed=0, params=params, mode="loop")
    gv, gl = fv.per_sample_grads(batch), fl.per_sample_grads(batch)
    assert list(gv) == list(gl) == fv.param_names
    for name in gv:
        assert gv[name].shape == (10, *dict(model.named_parameters())[name].shape)
        assert _rel_close(gv[name], gl[name]), name
    assert _rel_close(fv.featurize_batch(batch), fl.featurize_batch(batch))


def test_gradients_match_autograd_reference_per_sample():
    model = TinyNet()
    ds = Samples(4, seed=2)
    feat = GradientFeaturizer(model, CELoss(), proj_dim=16, seed=0, mode="vmap")
    grads = feat.per_sample_grads(batch_of(ds))
    model.eval()
    for i in range(4):
        model.zero_grad()
        out = model(ds.x[i : i + 1])  # eval mode: BatchNorm running stats, dropout off
        torch.nn.functional.cross_entropy(out, ds.y[i : i + 1]).backward()
        assert _rel_close(grads["fc1.weight"][i], model.fc1.weight.grad)
        assert _rel_close(grads["bn.bias"][i], model.bn.bias.grad)


def test_parameter_selection_order_and_frozen_exclusion():
    model = TinyNet()
    feat = GradientFeaturizer(model, CELoss(), proj_dim=8)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert feat.param_names == names
    assert "offset" not in feat.param_names  # requires_grad=False, even though it is a parameter
    assert GradientFeaturizer(model, CELoss(), proj_dim=8, params=["*"]).param_names == names
    sub = GradientFeaturizer(model, CELoss(), proj_dim=8, params=["fc*.bias"])
    assert sub.param_names == ["fc1.bias", "fc2.bias"]
    assert sub.projector.chunk_sizes == [8, 3]
    assert sub.config()["params"] == ["fc1.bias", "fc2.bias"]
    with pytest.raises(ValueError, match="no requires_grad parameters matching"):
        GradientFeaturizer(model, CELoss(), proj_dim=8, params=["offset"])


def test_featurize_batch_is_projection_of_flat_gradients():
    model = TinyNet()
    batch = batch_of(Samples(5, seed=3))
    feat = GradientFeaturizer(model, CELoss(), proj_dim=24, seed=4)
    grads = feat.per_sample_grads(batch)
    flat = torch.cat([grads[n].reshape(5, -1) for n in feat.param_names], dim=1)
    dense = flat.double() @ feat.projector.matrix().double()
    out = feat.featurize_batch(batch)
    assert out.dtype == torch.float32 and out.shape == (5, 24)
    assert _rel_close(out.double(), dense)


def test_eval_mode_during_featurization_and_training_flag_restored():
    model = TinyNet()
    model.train()
    seen = []

    class Spy(CELoss):
        def loss(self, model, params, buffers, sample):
            seen.append((model.training, model.bn.training, model.drop.training))
            return super().loss(model, params, buffers, sample)

    feat = GradientFeaturizer(model, Spy(), proj_dim=8, mode="loop")
    running = model.bn.running_mean.clone()
    batch = batch_of(Samples(3, seed=0))
    a = feat.featurize_batch(batch)
    b = feat.featurize_batch(batch)
    assert seen and all(flags == (False, False, False) for flags in seen)
    assert model.training and model.bn.training and model.drop.training
    assert torch.equal(model.bn.running_mean, running)  # no BatchNorm statistics update
    assert torch.equal(a, b)  # dropout off: deterministic


def test_auto_mode_falls_back_to_loop_with_warning():
    model = TinyNet()
    batch = batch_of(Samples(4, seed=5))
    feat = GradientFeaturizer(model, NotVmappableLoss(), proj_dim=16, mode="auto")
    with pytest.warns(RuntimeWarning, match="falling back to loop"):
        out = feat.featurize_batch(batch)
    assert feat.mode == "loop"
    ref = GradientFeaturizer(model, CELoss(), proj_dim=16, mode="loop").featurize_batch(batch)
    assert _rel_close(out, ref)
    strict = GradientFeaturizer(model, NotVmappableLoss(), proj_dim=16, mode="vmap")
    with pytest.raises(Exception):  # noqa: B017 - whatever vmap raises is propagated in vmap mode
        strict.featurize_batch(batch)


def test_auto_mode_keeps_vmap_when_it_works():
    feat = GradientFeaturizer(TinyNet(), CELoss(), proj_dim=8, mode="auto")
    feat.featurize_batch(batch_of(Samples(2, seed=0)))
    assert feat.mode == "vmap"


def test_preconditioner_in_featurize_batch_and_override():
    model = TinyNet()
    batch = batch_of(Samples(4, seed=6))
    ck = Checkpoint("c", extra={"factor": 3.0})

    def triple(grads, checkpoint):
        return {k: v * checkpoint.extra["factor"] for k, v in grads.items()}

    feat = GradientFeaturizer(model, CELoss(), proj_dim=16, precondition=triple)
    plain = feat.featurize_batch(batch, checkpoint=ck, precondition=None)
    assert _rel_close(feat.featurize_batch(batch, checkpoint=ck), 3.0 * plain)


def test_given_projector_and_protocol():
    model = TinyNet()
    sizes = [p.numel() for p in model.parameters() if p.requires_grad]
    proj = Projector(sizes, 12, seed=7, kind="gaussian")
    feat = GradientFeaturizer(model, CELoss(), proj_dim=12, projector=proj)
    assert feat.projector is proj and feat.config()["projector"]["type"] == "gaussian"
    assert isinstance(CELoss(), LossAdapter)
    with pytest.raises(ValueError, match="do not match"):
        GradientFeaturizer(model, CELoss(), proj_dim=12, projector=Projector([5, 5], 12))


def test_half_precision_model_refused_unless_allowed():
    model = TinyNet().to(torch.bfloat16)
    with pytest.raises(ValueError, match="expected float32 or float64"):
        GradientFeaturizer(model, CELoss(), proj_dim=8)
    assert GradientFeaturizer(model, CELoss(), proj_dim=8, allow_half=True).param_names
    double = TinyNet().double()
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in batch_of(Samples(3, seed=1)).items()}
    out = GradientFeaturizer(double, CELoss(), proj_dim=8).featurize_batch(batch)
    assert out.dtype == torch.float32


def test_checkpoint_validation_and_loading(tmp_path):
    model = TinyNet()
    path = tmp_path / "ck.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = Checkpoint("a", path=str(path)).load()
    assert torch.equal(loaded["fc1.weight"], model.fc1.weight)
    assert Checkpoint("now").load() is None
    with pytest.raises(ValueError, match="weight"):
        Checkpoint("bad", weight=-1.0)
    with pytest.raises(ValueError, match="name"):
        Checkpoint("")


def test_non_tensor_leaves_are_passed_whole_in_both_modes():
    seen = []

    class Tagged(CELoss):
        def loss(self, model, params, buffers, sample):
            seen.append(sample["tag"])
            return super().loss(model, params, buffers, sample)

    batch = {**batch_of(Samples(3, seed=8)), "tag": "task-a"}
    model = TinyNet()
    fv = GradientFeaturizer(model, Tagged(), proj_dim=8, mode="vmap").featurize_batch(batch)
    fl = GradientFeaturizer(model, Tagged(), proj_dim=8, mode="loop").featurize_batch(batch)
    assert set(seen) == {"task-a"}
    assert _rel_close(fv, fl)


def test_device_defaults_to_the_model_device():
    feat = GradientFeaturizer(TinyNet(), CELoss(), proj_dim=8)
    assert feat.device == torch.device("cpu") and feat.projector.device == torch.device("cpu")
