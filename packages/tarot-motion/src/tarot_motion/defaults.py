"""Defaults of the model and training config sections, in a module without torch so that configs and ``--help``
load at once."""

from __future__ import annotations

from typing import Any

MODEL_DEFAULTS: dict[str, Any] = {
    "name": "autobot",  # autobot (AutoBot-Ego) | wayformer (Wayformer-Ego, early fusion, Perceiver latents)
    "hidden_size": 128,
    "num_encoder_layers": 2,
    "num_decoder_layers": 2,
    "tx_hidden_size": 384,
    "tx_num_heads": 16,
    "dropout": 0.1,
    "num_modes": 6,
    "past_len": 21,
    "future_len": 60,
    "entropy_weight": 40.0,
    "kl_weight": 20.0,
    "ade_fde_weight": 100.0,
    "map_heads": 8,
    "map_dropout": 0.3,
    "prior": "none",
    "input_scale": 1.0,
    "dt": 0.1,
    "num_queries_enc": 192,  # wayformer: Perceiver latents (UniTraj's setting)
    "max_agents": 64,  # wayformer: learned agent embeddings (at least preprocess.max_num_agents)
}

MODEL_NAMES = ("autobot", "wayformer")

TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 7.5e-4,
    "adam_eps": 1e-4,
    "milestones": [10, 20, 30, 40, 50],
    "gamma": 0.5,
    "grad_clip": 5.0,
    "batch_size": 128,
    "eval_batch_size": 256,
    "epochs": 100,
    "max_steps": None,
    "seed": 0,
    "init": "scratch",
    "checkpoint_every": 1,
}
