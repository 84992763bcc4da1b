import numpy as np
import pytest
import torch
from fixtures import av2_scenario, nuscenes_scenario, waymo_scenario
from tarot_motion.data import MotionDataset, collate
from tarot_motion.featurize import AutoBotLossAdapter
from tarot_motion.model import AutoBotEgo, autobot_loss
from tarot_motion.preprocess import process_scenario, resolve_config, stack_samples

TINY = {"hidden_size": 16, "tx_hidden_size": 32, "tx_num_heads": 2, "map_heads": 2}


def _dataset(max_roads=16):
    cfg = resolve_config({"object_type": ["VEHICLE", "CYCLIST"], "max_num_roads": max_roads})
    samples = []
    for sc in (waymo_scenario(), av2_scenario(), nuscenes_scenario(T=66)):
        samples += process_scenario(sc, cfg)[0]
    data = stack_samples(samples)
    return MotionDataset(data)


def test_forward_shapes_and_finite_loss():
    ds = _dataset()
    assert len(ds) == 4
    torch.manual_seed(0)
    model = AutoBotEgo(TINY)
    batch = collate([ds[i] for i in range(len(ds))])
    for train in (True, False):
        model.train(train)
        out, loss = model(batch)
        assert out["predicted_trajectory"].shape == (4, 6, 60, 5)
        assert out["predicted_probability"].shape == (4, 6)
        torch.testing.assert_close(out["predicted_probability"].sum(-1), torch.ones(4))
        assert loss.dim() == 0 and torch.isfinite(loss)
        sig = out["predicted_trajectory"][..., 2:4]
        assert (sig > 0.01).all() and (out["predicted_trajectory"][..., 4].abs() < 0.9).all()


def test_full_size_defaults_match_spec():
    model = AutoBotEgo()
    assert model.Q.shape == (60, 1, 6, 128) and model.P.shape == (6, 1, 128)
    assert len(model.temporal_attn_layers) == 2 and len(model.tx_decoder) == 2
    assert model.temporal_attn_layers[0].self_attn.num_heads == 16
    assert model.temporal_attn_layers[0].linear1.out_features == 384
    assert model.map_encoder.road_pts_attn_layer.num_heads == 8
    assert model.map_attn_layers.dropout == 0.3
    assert model.pos_encoder.pe.requires_grad is False


def test_loss_matches_hand_computation():
    torch.manual_seed(1)
    B, K, T = 3, 6, 60
    traj = torch.randn(B, K, T, 5)
    traj[..., 2:4] = traj[..., 2:4].abs() + 0.5
    traj[..., 4] = 0.3 * torch.tanh(traj[..., 4])
    probs = torch.softmax(torch.randn(B, K), -1)
    gt = torch.randn(B, T, 2)
    mask = torch.ones(B, T)
    mask[0, 40:] = 0
    got = autobot_loss(traj, probs, gt, mask)
    # independent computation with torch.distributions
    lap = torch.distributions.Laplace(traj[..., 0:2], traj[..., 2:4])
    nll = -(lap.log_prob(gt[:, None]).sum(-1) * mask[:, None]).sum(-1)
    post = torch.softmax(-nll + probs.log(), -1)
    l_nll = sum((nll[:, k] * post[:, k]).mean() for k in range(K))
    sx, sy, rho = traj[..., 2], traj[..., 3], traj[..., 4]
    cov = torch.stack([torch.stack([sx**2, rho * sx * sy], -1), torch.stack([rho * sx * sy, sy**2], -1)], -2)
    ent = torch.distributions.MultivariateNormal(traj[..., 0:2], covariance_matrix=cov).entropy().sum(-1)
    l_ent = 40 * ent.max(-1)[0].mean()
    l_kl = 20 * (post * (post.log() - probs.log())).sum() / B
    d = (traj[..., 0:2] - gt[:, None]).norm(dim=-1)
    l_af = 100 * ((d[..., -1] * mask[:, None, -1]) + (d * mask[:, None]).mean(-1)).min(-1)[0].mean()
    torch.testing.assert_close(got, l_nll + l_ent + l_kl + l_af, rtol=1e-5, atol=1e-3)
    per = autobot_loss(traj, probs, gt, mask, reduce=False)
    torch.testing.assert_close(per.mean(), got)


def test_vmap_matches_loop_gradients_through_tarot_featurizer():
    tarot = pytest.importorskip("tarot")
    ds = _dataset()
    torch.manual_seed(0)
    model = AutoBotEgo(TINY)
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    fv = tarot.GradientFeaturizer(model, AutoBotLossAdapter(), proj_dim=32, seed=0, mode="vmap")
    fl = tarot.GradientFeaturizer(model, AutoBotLossAdapter(), proj_dim=32, seed=0, mode="loop")
    assert "pos_encoder.pe" not in fv.param_names and "pos_encoder.pe" not in fl.param_names
    gv, gl = fv.per_sample_grads(batch), fl.per_sample_grads(batch)
    assert set(gv) == set(gl) and len(gv) == len(fv.param_names)
    flat_v = torch.cat([gv[n].reshape(4, -1) for n in fv.param_names], 1)
    flat_l = torch.cat([gl[n].reshape(4, -1) for n in fl.param_names], 1)
    assert flat_v.abs().max() > 0
    torch.testing.assert_close(flat_v, flat_l, rtol=1e-5, atol=1e-5 * flat_l.abs().max().item())
    # per-sample gradients differ between samples, and their mean is the batch gradient
    assert not torch.allclose(flat_v[0], flat_v[1])
    model.eval()
    model.zero_grad()
    _, loss = model(collate([ds[i] for i in range(4)]))
    (loss * 1e-3).backward()
    full = torch.cat([dict(model.named_parameters())[n].grad.reshape(-1) for n in fv.param_names])
    torch.testing.assert_close(flat_v.mean(0), full, rtol=1e-4, atol=1e-6)
    feats = fv.featurize_batch(batch)
    assert feats.shape == (4, 32) and torch.isfinite(feats).all()


def test_factorised_features_of_autobot_equal_the_kronecker_projection():
    """AutoBot's transformer layers are sequence-first, so the factorised featurizer runs one sample at a time
    (the adapter has no batched losses); its blocks equal P_out G P_in^T of the loop's gradients, and the
    attention in-projections (read through F.multi_head_attention_forward) are listed as left out."""
    from tarot.features.factorized import FactorizedGradientFeaturizer
    from tarot.features.gradients import GradientFeaturizer

    ds = _dataset()
    torch.manual_seed(0)
    model = AutoBotEgo(TINY)
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    with pytest.warns(RuntimeWarning, match="left out"):
        fz = FactorizedGradientFeaturizer(model, AutoBotLossAdapter(), proj_dim=32, factor_dim=8)
    assert fz.mode == "loop"
    assert any(n.endswith("in_proj_weight") for n in fz.left_out)
    assert not any(n.endswith("out_proj.weight") for n in fz.param_names)
    blocks = fz.per_sample_grads(batch)
    scale = max(float(b.abs().max()) for b in blocks.values())
    grads = GradientFeaturizer(model, AutoBotLossAdapter(), proj_dim=8, mode="loop",
                               params=fz.param_names).per_sample_grads(batch)
    for ly in fz.layers:
        parts = [grads[ly.weight].reshape(4, ly.d_out, -1)] if ly.weight else []
        parts += [grads[ly.bias].reshape(4, ly.d_out, 1)] if ly.bias else []
        g = torch.cat(parts, -1)
        p_in = torch.eye(ly.d_in) if ly.p_in is None else ly.p_in
        p_out = torch.eye(ly.d_out) if ly.p_out is None else ly.p_out
        ref = p_out @ g @ p_in.T
        torch.testing.assert_close(blocks[ly.name], ref, rtol=1e-4, atol=1e-6 * scale)
    feats = fz.project(blocks)
    assert feats.shape == (4, 32) and torch.isfinite(feats).all() and not torch.allclose(feats[0], feats[1])


def test_dataset_yields_tensor_only_samples():
    ds = _dataset()
    s = ds[0]
    assert all(isinstance(v, torch.Tensor) for v in s.values())
    assert s["obj_trajs"].shape == (15, 21, 39) and s["map_polylines"].shape == (16, 20, 29)
    assert ds.sources[0] == "waymo" and np.asarray(ds.ids).shape == (4,)


def test_constant_velocity_prior_starts_at_the_extrapolation_and_is_vmap_safe():
    tarot = pytest.importorskip("tarot")
    ds = _dataset()
    batch = collate([ds[i] for i in range(len(ds))])
    torch.manual_seed(0)
    model = AutoBotEgo({**TINY, "prior": "constant_velocity", "input_scale": 10.0}).eval()
    out, _ = model(batch)
    vel = batch["input_dict"]["obj_trajs"][:, 0, -1, 35:37]
    expected = vel[:, None, :] * (torch.arange(1, 61) * 0.1)[None, :, None]
    assert vel.abs().max() > 0.1  # the fixture agents move
    for k in range(6):  # the residual head starts at zero: every mode is the constant-velocity extrapolation
        torch.testing.assert_close(out["predicted_trajectory"][:, k, :, :2], expected)
    # per-sample gradients through the prior: vmap equals the loop
    model.output_model.observation_model[-1].weight.data.normal_()  # leave the zero start
    sample = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    fv = tarot.GradientFeaturizer(model, AutoBotLossAdapter(), proj_dim=16, seed=0, mode="vmap")
    fl = tarot.GradientFeaturizer(model, AutoBotLossAdapter(), proj_dim=16, seed=0, mode="loop")
    gv, gl = fv.per_sample_grads(sample), fl.per_sample_grads(sample)
    flat_v = torch.cat([gv[n].reshape(4, -1) for n in fv.param_names], 1)
    flat_l = torch.cat([gl[n].reshape(4, -1) for n in fl.param_names], 1)
    torch.testing.assert_close(flat_v, flat_l, rtol=1e-5, atol=1e-5 * flat_l.abs().max().item())


def test_input_scale_and_prior_are_validated():
    with pytest.raises(ValueError, match="model.prior"):
        AutoBotEgo({**TINY, "prior": "kalman"})
    with pytest.raises(ValueError, match="input_scale"):
        AutoBotEgo({**TINY, "input_scale": 0})


@pytest.mark.parametrize("config", [{"input_scale": 10.0}, {"prior": "constant_velocity", "input_scale": 10.0}])
def test_model_overfits_a_handful_of_windows(config):
    """Guards the whole train path (frames, targets, loss, optimizer): four windows are memorised to a small error.

    The fixture agents drive at constant velocity, so the futures get a braking and a lateral drift (quadratic in
    time) first: otherwise the constant-velocity prior would already be exact."""
    from tarot_motion.metrics import per_sample_metrics

    ds = _dataset()
    batch = collate([ds[i] for i in range(len(ds))])
    t = torch.arange(1, 61, dtype=torch.float32) * 0.1
    bend = torch.stack([-0.8 * t**2, 0.5 * t**2], -1)  # metres: -14.4 m along, +9 m across after 6 s
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0]).reshape(4, 1, 1)
    batch["input_dict"]["center_gt_trajs"] = batch["input_dict"]["center_gt_trajs"].clone()
    batch["input_dict"]["center_gt_trajs"][..., :2] += signs * bend
    gt = batch["input_dict"]["center_gt_trajs"][..., :2]
    mask = batch["input_dict"]["center_gt_trajs_mask"]
    torch.manual_seed(0)
    model = AutoBotEgo({**TINY, "dropout": 0.0, "map_dropout": 0.0, "entropy_weight": 0.0, **config})

    def min_ade() -> float:
        model.eval()
        with torch.no_grad():
            out, _ = model(batch)
        per = per_sample_metrics(out["predicted_trajectory"].numpy(), out["predicted_probability"].numpy(),
                                 gt.numpy(), mask.numpy(), batch["input_dict"]["center_gt_final_valid_idx"].numpy())
        return float(per["minADE6"].mean())

    start = min_ade()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, eps=1e-4)
    for _ in range(500):
        model.train()
        _, loss = model(batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    end = min_ade()
    assert end < 0.5 and end < 0.1 * start, (start, end)


def test_encoder_embedding_feeds_tarot_embedding_store(tmp_path):
    tarot = pytest.importorskip("tarot")
    from tarot_motion.featurize import encoder_embedding

    ds = _dataset()
    torch.manual_seed(0)
    model = AutoBotEgo({**TINY, "prior": "constant_velocity", "input_scale": 10.0})
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    emb = encoder_embedding(model.eval(), batch)
    assert emb.shape == (4, 16) and torch.isfinite(emb).all()
    one = encoder_embedding(model, {k: v[:1] for k, v in batch.items()})
    torch.testing.assert_close(one, emb[:1], rtol=1e-5, atol=1e-6)  # per sample: independent of the batch
    feat = tarot.EmbeddingFeaturizer(model, encoder_embedding, dim=16)
    store = tarot.featurize_to_store(feat, {"candidate": ds, "target": ds}, tmp_path / "emb", checkpoints=None,
                                     batch_size=3, progress=False)
    np.testing.assert_allclose(np.asarray(store.features("candidate")), emb.detach().numpy(), rtol=1e-5, atol=1e-6)
