"""The front door: :func:`select` runs whitening, a selector, the final OT distance and optional weighting, and
returns a :class:`~tarot.result.SelectionResult`."""

from __future__ import annotations

import inspect
import logging
import math
import platform
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tarot._version import __version__
from tarot.diagnostics import selection_diagnostics
from tarot.features.allocator import release_freed_memory
from tarot.geometry.whitening import as_unit_rows, check_finite, check_float_features, unit_rows, whiten
from tarot.options import (
    STAGE_OPTIONS,
    Options,
    OTOptions,
    WeightingOptions,
    WhiteningOptions,
    check_options,
    resolve_options,
)
from tarot.ot import SPARSE_MIN_ENTRIES, entropic_ot, warm_start
from tarot.result import SelectionResult
from tarot.selectors import SELECTORS, Selection
from tarot.sparse_ot import Products, cache_bytes_default
from tarot.weighting import potential_weights, repeat_counts

log = logging.getLogger(__name__)

SCORE_SPACES = ("whitened", "raw")
SELF_WEIGHTED = ("tsds",)  # selectors that sample with replacement and return their own repeat counts


def _budget(ratio: float | str | None, n: int | None, n_candidates: int, method: str) -> int | None:
    if method == "otm":
        if n is not None or ratio not in (None, "auto"):
            raise ValueError("method 'otm' estimates the ratio itself: use ratio='auto' (or fixed_size for a budget)")
        return None
    if ratio == "auto":
        raise ValueError(f"ratio='auto' is only available with method='otm', not {method!r}")
    if (ratio is None) == (n is None):
        raise ValueError("give exactly one of ratio= (fraction of the candidates) or n= (number of candidates)")
    if n is not None:
        if isinstance(n, bool) or not float(n).is_integer():
            raise ValueError(f"n must be a whole number of candidates, got {n!r}")
        return int(n)
    r = float(ratio)  # type: ignore[arg-type]
    if not 0.0 < r <= 1.0:
        raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
    return max(1, math.floor(r * n_candidates))


def _from_store(store: Any) -> dict:
    """Arrays and labels of a FeatureStore (duck-typed so that tarot.features.store stays optional here)."""
    out = {"candidates": store.features("candidate"), "targets": store.features("target")}
    for key, split, attr in (("candidate_sources", "candidate", "sources"), ("candidate_ids", "candidate", "ids"),
                             ("target_groups", "target", "groups")):
        getter = getattr(store, attr, None)
        value = getter(split) if getter is not None else None
        out[key] = None if value is None else list(value)
    out["store_path"] = str(getattr(store, "path", ""))
    return out


def select(
    candidates: Any,
    targets: np.ndarray | None = None,
    *,
    method: str = "fixed_size",
    ratio: float | str | None = None,
    n: int | None = None,
    seed: int = 0,
    whiten_features: bool = True,
    ridge: float | str = "auto",
    fit_on: str = "both",
    space: str = "whitened",
    eps: float = 1e-4,
    ot_tol: float = 1e-5,
    ot_value_tol: float | None = 1e-7,
    compute_ot: bool = True,
    diagnose: bool = True,
    weighting: bool = False,
    beta: float = 0.5,
    total_repeats: int | None = None,
    min_repeats: int = 1,
    max_weight_ratio: float | None = None,
    measure_continuous: str = "auto",
    merge_targets: bool = False,
    target_repeats: int = 1,
    target_groups: list | None = None,
    candidate_sources: list | None = None,
    candidate_ids: list | None = None,
    progress: bool = True,
    **options: Any,
) -> SelectionResult:
    """Select candidates whose gradient features are closest in OT distance to the targets.

    Parameters
    ----------
    candidates : FeatureStore or numpy.ndarray [N, k]
        A feature store (then ``targets`` must be None and labels come from the store) or candidate features.
    targets : numpy.ndarray [M, k], optional
        Target features when ``candidates`` is an array.
    method : str
        One of ``random``, ``topk_mean``, ``less``, ``round_robin``, ``fixed_size``, ``otm`` or the baseline ``tsds``
        (its draws with replacement become the repeat counts). ``less`` on a store that kept its per-checkpoint
        features (``keep_partials=True``) is LESS proper: rows normalised per checkpoint, cosines weighted by the
        checkpoints' weights (LESS: their learning rates; ``checkpoint_weights=`` overrides), max over target
        groups. On summed features or arrays it is a one-checkpoint LESS; ``diagnostics["less"]`` says which ran.
    ratio : float or "auto"
        Fraction of the candidates to select (n = ⌊ratio·N⌋); ``"auto"`` with ``otm``.
    n : int, optional
        Number of candidates to select (instead of ``ratio``).
    seed : int
        Seed of random choices (``random``, random fills).
    progress : bool
        Progress bars of the long loops: scoring passes, OTM folds, and the iterations of large (sparse) OT solves.
    whiten_features : bool
        Whiten (spec §4) before scoring; when False rows are only L2-normalised.
    ridge : float or {"auto", "ledoit_wolf", "oas"}
        Relative whitening ridge λ, or the rule that chooses it from the data (default ``"auto"``: the square-root
        rule of :mod:`tarot.geometry.whitening`); the chosen value, the spectrum and the effective rank land in
        ``diagnostics["whitening"]``.
    fit_on : str
        Fit set of the whitening: ``both`` (candidates ∪ targets), ``candidates`` or ``targets``.
    space : {"whitened", "raw"}
        Feature space of ``topk_mean`` (``less`` always uses raw per-checkpoint-normalised features, as LESS does).
    eps, ot_tol, ot_value_tol : float
        Entropic regularisation of every OT problem and the Sinkhorn stopping rules (L1 marginal violation, change
        of the value); see :func:`tarot.ot.entropic_ot`.
    compute_ot : bool
        Report OT_ε(uniform on the selection, targets) (needed for weighting).
    diagnose : bool
        Add :func:`tarot.diagnostics.selection_diagnostics` (target coverage, uncovered target clusters, effective
        sample size of the weights, overlap with ``topk_mean`` and random) to ``diagnostics["selection"]``.
    weighting : bool
        Potential weighting (spec §10): repeat counts ``weights`` with Σ = ``total_repeats`` (default 2n) and at least
        ``min_repeats`` each; ``beta`` is the mirror step, ``max_weight_ratio`` an optional clip.
        ``diagnostics["weighted_ot"]`` is OT_ε of the realised counts r_i/Σr (what training samples; when every
        count is the same, that measure is the uniform one and its value is ``ot_distance``, marked by
        ``diagnostics["weighted_ot_is_uniform"]``, without a second solve);
        ``weighted_ot_continuous`` that of the continuous weights before rounding, measured as
        ``measure_continuous`` says: ``"always"``, ``"never"``, or ``"auto"`` (default) = when the problem is small
        enough for the dense solver (n·M ≤ 2 million; beyond, it would cost one more full OT solve and is reported
        as None with the reason in ``diagnostics["weighted_ot_continuous_skipped"]``).
    merge_targets, target_repeats : bool, int
        Record that the target samples join the training set, each ``target_repeats`` times.
    target_groups, candidate_sources, candidate_ids : list, optional
        Subtask labels of targets (``less``), source labels and ids of candidates (composition in reports).
    **options
        Selector options (e.g. ``fill_rounds`` for fixed_size; ``folds``, ``patience``, ``max_depth`` for otm),
        defined with their bounds and help by the method's class in :mod:`tarot.options` (e.g.
        :class:`~tarot.options.FixedSizeOptions`): an option the method does not take raises ``ValueError`` listing
        the valid ones, text values (from YAML or the CLI) are converted to the option's type, and values out of
        bounds are refused. The stage arguments above are checked the same way
        (:class:`~tarot.options.WhiteningOptions`, :class:`~tarot.options.OTOptions`,
        :class:`~tarot.options.WeightingOptions`).

    Returns
    -------
    SelectionResult
        Its ``config`` holds every resolved option (``selector_options`` has all of the method's options, given or
        default), saved as ``config.json`` by :meth:`~tarot.result.SelectionResult.save`.
    """
    t0 = time.perf_counter()
    if method not in SELECTORS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(SELECTORS)}")
    options = check_options(method, options)  # a misspelt, mistyped or out-of-bounds option is an error
    stages = _stage_options(ridge=ridge, fit_on=fit_on, eps=eps, ot_tol=ot_tol, ot_value_tol=ot_value_tol, beta=beta,
                            total_repeats=total_repeats, min_repeats=min_repeats, max_weight_ratio=max_weight_ratio,
                            measure_continuous=measure_continuous)
    if weighting and method in SELF_WEIGHTED:
        raise ValueError(f"method {method!r} weights its samples itself (draw counts); use weighting=False")
    if space not in SCORE_SPACES:
        raise ValueError(f"space must be one of {SCORE_SPACES}, got {space!r}")
    data = _inputs(candidates, targets, candidate_sources=candidate_sources, candidate_ids=candidate_ids,
                   target_groups=target_groups)
    candidates, targets = data.candidates, data.targets
    N, M = candidates.shape[0], targets.shape[0]
    budget = _budget(ratio, n, N, method)
    ot: OTOptions = stages["ot"]  # type: ignore[assignment]
    wopt: WeightingOptions = stages["weighting"]  # type: ignore[assignment]

    diagnostics: dict[str, Any] = {}
    raw: tuple[Any, Any] = (candidates, targets)
    if method == "less":
        raw, options, diagnostics["less"] = _less_features(data, options)
    if whiten_features:
        wh: WhiteningOptions = stages["whitening"]  # type: ignore[assignment]
        Zc, Zt, whitener = whiten(candidates, targets, ridge=wh.ridge, fit_on=wh.fit_on)
        diagnostics["whitening"] = whitener.diagnostics
    else:
        Zc, Zt = as_unit_rows(candidates), as_unit_rows(targets)  # no copy of rows that are unit already
    t_whiten = time.perf_counter()

    sel = _run_selector(method, budget, raw=raw, whitened=(Zc, Zt), whitened_space=whiten_features,
                        space=space, shared=dict(seed=seed, eps=ot.eps, ot_tol=ot.ot_tol,
                                                 ot_value_tol=ot.ot_value_tol, progress=progress,
                                                 target_groups=data.target_groups), options=options)
    diagnostics.update(sel.diagnostics)
    idx = np.asarray(sel.indices, dtype=np.int64)
    release_freed_memory()  # the selector's temporaries, before the OT stage allocates its own
    t_select = time.perf_counter()

    measured = _ot_and_weights(Zc[idx], Zt, sel.counts, ot=ot, weighting=wopt if weighting else None,
                               warm=_warm_rows(sel, idx, Zt.shape[0]),
                               compute_ot=compute_ot, progress=progress)
    diagnostics.update(measured.diagnostics)
    if diagnose and len(idx):
        diagnostics["selection"] = selection_diagnostics(Zc, Zt, idx, measured.weights, seed=seed,
                                                         nearest=sel.nearest,
                                                         nearest_target=_nearest_targets(measured.products))
    measured.products = None  # the cache (up to 1 GiB) is not kept past this point
    t_end = time.perf_counter()
    diagnostics["timing_s"] = {"whiten": t_whiten - t0, "select": t_select - t_whiten, "ot_and_weights":
                               t_end - t_select, "total": t_end - t0}

    weights = measured.weights
    config = {
        "method": method, "ratio": ratio if ratio is not None else ("auto" if method == "otm" else None),
        "n": budget, "seed": seed, "whiten": whiten_features, **stages["whitening"].as_dict(), "space": space,
        **ot.as_dict(), "weighting": weighting, **wopt.as_dict(),
        "total_repeats": (None if weights is None else int(weights.sum())),
        "merge_targets": merge_targets, "target_repeats": target_repeats,
        "selector_options": resolve_options(method, options),  # every option of the method, given or default
        "n_candidates": N, "n_targets": M, "dim": int(candidates.shape[1]), "store": data.store_path,
        "versions": {"tarot": __version__, "numpy": np.__version__, "python": platform.python_version()},
    }
    return SelectionResult(
        indices=idx,
        method=method,
        n_candidates=N,
        ratio=len(idx) / N,
        ot_distance=measured.value,
        weights=weights,
        probabilities=measured.probabilities,
        potentials=measured.potentials,
        scores=sel.scores,
        config=config,
        diagnostics=diagnostics,
        candidate_ids=data.candidate_ids,
        candidate_sources=data.candidate_sources,
        merged_targets=M if merge_targets else 0,
        target_repeats=target_repeats,
    )


# ---------------------------------------------------------------------------------------------- the steps of select
def _stage_options(**values: Any) -> dict[str, Options]:
    """The stage arguments of :func:`select`, each checked by its options class (bounds, choices, types)."""
    out = {}
    for stage, cls in STAGE_OPTIONS.items():
        mine = {k: v for k, v in values.items() if k in cls.specs()}
        out[stage] = cls.from_mapping(mine)
    return out


@dataclass
class _Inputs:
    candidates: np.ndarray
    targets: np.ndarray
    candidate_sources: list | None
    candidate_ids: list | None
    target_groups: list | None
    store_path: str | None
    store: Any = None


def _inputs(candidates: Any, targets: Any, *, candidate_sources: list | None, candidate_ids: list | None,
            target_groups: list | None) -> _Inputs:
    """Features and labels from a FeatureStore or from arrays, checked: float [N, k] and [M, k], finite, labels of
    the right lengths."""
    store_path, store = None, None
    if hasattr(candidates, "features") and not isinstance(candidates, np.ndarray):
        store = candidates
        if targets is not None:
            raise ValueError("pass either a FeatureStore or candidate and target arrays, not both")
        data = _from_store(candidates)
        store_path = data["store_path"]
        candidates, targets = data["candidates"], data["targets"]
        candidate_sources = candidate_sources if candidate_sources is not None else data["candidate_sources"]
        candidate_ids = candidate_ids if candidate_ids is not None else data["candidate_ids"]
        target_groups = target_groups if target_groups is not None else data["target_groups"]
    if targets is None:
        raise ValueError("targets are required when candidates is an array")
    check_float_features(candidates, "candidate features")
    check_float_features(targets, "target features")
    if candidates.ndim != 2 or targets.ndim != 2 or candidates.shape[1] != targets.shape[1]:
        raise ValueError(f"features must be [N, k] and [M, k]; got {candidates.shape} and {targets.shape}")
    where = f" of store {store_path}" if store_path else ""
    check_finite(candidates, f"candidate features{where}")  # whitened or not: NaNs never reach a selection
    check_finite(targets, f"target features{where}")
    N, M = candidates.shape[0], targets.shape[0]
    if N == 0 or M == 0:
        raise ValueError(f"need at least one candidate and one target, got N={N}, M={M}")
    for name, labels, size in (("candidate_sources", candidate_sources, N), ("candidate_ids", candidate_ids, N),
                               ("target_groups", target_groups, M)):
        if labels is not None and len(labels) != size:
            raise ValueError(f"{name} has {len(labels)} entries, expected {size}")
    return _Inputs(candidates, targets, candidate_sources, candidate_ids, target_groups, store_path, store)


def _less_features(data: _Inputs, options: dict[str, Any]) -> tuple[tuple[Any, Any], dict[str, Any], dict[str, Any]]:
    """LESS's inputs: the per-checkpoint features of a store when it kept them (with the checkpoints' weights,
    unless ``checkpoint_weights`` is given), else the summed features as one checkpoint; and what was used."""
    getter = getattr(data.store, "checkpoint_features", None)
    per_ck = None
    if getter is not None:
        cands, tgts = getter("candidate"), getter("target")
        if cands is not None and tgts is not None:
            per_ck = (cands, tgts)
    if per_ck is None:
        if data.store is not None:
            log.warning("less: the store kept no per-checkpoint features (featurize with keep_partials=True), so "
                        "LESS runs on the summed features as one checkpoint (no per-checkpoint normalisation)")
        return (data.candidates, data.targets), options, {
            "per_checkpoint": False, "checkpoints": 1,
            "features": "summed features as one checkpoint (rows L2-normalised; no per-checkpoint normalisation)"}
    for name, arrays in (("candidate", per_ck[0]), ("target", per_ck[1])):
        for ci, arr in enumerate(arrays):
            check_finite(arr, f"{name} features of checkpoint {ci} of store {data.store_path}")
    options = dict(options)
    if options.get("checkpoint_weights") is None:
        options["checkpoint_weights"] = data.store.checkpoint_weights()
    return per_ck, options, {"per_checkpoint": True, "checkpoints": len(per_ck[0]),
                             "checkpoint_weights": [float(w) for w in options["checkpoint_weights"]],
                             "features": "per-checkpoint features, rows L2-normalised per checkpoint"}


def _run_selector(method: str, budget: int | None, *, raw: tuple[np.ndarray, np.ndarray],
                  whitened: tuple[np.ndarray, np.ndarray], whitened_space: bool, space: str,
                  shared: dict[str, Any], options: dict[str, Any]) -> Selection:
    """Call the method's selector in its feature space with the shared arguments it takes and its options."""
    selector = SELECTORS[method]
    takes = inspect.signature(selector).parameters
    kwargs = {k: v for k, v in shared.items() if k in takes}
    if method == "less":  # LESS normalises raw (per-checkpoint) features itself
        features = raw
    elif method == "topk_mean" and space == "raw":
        features = whitened if not whitened_space else (unit_rows(raw[0]), unit_rows(raw[1]))  # unit rows once
    else:
        features = whitened
    return selector(*features, budget, **kwargs, **options)


@dataclass
class _Measured:
    value: float | None = None
    potentials: np.ndarray | None = None
    weights: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    products: Products | None = None  # the selection's products with the targets, when the sparse solves kept them


def _nearest_targets(products: Products | None) -> np.ndarray | None:
    """Every selected row's nearest target (argmax of its products; ties: lower index) from a complete cache."""
    if products is None or not products.complete:
        return None
    return torch.argmax(products.rows(slice(0, products.n)), dim=1).numpy().astype(np.int64)


def _warm_rows(sel: Any, idx: np.ndarray, m: int) -> tuple[np.ndarray, Any] | None:
    """(positions in the sorted selection of the selector's warm row order, its OT result), when the selector's last
    solve covers a prefix of the selection in that order (see ``Selection.warm``) and the problem is large enough
    for the sparse solver (smaller ones start from exact duals anyway; :func:`tarot.ot.warm_start` refuses a
    previous solve that does not fit)."""
    if sel.warm is None or len(idx) * m <= SPARSE_MIN_ENTRIES:
        return None
    rows, prev = sel.warm
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) != len(idx) or prev is None:
        return None
    return np.searchsorted(idx, rows), prev


def _ot_and_weights(S: np.ndarray, T: np.ndarray, counts: np.ndarray | None, *, ot: OTOptions,
                    weighting: WeightingOptions | None, compute_ot: bool,
                    warm: tuple[np.ndarray, Any] | None = None, progress: bool = False) -> _Measured:
    r"""OT_ε(uniform on the selection, targets) with its potentials, and the repeat counts: the selector's own draw
    counts (``tsds``) or potential weights :math:`a_i \propto e^{-\beta \tilde f_i}` rounded to integers."""
    out = _Measured()
    # the sparse solves of this selection (uniform, re-weighted) share one cache of its products with the targets,
    # which the diagnostics' nearest targets read too (measured at 20,000 x 5,000: the re-weighted solve 6.7 -> 5.5 s)
    out.products = Products(S, T, cache_bytes_default()) if S.shape[0] * T.shape[0] > SPARSE_MIN_ENTRIES else None

    def solve(a: np.ndarray | None = None):
        # a re-weighted problem starts afresh: from the uniform problem's potentials the sparse solve wandered
        # (measured on 5,000 x 5,000: 74 s and a wrong value; cold 5.6 s; again at 20,000 x 5,000 with potential
        # weights, from the uniform potentials and support: 22-49 s against 5.5 s), and reusing its support without
        # them was slower than a new one (20,000 x 5,000: 34 s against 25 s)
        return entropic_ot(S, T, a=a, eps=ot.eps, tol=ot.ot_tol, value_tol=ot.ot_value_tol, progress=progress,
                           products=out.products)

    def weighted_value(repeats: np.ndarray) -> float:
        """OT_ε of the measure r / Σr; equal repeat counts give the uniform measure, whose value is known."""
        if out.value is not None and len(repeats) and np.all(repeats == repeats[0]):
            out.diagnostics["weighted_ot_is_uniform"] = True  # one full solve fewer (the same problem)
            return out.value
        return solve(repeats / repeats.sum()).value

    if compute_ot or weighting is not None:
        if warm is None:
            res = solve()
            out.potentials = res.f
        else:  # the selector's last solve covers most rows: extend its potentials and support, then reorder
            pos, prev = warm
            X = S[pos]  # the selection's rows in the warm order
            res = entropic_ot(X, T, eps=ot.eps, tol=ot.ot_tol, value_tol=ot.ot_value_tol, progress=progress,
                              init=warm_start(prev, X, T, eps=ot.eps), support=getattr(prev, "support", None))
            out.potentials = np.empty_like(res.f)
            out.potentials[pos] = res.f
        out.value = res.value
        out.diagnostics["ot"] = {**res.diagnostics(), "warm_started": warm is not None}
        # a re-weighted solve starts afresh (see solve): the support and kernel of this one need not stay alive
        # through it (at 1M x 10k a support of 7.1M pairs; measured, the stage's peak above the selection's rows
        # fell 2.36 -> 2.03 GB)
        del res
    if counts is not None:  # the selector sampled with replacement: its draw counts are the repeat counts
        out.weights = np.asarray(counts, dtype=np.int64)
        out.probabilities = out.weights / out.weights.sum()
        out.diagnostics["weighted_ot"] = weighted_value(out.weights)
    if weighting is not None:
        assert out.potentials is not None  # solved above whenever weights are asked for
        probs = potential_weights(out.potentials, beta=weighting.beta, max_ratio=weighting.max_weight_ratio)
        out.weights = repeat_counts(probs, total=weighting.total_repeats, min_repeats=weighting.min_repeats)
        out.probabilities = probs
        # the measure training really samples: realised repeat counts r_i / Σ r (not the continuous a_i)
        out.diagnostics["weighted_ot"] = weighted_value(out.weights)
        pairs = S.shape[0] * T.shape[0]
        if weighting.measure_continuous == "always" or (weighting.measure_continuous == "auto"
                                                        and pairs <= SPARSE_MIN_ENTRIES):
            out.diagnostics["weighted_ot_continuous"] = solve(probs).value
        else:
            out.diagnostics["weighted_ot_continuous"] = None
            out.diagnostics["weighted_ot_continuous_skipped"] = (
                f"measure_continuous={weighting.measure_continuous!r}" if weighting.measure_continuous == "never"
                else f"{pairs:,} pairs > {SPARSE_MIN_ENTRIES:,}: one more full OT solve (measure_continuous='always' "
                "measures it)")
    return out
