"""Benchmark of the selection step on synthetic unit-normalised features.

Run with ``python -m tarot.app.bench`` (or ``nox -s bench``). For each size (N candidates, M targets, dimension d) the
features are generated once, chunk by chunk, into ``.npy`` files that every variant opens as read-only memmaps; each
variant then runs in a fresh subprocess, which reports its wall time and its peak resident memory above its own
baseline (the peak mark is reset to the current RSS after the imports and opening the memmaps; on Linux the peak is
read from ``VmHWM``, elsewhere from ``resource.getrusage``), so variants cannot pollute each other.

Variants
--------
``gemm``
    the floor: a blocked N×M×d matrix product in torch whose blocks are discarded (no selection at all);
``fixed_size``, ``otm``
    :func:`tarot.select` on the features as they are (``whiten=False``: they are treated as already whitened),
    with potential weighting on, i.e. including the final OT solve;
``dense``
    the dense reference recipe: the full N×M score matrix, a full per-target argsort, the round-robin layers of
    Algorithm 1 up to the budget, and a dense log-domain Sinkhorn (POT ``sinkhorn_log`` with ε-scaling) over the
    whole selection. Only run where its matrices fit in memory; skipped cells are reported with the reason.

After the timed part, every variant's selection is scored by **one common solver** (``ot_common``:
:func:`tarot.entropic_ot` of the uniform measure on the selection against the targets, ε = 1e-4, the same
stopping rules for every row), so that speed is never bought with a worse selection unnoticed; the note records how
long that solve took (a cold solve between the selection and the targets: at 1M × 10k with ratio 0.1, the OT of
100,000 × 10,000 points); ``vs_dense`` is the variant's time over the dense recipe's at the same size.

The table (method, N, M, d, seconds, ratio to the GEMM floor, peak RSS above baseline, feature file size, …) is
printed and written as CSV and Markdown into ``--out`` (default ``benchmarks/results/``). Timings are reported, never
asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tarot.features.outofcore import available_bytes

__all__ = ["BenchRow", "dense_layer_selection", "dense_sinkhorn", "generate_features", "run_benchmark", "main"]

VARIANTS = ("gemm", "fixed_size", "otm", "dense")
DEFAULT_SIZES = ((50_000, 1_000, 1024), (200_000, 1_000, 1024), (50_000, 5_000, 1024), (200_000, 5_000, 1024))
FULL_SIZES = ((1_000_000, 10_000, 1024),)
COLUMNS = (
    "method", "N", "M", "d", "seconds", "ratio_to_gemm", "vs_dense", "peak_rss_mb", "features_mb", "selected",
    "ot_distance", "ot_common", "predicted_s", "predicted_peak_mb",
    "status", "note",
)
_CHUNK = 16_384
_GEMM_BLOCK = 8_192
_OT_EPS = 1e-4


@dataclass
class BenchRow:
    """One cell of the benchmark table."""

    method: str
    N: int
    M: int
    d: int
    seconds: float | None
    ratio_to_gemm: float | None
    vs_dense: float | None
    peak_rss_mb: float | None
    features_mb: float
    selected: int | None
    ot_distance: float | None
    ot_common: float | None
    predicted_s: float | None
    predicted_peak_mb: float | None
    status: str
    note: str = ""


# ------------------------------------------------------------------------------------------ synthetic data
def generate_features(
    path: str | os.PathLike, n: int, d: int, seed: int, n_modes: int = 32, proportions: Sequence[float] | None = None,
    modes: Sequence[int] | None = None, spread: float = 0.35, stream: int = 0,
) -> Path:
    """Write ``n`` unit-norm rows of a directional mixture into the ``.npy`` file ``path``, chunk by chunk.

    Parameters
    ----------
    path : path-like
        Output ``.npy`` file (float32 ``[n, d]``), written through a memmap so memory stays O(chunk · d).
    n, d : int
        Rows and dimension.
    seed : int
        Seed; the mode centres depend only on (seed, n_modes, d), so candidate and target files generated with the
        same seed share them.
    n_modes : int
        Number of directional clusters (centres uniformly distributed on the sphere).
    proportions, modes : sequence, optional
        Restrict the rows to the listed ``modes`` with these ``proportions`` (targets); by default all modes are
        equally likely (candidate pool).
    spread : float
        Noise level relative to a unit centre (per coordinate ``spread / sqrt(d)``).
    stream : int
        Independent random stream for the rows (use different streams for candidates and targets).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = Path(path)
    centres = np.random.default_rng([seed, 0]).normal(size=(n_modes, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    mode_ids = np.arange(n_modes) if modes is None else np.asarray(modes)
    probs = None if proportions is None else np.asarray(proportions, dtype=float) / np.sum(proportions)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for k, start in enumerate(range(0, n, _CHUNK)):
        stop = min(n, start + _CHUNK)
        rng = np.random.default_rng([seed, 1, stream, k])
        labels = rng.choice(mode_ids, size=stop - start, p=probs)
        block = centres[labels] + rng.normal(scale=spread / np.sqrt(d), size=(stop - start, d))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block.astype(np.float32)
    out.flush()
    del out
    return path


# ------------------------------------------------------------------------------------------ child process
def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``: ``resource.getrusage``'s ``ru_maxrss`` also carries the
    parent's RSS at ``fork`` over ``exec``, so a large benchmark parent would hide a small child. Elsewhere
    ``ru_maxrss`` (KB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / (1024.0 * 1024.0)


def _reset_peak_rss() -> float:
    """Reset the peak-RSS mark to the current RSS where the OS allows it and return the baseline in MB.

    On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the high-water mark, so a transient peak while
    importing libraries does not hide the variant's own memory; elsewhere the baseline is the peak so far.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass
    return _rss_mb()


def _variant_gemm(cand: np.ndarray, tgt: np.ndarray, ratio: float, budget: float) -> dict[str, Any]:
    import torch

    y = torch.from_numpy(np.ascontiguousarray(tgt)).T.contiguous()
    checksum = 0.0
    for start in range(0, cand.shape[0], _GEMM_BLOCK):
        block = torch.from_numpy(np.ascontiguousarray(cand[start : start + _GEMM_BLOCK]))
        prod = block @ y
        checksum += float(prod[0, 0])  # keep the product observable without storing it
        del prod
    return {"selected": None, "ot_distance": None, "checksum": checksum}


def _variant_select(method: str):
    def run(cand: np.ndarray, tgt: np.ndarray, ratio: float, budget: float) -> dict[str, Any]:
        import tarot

        res = tarot.select(cand, tgt, method=method, ratio="auto" if method == "otm" else ratio, seed=0,
                           whiten_features=False, weighting=True, progress=False)
        timing = res.diagnostics.get("timing_s", {})
        note = ", ".join(f"{k} {v:.1f} s" for k, v in timing.items() if k != "total" and isinstance(v, float))
        if res.diagnostics.get("weighted_ot_continuous", 0.0) is None:
            note += ", continuous weights: not measured"  # one OT solve fewer (measure_continuous="auto")
        return {"selected": res.size, "ot_distance": res.ot_distance, "note": note, "indices": res.indices}

    return run


def dense_sinkhorn(
    xs: np.ndarray, xt: np.ndarray, deadline: float = float("inf"), eps: float = _OT_EPS, tol: float = 1e-3,
    max_iter: int = 2000, stage_iter: int = 100, stage_tol: float = 1e-3, chunk: int = 50,
) -> dict[str, Any]:
    """Dense log-domain Sinkhorn (POT ``sinkhorn_log``) with ε-scaling from the squared cost bound, ÷4 per stage.

    The iteration caps and tolerances mirror :func:`tarot.entropic_ot`'s defaults (POT measures the violation of the
    target marginal in L2 every 10 iterations). Every stage runs in chunks of ``chunk`` iterations so that the solve
    can stop at ``deadline`` (a ``time.perf_counter`` value); the result then says it was cut short.
    """
    import ot as pot

    cost = np.sqrt(np.clip(2.0 - 2.0 * (xs.astype(np.float64) @ xt.astype(np.float64).T), 0.0, None))
    a, b = pot.unif(len(xs)), pot.unif(len(xt))
    loga, logb = np.log(a), np.log(b)
    schedule = []
    e = 4.0  # (max WFD)^2 for unit rows
    while e > eps:
        schedule.append(e)
        e /= 4.0
    schedule.append(eps)
    f, g = np.zeros(len(a)), np.zeros(len(b))
    iterations, converged, cut = 0, False, False
    for e in schedule:
        last = e == schedule[-1]
        budget = max_iter if last else stage_iter
        thr = tol if last else stage_tol
        done = 0
        while done < budget:
            step = min(chunk, budget - done)
            with np.errstate(over="ignore"):  # POT exponentiates the log-scalings for its log dict (harmless)
                _, log = pot.bregman.sinkhorn_log(
                    a, b, cost, e, numItermax=step, stopThr=thr, log=True, warn=False,
                    warmstart=((f + e * loga) / e, (g + e * logb) / e),
                )
            f, g = e * log["log_u"] - e * loga, e * log["log_v"] - e * logb
            done += int(log["niter"]) + 1
            stopped = bool(log["err"]) and float(log["err"][-1]) < thr
            if stopped:
                converged = last
                break
            if time.perf_counter() > deadline:
                cut = True
                break
        iterations += done
        if cut:
            break
    return {"ot_distance": float(a @ f + b @ g), "iterations": iterations, "converged": converged, "cut": cut}


def dense_layer_selection(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """The dense recipe's selection: full N×M scores, full per-target argsort, round-robin layers up to ``n``.

    Layer r holds every target's r-th nearest candidate (cosine, ties to the lower index); layers are taken whole
    while they fit and the last one in target order, as the reference recipe does (Algorithm 1 without the
    potential-based fill, i.e. ``round_robin``). Memory: O(N·M).

    Returns
    -------
    numpy.ndarray
        ``n`` sorted candidate indices (int64).
    """
    scores = np.asarray(x) @ np.asarray(y).T              # full N×M score matrix
    ranks = np.argsort(-scores, axis=0, kind="stable")  # full per-target sort, column j = candidates by s_ij
    del scores
    order: list[np.ndarray] = []
    seen = np.zeros(ranks.shape[0], dtype=bool)
    taken = 0
    for r in range(ranks.shape[0]):
        layer = ranks[r]
        _, first = np.unique(layer, return_index=True)
        fresh = layer[np.sort(first)]
        fresh = fresh[~seen[fresh]]
        seen[fresh] = True
        order.append(fresh)
        taken += len(fresh)
        if taken >= n:
            break
    return np.sort(np.concatenate(order)[:n]).astype(np.int64)


def _variant_dense(cand: np.ndarray, tgt: np.ndarray, ratio: float, budget: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    n_sel = max(1, int(np.floor(ratio * cand.shape[0])))
    x = np.asarray(cand)
    y = np.asarray(tgt)
    selection = dense_layer_selection(x, y, n_sel)
    t_sort = time.perf_counter() - t0
    ot = dense_sinkhorn(x[selection], y, deadline=t0 + budget)
    note = f"scores+sort {t_sort:.1f} s; Sinkhorn {ot['iterations']} iterations"
    if ot["cut"]:
        note += f", stopped at the {budget:.0f} s budget before converging (seconds is a lower bound)"
    elif not ot["converged"]:
        note += ", not converged at the iteration cap"
    return {"selected": int(len(selection)), "ot_distance": ot["ot_distance"], "note": note,
            "status": "budget" if ot["cut"] else "ok", "indices": selection}


_RUNNERS = {
    "gemm": _variant_gemm,
    "fixed_size": _variant_select("fixed_size"),
    "otm": _variant_select("otm"),
    "dense": _variant_dense,
}


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one variant in this (fresh) process and measure it."""
    runner = _RUNNERS[spec["variant"]]
    cand = np.load(spec["candidates"], mmap_mode="r")
    tgt = np.load(spec["targets"], mmap_mode="r")
    import ot  # noqa: F401  (import cost outside the measurement)
    import torch  # noqa: F401

    import tarot  # noqa: F401

    baseline = _reset_peak_rss()
    t0 = time.perf_counter()
    info = runner(cand, tgt, spec["ratio"], float(spec.get("budget", float("inf"))))
    seconds = time.perf_counter() - t0
    peak = max(0.0, _rss_mb() - baseline)
    indices = info.pop("indices", None)
    if indices is not None:  # outside the timing: the selection's OT distance by the one common solver
        t1 = time.perf_counter()
        info["ot_common"] = common_ot(cand, tgt, indices)
        solve = f"common OT {len(indices):,} x {tgt.shape[0]:,} {time.perf_counter() - t1:.1f} s (outside the timing)"
        info["note"] = f"{info['note']}; {solve}" if info.get("note") else solve
    return {"seconds": seconds, "peak_rss_mb": peak, "baseline_mb": baseline, **info}


def common_ot(cand: np.ndarray, tgt: np.ndarray, indices: np.ndarray) -> float:
    """OT_ε (ε = 1e-4) of the uniform measure on ``cand[indices]`` against ``tgt``, the same call for every variant
    (features are used as given: unit rows)."""
    import warnings

    import tarot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # convergence is part of the value's record, not an error
        return float(tarot.entropic_ot(np.asarray(cand[np.sort(indices)]), np.asarray(tgt), eps=_OT_EPS, tol=1e-5,
                                       value_tol=1e-7).value)


# ------------------------------------------------------------------------------------------ parent process
def dense_bytes(n: int, m: int, ratio: float) -> int:
    """Memory the dense recipe needs: float32 scores and their negation, int64 ranks (N×M), ~3 float64 |S|×M arrays."""
    s = max(1, int(round(ratio * n)))
    return 16 * n * m + 3 * 8 * s * m


def _run_child(spec: dict[str, Any], timeout: float) -> tuple[dict[str, Any] | None, str]:
    cmd = [sys.executable, "-m", "tarot.app.bench", "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout:.0f} s"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"failed (exit {proc.returncode}): {tail}"
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line), ""
    return None, "failed: the worker printed no result"


def _measure(spec: dict[str, Any], size: tuple[int, int, int], features_mb: float, gemm_seconds: float | None,
             timeout: float, dense_limit: int, echo: bool) -> BenchRow:
    """Run one variant at one size in a fresh subprocess (or skip the dense recipe when it does not fit)."""
    variant, (n, m, d) = spec["variant"], size
    if variant == "dense" and dense_bytes(n, m, spec["ratio"]) > dense_limit:
        return BenchRow(variant, n, m, d, None, None, None, None, features_mb, None, None, None, None, None, "skipped",
                        f"N×M matrices need {dense_bytes(n, m, spec['ratio']) / 2**30:.1f} GB "
                        f"> limit {dense_limit / 2**30:.1f} GB")
    if echo:
        print(f"[bench] {variant:>10}  N={n:,} M={m:,} d={d} ...", end="", flush=True)
    pred_s, pred_mb = _predicted(variant, size, spec["ratio"], gemm_seconds)
    res, err = _run_child(spec, timeout)
    if res is None:
        if echo:
            print(f" {err}", flush=True)
        return BenchRow(variant, n, m, d, None, None, None, None, features_mb, None, None, None, pred_s, pred_mb,
                        "timeout" if err.startswith("timeout") else "failed", err)
    if echo:
        print(f" {res['seconds']:.2f} s, peak +{res['peak_rss_mb']:.0f} MB", flush=True)
    seconds = res["seconds"]
    rel = seconds / gemm_seconds if gemm_seconds else (1.0 if variant == "gemm" else None)
    return BenchRow(variant, n, m, d, seconds, rel, None, res["peak_rss_mb"], features_mb, res.get("selected"),
                    res.get("ot_distance"), res.get("ot_common"), pred_s, pred_mb, res.get("status", "ok"),
                    res.get("note", ""))


def _predicted(variant: str, size: tuple[int, int, int], ratio: float,
               gemm_seconds: float | None) -> tuple[float | None, float | None]:
    """``tarot estimate``'s (seconds, peak MB) for a selector variant at this run's GEMM rate; (None, None) for the
    others."""
    if variant not in ("fixed_size", "otm") or not gemm_seconds:
        return None, None
    from tarot.estimate import estimate_selection

    n, m, d = size
    est = estimate_selection(n, m, d, method=variant, ratio=ratio if variant == "fixed_size" else "auto",
                             weighting=True, whiten=False, gflops=2.0 * n * m * d / gemm_seconds / 1e9)
    return est.seconds, est.peak_mb


def run_benchmark(
    sizes: Sequence[tuple[int, int, int]],
    out_dir: str | os.PathLike,
    variants: Sequence[str] = VARIANTS,
    ratio: float = 0.1,
    seed: int = 0,
    timeout: float = 1800.0,
    workdir: str | os.PathLike | None = None,
    dense_max_bytes: int | None = None,
    dense_budget: float = 420.0,
    echo: bool = True,
    stem: str = "bench",
) -> list[BenchRow]:
    """Run every variant at every size, print the table and write ``{stem}.csv`` and ``{stem}.md`` (default
    ``bench.csv``, ``bench.md``) into ``out_dir``.

    Parameters
    ----------
    sizes : sequence of (N, M, d)
        Problem sizes.
    out_dir : path-like
        Directory receiving the table files (created if missing).
    variants : sequence of str
        Subset of ``("gemm", "fixed_size", "otm", "dense")``, run in that order; ``ratio_to_gemm`` needs ``gemm``.
    ratio : float
        Selection ratio of ``fixed_size`` and of the dense recipe (``otm`` chooses its own).
    seed : int
        Seed of the synthetic features.
    timeout : float
        Wall-clock limit per variant and size, in seconds (a timed-out cell is reported, not fatal).
    workdir : path-like, optional
        Where the feature files go (default: a temporary directory, removed afterwards).
    dense_max_bytes : int, optional
        Skip the dense recipe when it needs more (default: 70 % of the available memory).
    dense_budget : float
        Seconds after which the dense recipe's Sinkhorn stops (its time is then reported as a lower bound, status
        ``budget``), so that one slow baseline cannot eat the whole run.
    echo : bool
        Print progress and the final table.

    Returns
    -------
    list of BenchRow
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; expected a subset of {list(VARIANTS)}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    limit = dense_max_bytes if dense_max_bytes is not None else int(0.7 * available_bytes())
    ordered = [v for v in VARIANTS if v in variants]
    rows: list[BenchRow] = []
    own_tmp = workdir is None
    base = Path(tempfile.mkdtemp(prefix="tarot-bench-")) if workdir is None else Path(workdir)
    base.mkdir(parents=True, exist_ok=True)
    try:
        for n, m, d in sizes:
            if echo:
                print(f"[bench] generating N={n:,} M={m:,} d={d} features in {base}", flush=True)
            cand = generate_features(base / f"cand_{n}_{d}.npy", n, d, seed)
            tgt = generate_features(base / f"tgt_{m}_{d}.npy", m, d, seed, proportions=(0.6, 0.3, 0.1),
                                    modes=(0, 1, 2), stream=1)
            features_mb = (n + m) * d * 4 / 2**20
            gemm_seconds: float | None = None
            for variant in ordered:
                spec = {"variant": variant, "candidates": str(cand), "targets": str(tgt), "ratio": ratio,
                        "budget": dense_budget}
                row = _measure(spec, (n, m, d), features_mb, gemm_seconds, timeout, limit, echo)
                if variant == "gemm" and row.status == "ok":
                    gemm_seconds = row.seconds
                rows.append(row)
                write_tables(rows, out_dir, stem)  # a partial table survives an interrupted run
            here = [r for r in rows if (r.N, r.M, r.d) == (n, m, d)]
            dense = next((r.seconds for r in here if r.method == "dense" and r.status == "ok"), None)
            for r in here:
                r.vs_dense = None if dense is None or r.seconds is None or r.method == "gemm" else r.seconds / dense
            write_tables(rows, out_dir, stem)
    finally:
        if own_tmp:
            shutil.rmtree(base, ignore_errors=True)
    write_tables(rows, out_dir, stem)
    if echo:
        print()
        print(markdown_table(rows))
        print(f"\n[bench] written to {Path(out_dir) / 'bench.csv'} and {Path(out_dir) / 'bench.md'}")
    return rows


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[BenchRow]) -> str:
    """The benchmark table as Markdown."""
    header = "| " + " | ".join(COLUMNS) + " |"
    lines = [header, "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        d = asdict(row)
        cells = [
            _cell(d["method"]), f"{d['N']:,}", f"{d['M']:,}", str(d["d"]), _cell(d["seconds"], 2),
            _cell(d["ratio_to_gemm"], 2), _cell(d["vs_dense"], 3), _cell(d["peak_rss_mb"], 0),
            _cell(d["features_mb"], 0), _cell(d["selected"]), _cell(d["ot_distance"], 4), _cell(d["ot_common"], 4),
            _cell(d["predicted_s"], 1), _cell(d["predicted_peak_mb"], 0), d["status"], d["note"].replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(rows: Sequence[BenchRow], out_dir: str | os.PathLike, stem: str = "bench") -> tuple[Path, Path]:
    """Write ``{stem}.csv`` and ``{stem}.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(row).items()})
    lines = [
        "# TAROT selection-step benchmark",
        "",
        f"Host: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M:%S')}.",
        "seconds: wall time of the variant in a fresh subprocess; ratio_to_gemm: seconds / GEMM floor at that size;",
        "peak_rss_mb: peak resident memory above the child's baseline (memmapped feature pages that were touched",
        "count towards it); features_mb: size of the candidate + target feature files; predicted_s, predicted_peak_mb:",
        "`tarot estimate`'s prediction from the sizes and this run's GEMM floor (tarot.estimate).",
        "",
        markdown_table(rows),
        "",
    ]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return csv_path, md_path


def _size(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace("x", ":").split(":")
    try:
        n, m, d = (int(float(p)) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N:M:d (e.g. 200000:1000:256), got {text!r}") from None
    if min(n, m, d) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return n, m, d


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``python -m tarot.app.bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m tarot.app.bench",
        description="Time and memory of the selection step (fixed_size, otm) against a dense reference recipe and "
        "the bare GEMM floor, on synthetic unit-normalised features; each variant runs in a fresh subprocess.",
    )
    parser.add_argument("--full", action="store_true",
                        help="large sizes: N=1,000,000, M=10,000, d=1024 (memmapped features, hours on a laptop)")
    parser.add_argument("--sizes", nargs="+", type=_size, default=None, metavar="N:M:d",
                        help="explicit sizes (override the defaults "
                        f"{' '.join(':'.join(str(v) for v in s) for s in DEFAULT_SIZES)})")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="variants to run")
    parser.add_argument("--ratio", type=float, default=0.1, help="ratio of fixed_size and the dense recipe")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic features")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per variant and size (default 1800, or 14400 with --full)")
    parser.add_argument("--dense-budget", type=float, default=None,
                        help="seconds after which the dense recipe's Sinkhorn stops and reports a lower bound "
                        "(default 420, or 3600 with --full)")
    parser.add_argument("--workdir", default=None, help="directory for the feature files (default: a temp dir)")
    parser.add_argument("--out", default="benchmarks/results", help="directory for bench.csv and bench.md "
                        "(bench_full.csv and bench_full.md with --full, so the default sizes' tables stay)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(_worker(json.loads(args.worker))), flush=True)
        return 0
    sizes = args.sizes or (list(FULL_SIZES) if args.full else list(DEFAULT_SIZES))
    timeout = args.timeout if args.timeout is not None else (14_400.0 if args.full else 1_800.0)
    try:
        dense_budget = args.dense_budget if args.dense_budget is not None else (3_600.0 if args.full else 420.0)
        run_benchmark(sizes, args.out, variants=args.variants, ratio=args.ratio, seed=args.seed, timeout=timeout,
                      workdir=args.workdir, dense_budget=dense_budget, stem="bench_full" if args.full else "bench")
    except ValueError as exc:
        print(f"tarot.app.bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
