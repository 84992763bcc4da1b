r"""Entropic optimal transport between point clouds in whitened feature space.

Problem (spec §7.1), for clouds :math:`\{x_i\}` with weights :math:`a` and :math:`\{y_j\}` with weights :math:`b`:

.. math::

    \mathrm{OT}_\varepsilon(a, b) = \min_{\pi \ge 0,\ \pi 1 = a,\ \pi^\top 1 = b}
        \langle \pi, C\rangle + \varepsilon\,\mathrm{KL}(\pi \,\|\, a \otimes b),

with the whitened feature distance :math:`C_{ij} = \sqrt{\max(0, 2 - 2\langle x_i, y_j\rangle)}` on unit rows
(``cost="wfd"``) or the squared Euclidean distance (``cost="sqeuclidean"``).

Potentials follow the soft-min convention (spec §7.2):

.. math::

    f_i = -\varepsilon \log \sum_j b_j e^{(g_j - C_{ij})/\varepsilon},\qquad
    g_j = -\varepsilon \log \sum_i a_i e^{(f_i - C_{ij})/\varepsilon},

so that :math:`\mathrm{OT}_\varepsilon = \langle a, f\rangle + \langle b, g\rangle` and
:math:`\pi_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}`. **Smaller** :math:`f_i` means that adding mass at
:math:`x_i` lowers the OT distance.

Solver: log-domain Sinkhorn in PyTorch with over-relaxed updates, iterated at the final ε until the L1 marginal
violation :math:`\|\pi 1 - a\|_1 + \|\pi^\top 1 - b\|_1` is below ``tol`` (or the value settles, ``value_tol``).
Warm start (``init="auto"``): for problems up to ``emd_max_entries`` cost entries, the dual potentials of the exact
problem from POT's network simplex (``ot.emd``); at ε = 1e-4 the entropic problem is a small perturbation of the
exact one and Sinkhorn then needs a few dozen iterations. Larger problems use the reference ε-scaling schedule
(ε₀ an upper bound of the squared cost, divided by 4 per stage, last stage exactly ε) or given potentials.

Backends: ``dense`` keeps the cost matrix; ``blocked`` works on row blocks computed from the features on the fly
(cached when they fit ``cache_bytes``), so memory is O((N + M)·k) plus one block. POT also provides the exact
reference (:func:`exact_ot`, ``ot.emd2``) used by the tests.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import ot as pot
import torch

from tarot.geometry.whitening import as_tensor

Cost = Literal["wfd", "sqeuclidean"]

#: Largest problem (N·M cost entries) warm-started from the exact duals of POT's network simplex. Measured here:
#: ``ot.emd`` takes ≈ 1.5 s at 5,000 × 1,000 and ≈ 6 s at 20,000 × 1,000 (float64 cost, 160 MB), far less than
#: the ε-scaling iterations it replaces; beyond this size the dense cost copy it needs is the limit.
EMD_MAX_ENTRIES = 25_000_000

#: Problems with more cost entries (N·M) than this use the certified sparse solver (:mod:`tarot.sparse_ot`) under
#: ``backend="auto"``; smaller ones keep the dense solver warm-started from the exact duals.
SPARSE_MIN_ENTRIES = 2_000_000


@dataclass
class OTResult:
    """Value, potentials and convergence record of one entropic OT solve.

    Attributes
    ----------
    value : float
        OT_ε = ⟨a, f⟩ + ⟨b, g⟩ (KL-to-product convention).
    value_linear : float
        ⟨π, C⟩, the transport cost of the entropic plan.
    f, g : numpy.ndarray
        Dual potentials (float64) in cost units, spec §7.2 convention.
    iterations : int
        Sinkhorn iterations over all ε stages.
    violation : float
        Final L1 marginal violation ‖π1 − a‖₁ + ‖πᵀ1 − b‖₁.
    converged : bool
        ``violation < tol``: the marginals are met to the requested tolerance.
    value_settled : bool
        The solve stopped because the value changed by less than ``value_tol`` (``stop="value"``). The value is then
        accurate although the marginals may still be above ``tol``; both facts are reported, neither hides the
        other.
    tol : float
        The marginal tolerance asked for.
    """

    value: float
    value_linear: float
    f: np.ndarray
    g: np.ndarray
    eps: float
    iterations: int
    violation: float
    converged: bool
    backend: str
    stages: list[dict] = field(default_factory=list)
    value_settled: bool = False
    tol: float | None = None
    support: object | None = field(default=None, repr=False)
    certificate: dict | None = None

    def diagnostics(self) -> dict:
        """JSON-friendly summary of the solve."""
        extra = {} if self.certificate is None else {"sparse": self.certificate}
        return {**extra,
            "value": self.value,
            "value_linear": self.value_linear,
            "eps": self.eps,
            "iterations": self.iterations,
            "violation": self.violation,
            "converged": self.converged,
            "value_settled": self.value_settled,
            "tol": self.tol,
            "backend": self.backend,
            "stop": self.stages[-1]["stop"] if self.stages else None,
        }


def _as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu")
    else:
        arr = np.asarray(x)
        if arr.dtype == np.float16:
            raise TypeError("float16 features are not accepted by the OT solver (use float32 or float64)")
        t = as_tensor(arr)
    if t.dtype == torch.float16:
        raise TypeError("float16 features are not accepted by the OT solver (use float32 or float64)")
    return t.to(dtype)


def cost_block(X: torch.Tensor, Y: torch.Tensor, cost: Cost) -> torch.Tensor:
    r"""Cost matrix between row blocks.

    ``wfd``: :math:`\sqrt{\max(0, 2 - 2XY^\top)}` (rows assumed unit-norm); ``sqeuclidean``:
    :math:`\|x\|^2 + \|y\|^2 - 2x^\top y` clipped at 0.
    """
    G = X @ Y.T
    if cost == "wfd":
        return torch.sqrt(torch.clamp(2.0 - 2.0 * G, min=0.0))
    if cost == "sqeuclidean":
        return torch.clamp((X * X).sum(1)[:, None] + (Y * Y).sum(1)[None, :] - 2.0 * G, min=0.0)
    raise ValueError(f"unknown cost {cost!r}; expected 'wfd' or 'sqeuclidean'")


def _cost_bound(X: torch.Tensor, Y: torch.Tensor, cost: Cost) -> float:
    """An upper bound of the cost, used for the first ε stage (ε₀ = bound²)."""
    if cost == "wfd":
        return 2.0
    rx = float(torch.linalg.vector_norm(X, dim=1).max()) if len(X) else 0.0
    ry = float(torch.linalg.vector_norm(Y, dim=1).max()) if len(Y) else 0.0
    return (rx + ry) ** 2


def eps_schedule(eps: float, start: float) -> list[float]:
    """Reference ε-scaling schedule: ``start`` divided by 4 per stage while above ``eps``, then exactly ``eps``."""
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    out, e = [], float(start)
    while e > eps:
        out.append(e)
        e /= 4.0
    out.append(float(eps))
    return out


class _Problem:
    """Cost access for one solve: dense matrix or row blocks computed on demand (optionally cached).

    When the cost is cached, the blocks of C/ε for the current ε are cached too (one division per stage instead of
    one per iteration); the cache budget counts both copies.
    """

    def __init__(self, X, Y, cost: Cost, block_rows: int, cache_bytes: int, dense: bool) -> None:
        self.X, self.Y, self.cost = X, Y, cost
        self.n, self.m = X.shape[0], Y.shape[0]
        self.block_rows = max(1, int(block_rows))
        nbytes = self.n * self.m * X.element_size()
        self.cached = dense or 2 * nbytes <= cache_bytes
        self._cache = [cost_block(X[s:e], Y, cost) for s, e in self.blocks()] if self.cached else None
        self._scaled_eps: float | None = None
        self._scaled: list[torch.Tensor] | None = None

    def blocks(self):
        for s in range(0, self.n, self.block_rows):
            yield s, min(self.n, s + self.block_rows)

    def block(self, k: int, s: int, e: int) -> torch.Tensor:
        if self._cache is not None:
            return self._cache[k]
        return cost_block(self.X[s:e], self.Y, self.cost)

    def scaled_block(self, k: int, s: int, e: int, eps: float) -> torch.Tensor:
        """C/ε for row block k."""
        if self._cache is None:
            return cost_block(self.X[s:e], self.Y, self.cost) / eps
        if self._scaled_eps != eps:
            self._scaled = [c / eps for c in self._cache]
            self._scaled_eps = eps
        return self._scaled[k]  # type: ignore[index]

    def full(self) -> torch.Tensor:
        return torch.cat([self.block(k, s, e) for k, (s, e) in enumerate(self.blocks())], 0)


def _f_update(P: _Problem, g: torch.Tensor, logb: torch.Tensor, eps: float) -> torch.Tensor:
    h = g / eps + logb
    out = [-eps * torch.logsumexp(h[None, :] - P.scaled_block(k, s, e, eps), dim=1)
           for k, (s, e) in enumerate(P.blocks())]
    return torch.cat(out)


def _g_update(P: _Problem, f: torch.Tensor, loga: torch.Tensor, eps: float) -> torch.Tensor:
    h = f / eps + loga
    acc: torch.Tensor | None = None
    for k, (s, e) in enumerate(P.blocks()):
        part = torch.logsumexp(h[s:e, None] - P.scaled_block(k, s, e, eps), dim=0)
        acc = part if acc is None else torch.logaddexp(acc, part)
    assert acc is not None, "a problem has at least one row block"
    return -eps * acc


def _marginals_and_linear(P: _Problem, f, g, loga, logb, eps):
    """Row sums, column sums and ⟨π, C⟩ of the plan π_ij = a_i b_j exp((f_i + g_j − C_ij)/ε)."""
    rows, cols, lin = [], torch.zeros_like(g), torch.zeros((), dtype=f.dtype)
    for k, (s, e) in enumerate(P.blocks()):
        C = P.block(k, s, e)
        pi = torch.exp(loga[s:e, None] + logb[None, :] + (f[s:e, None] + g[None, :] - C) / eps)
        rows.append(pi.sum(1))
        cols += pi.sum(0)
        lin += (pi * C).sum()
    return torch.cat(rows), cols, float(lin)


def entropic_ot(
    X: np.ndarray | torch.Tensor,
    Y: np.ndarray | torch.Tensor,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    *,
    eps: float = 1e-4,
    cost: Cost = "wfd",
    tol: float = 1e-5,
    max_iter: int = 2000,
    stage_iter: int = 30,
    stage_tol: float = 1e-2,
    overrelax: float = 1.8,
    value_tol: float | None = None,
    init: tuple[np.ndarray, np.ndarray] | str | None = "auto",
    emd_max_entries: int = EMD_MAX_ENTRIES,
    backend: Literal["auto", "dense", "blocked", "sparse"] = "auto",
    dense_max_entries: int = 16_000_000,
    sparse_min_entries: int = SPARSE_MIN_ENTRIES,
    support: object | None = None,
    block_rows: int = 4096,
    cache_bytes: int = 1 << 30,
    dtype: torch.dtype = torch.float64,
    eps_start: float | None = None,
    progress: bool = False,
    products: object | None = None,
) -> OTResult:
    r"""Solve entropic OT between two point clouds and return value, potentials and diagnostics.

    Parameters
    ----------
    X, Y : array [N, k], [M, k]
        Source (candidate) and target features. For ``cost="wfd"`` rows must be unit-norm (whitened, normalised).
    a, b : array, optional
        Positive weights summing to 1 (uniform when omitted). Drop zero-weight rows before calling.
    eps : float
        Final entropic regularisation ε (reference: 1e-4).
    cost : {"wfd", "sqeuclidean"}
        Transport cost.
    tol : float
        Stop at the final ε when the L1 marginal violation is below ``tol``; ``max_iter`` caps the iterations there.
        The value converges far faster than the marginals, so selectors may pass a looser ``tol``; the reached
        violation is always reported and a miss raises a ``RuntimeWarning``.
    stage_iter, stage_tol : int, float
        Iteration cap and violation target of the intermediate ε stages.
    value_tol : float, optional
        Also stop at the final ε once the value ⟨a, f⟩ + ⟨b, g⟩ changes by less than ``value_tol`` over 10
        iterations (the value converges far faster than the marginals); the result then records
        ``value_settled=True`` and ``stop="value"``, and ``converged`` still says whether the marginal violation
        reached ``tol`` (no warning: settling on the value was asked for).
    overrelax : float
        Over-relaxation ω ∈ [1, 2) of the log-domain updates, ``f ← (1−ω)f + ω·softmin(g)``, used at stages with
        ε < 1e-2 (ω = 1 is plain Sinkhorn; the fixed point is the same). A final plain update pair makes the returned
        potentials satisfy the soft-min identity.
    init : (f, g), "emd", "auto" or None
        Warm start. ``(f, g)``: potentials in cost units (§7.2 convention), the schedule then starts at ``16·eps``.
        ``"emd"``: the dual potentials of the exact (ε = 0) problem from POT's network simplex (``ot.emd``), followed
        by Sinkhorn at the final ε only — at ε = 1e-4 the entropic problem is a small perturbation of the exact one,
        and from the exact duals the value settles in a few dozen iterations instead of thousands. ``"auto"``:
        ``"emd"`` when N·M ≤ ``emd_max_entries``, else ε-scaling from zero. ``None``: ε-scaling from zero.
    backend : {"auto", "dense", "blocked", "sparse"}
        ``dense`` keeps the whole cost matrix; ``blocked`` recomputes row blocks of ``block_rows`` rows from the
        features unless all of them fit ``cache_bytes``; ``sparse`` (WFD cost only) solves on a sparse support of
        a few dozen entries per row and certifies that every entry outside it carries less than e^-30 of its
        product mass (:mod:`tarot.sparse_ot`), so it returns the full problem's solution at a fraction of the cost
        (it keeps the N×M products it computes when they fit ``cache_bytes`` and a quarter of the memory budget).
        ``auto``: ``sparse`` for the WFD cost when N·M > ``sparse_min_entries``, else dense when N·M ≤
        ``dense_max_entries``, else blocked.
    support : tarot.sparse_ot.Support, optional
        Sparse support of an earlier solve (``result.support``) with the same targets and the same first source
        rows; reused and extended instead of rebuilt (sparse backend only).
    dtype : torch.dtype
        Arithmetic precision (float64 default; float32 halves time and memory for very large problems).
    eps_start : float, optional
        First ε of the schedule (default: squared cost bound, or ``16·eps`` with ``init``).
    progress : bool
        Progress bar of the sparse backend's iterations (with the certificate round and the support size); the
        dense and blocked solves are short and show none.
    products : tarot.sparse_ot.Products, optional
        The cached products :math:`XY^\top` of these very ``X`` and ``Y`` (sparse backend only): several solves on
        one pair of clouds (e.g. uniform, then re-weighted) compute the products once instead of once each.

    Returns
    -------
    OTResult
    """
    if not 1.0 <= overrelax < 2.0:
        raise ValueError(f"overrelax must lie in [1, 2), got {overrelax}")
    X = X if hasattr(X, "shape") else np.asarray(X)
    Y = Y if hasattr(Y, "shape") else np.asarray(Y)
    n, m = X.shape[0], Y.shape[0]
    if n == 0 or m == 0:
        raise ValueError(f"entropic_ot needs non-empty clouds, got {n} source and {m} target points")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"feature dimensions differ: {X.shape[1]} (source) vs {Y.shape[1]} (target)")
    for arr in (X, Y):
        if getattr(arr, "dtype", None) in (np.float16, torch.float16):
            raise TypeError("float16 features are not accepted by the OT solver (use float32 or float64)")
    a_np, b_np = _checked_weights(a, n, "a"), _checked_weights(b, m, "b")
    if backend == "auto":
        if cost == "wfd" and n * m > sparse_min_entries:
            backend = "sparse"
        else:
            backend = "dense" if n * m <= dense_max_entries else "blocked"
    if backend not in ("dense", "blocked", "sparse"):
        raise ValueError(f"unknown backend {backend!r}; expected 'auto', 'dense', 'blocked' or 'sparse'")
    if backend == "sparse":
        return _sparse(X, Y, a_np, b_np, eps=eps, cost=cost, tol=tol, max_iter=max_iter, stage_iter=stage_iter,
                       stage_tol=stage_tol, overrelax=overrelax, value_tol=value_tol, init=init, eps_start=eps_start,
                       support=support, progress=progress, cache_bytes=cache_bytes, products=products)
    Xt, Yt = _as_tensor(X, dtype), _as_tensor(Y, dtype)
    a_t, b_t = torch.from_numpy(a_np).to(dtype), torch.from_numpy(b_np).to(dtype)
    loga, logb = torch.log(a_t), torch.log(b_t)
    P = _Problem(Xt, Yt, cost, block_rows=n if backend == "dense" else block_rows, cache_bytes=cache_bytes,
                 dense=backend == "dense")

    if isinstance(init, str):
        if init not in ("auto", "emd"):
            raise ValueError(f"init must be 'auto', 'emd', None or a pair of potentials, got {init!r}")
        use_emd = init == "emd" or n * m <= emd_max_entries
        init = _emd_duals(P, a_t, b_t) if use_emd else None
        if init is not None and eps_start is None:
            eps_start = eps
    if init is not None:
        f = _as_tensor(np.asarray(init[0], dtype=np.float64), dtype)
        g = _as_tensor(np.asarray(init[1], dtype=np.float64), dtype)
        if f.shape != (n,) or g.shape != (m,):
            raise ValueError(f"init potentials have shapes {tuple(f.shape)}, {tuple(g.shape)}; expected ({n},), ({m},)")
        start = eps_start if eps_start is not None else 16.0 * eps
    else:
        f, g = torch.zeros(n, dtype=dtype), torch.zeros(m, dtype=dtype)
        start = eps_start if eps_start is not None else _cost_bound(Xt, Yt, cost) ** 2
    schedule = eps_schedule(eps, start)

    total_iter, stages = 0, []
    for e in schedule:
        last = e == schedule[-1]
        cap, thr = (max_iter, tol) if last else (stage_iter, stage_tol)
        omega = overrelax if e < 1e-2 else 1.0
        f, g, it, reason = _sinkhorn_stage(P, f, g, loga, logb, e, cap, thr, omega,
                                           value_tol=value_tol if last else None)
        total_iter += it
        stages.append({"eps": e, "iterations": it, "stop": reason})

    rows, cols, linear = _marginals_and_linear(P, f, g, loga, logb, eps)
    violation = float((rows - a_t).abs().sum() + (cols - b_t).abs().sum())
    stop = stages[-1]["stop"]
    converged = violation < tol
    value_settled = stop == "value"
    if not converged and not value_settled:
        warnings.warn(
            f"entropic OT did not reach tol={tol:g} at eps={eps:g} within {max_iter} iterations "
            f"(marginal violation {violation:.3g}); the value is reported with converged=False",
            RuntimeWarning,
            stacklevel=2,
        )
    value = float(a_t @ f + b_t @ g)
    return OTResult(
        value=value,
        value_linear=linear,
        f=f.numpy().astype(np.float64),
        g=g.numpy().astype(np.float64),
        eps=float(eps),
        iterations=total_iter,
        violation=violation,
        converged=converged,
        backend=backend,
        stages=stages,
        value_settled=value_settled,
        tol=float(tol),
    )


def _checked_weights(w: np.ndarray | None, size: int, name: str) -> np.ndarray:
    """Float64 weights of one side (uniform when None), checked: shape (size,), positive, summing to 1."""
    if w is None:
        return np.full(size, 1.0 / size)
    w = (w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)).astype(np.float64)
    if w.shape != (size,):
        raise ValueError(f"weights {name} have shape {tuple(w.shape)}, expected ({size},)")
    if bool((w <= 0).any()) or abs(float(w.sum()) - 1.0) > 1e-6:
        raise ValueError(f"weights {name} must be positive and sum to 1 (sum={float(w.sum()):.6g})")
    return w


def _sparse(X, Y, a: np.ndarray, b: np.ndarray, *, eps: float, cost: str, tol: float, max_iter: int,
            stage_iter: int, stage_tol: float, overrelax: float, value_tol: float | None, init, eps_start,
            support, progress: bool = False, cache_bytes: int | None = None, products=None) -> OTResult:
    """The ``sparse`` backend: :func:`tarot.sparse_ot.sparse_entropic_ot` packed into an :class:`OTResult`."""
    from tarot.sparse_ot import sparse_entropic_ot

    if cost != "wfd":
        raise ValueError("the sparse backend needs the WFD cost on unit rows (cost='wfd')")
    if isinstance(init, str):
        if init not in ("auto", "emd"):
            raise ValueError(f"init must be 'auto', 'emd', None or a pair of potentials, got {init!r}")
        init = None  # the sparse solver starts from its own ε-scaling (no dense copy for the exact duals)
    X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X
    Y = Y.detach().cpu().numpy() if isinstance(Y, torch.Tensor) else Y
    if init is not None and (len(init[0]) != X.shape[0] or len(init[1]) != Y.shape[0]):
        raise ValueError(f"init potentials have shapes ({len(init[0])},), ({len(init[1])},); expected "
                         f"({X.shape[0]},), ({Y.shape[0]},)")
    shape = (getattr(products, "n", None), getattr(products, "m", None))
    if products is not None and shape != (X.shape[0], Y.shape[0]):
        raise ValueError(f"products are for {shape[0]} x {shape[1]} points; this problem has {X.shape[0]} x "
                         f"{Y.shape[0]}")
    res = sparse_entropic_ot(X, Y, a, b, eps=eps, tol=tol, max_iter=max_iter, stage_iter=stage_iter,
                             stage_tol=stage_tol, overrelax=overrelax, value_tol=value_tol, init=init,
                             eps_start=eps_start, support=support, progress=progress, cache_bytes=cache_bytes,
                             products=products)
    stop = res.stages[-1]["stop"]
    converged, value_settled = res.violation < tol, stop == "value"
    if not res.certified:
        warnings.warn(f"sparse OT: the support was still growing after {res.certificate_rounds} certificate rounds; "
                      "entries outside it may carry mass (reported with certified=False)", RuntimeWarning,
                      stacklevel=3)
    elif not converged and not value_settled:
        warnings.warn(
            f"entropic OT did not reach tol={tol:g} at eps={eps:g} within {max_iter} iterations "
            f"(marginal violation {res.violation:.3g}); the value is reported with converged=False",
            RuntimeWarning, stacklevel=3)
    return OTResult(
        value=float(a @ res.f + b @ res.g), value_linear=res.value_linear, f=res.f, g=res.g, eps=float(eps),
        iterations=int(sum(s["iterations"] for s in res.stages)), violation=res.violation, converged=converged,
        backend="sparse", stages=res.stages, value_settled=value_settled, tol=float(tol), support=res.support,
        certificate={"certified": res.certified, "rounds": res.certificate_rounds, "cold_start": res.cold_start,
                     "outside_mass_bound": res.outside_mass_bound, **res.support.diagnostics()})


def _emd_duals(P: _Problem, a_t: torch.Tensor, b_t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Dual potentials (u, v) of the exact OT problem from POT's network simplex, in cost units."""
    C = P.full().to(torch.float64).numpy()
    a = a_t.to(torch.float64).numpy()
    b = b_t.to(torch.float64).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, log = pot.emd(a / a.sum(), b / b.sum(), C, numItermax=max(200_000, 20 * C.size), log=True)
    return np.asarray(log["u"], dtype=np.float64), np.asarray(log["v"], dtype=np.float64)


def _sinkhorn_stage(P, f, g, loga, logb, eps, cap, thr, omega, value_tol=None, check_every=10):
    """One ε stage of (over-relaxed) alternating soft-min updates over row blocks.

    Before an f-update the row-marginal L1 violation of the current plan is Σ_i a_i |exp((f_i − softmin_i)/ε) − 1|
    (the column marginal is exact after a plain g-update), so the stopping test costs one extra reduction; it runs
    every ``check_every`` iterations. With ``value_tol`` the stage also stops once ⟨a, f⟩ + ⟨b, g⟩ moved by less than
    ``value_tol`` between two checks. The stage ends with a plain update pair, so (f, g) satisfy the soft-min
    identity. Returns (f, g, iterations, reason).
    """
    a, b = torch.exp(loga), torch.exp(logb)
    it, reason, last_value = 0, "max_iter", None
    for it in range(1, cap + 1):
        f_soft = _f_update(P, g, logb, eps)
        if it % check_every == 1 or check_every == 1:
            err = float((a * torch.expm1((f - f_soft) / eps).abs()).sum())
            if err < thr / 2 and it > 1:
                reason = "marginals"
                break
            if value_tol is not None:
                value = float(a @ f + b @ g)
                if last_value is not None and abs(value - last_value) < value_tol:
                    reason = "value"
                    break
                last_value = value
        f = f_soft if omega == 1.0 else (1.0 - omega) * f + omega * f_soft
        g_soft = _g_update(P, f, loga, eps)
        g = g_soft if omega == 1.0 else (1.0 - omega) * g + omega * g_soft
    f = _f_update(P, g, logb, eps)
    g = _g_update(P, f, loga, eps)
    return f, g, it, reason


def warm_start(previous: OTResult | None, X: np.ndarray, Y: np.ndarray, *, eps: float,
               emd_max_entries: int = SPARSE_MIN_ENTRIES):
    """Choose the ``init`` for the next solve of a growing problem (OTM depths, fixed-size fill rounds).

    ``X`` holds the source points of the new problem, the rows of the previous one first. Small problems (the dense
    solver's sizes) restart from the exact duals (``"auto"``: fastest and most accurate); large ones reuse the
    previous potentials, extended to the added rows ``X[len(previous.f):]`` by their soft-min values
    (:func:`softmin_potential`). Pass ``support=previous.support`` beside it so that the sparse solver extends the
    previous support instead of building a new one.
    """
    n, m = len(X), len(Y)
    if previous is None or n * m <= emd_max_entries:
        return "auto"
    k = len(previous.f)
    if k > n or len(previous.g) != m:
        return "auto"
    if k == n:
        return (previous.f, previous.g)
    return (np.concatenate([previous.f, softmin_potential(X[k:], Y, previous.g, eps=eps)]), previous.g)


def softmin_potential(
    X_new: np.ndarray | torch.Tensor,
    Y: np.ndarray | torch.Tensor,
    g: np.ndarray,
    b: np.ndarray | None = None,
    *,
    eps: float = 1e-4,
    cost: Cost = "wfd",
    block_rows: int = 4096,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    r"""Soft-min extension of the source potential to new points.

    .. math:: f(x) = -\varepsilon \log \sum_j b_j \exp\big((g_j - C(x, y_j))/\varepsilon\big)

    This is the first variation of OT_ε when a little mass is placed at x next to the current measure (spec §8):
    the point with the smallest value lowers the OT distance most.
    """
    Xt, Yt = _as_tensor(X_new, dtype), _as_tensor(Y, dtype)
    m = Yt.shape[0]
    logb = torch.log(torch.full((m,), 1.0 / m, dtype=dtype) if b is None else _as_tensor(b, dtype))
    gt = _as_tensor(np.asarray(g, dtype=np.float64), dtype)
    out = []
    for s in range(0, Xt.shape[0], block_rows):
        C = cost_block(Xt[s : s + block_rows], Yt, cost)
        out.append(-eps * torch.logsumexp(logb[None, :] + (gt[None, :] - C) / eps, dim=1))
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def exact_ot(X: np.ndarray, Y: np.ndarray, a=None, b=None, cost: Cost = "wfd") -> float:
    """Unregularised OT value through POT's network simplex (``ot.emd2``); for tests and small problems."""
    Xt, Yt = _as_tensor(X, torch.float64), _as_tensor(Y, torch.float64)
    C = cost_block(Xt, Yt, cost).numpy()
    a = pot.unif(len(Xt)) if a is None else np.asarray(a, np.float64)
    b = pot.unif(len(Yt)) if b is None else np.asarray(b, np.float64)
    return float(pot.emd2(a, b, C, numItermax=max(100_000, 50 * len(a) * len(b))))


__all__ = ["OTResult", "entropic_ot", "softmin_potential", "exact_ot", "cost_block", "eps_schedule"]
