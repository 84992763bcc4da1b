"""AutoBot-Ego (Girgis et al., ICLR 2022) with UniTraj's defaults, written to be vmap-safe.

Only x, y and the validity mask of agents and map points are used (motion spec section 5). The forward pass takes a
UniTraj-style batch ``{"input_dict": {...}}`` and returns ``(output, loss)`` in both train and eval modes, where
``output`` has ``predicted_trajectory [B, 6, 60, 5]`` (μx, μy, σx, σy, ρ in the center frame) and
``predicted_probability [B, 6]``. No in-place writes, boolean-mask indexing or ``.item()`` calls are used, so the loss
of one sample can be differentiated per sample with :func:`torch.func.vmap`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .defaults import MODEL_DEFAULTS  # noqa: E402  (kept importable from here)

PRIORS = ("none", "constant_velocity")


class PositionalEncoding(nn.Module):
    """Sinusoidal table added to a sequence-first tensor; stored as a non-trainable parameter ``pe``."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1).float()
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, 1, d_model)
        pe[:, 0, 0::2] = torch.sin(position * div)
        pe[:, 0, 1::2] = torch.cos(position * div)
        self.pe = nn.Parameter(pe, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pe[: x.shape[0]]


class MapEncoderPts(nn.Module):
    """Per-polyline encoder: point embedding, attention pooling from the max-pooled query, LayerNorms and an MLP."""

    def __init__(self, d_k: int, map_attr: int = 2, heads: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.road_pts_lin = nn.Linear(map_attr, d_k)
        self.road_pts_attn_layer = nn.MultiheadAttention(d_k, num_heads=heads, dropout=dropout)
        self.norm1 = nn.LayerNorm(d_k, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_k, eps=1e-5)
        self.map_feats = nn.Sequential(nn.Linear(d_k, d_k), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_k, d_k))
        self.map_attr = map_attr

    def forward(self, roads: Tensor) -> tuple[Tensor, Tensor]:
        """``roads [B, S, P, map_attr+1]`` -> (segment embeddings ``[S, B, d]``, segment padding mask ``[B, S]``)."""
        B, S, P, _ = roads.shape
        pts_mask = roads[..., -1] <= 0  # True = padded point
        seg_mask = pts_mask.all(-1)  # [B, S]
        feats = self.road_pts_lin(roads[..., : self.map_attr]).reshape(B * S, P, -1).permute(1, 0, 2)
        kpm = pts_mask.reshape(B * S, P)
        # fully padded segments: unmask them for the attention (avoids NaN); they are masked downstream anyway
        kpm = kpm & ~kpm.all(-1, keepdim=True)
        query = feats.max(dim=0)[0].unsqueeze(0)
        emb = self.road_pts_attn_layer(query=query, key=feats, value=feats, key_padding_mask=kpm)[0]
        emb = self.norm1(emb)
        emb = self.norm2(emb + self.map_feats(emb))
        return emb.reshape(B, S, -1).permute(1, 0, 2), seg_mask


class OutputModel(nn.Module):
    """MLP head producing a bivariate Gaussian per step: μx, μy, σx, σy (softplus + 0.01), ρ (0.9·tanh)."""

    def __init__(self, d_k: int) -> None:
        super().__init__()
        self.observation_model = nn.Sequential(
            nn.Linear(d_k, d_k), nn.ReLU(), nn.Linear(d_k, d_k), nn.ReLU(), nn.Linear(d_k, 5)
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.observation_model(x)
        mu = out[..., 0:2]
        sig = F.softplus(out[..., 2:4]) + 0.01
        rho = 0.9 * torch.tanh(out[..., 4:5])
        return torch.cat([mu, sig, rho], dim=-1)


def model_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """:data:`MODEL_DEFAULTS` with ``config`` over them, checked: unknown keys, ``prior`` and ``input_scale``."""
    cfg = {**MODEL_DEFAULTS, **(config or {})}
    unknown = set(cfg) - set(MODEL_DEFAULTS)
    if unknown:
        raise ValueError(f"model config: unknown keys {sorted(unknown)} (known: {sorted(MODEL_DEFAULTS)})")
    if cfg["prior"] not in PRIORS:
        raise ValueError(f"model.prior: expected one of {PRIORS}, got {cfg['prior']!r}")
    if not float(cfg["input_scale"]) > 0:
        raise ValueError(f"model.input_scale must be > 0, got {cfg['input_scale']!r}")
    return cfg


def constant_velocity_prior(velocity: Tensor, steps: int, dt: float) -> Tensor:
    """``v · dt · (t + 1)`` for t = 0 … steps − 1: the current velocity ``[B, 2]`` extrapolated, ``[B, steps, 2]``."""
    t = torch.arange(1, steps + 1, dtype=velocity.dtype, device=velocity.device) * dt
    return velocity.unsqueeze(1) * t.reshape(1, -1, 1)


def _unmask_full_rows(mask: Tensor) -> Tensor:
    """Key-padding mask with fully padded rows unmasked (attention over all -inf keys would give NaN)."""
    return mask & ~mask.all(-1, keepdim=True)


class MotionModel(nn.Module):
    """What the motion models share: the checked ``config`` (:func:`model_config`), the width ``d_k``, the number of
    modes ``c``, the future length ``T`` and the transformer sizes ``heads``, ``ff`` and ``dropout_p``."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = cfg = model_config(config)
        self.d_k, self.c, self.T = int(cfg["hidden_size"]), int(cfg["num_modes"]), int(cfg["future_len"])
        self.heads, self.ff = int(cfg["tx_num_heads"]), int(cfg["tx_hidden_size"])
        self.dropout_p = float(cfg["dropout"])


class AutoBotEgo(MotionModel):
    """AutoBot-Ego motion predictor.

    Parameters
    ----------
    config : dict, optional
        Overrides of :data:`MODEL_DEFAULTS`.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        cfg, d, heads, ff, drop = self.config, self.d_k, self.heads, self.ff, self.dropout_p
        self.agents_dynamic_encoder = nn.Linear(2, d)
        self.temporal_attn_layers = nn.ModuleList(
            [nn.TransformerEncoderLayer(d, heads, ff, drop) for _ in range(int(cfg["num_encoder_layers"]))]
        )
        self.social_attn_layers = nn.ModuleList(
            [nn.TransformerEncoderLayer(d, heads, ff, drop) for _ in range(int(cfg["num_encoder_layers"]))]
        )
        self.pos_encoder = PositionalEncoding(d, max_len=int(cfg["past_len"]))
        self.map_encoder = MapEncoderPts(d, 2, heads=int(cfg["map_heads"]), dropout=drop)
        self.map_attn_layers = nn.MultiheadAttention(d, num_heads=heads, dropout=float(cfg["map_dropout"]))
        self.Q = nn.Parameter(torch.empty(self.T, 1, self.c, d))
        nn.init.xavier_uniform_(self.Q)
        self.tx_decoder = nn.ModuleList(
            [nn.TransformerDecoderLayer(d, heads, ff, drop) for _ in range(int(cfg["num_decoder_layers"]))]
        )
        self.output_model = OutputModel(d)
        if cfg["prior"] != "none":  # start every mode exactly at the prior; training learns the residual
            last = self.output_model.observation_model[-1]
            assert isinstance(last, nn.Linear)
            with torch.no_grad():
                last.weight[0:2].zero_()
                last.bias[0:2].zero_()
        self.P = nn.Parameter(torch.empty(self.c, 1, d))
        nn.init.xavier_uniform_(self.P)
        self.mode_map_attn = nn.MultiheadAttention(d, num_heads=heads)
        self.prob_decoder = nn.MultiheadAttention(d, num_heads=heads, dropout=drop)
        self.prob_predictor = nn.Linear(d, 1)
        causal = torch.triu(torch.ones(self.T, self.T, dtype=torch.bool), diagonal=1)
        self.register_buffer("time_mask", causal, persistent=False)

    # ------------------------------------------------------------------ helpers
    def _temporal(self, emb: Tensor, masks: Tensor, layer: nn.Module) -> Tensor:
        # emb [T, B, N, d], masks [B, T, N] (True = padded)
        T, B, N, d = emb.shape
        m = _unmask_full_rows(masks.permute(0, 2, 1).reshape(B * N, T))
        out = layer(self.pos_encoder(emb.reshape(T, B * N, d)), src_key_padding_mask=m)
        return out.reshape(T, B, N, d)

    def _social(self, emb: Tensor, masks: Tensor, layer: nn.Module) -> Tensor:
        T, B, N, d = emb.shape
        x = emb.permute(2, 1, 0, 3).reshape(N, B * T, d)
        m = _unmask_full_rows(masks.reshape(B * T, N))
        out = layer(x, src_key_padding_mask=m)
        return out.reshape(N, B, T, d).permute(2, 1, 0, 3)

    def model_inputs(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Build ``ego_in [B,21,3]``, ``agents_in [B,21,15,3]``, ``roads [B,256,20,3]`` and the center agent's
        current velocity ``[B, 2]`` (center frame, m/s; UniTraj feature columns 35:37 at the last past step) from a
        UniTraj input dict."""
        agents = torch.cat(
            [inputs["obj_trajs"][..., :2], inputs["obj_trajs_mask"].unsqueeze(-1).to(inputs["obj_trajs"].dtype)], -1
        ).transpose(1, 2)  # [B, T, N, 3]
        B, T = agents.shape[0], agents.shape[1]
        track = inputs["track_index_to_predict"].long().reshape(B, 1, 1)
        idx = track.unsqueeze(-1).expand(B, T, 1, 3)
        ego = torch.gather(agents, 2, idx).squeeze(2)
        feats = inputs["obj_trajs"]  # [B, N, T, F]
        vel = torch.gather(feats[:, :, -1, 35:37], 1, track.expand(B, 1, 2)).squeeze(1)
        roads = torch.cat(
            [inputs["map_polylines"][..., :2],
             inputs["map_polylines_mask"].unsqueeze(-1).to(inputs["map_polylines"].dtype)], -1
        )
        return ego, agents, roads, vel

    def prior_trajectory(self, velocity: Tensor) -> Tensor:
        """Positions ``[B, T, 2]`` of the configured prior: zeros (``none``) or ``v · dt · (t + 1)``
        (``constant_velocity``: the current velocity extrapolated over the future steps)."""
        prior = constant_velocity_prior(velocity, self.T, float(self.config["dt"]))
        return prior if self.config["prior"] == "constant_velocity" else torch.zeros_like(prior)

    def _scaled(self, x: Tensor) -> Tensor:
        """Positions (the first two features) divided by ``input_scale``; the validity flag is kept."""
        s = float(self.config["input_scale"])
        return x if s == 1.0 else torch.cat([x[..., :2] / s, x[..., 2:]], -1)

    def _encode_agents(self, ego_in: Tensor, agents_in: Tensor, ego_mask: Tensor) -> Tensor:
        """Temporal/social encoder over the ego and its neighbours → the ego's embedding per past step
        ``[T_obs, B, d]``."""
        agents_tensor = torch.cat([ego_in[..., :2].unsqueeze(2), agents_in[..., :2]], dim=2)
        opps_masks = torch.cat([ego_mask.unsqueeze(-1), agents_in[..., -1] <= 0], dim=-1)  # [B, T, N]
        emb = self.agents_dynamic_encoder(agents_tensor).permute(1, 0, 2, 3)  # [T, B, N, d]
        for tl, sl in zip(self.temporal_attn_layers, self.social_attn_layers):
            emb = self._temporal(emb, opps_masks, tl)
            emb = self._social(emb, opps_masks, sl)
        return emb[:, :, 0]

    def encoder_embedding(self, inputs: dict[str, Tensor]) -> Tensor:
        """Mean over the valid past steps of the ego's encoder output, ``[B, d]`` (the embedding feature source)."""
        ego, agents, _, _ = self.model_inputs(inputs)
        ego, agents = self._scaled(ego), self._scaled(agents)
        ego_mask = ego[..., -1] <= 0
        emb = self._encode_agents(ego, agents, ego_mask)  # [T, B, d]
        valid = (~ego_mask).to(emb.dtype).transpose(0, 1).unsqueeze(-1)  # [T, B, 1]
        return (emb * valid).sum(0) / valid.sum(0).clamp_min(1.0)

    # ------------------------------------------------------------------ forward
    def predict(self, ego_in: Tensor, agents_in: Tensor, roads: Tensor,
                velocity: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Return (trajectory ``[B, c, T, 5]``, mode probabilities ``[B, c]``).

        Positions enter the encoders divided by ``input_scale`` s; the decoder's means and scales are multiplied by s
        again, and the prior trajectory p(t) is added to every mode's mean: :math:`\mu_k(t) = p(t) + s\,r_k(t)`.
        With ``prior="none"`` and s = 1 this is UniTraj's AutoBot-Ego.
        """
        B = ego_in.shape[0]
        c, d = self.c, self.d_k
        s = float(self.config["input_scale"])
        ego_in, agents_in, roads = (self._scaled(x) for x in (ego_in, agents_in, roads))
        ego_mask = ego_in[..., -1] <= 0  # [B, T]
        ego_emb = self._encode_agents(ego_in, agents_in, ego_mask)  # [T_obs, B, d]
        map_feats, seg_mask = self.map_encoder(roads)  # [S, B, d], [B, S]
        seg_mask_u = _unmask_full_rows(seg_mask)
        map_rep = map_feats.unsqueeze(2).expand(-1, -1, c, -1).reshape(-1, B * c, d)
        seg_rep = seg_mask_u.unsqueeze(1).expand(-1, c, -1).reshape(B * c, -1)
        context = ego_emb.unsqueeze(2).expand(-1, -1, c, -1).reshape(-1, B * c, d)
        env_masks = _unmask_full_rows(ego_mask).unsqueeze(1).expand(-1, c, -1).reshape(B * c, -1)
        out = self.Q.expand(-1, B, -1, -1).reshape(self.T, B * c, d)
        out = out + self.map_attn_layers(query=out, key=map_rep, value=map_rep, key_padding_mask=seg_rep)[0]
        for layer in self.tx_decoder:
            out = layer(out, context, tgt_mask=self.time_mask, memory_key_padding_mask=env_masks)
        dists = self.output_model(out).reshape(self.T, B, c, 5).permute(1, 2, 0, 3)  # [B, c, T, 5]
        if s != 1.0:
            dists = torch.cat([dists[..., :4] * s, dists[..., 4:]], -1)
        if self.config["prior"] != "none":
            if velocity is None:
                raise ValueError(f"model.prior={self.config['prior']!r} needs the center agent's velocity")
            dists = torch.cat([dists[..., :2] + self.prior_trajectory(velocity).unsqueeze(1), dists[..., 2:]], -1)
        mode = self.P.expand(-1, B, -1)
        ego_kpm = _unmask_full_rows(ego_mask)
        mode = self.prob_decoder(query=mode, key=ego_emb, value=ego_emb, key_padding_mask=ego_kpm)[0]
        mode = mode + self.mode_map_attn(query=mode, key=map_feats, value=map_feats, key_padding_mask=seg_mask_u)[0]
        probs = torch.softmax(self.prob_predictor(mode).squeeze(-1), dim=0).transpose(0, 1)  # [B, c]
        return dists, probs

    def forward(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
        """UniTraj-style forward: ``batch["input_dict"]`` -> (output dict, scalar loss)."""
        inputs = batch["input_dict"]
        ego, agents, roads, velocity = self.model_inputs(inputs)
        traj, probs = self.predict(ego, agents, roads, velocity)
        output = {"predicted_trajectory": traj, "predicted_probability": probs}
        loss = autobot_loss(traj, probs, inputs["center_gt_trajs"][..., :2], inputs["center_gt_trajs_mask"],
                            self.config)
        return output, loss


def _entropy_bvn(sig: Tensor, rho: Tensor) -> Tensor:
    """Entropy of a bivariate normal with std ``sig[..., 2]`` and correlation ``rho``."""
    return 1.0 + math.log(2 * math.pi) + torch.log(sig[..., 0]) + torch.log(sig[..., 1]) + 0.5 * torch.log1p(-rho**2)


def autobot_loss(traj: Tensor, probs: Tensor, gt: Tensor, mask: Tensor, config: dict[str, Any] | None = None,
                 reduce: bool = True) -> Tensor:
    """AutoBot-Ego loss (motion spec section 5.3).

    Parameters
    ----------
    traj : Tensor [B, K, T, 5]
    probs : Tensor [B, K]
    gt : Tensor [B, T, 2]
        Ground-truth future in the center frame.
    mask : Tensor [B, T]
        Future validity (float or bool).
    reduce : bool
        If False, return the per-sample loss ``[B]`` whose batch mean equals the reduced loss.
    """
    cfg = {**MODEL_DEFAULTS, **(config or {})}
    m = mask.to(traj.dtype)
    mu, sig = traj[..., 0:2], traj[..., 2:4]
    y = gt.unsqueeze(1)  # [B, 1, T, 2]
    nll_t = (torch.log(2 * sig) + (y - mu).abs() / sig).sum(-1)  # [B, K, T]
    nll = (nll_t * m.unsqueeze(1)).sum(-1)  # [B, K]
    log_prior = torch.log(probs.clamp_min(1e-12))
    post = torch.softmax(-nll + log_prior, dim=-1).detach()
    per_nll = (nll * post).sum(-1)  # [B]; mean over b then sum over k == sum over k then mean over b
    ent = _entropy_bvn(sig, traj[..., 4]).sum(-1).max(dim=-1)[0]  # [B]
    kl = (torch.special.xlogy(post, post) - post * log_prior).sum(-1)  # [B]
    dist = torch.linalg.vector_norm(traj[..., 0:2] - y, dim=-1)  # [B, K, T]
    ade = (dist * m.unsqueeze(1)).mean(-1)
    fde = dist[..., -1] * m[:, -1:].expand_as(dist[..., -1])
    adefde = (fde + ade).min(dim=-1)[0]  # [B]
    per = per_nll + cfg["entropy_weight"] * ent + cfg["kl_weight"] * kl + cfg["ade_fde_weight"] * adefde
    return per.mean() if reduce else per


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
