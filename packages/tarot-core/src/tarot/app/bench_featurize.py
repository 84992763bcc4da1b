"""Featurization benchmark: per-sample gradients (vmap vs loop), the projection (dense Rademacher, cached and
cold, vs the sparse JL transform) and whole featurization per projector (dense, sjlt, per-layer factorised) on a
small CNN, and the projection alone at the LoRA size of the LLM package, side by side in one run. Writes
``benchmarks/results/featurize.md``.

    python -m tarot.app.bench_featurize [--repeat 3] [--out benchmarks/results] [--skip-lora]
    python -m tarot.app.bench_featurize --case tarot_motion.featurize:bench_case   # a domain model

``--case MODULE:FUNCTION`` measures a domain package's model instead (the function returns a :class:`BenchCase`)
and writes ``featurize_<name>.md``: gradients alone, then ``featurize_batch`` with each projector, side by side.

Timings are medians of ``--repeat`` runs of one batch after one untimed run; ratios between rows of one run are what
to compare (these machines are noisy). Rows run as :func:`tarot.featurize_to_store` runs a featurizer, with freed
arrays kept for the next batch (:func:`tarot.features.allocator.keep_freed_memory`); the CNN rows marked "allocator
default" run without it.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tarot.features.allocator import keep_freed_memory
from tarot.features.factorized import FactorizedGradientFeaturizer
from tarot.features.gradients import GradientFeaturizer, leading_size
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

    def losses(self, model: nn.Module, params: dict, buffers: dict, batch: dict) -> torch.Tensor:
        out = torch.func.functional_call(model, {**params, **buffers}, (batch["x"],))
        return nn.functional.cross_entropy(out, batch["y"], reduction="none")


@dataclass
class BenchCase:
    """A domain model to benchmark: its loss adapter, one collated batch and the featurizer settings it uses."""

    name: str
    model: nn.Module
    adapter: Any
    batch: Any
    proj_dim: int
    params: list[str] | None = None
    note: str = ""
    projectors: tuple[str, ...] = ("rademacher", "sjlt", "factorized")
    modes: tuple[str, ...] = ("vmap", "loop")
    baseline: tuple[str, Any] | None = None  # (label, adapter): the gradients before a change, timed beside them
    slug: str | None = None  # the report is featurize_<slug>.md (default: the name's first word)
    extra: dict[str, Any] = field(default_factory=dict)


def _median(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    """Median seconds of ``repeat`` calls after ``warmup`` untimed ones (the allocator settles on a batch's arrays
    in the first calls)."""
    for _ in range(warmup):
        fn()
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
    loop = GradientFeaturizer(model, _CE(), proj_dim=proj_dim, seed=0, mode="loop")
    default = " (allocator default)"  # each large array mapped afresh; featurize_to_store keeps freed memory instead
    rows.append(("per-sample gradients, vmap" + default,
                 _median(lambda: feats["rademacher"].per_sample_grads(data), repeat), batch))
    rows.append(("per-sample gradients, loop" + default, _median(lambda: loop.per_sample_grads(data), repeat), batch))
    rows.append(("featurize_batch, sjlt" + default, _median(partial(feats["sjlt"].featurize_batch, data), repeat),
                 batch))
    with keep_freed_memory():
        return rows + _kept_memory_rows(model, data, feats, loop, batch, proj_dim, repeat)


def _kept_memory_rows(model: nn.Module, data: dict[str, torch.Tensor], feats: dict[str, GradientFeaturizer],
                      loop: GradientFeaturizer, batch: int, proj_dim: int, repeat: int) -> list[tuple[str, float, int]]:
    """The CNN rows timed as featurize_to_store runs them: freed arrays kept for the next batch."""
    rows = []
    grads = feats["rademacher"].per_sample_grads(data)
    rows.append(("per-sample gradients, vmap", _median(lambda: feats["rademacher"].per_sample_grads(data), repeat),
                 batch))
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

    def backward() -> None:  # one batched forward and backward, the floor of any gradient featurization
        model.zero_grad()
        _CE().losses(model, dict(model.named_parameters()), {}, data).sum().backward()

    rows.append(("batched forward + backward (no per-sample gradients)", _median(backward, repeat), batch))
    fact = FactorizedGradientFeaturizer(model, _CE(), proj_dim=proj_dim, seed=0, mode="batch")
    fact.featurize_batch(data)  # the first batch is also checked against one-sample runs
    blocks = fact.per_sample_grads(data)
    with torch.no_grad():
        mix = _median(lambda: fact.project(blocks), repeat)
        rows.append(("projection, factorized mix of the per-layer blocks", mix, batch))
    rows.append((f"featurize_batch, factorized (factor_dim={fact.factor_dim}, batch mode)",
                 _median(partial(fact.featurize_batch, data), repeat), batch))
    return rows


def case_rows(case: BenchCase, repeat: int) -> list[tuple[str, float, int]]:
    """Gradients alone (each mode that works) and ``featurize_batch`` per projector for a domain model."""
    from tarot.features.factorized import coverable_parameters, gradient_featurizer

    n = leading_size(case.batch, "bench case")
    rows = []
    for mode in case.modes:
        feat = GradientFeaturizer(case.model, case.adapter, proj_dim=case.proj_dim, params=case.params, mode=mode)
        feat.per_sample_grads(case.batch)
        rows.append((f"per-sample gradients, {mode}", _median(partial(feat.per_sample_grads, case.batch), repeat), n))
        if case.baseline is not None:
            label, adapter = case.baseline
            base = GradientFeaturizer(case.model, adapter, proj_dim=case.proj_dim, params=case.params, mode=mode)
            base.per_sample_grads(case.batch)  # warmed up like the row it is compared with
            rows.append((f"per-sample gradients, {mode}, {label}",
                         _median(partial(base.per_sample_grads, case.batch), repeat), n))
    for proj in case.projectors:
        mode = "auto" if proj == "factorized" else case.modes[0]
        params = case.params
        if proj == "factorized" and params is not None:  # the covered ones (norm layers are left out)
            params = sorted(set(params) & coverable_parameters(case.model))
        feat = gradient_featurizer(case.model, case.adapter, case.proj_dim, projector=proj, params=params, mode=mode)
        feat.featurize_batch(case.batch)
        label = {"rademacher": "dense"}.get(proj, proj)
        detail = f", {feat.mode} mode" if proj == "factorized" else f", {mode}"
        rows.append((f"featurize_batch, {label}{detail}", _median(partial(feat.featurize_batch, case.batch), repeat),
                     n))
        if proj == "factorized":
            case.extra["factorized_params"] = feat.config()["num_params"]
            case.extra["factorized_left_out"] = len(feat.left_out)
    return rows


def lora_rows(batch: int, proj_dim: int, repeat: int) -> list[tuple[str, float, int]]:
    """Projection alone of LoRA-sized per-sample gradients (p = 460,800 in 60 chunks, LESS's k = 8192): the dense
    matrix (15 GB) cannot be cached, so every batch regenerates it."""
    torch.manual_seed(0)
    sizes = [7680] * 60
    chunks = [torch.randn(batch, s) for s in sizes]
    dense = Projector(sizes, proj_dim, seed=0, cache_bytes=0)
    sparse = Projector(sizes, proj_dim, seed=0, kind="sjlt", cache_bytes=0)
    return [("LoRA-size projection, dense (regenerated)", _median(lambda: dense.project_chunks(chunks), 1, warmup=0),
             batch),
            (f"LoRA-size projection, sjlt (nnz={sparse.nnz}, regenerated)",
             _median(lambda: sparse.project_chunks(chunks), repeat), batch)]


def _speed(ratio: float) -> str:
    """``3.2x faster than`` or ``2.0x slower than`` for a time ratio (other / this)."""
    return f"{ratio:.1f}x faster than" if ratio >= 1 else f"{1 / ratio:.1f}x slower than"


def _table(rows: list[tuple[str, float, int]]) -> list[str]:
    out = ["| step | s / batch | samples / s |", "|---|---|---|"]
    return out + [f"| {label} | {s:.4f} | {b / s:,.{0 if b / s >= 10 else 2}f} |" for label, s, b in rows]


def _header(what: str, repeat: int) -> str:
    return (f"One run, `python -m tarot.app.bench_featurize{what}`, {torch.get_num_threads()} torch threads, "
            f"{platform.machine()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; medians of {repeat} "
            "batches.")


def cnn_report(args: argparse.Namespace) -> str:
    rows = cnn_rows(args.batch, args.proj_dim, args.repeat)
    if not args.skip_lora:
        with keep_freed_memory():
            rows += lora_rows(8, 8192, args.repeat)
    by = {label: s for label, s, _ in rows}
    lines = ["# Featurization", "", _header("", args.repeat) + f" Small CNN: "
             f"{sum(p.numel() for p in SmallCNN().parameters()):,} parameters, batch {args.batch}, k = "
             f"{args.proj_dim}.", "", *_table(rows)]
    grads = by["per-sample gradients, vmap"]
    backward = by["batched forward + backward (no per-sample gradients)"]
    fact = next(v for k, v in by.items() if k.startswith("featurize_batch, factorized"))
    lines.append("")
    for label in ("featurize_batch, dense, cached", "featurize_batch, sjlt"):
        proj = by[label] - grads
        lines.append(f"- {label}: projection ≈ {max(proj, 0) / by[label]:.0%} of the featurization time "
                     f"(featurize_batch minus the vmap gradients alone)")
    lines.append(f"- featurize_batch, factorized: {fact / backward:.2f}x the time of one batched forward + backward "
                 "(it differentiates the layer outputs only, not the weights); its mixing projection is "
                 f"{by['projection, factorized mix of the per-layer blocks'] / fact:.0%} of its time")
    default = {k[: -len(" (allocator default)")]: v for k, v in by.items() if k.endswith(" (allocator default)")}
    vmap0, loop0 = default["per-sample gradients, vmap"], default["per-sample gradients, loop"]
    lines.append(f"- vmap / loop gradients: {by['per-sample gradients, loop'] / grads:.1f}x faster; one batched "
                 f"forward + backward is {grads / backward:.1f}x faster than the vmap gradients")
    lines.append(f"- with the allocator's default (every large array mapped afresh) instead of featurize_to_store's "
                 f"kept memory: vmap {vmap0 / grads:.1f}x slower, loop {loop0 / by['per-sample gradients, loop']:.1f}x "
                 f"slower, featurize_batch with sjlt "
                 f"{default['featurize_batch, sjlt'] / by['featurize_batch, sjlt']:.1f}x slower; vmap / loop "
                 f"{loop0 / vmap0:.1f}x there")
    dense = by["featurize_batch, dense, cached"]
    lines.append(f"- featurize_batch with sjlt is {dense / by['featurize_batch, sjlt']:.1f}x faster than with the "
                 f"cached dense projection; factorized is {dense / fact:.1f}x faster than dense and "
                 f"{by['featurize_batch, sjlt'] / fact:.1f}x faster than sjlt")
    if not args.skip_lora:
        d = by["LoRA-size projection, dense (regenerated)"]
        sp = next(v for k, v in by.items() if k.startswith("LoRA-size projection, sjlt"))
        lines.append(f"- LoRA size: sjlt projection {d / sp:.0f}x faster than the regenerated dense one")
    return "\n".join(lines) + "\n"


def case_report(args: argparse.Namespace) -> tuple[str, str]:
    module, _, fn = args.case.partition(":")
    case: BenchCase = getattr(importlib.import_module(module), fn or "bench_case")()
    with keep_freed_memory():  # as featurize_to_store runs the featurizer
        rows = case_rows(case, args.repeat)
    by = {label: s for label, s, _ in rows}
    n = rows[0][2]
    p = sum(prm.numel() for name, prm in case.model.named_parameters() if prm.requires_grad
            and (case.params is None or name in case.params))
    lines = [f"# Featurization: {case.name}", "", _header(f" --case {args.case}", args.repeat)
             + f" {case.note} Differentiated parameters: {p:,}; batch {n}; k = {case.proj_dim}.", "",
             *_table(rows), ""]
    grads = min(v for k, v in by.items() if k.startswith("per-sample gradients"))
    for label, v in by.items():
        if label.startswith("featurize_batch") and "factorized" not in label:
            lines.append(f"- {label}: projection ≈ {max(v - grads, 0) / v:.0%} of the featurization time "
                         "(minus the fastest per-sample gradients alone)")
    if "vmap" in case.modes and "loop" in case.modes:
        ratio = by["per-sample gradients, loop"] / by["per-sample gradients, vmap"]
        lines.append(f"- vmap / loop gradients: {ratio:.1f}x faster")
    if case.baseline is not None:
        mode = case.modes[0]
        before = by[f"per-sample gradients, {mode}, {case.baseline[0]}"]
        lines.append(f"- per-sample gradients, {mode}: {_speed(before / by[f'per-sample gradients, {mode}'])} with "
                     f"{case.baseline[0]}")
    fact = next((v for k, v in by.items() if k.startswith("featurize_batch, factorized")), None)
    if fact is not None:
        dense = next((v for k, v in by.items() if k.startswith("featurize_batch, dense")), None)
        sparse = next((v for k, v in by.items() if k.startswith("featurize_batch, sjlt")), None)
        if dense is not None and sparse is not None:
            lines.append(f"- factorized is {_speed(dense / fact)} dense and {_speed(sparse / fact)} sjlt; "
                         f"it covers {case.extra.get('factorized_params', 0):,} of the {p:,} parameters (Linear and "
                         f"Conv layers; {case.extra.get('factorized_left_out', 0)} other parameter tensors left out)")
    name = case.slug or case.name.lower().split()[0].replace("/", "_")
    return name, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (median; default 3)")
    ap.add_argument("--batch", type=int, default=64, help="CNN batch size (default 64)")
    ap.add_argument("--proj-dim", type=int, default=1024, help="CNN projection dimension (default 1024)")
    ap.add_argument("--skip-lora", action="store_true", help="leave out the LoRA-size projection (slow: dense "
                    "regenerates 3.8e9 entries)")
    ap.add_argument("--case", default=None, metavar="MODULE:FUNCTION",
                    help="benchmark a domain model (a function returning a BenchCase), e.g. "
                    "tarot_motion.featurize:bench_case; writes featurize_<name>.md")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder of featurize.md")
    args = ap.parse_args(argv)
    if args.case:
        name, text = case_report(args)
        target = args.out / f"featurize_{name}.md"
    else:
        text, target = cnn_report(args), args.out / "featurize.md"
    args.out.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
