"""Wayformer-Ego (tarot_motion.wayformer): shapes, the GMM loss, per-sample gradients and training."""

import math

import pytest
import torch
from tarot_motion.data import collate
from tarot_motion.featurize import BatchedMotionLossAdapter, encoder_embedding, loss_adapter
from tarot_motion.train import build_model, evaluate, make_model, train_model
from tarot_motion.wayformer import WayformerEgo, gmm_loss
from test_model import _dataset

TINY = {"name": "wayformer", "hidden_size": 16, "tx_hidden_size": 32, "tx_num_heads": 2, "num_queries_enc": 4,
        "num_encoder_layers": 1, "num_decoder_layers": 1}


def test_forward_shapes_probabilities_and_per_sample_loss():
    ds = _dataset()
    torch.manual_seed(0)
    model = make_model(TINY)
    assert isinstance(model, WayformerEgo)
    batch = collate([ds[i] for i in range(4)])
    for train in (True, False):
        model.train(train)
        torch.manual_seed(1)
        out, loss = model(batch)
        torch.manual_seed(1)
        _, per = model(batch, reduce=False)
        assert out["predicted_trajectory"].shape == (4, 6, 60, 5) and out["predicted_probability"].shape == (4, 6)
        torch.testing.assert_close(out["predicted_probability"].sum(-1), torch.ones(4))
        assert per.shape == (4,) and torch.isfinite(loss)
        torch.testing.assert_close(per.mean(), loss)
        sig = out["predicted_trajectory"][..., 2:4]
        assert (sig >= math.exp(-1.609) - 1e-6).all() and (out["predicted_trajectory"][..., 4].abs() <= 0.5).all()
    model.eval()
    with torch.no_grad():  # a sample's prediction does not depend on the rest of the batch
        alone, _ = model(collate([ds[2]]))
        together, _ = model(batch)
    torch.testing.assert_close(alone["predicted_trajectory"][0], together["predicted_trajectory"][2], rtol=1e-4,
                               atol=1e-4)


def test_gmm_loss_by_hand():
    # two modes, two steps; mode 1 is nearer; σ = 1, ρ = 0 → NLL = Σ_t m_t (0 + ½|d_t|²) + CE
    raw = torch.zeros(1, 2, 2, 5)
    raw[0, 0, :, 0] = 5.0  # mode 0: far away
    raw[0, 1, :, 0] = torch.tensor([1.0, 2.0])
    gt = torch.tensor([[[1.5, 0.0], [2.0, 1.0]]])
    mask = torch.tensor([[1.0, 1.0]])
    logits = torch.tensor([[0.3, -0.2]])
    want = 0.5 * (0.5**2) + 0.5 * (1.0**2) - torch.log_softmax(logits, -1)[0, 1]
    torch.testing.assert_close(gmm_loss(raw, logits, gt, mask), want)
    mask2 = torch.tensor([[1.0, 0.0]])  # the second step is not valid
    torch.testing.assert_close(gmm_loss(raw, logits, gt, mask2), 0.5 * 0.25 - torch.log_softmax(logits, -1)[0, 1])


def test_vmap_matches_loop_gradients_and_their_mean_is_the_batch_gradient():
    tarot = pytest.importorskip("tarot")
    ds = _dataset()
    torch.manual_seed(0)
    model = make_model({**TINY, "dropout": 0.0})
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    adapter = loss_adapter(model)
    assert isinstance(adapter, BatchedMotionLossAdapter)
    fv = tarot.GradientFeaturizer(model, adapter, proj_dim=32, seed=0, mode="vmap")
    fl = tarot.GradientFeaturizer(model, adapter, proj_dim=32, seed=0, mode="loop")
    gv, gl = fv.per_sample_grads(batch), fl.per_sample_grads(batch)
    flat_v = torch.cat([gv[n].reshape(4, -1) for n in fv.param_names], 1)
    flat_l = torch.cat([gl[n].reshape(4, -1) for n in fl.param_names], 1)
    assert flat_v.abs().max() > 0 and not torch.allclose(flat_v[0], flat_v[1])
    torch.testing.assert_close(flat_v, flat_l, rtol=1e-5, atol=1e-5 * flat_l.abs().max().item())
    model.zero_grad()
    _, loss = model(collate([ds[i] for i in range(4)]))
    (loss * 1e-3).backward()
    full = torch.cat([dict(model.named_parameters())[n].grad.reshape(-1) for n in fv.param_names])
    torch.testing.assert_close(flat_v.mean(0), full, rtol=1e-4, atol=1e-7)


def test_factorised_batch_mode_covers_every_projection():
    """Batch-first with nn.Linear projections: the factorised featurizer runs the whole batch in one backward (its
    first-batch check against one-sample runs passes) and leaves out only norms and learned embeddings."""
    from tarot.features.factorized import FactorizedGradientFeaturizer

    ds = _dataset()
    torch.manual_seed(0)
    model = make_model({**TINY, "dropout": 0.0})
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    with pytest.warns(RuntimeWarning, match="left out"):
        fb = FactorizedGradientFeaturizer(model, loss_adapter(model), proj_dim=32, factor_dim=8, mode="batch")
        fl = FactorizedGradientFeaturizer(model, loss_adapter(model), proj_dim=32, factor_dim=8, mode="loop")
    assert all(n.endswith(("norm_x.weight", "norm_x.bias", "norm_ctx.weight", "norm_ctx.bias", "norm_ff.weight",
                           "norm_ff.bias", "out_norm.weight", "out_norm.bias")) or
               n in ("agent_emb", "time_emb", "latents", "mode_queries") for n in fb.left_out)
    assert any(n.endswith("attn.q.weight") for n in fb.param_names)
    bb, bl = fb.per_sample_grads(batch), fl.per_sample_grads(batch)
    scale = max(float(b.abs().max()) for b in bl.values())
    for name in bl:
        torch.testing.assert_close(bb[name], bl[name], rtol=1e-4, atol=1e-5 * scale)


def test_wayformer_trains_evaluates_and_embeds(tmp_path):
    ds = _dataset()
    # no prior: the fixture agents drive at constant velocity, which the prior would already get exactly right
    model = build_model({**TINY, "input_scale": 10.0}, "scratch", seed=0)
    before = evaluate(model, ds, batch_size=4)["metrics"]
    info = train_model(model, ds, {"batch_size": 4, "lr": 3e-3, "epochs": 30, "milestones": [100], "seed": 0},
                       tmp_path / "w", progress=False)
    assert info["steps"] == 30 and (tmp_path / "w" / "last.pt").is_file()
    after = evaluate(model, ds, batch_size=4)["metrics"]
    assert after["val/minADE6"] < before["val/minADE6"], (before, after)
    again = build_model(TINY | {"input_scale": 10.0},
                        f"checkpoint:{tmp_path / 'w' / 'last.pt'}")
    assert evaluate(again, ds, batch_size=4)["metrics"] == after  # the checkpoint holds the trained weights
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    emb = encoder_embedding(model.eval(), batch)
    assert emb.shape == (4, 16) and torch.isfinite(emb).all()


def test_model_name_is_checked():
    with pytest.raises(ValueError, match="model.name: expected one of autobot, wayformer, got 'mtr'"):
        make_model({"name": "mtr"})
    with pytest.raises(ValueError, match="not divisible"):
        make_model({**TINY, "tx_num_heads": 3})
    with pytest.raises(ValueError, match="raise it"):
        model = make_model({**TINY, "max_agents": 1})
        model(collate([_dataset()[0]]))


def test_bench_cases_build_the_demo_models_on_real_windows():
    from tarot_motion.convert import legacy_waymo_files
    from tarot_motion.featurize import AutoBotLossAdapter, bench_case, bench_case_wayformer

    try:
        legacy_waymo_files()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    way, auto = bench_case_wayformer(batch_size=2), bench_case(batch_size=2)
    assert isinstance(way.model, WayformerEgo) and isinstance(way.adapter, BatchedMotionLossAdapter)
    assert type(auto.adapter) is AutoBotLossAdapter and way.name == "Wayformer" and auto.name == "AutoBot"
    per = way.adapter.losses(way.model, dict(way.model.named_parameters()), dict(way.model.named_buffers()),
                             way.batch)
    assert per.shape == (2,) and torch.isfinite(per).all()
