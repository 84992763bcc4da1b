"""Plain-torch segmenters, the vmap-safe per-sample segmentation loss, training and mIoU (no mmcv needed).

The loss of one sample is ``CE(out) + 0.4 · CE(aux)`` where ``CE`` sums the pixel cross-entropy over non-ignored pixels
and divides by *all* label pixels (mmseg's ``avg_non_ignore=False`` default; specs/vision.md §4.4, §6).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence, Sized
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from tarot.app.device import device_for
from tarot.fileio import save_torch_atomic
from torch import nn
from tqdm.auto import tqdm

from .labels import IGNORE_INDEX, NUM_CLASSES

log = logging.getLogger(__name__)

AUX_WEIGHT = 0.4


def pixel_ce(logits: torch.Tensor, label: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
    """Cross-entropy summed over non-ignored pixels, divided by the number of label pixels (vmap-safe); with
    ``per_sample`` one such loss per image, ``[B]`` (each divided by its own H·W).

    Parameters
    ----------
    logits : torch.Tensor
        [B, C, H, W] at the label's resolution.
    label : torch.Tensor
        [B, H, W] integer trainIds (255 = ignore).
    """
    valid = label != IGNORE_INDEX
    safe = torch.where(valid, label, torch.zeros_like(label))
    logp = F.log_softmax(logits, dim=1)
    nll = -torch.gather(logp, 1, safe.unsqueeze(1)).squeeze(1)
    if per_sample:
        return (nll * valid.to(nll.dtype)).flatten(1).sum(1) / label[0].numel()
    return (nll * valid.to(nll.dtype)).sum() / label.numel()


def _upsample(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def build_torch_deeplabv3(num_classes: int = NUM_CLASSES) -> nn.Module:
    """torchvision's DeepLabV3-ResNet50 with an auxiliary FCN head, randomly initialised (nothing is downloaded)."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    return deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=True)


class TinySegmenter(nn.Module):
    """A small conv encoder with a decode and an auxiliary head; returns ``{"out", "aux"}`` like torchvision.

    Output stride 4; used by tests and ``--quick`` runs. Parameter names: ``encoder.*``, ``classifier.*`` (decode head)
    and ``aux_classifier.*``, mirroring torchvision's DeepLabV3 naming so the same parameter filter applies.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.encoder = nn.Sequential(block(3, width, 2), block(width, width * 2, 2), block(width * 2, width * 2, 1))
        self.classifier = nn.Sequential(block(width * 2, width, 1), nn.Conv2d(width, num_classes, 1))
        self.aux_classifier = nn.Sequential(nn.Conv2d(width * 2, num_classes, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        feats = self.encoder(x)
        return {"out": _upsample(self.classifier(feats), size), "aux": _upsample(self.aux_classifier(feats), size)}


def build_torch_segmenter(arch: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    """``deeplabv3_resnet50`` (torchvision, random init) or ``tiny`` (:class:`TinySegmenter`)."""
    if arch == "deeplabv3_resnet50":
        return build_torch_deeplabv3(num_classes)
    if arch == "tiny":
        return TinySegmenter(num_classes)
    raise ValueError(f"unknown torch segmenter {arch!r}; expected 'deeplabv3_resnet50' or 'tiny'")


def seg_loss_from_outputs(out: dict[str, torch.Tensor], label: torch.Tensor, aux_weight: float = AUX_WEIGHT,
                          per_sample: bool = False):
    """``CE(out) + aux_weight · CE(aux)`` with logits upsampled to the label size (``[B]`` with ``per_sample``)."""
    loss = pixel_ce(_upsample(out["out"], label.shape[-2:]), label, per_sample)
    if "aux" in out and out["aux"] is not None and aux_weight:
        loss = loss + aux_weight * pixel_ce(_upsample(out["aux"], label.shape[-2:]), label, per_sample)
    return loss


class TorchSegLoss:
    """tarot ``LossAdapter`` for torch segmenters returning ``{"out", "aux"}``; sample = ``{"image", "label"}``."""

    def __init__(self, aux_weight: float = AUX_WEIGHT) -> None:
        self.aux_weight = aux_weight

    def loss(self, model: nn.Module, params: dict, buffers: dict, sample: dict) -> torch.Tensor:
        x = sample["image"].unsqueeze(0)
        y = sample["label"].unsqueeze(0)
        out = torch.func.functional_call(model, {**params, **buffers}, (x,))
        return seg_loss_from_outputs(out, y, self.aux_weight)

    def losses(self, model: nn.Module, params: dict, buffers: dict, batch: dict) -> torch.Tensor:
        """Per-image losses of a batch, ``[B]``, in one forward (the factorised featurizer's batch mode)."""
        out = torch.func.functional_call(model, {**params, **buffers}, (batch["image"],))
        return seg_loss_from_outputs(out, batch["label"], self.aux_weight, per_sample=True)


# ---------------------------------------------------------------------------------------------------- training


def poly_lr(base: float, it: int, max_iters: int, power: float = 0.9, eta_min: float = 1e-4) -> float:
    """mmseg's PolyLR: ``(base − eta_min)·(1 − it/max)^power + eta_min``."""
    return (base - eta_min) * (1 - it / max(1, max_iters)) ** power + eta_min


def train_torch_segmenter(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    iters: int,
    batch_size: int = 2,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    seed: int = 0,
    aux_weight: float = AUX_WEIGHT,
    progress: bool = True,
    state_file: str | Path | None = None,
    checkpoint_every: int = 100,
    device: Any = None,
    validate: Callable[[nn.Module], float] | None = None,
    val_interval: int = 0,
    val_log: list[dict[str, Any]] | None = None,
    best_file: str | Path | None = None,
) -> list[float]:
    """SGD (momentum 0.9) with PolyLR for ``iters`` steps over an infinitely reshuffled, seeded loader.

    Returns the per-step training losses. ``batch_size`` must be ≥ 2 (BatchNorm in train mode).

    With ``state_file``, the whole training state (model, optimizer, step, losses, the shuffling generator at the
    start of the current pass and the batches of that pass already done, torch's RNG for dropout, the data set's
    augmentation epoch) is written there atomically every ``checkpoint_every`` steps, and a run that finds the file
    continues from it: a run killed at any point and restarted ends with exactly the weights of an uninterrupted
    run, having lost at most ``checkpoint_every`` steps. The caller removes the file once the final weights are
    saved.

    With ``validate`` (model → score, higher is better, e.g. mIoU on Cityscapes val) and ``val_interval`` > 0, the
    model is scored in eval mode every ``val_interval`` steps and after the last one; each ``{"iter", "score"}`` is
    appended to ``val_log`` (kept through a resume), and the best-scoring weights are written to ``best_file``
    (``{"state_dict", "iter", "score"}``), as mmseg's ``save_best``. ``device``: where to train (default: where the
    model is); the model stays there.
    """
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2: BatchNorm in train mode needs more than one sample")
    dev = device_for(model, device)
    model.to(dev)  # before the optimizer is made (and its state loaded), so that both live on ``dev``
    n = len(cast(Sized, dataset))
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    if n < batch_size:
        raise ValueError(f"dataset of {n} samples is smaller than batch_size={batch_size}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    losses: list[float] = []
    it, done = 0, 0  # optimizer steps in all; batches of the current pass already trained on
    state_path = None if state_file is None else Path(state_file)
    if state_path is not None and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=False)  # written by this function
        if st.get("iters") != iters or st.get("seed") != seed or st.get("batch_size") != batch_size:
            raise ValueError(f"{state_path}: training state of another run (iters, seed or batch size differ); "
                             "remove it to start over")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        it, done, losses = st["it"], st["done"], list(st["losses"])
        if val_log is not None:
            val_log[:] = st.get("val_log", [])
        gen.set_state(st["pass_generator"])
        torch.set_rng_state(st["torch_rng"])
        if dev.type == "cuda" and st.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(st["cuda_rng"])
        if hasattr(dataset, "epoch"):
            dataset.epoch = st["dataset_epoch"]
    model.train()
    bar = tqdm(total=iters, initial=it, desc="train segmenter", disable=not progress)
    while it < iters:
        pass_start = gen.get_state()
        order = torch.randperm(n, generator=gen).tolist()
        batches = [order[k:k + batch_size] for k in range(0, n - n % batch_size, batch_size)]
        # a generator of its own, so that making the loader mid-pass (after a resume) draws nothing from torch's RNG
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches[done:],
                                             generator=torch.Generator().manual_seed(0))
        for batch in loader:
            if it >= iters:
                break
            for g in opt.param_groups:
                g["lr"] = poly_lr(lr, it, iters)
            out = model(batch["image"].to(dev))
            loss = seg_loss_from_outputs(out, batch["label"].to(dev), aux_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            it += 1
            done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if validate is not None and val_interval > 0 and (it % val_interval == 0 or it == iters):
                _validate_step(model, validate, it, val_log if val_log is not None else [], best_file)
            if state_path is not None and it % checkpoint_every == 0 and it < iters:
                save_torch_atomic({
                    "iters": iters, "seed": seed, "batch_size": batch_size, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "it": it, "done": done, "losses": losses,
                    "pass_generator": pass_start, "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" else None,
                    "val_log": list(val_log or []),
                    "dataset_epoch": getattr(dataset, "epoch", 0)}, state_path)
        if done == len(batches):
            done = 0
            if hasattr(dataset, "epoch"):
                dataset.epoch += 1
    bar.close()
    model.eval()
    return losses


def _validate_step(model: nn.Module, validate: Callable[[nn.Module], float], it: int, val_log: list[dict[str, Any]],
                   best_file: str | Path | None) -> None:
    """Score the model in eval mode, log it, keep the best weights; back to train mode."""
    model.eval()
    score = float(validate(model))
    model.train()
    best = max((r["score"] for r in val_log if math.isfinite(r["score"])), default=-math.inf)
    val_log.append({"iter": it, "score": score})
    if best_file is not None and math.isfinite(score) and score > best:
        save_torch_atomic({"state_dict": model.state_dict(), "iter": it, "score": score}, Path(best_file))
    log.info("iter %d: validation score %.4f (best %.4f)", it, score, max(best, score))


# ---------------------------------------------------------------------------------------------------- mIoU


class IoUAccumulator:
    """Per-class intersection/union over a whole evaluation set (ignore 255), as mmseg's ``IoUMetric``."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        self.num_classes = num_classes
        self.intersection = np.zeros(num_classes, dtype=np.int64)
        self.pred_area = np.zeros(num_classes, dtype=np.int64)
        self.gt_area = np.zeros(num_classes, dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one prediction/label pair (same shape; label 255 pixels are skipped)."""
        pred = np.asarray(pred).ravel()
        gt = np.asarray(gt).ravel()
        if pred.shape != gt.shape:
            raise ValueError(f"prediction has {pred.size} pixels but the label has {gt.size}")
        keep = gt != IGNORE_INDEX
        pred, gt = pred[keep].astype(np.int64), gt[keep].astype(np.int64)
        n = self.num_classes
        self.intersection += np.bincount(gt[pred == gt], minlength=n)[:n]
        self.pred_area += np.bincount(pred, minlength=n)[:n]
        self.gt_area += np.bincount(gt, minlength=n)[:n]

    def per_class_iou(self) -> np.ndarray:
        """IoU per class; NaN where the union is 0."""
        union = self.pred_area + self.gt_area - self.intersection
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, self.intersection / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """NaN-mean of the per-class IoU (classes with union 0 are skipped), as a fraction in [0, 1]."""
        iou = self.per_class_iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan


@torch.no_grad()
def evaluate_torch_segmenter(
    model: nn.Module,
    records: Iterable,
    scale: tuple[int, int] = (512, 1024),
    progress: bool = True,
    keep: int = 0,
) -> dict:
    """mIoU of a torch segmenter on records (e.g. Cityscapes val), computed where the model is.

    Each image is resized keeping its aspect ratio to fit ``scale`` (H, W), predicted in ``whole`` mode, and the logits
    are resized back to the label's original size before the comparison (specs/vision.md §5). The first ``keep``
    images come back under ``"examples"`` as (image, ground truth, prediction, stem), for overlays.
    """
    from PIL import Image

    from .labels import CLASSES, read_rgb
    from .segdata import load_train_ids, normalize

    model.eval()
    dev = device_for(model)
    acc = IoUAccumulator()
    examples: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]] = []
    records = list(records)
    for rec in tqdm(records, desc="evaluate mIoU", disable=not progress):
        img = read_rgb(rec.image)
        gt = load_train_ids(rec)
        h, w = img.shape[:2]
        s = min(scale[0] / h, scale[1] / w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        img_r = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))
        logits = model(normalize(img_r).unsqueeze(0).to(dev))["out"]
        pred = _upsample(logits, gt.shape).argmax(1)[0].cpu().numpy()
        acc.update(pred, gt)
        if len(examples) < keep:
            examples.append((img, gt, pred.astype(np.uint8), rec.stem))
    iou = acc.per_class_iou()
    return {
        "mIoU": acc.miou(),
        "per_class_iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(CLASSES, iou)},
        "images": len(records),
        "examples": examples,
    }


def bench_case(batch_size: int = 2, size: tuple[int, int] = (128, 256), proj_dim: int = 1024) -> Any:
    """The featurization benchmark's segmentation case (``python -m tarot.app.bench_featurize --case
    tarot_vision.seg_models:bench_case``): torchvision's DeepLabV3-ResNet50 (random weights, built offline) with
    gradients of its decode head (``classifier.*``, the seg pipeline's default), on random
    images and labels of ``size``."""
    from tarot.app.bench_featurize import BenchCase

    torch.manual_seed(0)
    model = build_torch_segmenter("deeplabv3_resnet50").eval()
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(batch_size, 3, *size, generator=g),
             "label": torch.randint(0, 19, (batch_size, *size), generator=g)}
    return BenchCase(name="DeepLabV3 head", model=model, adapter=TorchSegLoss(), batch=batch, proj_dim=proj_dim,
                     params=[n for n, _ in model.named_parameters() if n.startswith("classifier.")],
                     note="tarot-vision's torch segmenter (DeepLabV3-ResNet50, random weights), decode-head "
                          f"gradients, {size[0]}x{size[1]} inputs.")
