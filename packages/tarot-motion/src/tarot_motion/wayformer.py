"""Wayformer-Ego (Nayakanti et al., ICRA 2023) as UniTraj trains it, written to be vmap-safe and batch-first.

Early fusion: every observed step of every agent and every map point becomes one token (a linear embedding of its
position, plus learned agent and time embeddings for agent tokens). A Perceiver encoder lets ``num_queries_enc``
learned latents attend to all tokens (padding masked) and then to each other; a decoder lets one learned query per
mode attend to the latents and to the other modes. Each mode query is read out as a whole trajectory (``5·T``
numbers: μx, μy, log σx, log σy, ρ per step) and a mode logit.

The loss is UniTraj's for Wayformer (MTR's GMM loss): the bivariate-Gaussian negative log-likelihood of the mode
nearest to the ground truth (summed over valid steps) plus the cross-entropy of the mode logits against that mode.

Attention is written out with ``nn.Linear`` projections (no ``nn.MultiheadAttention``), tensors are batch-first and
no data-dependent shapes, in-place writes or ``.item()`` calls occur. So per-sample gradients work under
:func:`torch.func.vmap`, and tarot-core's factorised projector covers every projection. The forward contract is
:class:`tarot_motion.model.AutoBotEgo`'s: ``(output, loss)`` with ``predicted_trajectory [B, K, T, 5]`` (σ, not log
σ) and ``predicted_probability [B, K]``; the same ``prior``/``input_scale`` options apply.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import MotionModel, constant_velocity_prior

LOG_STD_RANGE = (-1.609, 5.0)  # σ between 0.2 m and 148 m, as UniTraj clips it
RHO_LIMIT = 0.5


class Attention(nn.Module):
    """Multi-head attention of queries ``x [B, Q, d]`` over a context ``[B, K, d]`` with a key padding mask."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"model.hidden_size={d} is not divisible by model.tx_num_heads={heads}")
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, ctx: Tensor, pad: Tensor | None = None) -> Tensor:
        """``pad [B, K]``: True marks a padded key. Rows whose keys are all padded attend to all of them (their output
        is masked downstream), so no NaN appears."""
        B, Q, d = x.shape
        K, h = ctx.shape[1], self.heads
        q = self.q(x).reshape(B, Q, h, d // h).transpose(1, 2)
        k = self.k(ctx).reshape(B, K, h, d // h).transpose(1, 2)
        v = self.v(ctx).reshape(B, K, h, d // h).transpose(1, 2)
        score = q @ k.transpose(-1, -2) / math.sqrt(d // h)  # [B, h, Q, K]
        if pad is not None:
            pad = pad & ~pad.all(-1, keepdim=True)
            score = score - 1e9 * pad[:, None, None, :].to(score.dtype)
        att = self.drop(torch.softmax(score, dim=-1))
        return self.o((att @ v).transpose(1, 2).reshape(B, Q, d))


class Block(nn.Module):
    """Pre-norm transformer block: attention to a context (``cross``) or to itself, then a feed-forward layer."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float, cross: bool = False) -> None:
        super().__init__()
        self.norm_x, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d)
        self.norm_ctx = nn.LayerNorm(d) if cross else None
        self.attn = Attention(d, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, ctx: Tensor | None = None, pad: Tensor | None = None) -> Tensor:
        xn = self.norm_x(x)
        if (ctx is None) != (self.norm_ctx is None):
            raise ValueError("a cross-attention block needs a context, a self-attention block takes none")
        c = xn if self.norm_ctx is None or ctx is None else self.norm_ctx(ctx)
        x = x + self.drop(self.attn(xn, c, pad))
        return x + self.drop(self.ff(self.norm_ff(x)))


class WayformerEgo(MotionModel):
    """Wayformer-Ego motion predictor with early fusion and Perceiver latents.

    Parameters
    ----------
    config : dict, optional
        Overrides of :data:`tarot_motion.defaults.MODEL_DEFAULTS`. Used here: ``hidden_size`` (d),
        ``num_encoder_layers`` (latent self-attention blocks after the cross-attention), ``num_decoder_layers``,
        ``tx_hidden_size`` (feed-forward width), ``tx_num_heads``, ``dropout``, ``num_modes``, ``past_len``,
        ``future_len``, ``num_queries_enc`` (latents), ``max_agents`` (agent embeddings), ``prior``,
        ``input_scale``, ``dt``. The AutoBot-only keys (loss weights, ``map_heads``, ``map_dropout``) are ignored.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        cfg, d, heads, ff, drop = self.config, self.d_k, self.heads, self.ff, self.dropout_p
        self.agent_in = nn.Linear(2, d)
        self.road_in = nn.Linear(2, d)
        self.agent_emb = nn.Parameter(torch.zeros(int(cfg["max_agents"]) + 1, d))
        self.time_emb = nn.Parameter(torch.zeros(int(cfg["past_len"]), d))
        self.latents = nn.Parameter(0.1 * torch.randn(int(cfg["num_queries_enc"]), d))
        self.encoder_cross = Block(d, heads, ff, drop, cross=True)
        self.encoder_self = nn.ModuleList([Block(d, heads, ff, drop) for _ in range(int(cfg["num_encoder_layers"]))])
        self.mode_queries = nn.Parameter(0.1 * torch.randn(self.c, d))
        self.decoder_cross = nn.ModuleList([Block(d, heads, ff, drop, cross=True)
                                            for _ in range(int(cfg["num_decoder_layers"]))])
        self.decoder_self = nn.ModuleList([Block(d, heads, ff, drop) for _ in range(int(cfg["num_decoder_layers"]))])
        self.out_norm = nn.LayerNorm(d)
        self.traj_head = nn.Linear(d, 5 * self.T)
        self.prob_head = nn.Linear(d, 1)
        if cfg["prior"] != "none":  # start at the prior: zero residual means
            with torch.no_grad():
                self.traj_head.weight.view(self.T, 5, d)[:, 0:2].zero_()
                self.traj_head.bias.view(self.T, 5)[:, 0:2].zero_()

    # ------------------------------------------------------------------ encoder
    def _tokens(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(tokens ``[B, n, d]``, padding mask ``[B, n]`` (True = padded), center velocity ``[B, 2]``).

        Agent tokens: the center agent first, then every agent of ``obj_trajs`` (the center one again, as UniTraj
        does), each observed step; map tokens: every polyline point."""
        s = float(self.config["input_scale"])
        xy = inputs["obj_trajs"][..., :2] / s  # [B, N, T, 2]
        valid = inputs["obj_trajs_mask"] > 0  # [B, N, T]
        B, N, T = valid.shape
        if N + 1 > self.agent_emb.shape[0]:
            raise ValueError(f"{N} agents per sample, but model.max_agents={self.agent_emb.shape[0] - 1}; raise it")
        track = inputs["track_index_to_predict"].long().reshape(B, 1, 1, 1)
        ego_xy = torch.gather(xy, 1, track.expand(B, 1, T, 2))
        ego_valid = torch.gather(valid, 1, track[..., 0].expand(B, 1, T))
        xy = torch.cat([ego_xy, xy], 1)  # [B, N+1, T, 2]
        valid = torch.cat([ego_valid, valid], 1)
        agents = F.selu(self.agent_in(xy)) + self.agent_emb[: N + 1, None, :] + self.time_emb[None, :T, :]
        roads = F.selu(self.road_in(inputs["map_polylines"][..., :2] / s))  # [B, S, P, d]
        road_valid = inputs["map_polylines_mask"] > 0
        tokens = torch.cat([agents.reshape(B, -1, self.d_k), roads.reshape(B, -1, self.d_k)], 1)
        pad = ~torch.cat([valid.reshape(B, -1), road_valid.reshape(B, -1)], 1)
        feats = inputs["obj_trajs"]
        vel = torch.gather(feats[:, :, -1, 35:37], 1, track[..., 0].expand(B, 1, 2)).squeeze(1)
        return tokens, pad, vel

    def encode(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(latents ``[B, L, d]``, center velocity ``[B, 2]``)."""
        tokens, pad, vel = self._tokens(inputs)
        lat = self.latents.expand(tokens.shape[0], -1, -1)
        lat = self.encoder_cross(lat, tokens, pad)
        for block in self.encoder_self:
            lat = block(lat)
        return lat, vel

    def encoder_embedding(self, inputs: dict[str, Tensor]) -> Tensor:
        """Mean of the encoder's latents, ``[B, d]`` (the embedding feature source)."""
        return self.encode(inputs)[0].mean(1)

    # ------------------------------------------------------------------ decoder
    def predict_raw(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(trajectory ``[B, K, T, 5]`` with μ (prior added), log σ, ρ; mode logits ``[B, K]``)."""
        lat, vel = self.encode(inputs)
        q = self.mode_queries.expand(lat.shape[0], -1, -1)
        for cross, own in zip(self.decoder_cross, self.decoder_self):
            q = own(cross(q, lat))
        q = self.out_norm(q)
        B = q.shape[0]
        raw = self.traj_head(q).reshape(B, self.c, self.T, 5)
        s = float(self.config["input_scale"])
        mu = raw[..., 0:2] * s
        if self.config["prior"] != "none":
            mu = mu + constant_velocity_prior(vel, self.T, float(self.config["dt"])).unsqueeze(1)
        log_sig = raw[..., 2:4] + math.log(s)
        return torch.cat([mu, log_sig, raw[..., 4:5]], -1), self.prob_head(q).squeeze(-1)

    def forward(self, batch: dict[str, Any], reduce: bool = True) -> tuple[dict[str, Tensor], Tensor]:
        """UniTraj-style forward: ``batch["input_dict"]`` -> (output dict, loss; per sample ``[B]`` if not
        ``reduce``)."""
        inputs = batch["input_dict"]
        raw, logits = self.predict_raw(inputs)
        loss = gmm_loss(raw, logits, inputs["center_gt_trajs"][..., :2], inputs["center_gt_trajs_mask"],
                        reduce=reduce)
        log_sig = raw[..., 2:4].clamp(*LOG_STD_RANGE)
        traj = torch.cat([raw[..., 0:2], log_sig.exp(), raw[..., 4:5].clamp(-RHO_LIMIT, RHO_LIMIT)], -1)
        return {"predicted_trajectory": traj, "predicted_probability": torch.softmax(logits, -1)}, loss


def gmm_loss(raw: Tensor, logits: Tensor, gt: Tensor, mask: Tensor, reduce: bool = True) -> Tensor:
    r"""MTR's GMM loss as UniTraj trains Wayformer with it.

    With :math:`k^*` the mode whose mean is nearest to the ground truth (sum of the valid steps' distances),

    .. math:: \mathcal L = \sum_t m_t\Big[\log\sigma_x\sigma_y\sqrt{1-\rho^2}
              + \frac{1}{2(1-\rho^2)}\Big(\frac{d_x^2}{\sigma_x^2} + \frac{d_y^2}{\sigma_y^2}
              - \frac{2\rho d_x d_y}{\sigma_x\sigma_y}\Big)\Big]_{k^*} + \mathrm{CE}(\text{logits}, k^*),

    log σ clipped to [-1.609, 5] and ρ to [-0.5, 0.5].

    Parameters
    ----------
    raw : Tensor [B, K, T, 5]
        μx, μy, log σx, log σy, ρ.
    logits : Tensor [B, K]
    gt : Tensor [B, T, 2]
    mask : Tensor [B, T]
        Valid future steps (float or bool).
    reduce : bool
        If False, the per-sample loss ``[B]`` (its mean is the reduced loss).
    """
    m = mask.to(raw.dtype)
    dist = torch.linalg.vector_norm(raw[..., 0:2] - gt.unsqueeze(1), dim=-1)  # [B, K, T]
    nearest = (dist * m.unsqueeze(1)).sum(-1).argmin(-1)  # [B]
    B, K, T, _ = raw.shape
    best = torch.gather(raw, 1, nearest.reshape(B, 1, 1, 1).expand(B, 1, T, 5)).squeeze(1)  # [B, T, 5]
    dx, dy = gt[..., 0] - best[..., 0], gt[..., 1] - best[..., 1]
    ls1, ls2 = best[..., 2].clamp(*LOG_STD_RANGE), best[..., 3].clamp(*LOG_STD_RANGE)
    s1, s2 = ls1.exp(), ls2.exp()
    rho = best[..., 4].clamp(-RHO_LIMIT, RHO_LIMIT)
    one = 1 - rho**2
    nll = ls1 + ls2 + 0.5 * torch.log(one) + 0.5 / one * (dx**2 / s1**2 + dy**2 / s2**2 - 2 * rho * dx * dy / (s1 * s2))
    per = (nll * m).sum(-1) + F.cross_entropy(logits, nearest, reduction="none")
    return per.mean() if reduce else per
