r"""Predicted time and peak memory of a selection (and of featurization) from the problem's sizes.

``tarot estimate`` and every ``select --dry-run`` print these numbers before a long run starts. The model is a
small set of cost formulas whose constants were fitted to the committed benchmark (``nox -s bench``: clustered
synthetic features, d = 1,024, N = 50k–200k candidates, M = 1k–5k targets, budget 10 %) and are scaled to the
machine by one GEMM probe (:func:`machine_gflops`) where the work is GEMM-bound; memory-bound work (reading,
sparse OT, SJLT, generating projection matrices) is taken at the reference machine's speed (two CPU cores):

- **whiten**: reading and normalising the features, :math:`(N+M)\,d` floats at :data:`READ_BYTES_PER_S`, plus,
  with whitening, the float64 second moments and the transform, :math:`4(N+M)d^2 + 10 d^3` flops at
  :data:`WHITEN_EFFICIENCY` of the float32 GEMM rate;
- **select**: the neighbour lists, a multiple of one pass of inner products :math:`t_\text{GEMM} = 2NMd / R`
  (R: GEMM flop rate): 3.0 for ``fixed_size``, 4.0 for ``round_robin`` / ``tsds``, 2.8 for ``otm`` (measured
  1.8–3.1 for fixed size at df4972f, 4.7 at 1M × 10k at 02c43bf, and 1.5–4.5 for OTM, the 1.5 at 1M × 10k), 1.0
  for the scoring baselines;
- **ot_and_weights**: entropic OT on the selection, :data:`OT_SECONDS_PER_PAIR` per source–target pair of the
  selection (:math:`n M`; measured 0.04–0.1 µs per pair and solve on the bench of 2026-12-07 at 87eb4ea: how flat
  the costs are and whether the products fit the cache decide), one solve, one more with weighting (the realised
  weights; skipped when every repeat count comes out equal, so the prediction is an upper bound there) and one more
  where the continuous weights are measured too. OTM, whose size is not known in advance, is predicted at
  :math:`n = M/2` (measured 0.24–1.1 M).

Peak memory counts the feature pages a memory-mapped store brings in (they count towards the process's resident
memory), with whitening the whitened in-memory copy of the rows (without it, unit float32 rows are used where they
lie, as the bench's are; rows that need normalising add one copy, not counted), and the selector's working set
(fitted: 1.3 copies of the candidates plus 240 MB plus 92 kB per target for ``fixed_size``; 0.3 copies plus 480 MB
for ``otm``; predicted/measured peaks 0.9–1.8 on the bench of 2026-12-07 at df4972f).

On the benchmark that fitted them, the predicted totals are within 2× of the measured ones (tested in
``tests/test_estimate.py`` against ``benchmarks/results/bench.csv`` and ``bench_full.csv``); on real features, whose
costs are less flat than the benchmark's clusters, the OT stage is usually faster than predicted. A ``fixed_size``
run whose targets crowd a few modes with a budget beyond their supply (the 1M × 10k bench) needs more passes for
its neighbour rounds (3.7 there at 87eb4ea, 396 s; 2.9 at ee37c6a, 318 s); its two OT solves and the diagnostics
took 0.054 µs per pair at ee37c6a (108 s, supports of about 7M pairs, products too large for the cache); the
prediction is 1.06× its 427 s.

Featurization (:func:`estimate_featurization`): per-sample gradients cost about three forward passes
(``forward_flops``; default :math:`2p`, which suits dense layers without weight sharing — give the real figure for
convolutions or sequences), at :data:`GRADIENT_EFFICIENCY` of the GEMM rate; a dense projection costs :math:`2pk`
flops per sample at :data:`PROJECTION_EFFICIENCY` of the rate plus :data:`GENERATE_SECONDS` per generated matrix
entry when the matrix does not fit the cache; a sparse (SJLT) projection :data:`SJLT_SECONDS` per input coordinate
and nonzero, plus :data:`SJLT_GENERATE_SECONDS` per coordinate and nonzero generated (once when its blocks fit the
cache, every batch otherwise).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

#: GEMM rate (GFLOP/s) assumed when a caller passes none and does not want the probe (the bench's 200k × 5k floor).
REFERENCE_GFLOPS = 150.0
#: Bytes per second of reading and normalising memory-mapped features (fitted: 0.8 GB in ~2 s).
READ_BYTES_PER_S = 4.0e8
#: Neighbour-list work of each selector, in passes of inner products (N × M × d); fixed_size measured 1.8–3.1 passes
#: on the bench (50k/200k × 1k/5k, 2026-12-07 at df4972f).
SELECT_PASSES = {"fixed_size": 3.0, "round_robin": 4.0, "tsds": 4.0, "otm": 2.8, "topk_mean": 1.0, "less": 1.0,
                 "random": 0.0}
#: Seconds per source–target pair of one entropic OT solve on the selection (two CPU cores; 0.4e-6 before the sparse
#: kernel's numpy gathers and fewer absorbs, 0.25e-6 before the multiscale cold start, 0.18e-6 before the solves of
#: one selection shared their products (df4972f), 0.1e-6 before the faster support lists and certificate rounds of
#: 5c08f69; measured at 87eb4ea, OT, weights and diagnostics over two solves: 0.044e-6 at 200k × 5k, 0.06–0.1e-6 on
#: the bench's smaller selections, 0.058e-6 at 1M × 10k, whose products do not fit the cache).
OT_SECONDS_PER_PAIR = 0.06e-6
#: Per-pair cost of small (dense-backend) solves, which start from exact duals (2.5e-6 until the bench of 2026-12-07,
#: which measured 0.3e-6 for OTM's three solves on 739 × 1,000 pairs).
OT_SECONDS_PER_PAIR_DENSE = 1.0e-6
#: Pairs above which the sparse backend is used: tarot.ot.SPARSE_MIN_ENTRIES, restated so that an estimate does not
#: load torch and POT through tarot.ot (tests/test_estimate.py checks that the two agree).
SPARSE_PAIRS = 2_000_000
#: Fraction of the float32 GEMM rate reached by whitening's float64 moments and transform (measured: 19.4 s for
#: 205,000 × 1,024 at 123 GFLOP/s).
WHITEN_EFFICIENCY = 0.35
#: Fraction of the GEMM rate reached by per-sample gradients (vmap) and by the dense projection. Gradients: 0.45
#: until a3be6f2, which keeps freed memory while featurizing; measured there, the bench's small CNN reaches 1.35 of
#: the 150 GFLOP/s reference rate with vmap (oneDNN's convolutions run above the GEMM rate), 0.6 with the loop.
GRADIENT_EFFICIENCY = 1.0
PROJECTION_EFFICIENCY = 0.4
#: Seconds per generated entry of a dense projection matrix, and per coordinate × nonzero of an SJLT projection:
#: its scatter-adds (1.0e-9 until a3be6f2; 0.56e-9 measured there on the CNN, blocks cached) and generating its blocks
#: when they are not cached (the LoRA-size row of the featurization bench: 14e-9).
GENERATE_SECONDS = 2.2e-9
SJLT_SECONDS = 0.6e-9
SJLT_GENERATE_SECONDS = 14e-9

_MB = 2.0**20
_GFLOPS_CACHE: dict[int, float] = {}


def machine_gflops(repeat: int = 3) -> float:
    """GEMM rate of this process in GFLOP/s: the best of ``repeat`` float32 products [2048 × 1024] @ [1024 × 2048]
    with torch's current thread count (about 0.1 s on two cores; cached per thread count)."""
    import torch

    threads = torch.get_num_threads()
    if threads not in _GFLOPS_CACHE:
        a, b = torch.randn(2048, 1024), torch.randn(1024, 2048)
        a @ b  # warm-up
        best = math.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        _GFLOPS_CACHE[threads] = 2 * 2048 * 1024 * 2048 / best / 1e9
    return _GFLOPS_CACHE[threads]


@dataclass
class StageEstimate:
    """One stage: predicted seconds, predicted peak resident memory (MB, above the process's baseline) and how."""

    stage: str
    seconds: float
    peak_mb: float
    basis: str


@dataclass
class Estimate:
    """Per-stage predictions for one run; ``seconds`` is their sum and ``peak_mb`` their maximum."""

    sizes: dict[str, Any]
    stages: list[StageEstimate] = field(default_factory=list)
    gflops: float = REFERENCE_GFLOPS

    @property
    def seconds(self) -> float:
        return float(sum(s.seconds for s in self.stages))

    @property
    def peak_mb(self) -> float:
        return float(max((s.peak_mb for s in self.stages), default=0.0))

    def stage(self, name: str) -> StageEstimate:
        for s in self.stages:
            if s.stage == name:
                return s
        raise KeyError(f"no stage {name!r}; stages: {[s.stage for s in self.stages]}")

    def as_dict(self) -> dict[str, Any]:
        return {"sizes": self.sizes, "gflops": self.gflops, "seconds": self.seconds, "peak_mb": self.peak_mb,
                "stages": [asdict(s) for s in self.stages]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)

    def table(self) -> str:
        """A plain-text table: one row per stage and the total."""
        head = ", ".join(f"{k}={_fmt(v)}" for k, v in self.sizes.items() if v is not None)
        lines = [f"estimate ({head}; GEMM {self.gflops:.0f} GFLOP/s)",
                 f"  {'stage':<16} {'time':>10} {'peak memory':>12}  basis"]
        for s in self.stages:
            lines.append(f"  {s.stage:<16} {_duration(s.seconds):>10} {_memory(s.peak_mb):>12}  {s.basis}")
        lines.append(f"  {'total':<16} {_duration(self.seconds):>10} {_memory(self.peak_mb):>12}")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _memory(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _budget(n_candidates: int, method: str, ratio: float | str | None, n: int | None, n_targets: int) -> int:
    if n is not None:
        return int(min(n, n_candidates))
    if ratio is None or ratio == "auto" or method == "otm":
        return max(1, min(n_candidates, n_targets // 2)) if method == "otm" else max(1, n_candidates // 10)
    return max(1, min(n_candidates, int(math.floor(float(ratio) * n_candidates))))


def estimate_selection(
    n_candidates: int,
    n_targets: int,
    dim: int,
    *,
    method: str = "fixed_size",
    ratio: float | str | None = None,
    n: int | None = None,
    weighting: bool = False,
    measure_continuous: str = "auto",
    whiten: bool = True,
    memmapped: bool = True,
    gflops: float | None = None,
) -> Estimate:
    r"""Predict the time and peak memory of :func:`tarot.select` on N candidates and M targets of dimension d.

    Parameters
    ----------
    n_candidates, n_targets, dim : int
        N, M and d (the store's feature dimension).
    method : str
        The selector.
    ratio, n : float or "auto", int, optional
        The budget as :func:`tarot.select` takes it (default: 10 %; OTM's own size is predicted at M/2).
    weighting : bool
        Potential weighting on: one more OT solve (the realised weights), two with the continuous weights measured
        too (``measure_continuous``: "always", or "auto" on problems of at most 2 million pairs).
    whiten : bool
        Whitening on (adds the moments and the transform, :math:`4(N+M)d^2` flops).
    memmapped : bool
        The features come from a memory-mapped store (their pages count towards the peak).
    gflops : float, optional
        The machine's GEMM rate; measured with :func:`machine_gflops` when not given.

    Returns
    -------
    Estimate
        Stages ``whiten``, ``select`` and ``ot_and_weights``.
    """
    N, M, d = int(n_candidates), int(n_targets), int(dim)
    if min(N, M, d) < 1:
        raise ValueError(f"sizes must be positive, got N={N}, M={M}, d={d}")
    if method not in SELECT_PASSES:
        raise ValueError(f"unknown method {method!r}; known: {sorted(SELECT_PASSES)}")
    rate = (gflops if gflops is not None else machine_gflops()) * 1e9
    budget = _budget(N, method, ratio, n, M)
    features_mb = (N + M) * d * 4 / _MB if memmapped else 0.0
    # whitening writes a whitened float32 copy of the rows; without it, unit float32 rows are used where they lie
    # (others are normalised into a copy, which this does not count)
    copy_mb = (N + M) * d * 4 / _MB if whiten else 0.0
    est = Estimate(sizes={"N": N, "M": M, "d": d, "method": method, "budget": budget, "weighting": weighting,
                          "whiten": whiten}, gflops=rate / 1e9)
    # whiten -----------------------------------------------------------------------------------------------
    t = (N + M) * d * 4 / READ_BYTES_PER_S  # memory-bound: taken at the reference machine's speed
    basis = "read and normalise (N+M)·d floats"
    if whiten:
        t += (4.0 * (N + M) * d * d + 10.0 * d**3) / (WHITEN_EFFICIENCY * rate)
        basis += " + float64 moments and transform 4(N+M)d² flops"
    # whitening streams float64 blocks beside the float32 result (measured 3.4 GB above baseline at 205k × 1024)
    est.stages.append(StageEstimate("whiten", t, features_mb + 3 * copy_mb + 2 * d * d * 8 / _MB,
                                    basis))
    # select -----------------------------------------------------------------------------------------------
    gemm = 2.0 * N * M * d / rate
    passes = SELECT_PASSES[method]
    if method in ("fixed_size", "round_robin", "tsds"):
        work = 1.3 * N * d * 4 / _MB + 240.0 + 0.092 * M
    elif method == "otm":
        work = 0.3 * N * d * 4 / _MB + 480.0
    else:
        work = N * 8 * 3 / _MB + 64.0  # scores, order, one GEMM block
    est.stages.append(StageEstimate("select", passes * gemm, features_mb + copy_mb + work,
                                    f"{passes:g} × one pass of inner products (2NMd flops)" if passes else
                                    "no feature work"))
    # OT and weights -----------------------------------------------------------------------------------------
    pairs = budget * M
    continuous = measure_continuous == "always" or (measure_continuous == "auto" and pairs <= SPARSE_PAIRS)
    solves = 1 + (1 + int(continuous) if weighting else 0)
    per_pair = OT_SECONDS_PER_PAIR if pairs > SPARSE_PAIRS else OT_SECONDS_PER_PAIR_DENSE
    t_ot = solves * pairs * per_pair  # memory-bound: taken at the reference machine's speed
    # sparse supports held 0.7–1 % of the pairs on the bench of 2026-12-07 at 02c43bf (5.4 % while the weighted
    # solves drifted); 2 % leaves room for flatter costs
    support_mb = 0.02 * pairs * 56 / _MB if pairs > SPARSE_PAIRS else pairs * 8 * 3 / _MB
    est.stages.append(StageEstimate(
        "ot_and_weights", t_ot, features_mb + copy_mb + budget * d * 4 / _MB + support_mb,
        f"{solves} OT solve{'s' if solves > 1 else ''} on {budget:,} × {M:,} pairs"
        + (" (OTM's size predicted at M/2)" if method == "otm" and n is None else "")))
    return est


def estimate_featurization(
    n_samples: int,
    grad_params: int,
    proj_dim: int,
    *,
    forward_flops: float | None = None,
    projector: str = "dense",
    nnz: int = 4,
    batch_size: int = 64,
    checkpoints: int = 1,
    cache_bytes: int = 2**30,
    gflops: float | None = None,
) -> Estimate:
    r"""Predict the time and memory of featurizing ``n_samples`` with ``grad_params`` parameters projected to
    ``proj_dim`` (per checkpoint; ``checkpoints`` multiplies the time).

    Parameters
    ----------
    n_samples, grad_params, proj_dim : int
        Samples, parameters whose gradients are featurized (p; LoRA: the adapter's) and the projection size k.
    forward_flops : float, optional
        Flops of one sample's forward pass through the whole model (default :math:`2p`; give the real figure for
        convolutions, sequences, or LoRA on a frozen base model, whose forward costs the base model's flops).
    projector : {"dense", "rademacher", "gaussian", "sjlt"}
    nnz : int
        SJLT nonzeros per input coordinate.
    batch_size : int
        Samples per batch (the per-sample gradients of one batch are held in memory).
    cache_bytes : int
        Cache of dense projection blocks (a matrix larger than it is regenerated for every batch).
    gflops : float, optional
        The machine's GEMM rate (measured when not given).
    """
    S, p, k = int(n_samples), int(grad_params), int(proj_dim)
    if min(S, p, k, batch_size, checkpoints) < 1:
        raise ValueError(f"sizes must be positive, got samples={S}, params={p}, proj_dim={k}")
    rate = (gflops if gflops is not None else machine_gflops()) * 1e9
    fwd = float(forward_flops) if forward_flops is not None else 2.0 * p
    est = Estimate(sizes={"samples": S, "params": p, "proj_dim": k, "projector": projector,
                          "checkpoints": checkpoints, "batch": batch_size}, gflops=rate / 1e9)
    grads = 3.0 * fwd / (GRADIENT_EFFICIENCY * rate) * S * checkpoints
    grad_mb = batch_size * p * 4 / _MB
    est.stages.append(StageEstimate("gradients", grads, 2 * grad_mb, "3 forward passes per sample "
                                    f"({fwd:.3g} flops each)"))
    if projector == "sjlt":
        cached = p * 2 * nnz * 4 <= cache_bytes  # a block row holds nnz indices and nnz values, fp32
        t = S * p * nnz * SJLT_SECONDS  # memory-bound, as SJLT_SECONDS was measured
        t += p * nnz * SJLT_GENERATE_SECONDS * (1 if cached else math.ceil(S / batch_size))
        est.stages.append(StageEstimate("projection", t * checkpoints, grad_mb + batch_size * k * 4 / _MB,
                                        f"SJLT: p × {nnz} scatter-adds per sample, blocks "
                                        + ("generated once (cached)" if cached else "regenerated every batch")))
    else:
        t = 2.0 * p * k / (PROJECTION_EFFICIENCY * rate) * S
        cached = p * k * 4 <= cache_bytes
        batches = math.ceil(S / batch_size)
        t += p * k * GENERATE_SECONDS * (1 if cached else batches)
        est.stages.append(StageEstimate("projection", t * checkpoints,
                                        grad_mb + min(p * k * 4, cache_bytes) / _MB,
                                        "dense: 2pk flops per sample, matrix "
                                        + ("generated once (cached)" if cached else "regenerated every batch")))
    return est


def estimate_for_store(store: Any, options: dict[str, Any], *, gflops: float | None = None,
                       target_split: str = "target") -> Estimate:
    """:func:`estimate_selection` for :func:`tarot.select` on a :class:`~tarot.features.store.FeatureStore` with
    the keyword ``options`` a ``select`` call would get (``method``, ``ratio`` or ``n``, ``weighting``,
    ``whiten_features``); the store's sizes are read from its manifest and index, no features are loaded. A store
    without a ``candidate`` or ``target`` split raises :class:`~tarot.errors.MissingSplitError`."""
    method = options.get("method", "fixed_size")
    return estimate_selection(store.count("candidate"), store.count(target_split), store.dim, method=method,
                              ratio=options.get("ratio"), n=options.get("n"),
                              weighting=bool(options.get("weighting", False)),
                              measure_continuous=str(options.get("measure_continuous", "auto")),
                              whiten=bool(options.get("whiten_features", True)), memmapped=True, gflops=gflops)
