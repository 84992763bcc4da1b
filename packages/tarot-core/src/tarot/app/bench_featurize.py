"""Featurization benchmark: per-sample gradients (vmap vs loop) and the projection (dense Rademacher, cached and
cold, vs the sparse JL transform) on a small CNN, and the projection alone at the LoRA size of the LLM package,
side by side in one run. Writes ``benchmarks/results/featurize.md``.

    python -m tarot.app.bench_featurize [--repeat 3] [--out benchmarks/results] [--skip-lora]

Timings are medians of ``--repeat`` runs of one batch; ratios between rows of one run are what to compare (these
machines are noisy).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tarot.features.gradients import GradientFeaturizer
from tarot.features.projection import Projector


class SmallCNN(nn.Module):
    """Four 3x3 conv-ReLU layers, global average pooling and a linear head: 242,122 parameters for 3x32x32."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(-2, -1)))


class _CE:
    def loss(self, model: nn.Module, params: dict, buffers: dict, sample: dict) -> torch.Tensor:
        out = torch.func.functional_call(model, {**params, **buffers}, (sample["x"].unsqueeze(0),))
        return nn.functional.cross_entropy(out, sample["y"].unsqueeze(0))


def _median(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cnn_rows(batch: int, proj_dim: int, repeat: int) -> list[tuple[str, float, int]]:
    """(label, seconds per batch, batch) for gradients, projections and the whole featurize_batch on the CNN."""
    torch.manual_seed(0)
    model = SmallCNN()
    data = {"x": torch.randn(batch, 3, 32, 32), "y": torch.randint(0, 10, (batch,))}
    rows = []
    feats = {kind: GradientFeaturizer(model, _CE(), proj_dim=proj_dim, seed=0, projector=kind, mode="vmap")
             for kind in ("rademacher", "sjlt")}
    grads = feats["rademacher"].per_sample_grads(data)
    rows.append(("per-sample gradients, vmap", _median(lambda: feats["rademacher"].per_sample_grads(data), repeat),
                 batch))
    loop = GradientFeaturizer(model, _CE(), proj_dim=proj_dim, seed=0, mode="loop")
    rows.append(("per-sample gradients, loop", _median(lambda: loop.per_sample_grads(data), repeat), batch))
    dense = feats["rademacher"].projector
    cold = Projector(dense.chunk_sizes, proj_dim, seed=0, cache_bytes=0)
    chunks = [g.reshape(batch, -1) for g in grads.values()]
    rows.append(("projection, dense, blocks generated (cold)", _median(lambda: cold.project_chunks(chunks), repeat),
                 batch))
    dense.project_chunks(chunks)  # fill the cache
    rows.append(("projection, dense, blocks cached", _median(lambda: dense.project_chunks(chunks), repeat), batch))
    sparse = feats["sjlt"].projector
    rows.append((f"projection, sjlt (nnz={sparse.nnz})", _median(lambda: sparse.project_chunks(chunks), repeat),
                 batch))
    for kind, feat in feats.items():
        feat.featurize_batch(data)
        label = "dense, cached" if kind == "rademacher" else "sjlt"
        rows.append((f"featurize_batch, {label}", _median(partial(feat.featurize_batch, data), repeat), batch))
    return rows


def lora_rows(batch: int, proj_dim: int, repeat: int) -> list[tuple[str, float, int]]:
    """Projection alone of LoRA-sized per-sample gradients (p = 460,800 in 60 chunks, LESS's k = 8192): the dense
    matrix (15 GB) cannot be cached, so every batch regenerates it."""
    torch.manual_seed(0)
    sizes = [7680] * 60
    chunks = [torch.randn(batch, s) for s in sizes]
    dense = Projector(sizes, proj_dim, seed=0, cache_bytes=0)
    sparse = Projector(sizes, proj_dim, seed=0, kind="sjlt", cache_bytes=0)
    return [("LoRA-size projection, dense (regenerated)", _median(lambda: dense.project_chunks(chunks), 1), batch),
            (f"LoRA-size projection, sjlt (nnz={sparse.nnz}, regenerated)",
             _median(lambda: sparse.project_chunks(chunks), repeat), batch)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (median; default 3)")
    ap.add_argument("--batch", type=int, default=64, help="CNN batch size (default 64)")
    ap.add_argument("--proj-dim", type=int, default=1024, help="CNN projection dimension (default 1024)")
    ap.add_argument("--skip-lora", action="store_true", help="leave out the LoRA-size projection (slow: dense "
                    "regenerates 3.8e9 entries)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder of featurize.md")
    args = ap.parse_args(argv)
    rows = cnn_rows(args.batch, args.proj_dim, args.repeat)
    if not args.skip_lora:
        rows += lora_rows(8, 8192, args.repeat)
    by = {label: s for label, s, _ in rows}
    lines = ["# Featurization", "",
             f"One run, `python -m tarot.app.bench_featurize`, {torch.get_num_threads()} torch threads, "
             f"{platform.machine()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. Small CNN: "
             f"{sum(p.numel() for p in SmallCNN().parameters()):,} parameters, batch {args.batch}, k = "
             f"{args.proj_dim}; medians of {args.repeat} batches.", "",
             "| step | s / batch | samples / s |", "|---|---|---|"]
    lines += [f"| {label} | {s:.4f} | {b / s:,.{0 if b / s >= 10 else 2}f} |" for label, s, b in rows]
    grads = by["per-sample gradients, vmap"]
    lines.append("")
    for label in ("featurize_batch, dense, cached", "featurize_batch, sjlt"):
        proj = by[label] - grads
        lines.append(f"- {label}: projection ≈ {max(proj, 0) / by[label]:.0%} of the featurization time "
                     f"(featurize_batch minus the gradients alone)")
    lines.append(f"- vmap / loop gradients: {by['per-sample gradients, loop'] / grads:.1f}x faster")
    speedup = by["featurize_batch, dense, cached"] / by["featurize_batch, sjlt"]
    lines.append(f"- featurize_batch with sjlt is {speedup:.1f}x faster than with the cached dense projection")
    if not args.skip_lora:
        d = by["LoRA-size projection, dense (regenerated)"]
        s = next(v for k, v in by.items() if k.startswith("LoRA-size projection, sjlt"))
        lines.append(f"- LoRA size: sjlt projection {d / s:.0f}x faster than the regenerated dense one")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "featurize.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
