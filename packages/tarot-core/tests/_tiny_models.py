"""Tiny in-file models, loss adapters and data sets for the featurization tests (CPU, milliseconds), and random
unit rows for the geometry and OT tests."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

IN, HID, OUT = 6, 8, 3


class TinyNet(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout -> Linear, plus a frozen (requires_grad=False) input offset."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.offset = nn.Parameter(torch.randn(IN) * 0.1, requires_grad=False)
        self.fc1 = nn.Linear(IN, HID)
        self.bn = nn.BatchNorm1d(HID)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(HID, OUT)
        with torch.no_grad():  # non-trivial running statistics
            self.bn.running_mean.copy_(torch.randn(HID) * 0.2)
            self.bn.running_var.copy_(torch.rand(HID) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x + self.offset)))))


class CELoss:
    """Cross-entropy of one sample {"x": [IN], "y": []}."""

    def loss(self, model, params, buffers, sample):
        out = functional_call(model, {**params, **buffers}, (sample["x"].unsqueeze(0),))
        return F.cross_entropy(out, sample["y"].unsqueeze(0))


class NotVmappableLoss(CELoss):
    """Calls .item() on a tensor: fails under vmap, fine in a loop."""

    def loss(self, model, params, buffers, sample):
        scale = float(sample["x"].abs().sum().item() > -1.0)
        return scale * super().loss(model, params, buffers, sample)


class Samples(torch.utils.data.Dataset):
    """Map-style data set of dict samples; optionally raises when row ``fail_at`` is read; counts reads."""

    def __init__(self, n: int, seed: int, fail_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, IN, generator=g)
        self.y = torch.randint(0, OUT, (n,), generator=g)
        self.fail_at = fail_at
        self.reads = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.fail_at is not None and i == self.fail_at:
            raise RuntimeError(f"simulated crash at row {i}")
        self.reads += 1
        return {"x": self.x[i], "y": self.y[i]}


def batch_of(ds: Samples, rows=None) -> dict[str, torch.Tensor]:
    rows = list(range(len(ds))) if rows is None else list(rows)
    return {"x": ds.x[rows], "y": ds.y[rows]}


def perturbed_state(model: nn.Module, seed: int, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """A copy of the model's state dict with parameters perturbed (a stand-in for a later checkpoint)."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k, v in sd.items():
        if v.dtype.is_floating_point and "running" not in k:
            v.add_(scale * torch.randn(v.shape, generator=g))
    return sd


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """``n`` float64 rows of dimension ``d``, Gaussian, normalised to unit length."""
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)
