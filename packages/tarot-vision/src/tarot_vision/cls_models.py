"""Classification models (ResNet-9 of TRAK/ffcv, a small demo CNN), the per-sample loss adapter, training, margins."""

from __future__ import annotations

import math
from collections.abc import Sequence, Sized
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from tarot.app.device import device_for
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm


def conv_bn(c_in: int, c_out: int, k: int = 3, s: int = 1, p: int = 1) -> nn.Sequential:
    """Conv2d (no bias) → BatchNorm2d → ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, p, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=False))


class Residual(nn.Module):
    """``x + f(x)``."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class Mul(nn.Module):
    """Multiply by a constant (ResNet-9's final ×0.2)."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.c


class ResNet9(nn.Sequential):
    """ResNet-9 as in TRAK's CIFAR-10 quickstart (specs/vision.md §7.2); ≈ 2.27 M parameters at width 1.

    ``width`` scales every channel count (64·w, 128·w, 256·w) for CPU-sized runs. Inputs must be ≥ 16×16
    (layer 7 has no padding); smaller inputs are upsampled with ``min_size``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, min_size: int = 16) -> None:
        c1, c2, c3 = (max(4, int(round(c * width))) for c in (64, 128, 256))
        super().__init__(
            conv_bn(in_channels, c1, 3, 1, 1),
            conv_bn(c1, c2, 5, 2, 2),
            Residual(nn.Sequential(conv_bn(c2, c2), conv_bn(c2, c2))),
            conv_bn(c2, c3, 3, 1, 1),
            nn.MaxPool2d(2),
            Residual(nn.Sequential(conv_bn(c3, c3), conv_bn(c3, c3))),
            conv_bn(c3, c2, 3, 1, 0),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(c2, num_classes, bias=False),
            Mul(0.2),
        )
        self.min_size = min_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.min_size or x.shape[-2] < self.min_size:
            x = F.interpolate(x, size=(self.min_size, self.min_size), mode="bilinear", align_corners=False)
        return super().forward(x)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks, global average pooling and a linear head (``head.*``); for the CPU demo."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(in_channels, width), conv_bn(width, 2 * width, s=2), conv_bn(2 * width, 2 * width)
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(-2, -1)))


def penultimate(model: nn.Module, batch: dict) -> torch.Tensor:
    """The input of the classifier's last linear layer (tarot ``EmbeddingFeaturizer`` ``embed``): the pooled
    features of :class:`SmallCNN`, the flattened max-pool of :class:`ResNet9`, for ``{"image": [B, C, H, W]}``."""
    x = batch["image"]
    if isinstance(model, SmallCNN):
        return model.features(x).mean(dim=(-2, -1))
    if isinstance(model, ResNet9):
        if x.shape[-1] < model.min_size or x.shape[-2] < model.min_size:
            x = F.interpolate(x, size=(model.min_size, model.min_size), mode="bilinear", align_corners=False)
        for layer in list(model)[:-2]:  # everything before Linear and Mul
            x = layer(x)
        return x
    raise TypeError(f"penultimate: no embedding defined for {type(model).__name__}")


def embedding_dim(model: nn.Module) -> int:
    """Size of :func:`penultimate`'s output."""
    head = model.head if isinstance(model, SmallCNN) else cast(nn.Sequential, model)[-2]
    if not isinstance(head, nn.Linear):
        raise TypeError(f"embedding_dim: expected a linear head before the output, got {type(head).__name__}")
    return int(head.in_features)


def build_classifier(arch: str, num_classes: int, in_channels: int, width: float | None = None) -> nn.Module:
    """``resnet9`` or ``small_cnn``."""
    if arch == "resnet9":
        return ResNet9(num_classes, in_channels, width=1.0 if width is None else width)
    if arch == "small_cnn":
        return SmallCNN(num_classes, in_channels, width=32 if width is None else int(width))
    raise ValueError(f"unknown classifier {arch!r}; expected 'resnet9' or 'small_cnn'")


# ---------------------------------------------------------------------------------------------------- data


class ImageClassDataset(Dataset):
    """uint8 images [N, C, H, W] + labels → samples ``{"image": float [C,H,W] in [-1, 1], "label": long}``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{images.shape[0]} images but labels of shape {labels.shape}")
        self.x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
        self.y = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i], "label": self.y[i]}

    def subset(self, idx: np.ndarray) -> ImageClassDataset:
        """A data set of the rows ``idx`` (shares no storage with this one)."""
        out = ImageClassDataset.__new__(ImageClassDataset)
        t = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        out.x, out.y = self.x[t].clone(), self.y[t].clone()
        return out


# ---------------------------------------------------------------------------------------------------- losses


class ClassificationLoss:
    """tarot ``LossAdapter``: cross-entropy of one ``{"image", "label"}`` sample (vmap-safe)."""

    def loss(self, model: nn.Module, params: dict, buffers: dict, sample: dict) -> torch.Tensor:
        logits = torch.func.functional_call(model, {**params, **buffers}, (sample["image"].unsqueeze(0),))
        return F.cross_entropy(logits, sample["label"].reshape(1))

    def losses(self, model: nn.Module, params: dict, buffers: dict, batch: dict) -> torch.Tensor:
        """Per-sample cross-entropies of a collated batch, ``[B]`` (one forward; the factorised featurizer's batch
        mode)."""
        logits = torch.func.functional_call(model, {**params, **buffers}, (batch["image"],))
        return F.cross_entropy(logits, batch["label"].reshape(-1), reduction="none")


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logit_y − logsumexp_{k≠y} logit_k`` per row (TRAK's classification output)."""
    correct = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return correct - torch.logsumexp(others, dim=1)


# ---------------------------------------------------------------------------------------------------- training


def one_cycle_lr(step: int, total: int, peak: float, warm_frac: float) -> float:
    """Triangular schedule: linear 0→peak over ``warm_frac`` of the steps, then linear to 0."""
    warm = max(1, int(round(total * warm_frac)))
    if step < warm:
        return peak * (step + 1) / warm
    return peak * max(0.0, (total - step) / max(1, total - warm))


def train_classifier(
    model: nn.Module,
    dataset: Dataset,
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    seed: int = 0,
    warm_frac: float = 5 / 24,
    augment_shift: int = 0,
    progress: bool = False,
    desc: str = "train",
    checkpoint_epochs: Sequence[int] = (),
    max_steps: int | None = None,
    device: Any = None,
) -> dict[int, dict[str, torch.Tensor]]:
    """SGD (momentum 0.9, nesterov) with a one-cycle schedule; seeded shuffling and augmentation.

    Parameters
    ----------
    augment_shift : int
        Random translation of up to this many pixels (zero padding), 0 = none.
    checkpoint_epochs : sequence of int
        1-based epochs after which a copy of the state_dict is returned.
    max_steps : int, optional
        Train for exactly this many optimizer steps instead of ``epochs`` (the data set is cycled, reshuffled each
        pass), so that selections of different sizes get the same compute.
    device : str or torch.device, optional
        Where to train (:func:`tarot.app.device.pick_device`: ``auto | cpu | cuda[:i]``); default: where the model
        is. The model stays there afterwards. Shuffling and augmentation draw from a CPU generator, so a seed gives
        the same batches on every device.

    Returns
    -------
    dict
        epoch → state_dict copies (on the CPU) for ``checkpoint_epochs``.
    """
    n = len(cast(Sized, dataset))
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    dev = device_for(model, device)
    model.to(dev)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    if max_steps is not None:
        epochs = max(1, math.ceil(max_steps / steps_per_epoch))
    total = epochs * steps_per_epoch if max_steps is None else int(max_steps)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    saved: dict[int, dict[str, torch.Tensor]] = {}
    step = 0
    model.train()
    for epoch in tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False):
        perm = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * batch_size : (b + 1) * batch_size]
            if idx.numel() < 2:  # BatchNorm needs two samples in train mode
                continue
            batch = [dataset[int(i)] for i in idx]
            x = torch.stack([s["image"] for s in batch])
            y = torch.stack([s["label"] for s in batch])
            if augment_shift:
                x = _random_shift(x, augment_shift, gen)
            for g in opt.param_groups:
                g["lr"] = one_cycle_lr(step, total, lr, warm_frac)
            loss = F.cross_entropy(model(x.to(dev)), y.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if epoch in checkpoint_epochs:
            saved[epoch] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    model.eval()
    return saved


def _random_shift(x: torch.Tensor, s: int, gen: torch.Generator) -> torch.Tensor:
    padded = F.pad(x, (s, s, s, s))
    dx, dy = torch.randint(0, 2 * s + 1, (2,), generator=gen).tolist()
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


@torch.no_grad()
def predict_logits(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> torch.Tensor:
    """Logits [N, classes] in eval mode, computed where the model is, returned on the CPU."""
    model.eval()
    dev = device_for(model)
    out = []
    for start in range(0, len(cast(Sized, dataset)), batch_size):
        batch = [dataset[i] for i in range(start, min(len(cast(Sized, dataset)), start + batch_size))]
        out.append(model(torch.stack([s["image"] for s in batch]).to(dev)).cpu())
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: nn.Module, dataset: ImageClassDataset) -> float:
    """Top-1 accuracy on a dataset."""
    logits = predict_logits(model, dataset)
    return float((logits.argmax(1) == dataset.y).float().mean())
