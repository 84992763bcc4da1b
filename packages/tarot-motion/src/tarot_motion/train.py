"""Training (Adam, multistep LR, gradient clipping, resumable checkpoints) and evaluation of the motion models
(AutoBot-Ego, Wayformer-Ego)."""

from __future__ import annotations

from collections.abc import Mapping, Sized
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tarot.app.device import device_for, pick_device
from tarot.features.gradients import move_batch
from tarot.fileio import save_torch_atomic
from torch.utils.data import DataLoader, Dataset

from .data import MotionDataset, collate
from .defaults import (
    MODEL_NAMES,
    TRAIN_DEFAULTS,  # noqa: E402  (kept importable from here)
)
from .errors import write_json
from .metrics import aggregate, per_sample_metrics
from .model import AutoBotEgo, MotionModel
from .wayformer import WayformerEgo


def make_model(model_cfg: Mapping[str, Any] | None) -> MotionModel:
    """The model ``model.name`` names (``autobot`` or ``wayformer``), freshly initialised from torch's RNG."""
    cfg = dict(model_cfg or {})
    name = cfg.get("name", "autobot")
    if name == "autobot":
        return AutoBotEgo(cfg)
    if name == "wayformer":
        return WayformerEgo(cfg)
    raise ValueError(f"model.name: expected one of {', '.join(MODEL_NAMES)}, got {name!r}")


def build_model(model_cfg: Mapping[str, Any] | None, init: str = "scratch", seed: int = 0) -> MotionModel:
    """Build the configured model (``model.name``: AutoBot-Ego or Wayformer-Ego) with an explicit initialisation.

    Parameters
    ----------
    init : str
        ``"scratch"`` (fresh weights drawn with ``seed``) or ``"checkpoint:<path>"`` (weights loaded from a file
        written by :func:`train_model` or a plain state dict).
    """
    torch.manual_seed(seed)
    model = make_model(model_cfg)
    if init == "scratch":
        return model
    if init.startswith("checkpoint:"):
        path = init.split(":", 1)[1]
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        return model
    raise ValueError(f"train.init: expected 'scratch' or 'checkpoint:<path>', got {init!r}")


def train_model(model: MotionModel, train_ds: Dataset, cfg: Mapping[str, Any], out_dir: str | Path,
                val_ds: MotionDataset | None = None, progress: bool = True, device: Any = "cpu") -> dict[str, Any]:
    """Train ``model`` in place on ``device`` (a ``torch.device`` or a :func:`tarot.app.device.pick_device`
    spelling); resumable from ``out_dir/last.pt``.

    Writes ``epoch{e}.pt`` checkpoints (model state only) every ``checkpoint_every`` epochs, ``last.pt`` (model,
    optimizer, scheduler, RNG, epoch) after each epoch, ``best.pt`` by validation brier-FDE when ``val_ds`` is given,
    and ``history.json``. ``max_steps`` (optional) stops after that many optimizer steps in total, so that runs on
    differently sized selections can share one compute budget.
    """
    from tqdm import tqdm

    cfg = {**TRAIN_DEFAULTS, **dict(cfg)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]), eps=float(cfg["adam_eps"]))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg["milestones"]), gamma=float(cfg["gamma"]))
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    torch.manual_seed(int(cfg["seed"]))  # dropout stream; restored from last.pt when resuming
    history: list[dict[str, Any]] = []
    start_epoch, step, best = 0, 0, float("inf")
    last = out / "last.pt"
    if last.exists():
        st = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        if dev.type == "cuda" and st.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(st["cuda_rng"])
        start_epoch, step, best, history = st["epoch"], st["step"], st["best"], st["history"]
    max_steps = cfg["max_steps"]
    epochs = int(cfg["epochs"])
    if max_steps is not None:
        per_epoch = max(1, -(-len(cast(Sized, train_ds)) // int(cfg["batch_size"])))
        epochs = -(-int(max_steps) // per_epoch)
    bar = tqdm(total=epochs, initial=start_epoch, desc="train", disable=not progress, unit="ep")
    for epoch in range(start_epoch, epochs):
        model.train()
        loader = DataLoader(train_ds, batch_size=int(cfg["batch_size"]), shuffle=True, generator=gen,
                            collate_fn=collate, drop_last=False)
        losses = []
        for batch in loader:
            if max_steps is not None and step >= int(max_steps):
                break
            _, loss = model(move_batch(batch, dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg["grad_clip"]))
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
        sched.step()
        mean_loss = float(np.mean(losses)) if losses else None
        rec: dict[str, Any] = {"epoch": epoch + 1, "step": step, "train_loss": mean_loss}
        if val_ds is not None:
            metrics = evaluate(model, val_ds, batch_size=int(cfg["eval_batch_size"]), device=dev)["metrics"]
            rec.update(metrics)
            if metrics["val/brier_fde"] < best:
                best = metrics["val/brier_fde"]
                save_torch_atomic({"model": model.state_dict()}, out / "best.pt")
        history.append(rec)
        if (epoch + 1) % int(cfg["checkpoint_every"]) == 0 or epoch + 1 == epochs:
            save_torch_atomic({"model": model.state_dict()}, out / f"epoch{epoch + 1}.pt")
        save_torch_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                           "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch + 1,
                           "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" else None,
                           "step": step, "best": best, "history": history}, last)
        bar.set_postfix(loss=rec["train_loss"])
        bar.update(1)
    bar.close()
    write_json(out / "history.json", history)
    return {"epochs": epochs, "steps": step, "history": history, "best_val_brier_fde": best}


@torch.no_grad()
def predict(model: MotionModel, ds: Dataset, batch_size: int = 256, device: Any = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Predicted trajectories ``[N, K, T, 5]`` and mode probabilities ``[N, K]`` in eval mode, on ``device``
    (default: where the model is)."""
    model.eval()
    dev = device_for(model, device)
    model.to(dev)
    trajs, probs = [], []
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate):
        out, _ = model(move_batch(batch, dev))
        trajs.append(out["predicted_trajectory"].cpu().numpy())
        probs.append(out["predicted_probability"].cpu().numpy())
    return np.concatenate(trajs), np.concatenate(probs)


def evaluate(model: MotionModel, ds: MotionDataset, batch_size: int = 256, split: str = "val",
             device: Any = None) -> dict[str, Any]:
    """minADE6 / minFDE6 / miss rate / brier-FDE overall and per source data set (model run on ``device``, default
    where it is)."""
    traj, probs = predict(model, ds, batch_size, device=device)
    gt = ds.array("center_gt_trajs")
    per = per_sample_metrics(traj, probs, gt, ds.array("center_gt_trajs_mask"), ds.array("center_gt_final_valid_idx"))
    return {"metrics": aggregate(per, ds.sources, split=split), "per_sample": per}
