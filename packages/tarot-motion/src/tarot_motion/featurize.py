"""Per-sample loss adapter for tarot-core's gradient featurizer (vmap-safe AutoBot-Ego loss of one sample)."""

from __future__ import annotations

from typing import Any

import torch
from torch.func import functional_call

from .model import AutoBotEgo
from .wayformer import WayformerEgo


class AutoBotLossAdapter:
    """Loss of ONE preprocessed sample (a dict of tensors without batch dimension), scaled by ``scale``.

    The reference TAROT glue featurises ``loss / 1000``; the scale is irrelevant after whitening with a relative ridge.
    String keys never reach this adapter (:class:`tarot_motion.data.MotionDataset` yields tensors only).
    """

    def __init__(self, scale: float = 1e-3) -> None:
        self.scale = float(scale)

    def loss(self, model: torch.nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
             sample: dict[str, Any]) -> torch.Tensor:
        inp = {k: v.unsqueeze(0) for k, v in sample.items() if isinstance(v, torch.Tensor)}
        batch = {"batch_size": 1, "input_dict": inp}
        _, loss = functional_call(model, {**params, **buffers}, (batch,))
        return loss * self.scale


class BatchedMotionLossAdapter(AutoBotLossAdapter):
    """:class:`AutoBotLossAdapter` plus ``losses``: the per-sample losses ``[B]`` of a whole batch in one forward, for
    tarot-core's factorised featurizer in batch mode. Only for batch-first models whose forward takes
    ``reduce=False`` (Wayformer-Ego); AutoBot-Ego's sequence-first layers need one sample at a time."""

    def losses(self, model: torch.nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
               batch: dict[str, Any]) -> torch.Tensor:
        inp = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        n = next(iter(inp.values())).shape[0]
        _, per = functional_call(model, {**params, **buffers}, ({"batch_size": n, "input_dict": inp},),
                                 {"reduce": False})
        return per * self.scale


def loss_adapter(model: torch.nn.Module, scale: float = 1e-3) -> AutoBotLossAdapter:
    """The per-sample loss adapter of a motion model: with batched ``losses`` for Wayformer-Ego."""
    return BatchedMotionLossAdapter(scale) if isinstance(model, WayformerEgo) else AutoBotLossAdapter(scale)


def encoder_embedding(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """tarot ``EmbeddingFeaturizer`` ``embed``, ``[B, hidden_size]`` for a batch of stacked samples (the featurizer's
    batches): AutoBot-Ego's mean encoder output of the center agent over its valid past steps, or Wayformer-Ego's
    mean latent."""
    if not isinstance(model, (AutoBotEgo, WayformerEgo)):
        raise TypeError(f"encoder_embedding needs an AutoBotEgo or WayformerEgo model, got {type(model).__name__}")
    return model.encoder_embedding(batch)


def bench_case(batch_size: int = 16, model_name: str = "autobot") -> Any:
    """The featurization benchmark's AutoBot case (``python -m tarot.app.bench_featurize --case
    tarot_motion.featurize:bench_case``): the demo's model and featurizer settings on a batch of the embedded real
    Waymo windows (converted and preprocessed into a temporary folder). ``model_name="wayformer"``: the same with
    Wayformer-Ego (:func:`bench_case_wayformer`)."""
    import tempfile
    from pathlib import Path

    from tarot.app.bench_featurize import BenchCase

    from .convert import convert_metadrive, legacy_waymo_files
    from .data import MotionDataset
    from .demo import demo_config
    from .preprocess import load_cache, preprocess_database
    from .train import build_model

    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo_config(Path(tmp) / "run", overrides=[f"model.name={model_name}"])
        convert_metadrive(Path(tmp) / "db", files=legacy_waymo_files())
        data = load_cache(preprocess_database(Path(tmp) / "db", Path(tmp) / "cache", cfg["preprocess"],
                                              progress=False))
    ds = MotionDataset(data, list(range(batch_size)))
    batch = {k: torch.stack([ds[i][k] for i in range(batch_size)]) for k in ds[0]}
    model = build_model(cfg["model"], init="scratch", seed=0)
    fz = cfg["featurize"]
    title = {"autobot": "AutoBot-Ego", "wayformer": "Wayformer-Ego"}[model_name]
    return BenchCase(name=title.split("-")[0], model=model, adapter=loss_adapter(model, float(fz["loss_scale"])),
                     batch=batch, proj_dim=int(fz["proj_dim"]), params=fz["params"],
                     note=f"tarot-motion's demo {title} on embedded real Waymo windows.")


def bench_case_wayformer(batch_size: int = 16) -> Any:
    """The featurization benchmark's Wayformer case (``--case tarot_motion.featurize:bench_case_wayformer``)."""
    return bench_case(batch_size, model_name="wayformer")
