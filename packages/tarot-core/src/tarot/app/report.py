"""HTML report of a :class:`~tarot.result.SelectionResult`.

:func:`write_report` writes ``index.html``, ``report.json`` and a few PNG plots into one directory:

* OTM distance versus neighbourhood depth, one curve per fold (OTM results only);
* a 2-D map (PCA by default, t-SNE on request when scikit-learn is installed) of candidates, targets and the
  selection, computed on whitened features when a whitening can be fitted;
* the per-source composition of the selection next to that of the candidate pool;
* histograms of per-candidate scores (selected vs. not selected) and of the repeat weights.

The report only reads the result: every array it plots is a copy, so reporting can never change the weights a training
run will use (reference defect B7 of the spec). Sections whose data are missing are left out with a short note. The
page is self-contained (relative links to the PNG files next to it) and every piece of text is HTML-escaped, except
the ``extra_sections`` bodies, which callers pass as ready-made HTML.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tarot.app.config import plain
from tarot.features.store import StoreError
from tarot.result import SelectionResult

__all__ = ["write_report", "html_table"]

MAX_MAP_POINTS = 5000
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
p.note { color: #8a5a00; background: #fff8e5; padding: .4em .7em; border-left: 3px solid #e0a800; }
p.caption { color: #555; font-size: .9em; }
"""


# --------------------------------------------------------------------------------------------- small helpers
def _fmt(value: Any) -> str:
    """Human-readable text for one table cell."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not np.isfinite(v):
            return str(v)
        return f"{v:.5g}"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        if not value:
            return "none"
        if len(value) > 12:
            return f"list of {len(value)} items"
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(plain(value), sort_keys=True)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def html_table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """Render rows as an HTML table with escaped cells.

    Parameters
    ----------
    rows : sequence of sequences
        Table body; cells are formatted (numbers rounded, ``None`` as a dash) and escaped.
    header : sequence of str, optional
        Column headings.

    Returns
    -------
    str
        The ``<table>`` element; domain packages can pass it to :func:`write_report` as an extra section.
    """
    out = ["<table>"]
    if header is not None:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for cell in row:
            cls = ' class="num"' if _is_number(cell) else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def examples_by_source(result: SelectionResult, scores: np.ndarray | None = None, per_source: int = 3,
                       sources: Sequence[Any] | None = None) -> dict[str, list[int]]:
    """A few selected candidates of every source, for a report to show (instructions, images, …).

    Parameters
    ----------
    result : SelectionResult
        The selection; only its ``indices`` are used.
    scores : numpy.ndarray, optional
        Per-candidate scores (length N); each source's examples are its selected candidates with the highest scores
        (ties: lower index). Default: ``result.scores`` when the selector kept them, else the lowest indices.
    per_source : int
        Largest number of examples per source.
    sources : sequence, optional
        Per-candidate labels (length N); default ``result.candidate_sources`` (without labels, one source ``"all"``).

    Returns
    -------
    dict
        ``{source: [candidate index, ...]}`` for every source with at least one selected candidate, sources sorted.
    """
    n = result.n_candidates
    labels = list(sources) if sources is not None else result.candidate_sources
    if labels is not None and len(labels) != n:
        raise ValueError(f"sources has {len(labels)} labels for {n} candidates")
    s = scores if scores is not None else result.scores
    if s is not None and np.shape(s) != (n,):
        raise ValueError(f"scores has shape {np.shape(s)}, expected ({n},)")
    groups: dict[str, list[int]] = {}
    for i in result.indices.tolist():
        groups.setdefault("all" if labels is None else str(labels[i]), []).append(int(i))
    key = (lambda i: (-float(s[i]), i)) if s is not None else (lambda i: (0.0, i))
    return {src: sorted(idx, key=key)[: max(0, int(per_source))] for src, idx in sorted(groups.items())}


def _flatten(mapping: dict, prefix: str = "", skip: Sequence[str] = ()) -> list[tuple[str, Any]]:
    """Flatten nested dicts into (dotted key, value) rows, leaving out keys listed in ``skip`` (top level)."""
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if not prefix and key in skip:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, prefix=f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------------------ sections
def _otm_section(result: SelectionResult, out: Path) -> tuple[str, dict]:
    """Distance-vs-depth curves per fold; returns (html, json info)."""
    otm = result.diagnostics.get("otm") if isinstance(result.diagnostics, dict) else None
    folds = otm.get("folds") if isinstance(otm, dict) else None
    if not folds:
        return _note("No OTM curves: this result has no diagnostics['otm']['folds'] (not an OTM selection)."), {}
    required = ("depths", "values")
    usable = [f for f in folds if isinstance(f, dict) and all(len(f.get(k) or []) > 0 for k in required)]
    if not usable:
        return _note("No OTM curves: the OTM fold diagnostics hold no (depth, value) points."), {}
    plt = _pyplot()
    has_sizes = any(len(f.get("sizes") or []) == len(f["depths"]) for f in usable)
    fig, axes = plt.subplots(1, 2 if has_sizes else 1, figsize=(11 if has_sizes else 6.5, 4.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    rows = []
    for k, fold in enumerate(usable):
        depths = np.asarray(fold["depths"], dtype=float)
        values = np.asarray(fold["values"], dtype=float)
        n = min(len(depths), len(values))
        depths, values = depths[:n], values[:n]
        color = cmap(k % 10)
        label = f"fold {fold.get('fold', k)}"
        axes[0, 0].plot(depths, values, "-o", ms=3, color=color, label=label)
        best = fold.get("best_depth")
        if best is not None and best in depths:
            j = int(np.flatnonzero(depths == best)[0])
            axes[0, 0].plot([depths[j]], [values[j]], "*", ms=12, color=color, markeredgecolor="k")
        sizes = fold.get("sizes") or []
        if has_sizes and len(sizes) >= n:
            axes[0, 1].plot(depths, np.asarray(sizes[:n], dtype=float), "-o", ms=3, color=color, label=label)
        best_size = None
        if best is not None and len(sizes) >= n and best in depths:
            best_size = sizes[int(np.flatnonzero(depths == best)[0])]
        rows.append((fold.get("fold", k), best, best_size, float(np.min(values)), int(depths.max())))
    from matplotlib.ticker import MaxNLocator

    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_xlabel("neighbourhood depth d")
    axes[0, 0].set_ylabel("OT distance to held-out targets")
    axes[0, 0].set_title("OTM: OT distance vs depth (★ = kept depth)")
    if len(usable) <= 12:
        axes[0, 0].legend(fontsize=7, ncol=2)
    if has_sizes:
        axes[0, 1].set_xlabel("neighbourhood depth d")
        axes[0, 1].set_ylabel("|C_d| (candidates in the neighbourhood)")
        axes[0, 1].set_title("Neighbourhood size vs depth")
    _figure(fig, out / "otm_curves.png")
    body = (
        '<img src="otm_curves.png" alt="OTM distance versus depth per fold">'
        '<p class="caption">Each fold selects from the neighbourhoods of 1/K of the targets and evaluates the OT '
        "distance to the other targets; the kept depth is the argmin of its curve.</p>"
        + html_table(rows, ["fold", "kept depth", "|C| at kept depth", "min OT distance", "max depth tried"])
    )
    return body, {"plot": "otm_curves.png", "folds": len(usable)}


def _whitening_section(result: SelectionResult, out: Path) -> tuple[str, dict]:
    """Eigenvalue spectrum of the fit covariance with the ridge the selection used, and the numbers behind it."""
    w = result.diagnostics.get("whitening") if isinstance(result.diagnostics, dict) else None
    if not isinstance(w, dict):
        return _note("No whitening diagnostics: this selection did not whiten its features."), {}
    keys = (("ridge_rule", "rule"), ("ridge_requested", "requested ridge"), ("ridge_used", "relative ridge λ used"),
            ("shrinkage_equivalent", "equivalent shrinkage ρ = λ/(1+λ)"), ("df", "effective dimension df(λ)"),
            ("df_target", "df target (√n)"), ("effective_rank", "effective rank (tr Σ)²/tr Σ²"),
            ("n_fit", "fit rows n"), ("dim", "dimensions k"), ("rows_per_dim", "rows per dimension"),
            ("shrinkage", "shrinkage of the rule"), ("fit_on", "fit set"))
    rows = [(label, w[k]) for k, label in keys if k in w]
    body = html_table(rows, ["quantity", "value"])
    ev = w.get("eigenvalues")
    info: dict = {}
    if ev:
        e = np.clip(np.asarray(ev, dtype=float), 1e-300, None)
        mean = float(np.mean(e))
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        ax.semilogy(np.arange(1, len(e) + 1), e / mean, "-", lw=1.5, label="eigenvalues of Σ / mean eigenvalue")
        if w.get("ridge_used"):
            ax.axhline(float(w["ridge_used"]), color="C3", ls="--", label=f"ridge λ = {float(w['ridge_used']):.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("rank")
        ax.set_ylabel("eigenvalue / mean eigenvalue")
        ax.set_title("Whitening: directions above the ridge are whitened")
        ax.legend(fontsize=8)
        _figure(fig, out / "whitening_spectrum.png")
        body = ('<img src="whitening_spectrum.png" alt="eigenvalue spectrum of the whitening covariance">'
                '<p class="caption">Directions whose eigenvalue lies well above the dashed ridge are whitened '
                "(scaled to unit variance); those below keep a common scale instead of being amplified. df(λ) = "
                "Σ e_i/(e_i + λē) counts the whitened directions.</p>" + body)
        info = {"plot": "whitening_spectrum.png"}
    return body, info


def _selection_section(result: SelectionResult) -> tuple[str, dict]:
    """Coverage, uncovered target clusters, weight concentration and overlap (tarot.diagnostics)."""
    d = result.diagnostics.get("selection") if isinstance(result.diagnostics, dict) else None
    if not isinstance(d, dict):
        return _note("No selection diagnostics in this result (select with diagnose=True)."), {}
    cov, cl, wt, ov = d.get("target_coverage", {}), d.get("clusters", {}), d.get("weights", {}), d.get("overlap", {})
    rows = [
        ("targets whose nearest candidate is as close as their nearest other target",
         cov.get("fraction_covered_by_pool")),
        ("targets with a candidate of positive whitened cosine", cov.get("fraction_positive")),
        ("median cosine of a target's nearest candidate", cov.get("nearest_candidate_cosine_median")),
        ("median cosine of a target's nearest other target", cov.get("nearest_other_target_cosine_median")),
        ("OT distance, uniform on the selection", result.ot_distance),
        ("OT distance, realised repeat counts", result.diagnostics.get("weighted_ot")),
        ("effective sample size of the repeat counts", wt.get("effective_sample_size")),
        ("… as a fraction of the selection", wt.get("ess_fraction")),
        ("shared with topk_mean of the same size", (ov.get("topk_mean") or {}).get("shared_fraction")),
        ("shared with a random selection of the same size", (ov.get("random") or {}).get("shared_fraction")),
        ("expected share with random (n/N)", ov.get("random_expected_fraction")),
        ("target clusters left uncovered", ", ".join(map(str, cl.get("uncovered", []))) or "none"),
    ]
    groups = [(g["cluster"], g["targets"], g["target_share"], g["selection_share"]) for g in cl.get("groups", [])]
    body = (html_table([r for r in rows if r[1] is not None], ["diagnostic", "value"])
            + f"<p>Target clusters (k-means on the whitened targets, {cl.get('n_clusters')} groups); a selected "
            "candidate counts for the cluster of its nearest target; 'uncovered' = at least 5 % of the targets but "
            "less than a quarter of that share of the selection:</p>"
            + html_table(groups, ["cluster", "targets", "target share", "selection share (by repeat counts)"]))
    return body, {"uncovered_clusters": cl.get("uncovered", [])}


def _store_get(store: Any, attr: str, split: str) -> tuple[Any, str | None]:
    """``store.<attr>(split)``, or (None, reason) when the split is missing or the store is incomplete."""
    try:
        return getattr(store, attr)(split), None
    except (KeyError, FileNotFoundError, ValueError, StoreError) as exc:
        return None, str(exc)


def _load_features(
    store: Any, candidates: np.ndarray | None, targets: np.ndarray | None
) -> tuple[Any, Any, str | None]:
    """Return (candidate features, target features, note) from arrays or a feature store."""
    if candidates is None and store is not None:
        candidates, problem = _store_get(store, "features", "candidate")
        if problem:
            return None, None, f"No 2-D map: the store's candidate features are unavailable ({problem})."
    if targets is None and store is not None:
        targets, _ = _store_get(store, "features", "target")
    if candidates is None:
        return None, None, "No 2-D map: no candidate features were given (pass store= or candidates=)."
    return candidates, targets, None


def _subsample(
    n_cand: int, n_tgt: int, selected: np.ndarray, max_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pick candidate and target rows for the map, at most ``max_points`` in total.

    Targets get up to a third of the budget; selected and unselected candidates share the rest in proportion to their
    counts, with at least a quarter of it reserved for the selection so that small selections stay visible.
    """
    tgt_budget = min(n_tgt, max_points // 3) if n_tgt else 0
    cand_budget = max_points - tgt_budget
    tgt_rows = np.sort(rng.choice(n_tgt, size=tgt_budget, replace=False)) if tgt_budget < n_tgt else np.arange(n_tgt)
    if n_cand <= cand_budget:
        return np.arange(n_cand), tgt_rows
    mask = np.zeros(n_cand, dtype=bool)
    mask[selected] = True
    sel, unsel = np.flatnonzero(mask), np.flatnonzero(~mask)
    n_sel = min(len(sel), max(int(round(cand_budget * len(sel) / n_cand)), cand_budget // 4))
    n_unsel = min(len(unsel), cand_budget - n_sel)
    rows = np.concatenate(
        [rng.choice(sel, size=n_sel, replace=False), rng.choice(unsel, size=n_unsel, replace=False)]
    )
    return np.sort(rows), tgt_rows


def _whiten_for_map(
    cand: np.ndarray, tgt: np.ndarray | None, config: dict
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Whiten the map points like the selection did (spec §4), fitted on the plotted points themselves.

    Returns the transformed points and a phrase describing the feature space. The selection's ``whiten``, ``ridge``
    and ``fit_on`` settings are followed; without whitening (or with a fixed ridge and fewer than 2·k plotted rows,
    too few for a covariance estimate) the rows are only L2-normalised.
    """
    from tarot.geometry.whitening import Whitener

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    if config.get("whiten") is False:
        return unit(cand), None if tgt is None else unit(tgt), "L2-normalised (the selection did not whiten)"
    fit_on = config.get("fit_on", "both")
    fit = {"candidates": cand, "targets": tgt}.get(fit_on)
    if fit is None:
        fit = cand if tgt is None else np.concatenate([cand, tgt])
    ridge = config.get("ridge", "auto")
    ridge = ridge if isinstance(ridge, str) else float(ridge)
    if isinstance(ridge, float) and len(fit) < 2 * cand.shape[1]:
        return (unit(cand), None if tgt is None else unit(tgt),
                f"L2-normalised (too few plotted rows, {len(fit)}, to whiten {cand.shape[1]} dimensions with a fixed "
                f"ridge)")
    try:
        whitener = Whitener.fit(fit, ridge=ridge)
    except (ValueError, np.linalg.LinAlgError) as exc:
        return unit(cand), None if tgt is None else unit(tgt), f"L2-normalised (whitening failed: {exc})"
    cw = whitener.transform(cand, dtype=np.float64)
    tw = None if tgt is None else whitener.transform(tgt, dtype=np.float64)
    return cw, tw, "whitened"


def _embed(points: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
    """2-D embedding by PCA (numpy SVD) or t-SNE (scikit-learn)."""
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            method = "pca"
        else:
            perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3.0)))
            tsne = TSNE(n_components=2, random_state=seed, init="pca", perplexity=perplexity)
            return tsne.fit_transform(points), "t-SNE"
    centred = points - points.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:2]
    emb = centred @ comps.T
    if emb.shape[1] < 2:
        emb = np.hstack([emb, np.zeros((len(emb), 2 - emb.shape[1]))])
    return emb, "PCA"


def _map_section(
    result: SelectionResult,
    out: Path,
    store: Any,
    candidates: np.ndarray | None,
    targets: np.ndarray | None,
    embedding: str,
    max_points: int,
    seed: int,
) -> tuple[str, dict]:
    cand, tgt, note = _load_features(store, candidates, targets)
    if note:
        return _note(note), {}
    if cand.ndim != 2 or cand.shape[0] != result.n_candidates:
        return _note(
            f"No 2-D map: candidate features have shape {tuple(cand.shape)}, expected ({result.n_candidates}, d)."
        ), {}
    if tgt is not None and (tgt.ndim != 2 or tgt.shape[1] != cand.shape[1]):
        return _note(f"No 2-D map: target features have shape {tuple(tgt.shape)}, expected (M, {cand.shape[1]})."), {}
    rng = np.random.default_rng(seed)
    n_tgt = 0 if tgt is None else int(tgt.shape[0])
    cand_rows, tgt_rows = _subsample(result.n_candidates, n_tgt, result.indices, max_points, rng)
    c = np.asarray(cand[cand_rows], dtype=np.float64)
    t = None if tgt is None else np.asarray(tgt[tgt_rows], dtype=np.float64)
    c, t, space = _whiten_for_map(c, t, result.config or {})
    whitened = space == "whitened"
    pts = c if t is None else np.concatenate([c, t])
    emb, used = _embed(pts, embedding, seed)
    ec, et = emb[: len(c)], emb[len(c) :]
    chosen = np.isin(cand_rows, result.indices)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6.2))
    ax.scatter(ec[~chosen, 0], ec[~chosen, 1], s=5, c="#b8b8b8", alpha=0.5, label="candidates (not selected)")
    ax.scatter(ec[chosen, 0], ec[chosen, 1], s=7, c="#1f77b4", alpha=0.7, label="selected")
    if t is not None:
        ax.scatter(et[:, 0], et[:, 1], s=18, c="#d62728", marker="x", linewidths=0.9, label="targets")
    ax.set_title(f"{used} of {'whitened' if whitened else 'L2-normalised'} features")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="best", markerscale=2)
    _figure(fig, out / "map.png")
    caption = (
        f"{used} map of {len(cand_rows):,} of {result.n_candidates:,} candidates "
        f"({int(chosen.sum()):,} of them selected) and {len(tgt_rows):,} of {n_tgt:,} targets "
        f"(seeded subsample, seed {seed}); features {space}."
    )
    if embedding == "tsne" and used != "t-SNE":
        caption += " t-SNE was requested but scikit-learn is not installed; PCA was used instead."
    body = (
        '<img src="map.png" alt="2-D map of candidates, targets and selection">'
        f'<p class="caption">{html.escape(caption)}</p>'
    )
    info = {"plot": "map.png", "embedding": used, "whitened": whitened, "points": int(len(pts))}
    return body, info


def _composition_section(result: SelectionResult, out: Path, store: Any) -> tuple[str, dict]:
    sources = result.candidate_sources
    if sources is None and store is not None:
        sources, _ = _store_get(store, "sources", "candidate")
    if sources is None:
        return _note("No composition: the candidate pool has no source labels."), {}
    sources = [str(s) for s in sources]
    if len(sources) != result.n_candidates:
        return _note(f"No composition: {len(sources)} source labels for {result.n_candidates} candidates."), {}
    selected = result.composition(sources)
    pool: dict[str, int] = {}
    for label in sources:
        pool[label] = pool.get(label, 0) + 1
    labels = sorted(pool)
    n_sel = max(result.size, 1)
    weighted: dict[str, int] = {}
    if result.weights is not None:
        w = np.array(result.weights, dtype=np.int64, copy=True)
        for i, r in zip(result.indices.tolist(), w.tolist()):
            weighted[sources[i]] = weighted.get(sources[i], 0) + int(r)
    total_w = max(sum(weighted.values()), 1)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(labels) + 3), 4.2))
    x = np.arange(len(labels))
    width = 0.27 if weighted else 0.4
    ax.bar(x - width, [pool[k] / result.n_candidates for k in labels], width, label="pool", color="#b8b8b8")
    ax.bar(x, [selected.get(k, 0) / n_sel for k in labels], width, label="selection", color="#1f77b4")
    if weighted:
        ax.bar(x + width, [weighted.get(k, 0) / total_w for k in labels], width, label="selection, weighted",
               color="#ff7f0e")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.set_ylabel("share")
    ax.set_title("Per-source composition")
    ax.legend(fontsize=8)
    _figure(fig, out / "composition.png")
    rows = []
    for k in labels:
        row = [k, pool[k], pool[k] / result.n_candidates, selected.get(k, 0), selected.get(k, 0) / n_sel,
               selected.get(k, 0) / pool[k]]
        if weighted:
            row.append(weighted.get(k, 0) / total_w)
        rows.append(row)
    header = ["source", "pool", "pool share", "selected", "selection share", "fraction of source kept"]
    if weighted:
        header.append("weighted share")
    body = '<img src="composition.png" alt="per-source composition">' + html_table(rows, header)
    return body, {"plot": "composition.png", "pool": pool, "selected": selected, "weighted": weighted or None}


def _histogram_section(result: SelectionResult, out: Path) -> tuple[str, dict]:
    parts, info = [], {}
    plt = _pyplot()
    if result.scores is not None:
        scores = np.array(result.scores, dtype=np.float64, copy=True)
        mask = np.zeros(result.n_candidates, dtype=bool)
        mask[result.indices] = True
        finite = np.isfinite(scores)
        fig, ax = plt.subplots(figsize=(7, 3.8))
        bins = np.histogram_bin_edges(scores[finite], bins=60) if finite.any() else 10
        ax.hist(scores[finite & ~mask], bins=bins, alpha=0.6, color="#b8b8b8", label="not selected")
        ax.hist(scores[finite & mask], bins=bins, alpha=0.8, color="#1f77b4", label="selected")
        ax.set_xlabel(f"{result.method} score")
        ax.set_ylabel("candidates")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.set_title("Score distribution")
        _figure(fig, out / "scores.png")
        parts.append('<img src="scores.png" alt="score histogram">')
        info["scores_plot"] = "scores.png"
    else:
        parts.append(_note("No score histogram: this selector does not produce per-candidate scores."))
    if result.weights is not None:
        w = np.array(result.weights, dtype=np.int64, copy=True)
        counts = np.bincount(w)
        fig, ax = plt.subplots(figsize=(7, 3.4))
        ax.bar(np.arange(len(counts)), counts, color="#ff7f0e")
        ax.set_xlabel("repeat count r_i")
        ax.set_ylabel("selected candidates")
        ax.set_title(f"Repeat weights: Σr = {int(w.sum()):,} over {len(w):,} selected")
        _figure(fig, out / "weights.png")
        parts.append('<img src="weights.png" alt="weights histogram">')
        parts.append(
            html_table(
                [[int(w.min()) if len(w) else None, float(w.mean()) if len(w) else None,
                  int(w.max()) if len(w) else None, int(w.sum())]],
                ["min r", "mean r", "max r", "Σ r"],
            )
        )
        info["weights_plot"] = "weights.png"
    else:
        parts.append(_note("No weights histogram: the selection is unweighted."))
    return "\n".join(parts), info


# ------------------------------------------------------------------------------------------------ front door
def write_report(
    result: SelectionResult,
    out_dir: str | os.PathLike,
    store: Any = None,
    candidates: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    title: str | None = None,
    extra_sections: Sequence[tuple[str, str]] | None = None,
    seed: int = 0,
    embedding: str = "pca",
    max_points: int = MAX_MAP_POINTS,
    lead_sections: Sequence[tuple[str, str]] | None = None,
    attachments: Mapping[str, str | os.PathLike] | None = None,
) -> Path:
    """Write an HTML report of a selection.

    Parameters
    ----------
    result : SelectionResult
        The selection to describe. It is only read; its arrays are never modified.
    out_dir : path-like
        Directory receiving ``index.html``, ``report.json`` and the PNG plots (created if missing; files of an
        earlier report there are replaced). The files are first rendered into a temporary directory, so a failure
        leaves no half-written report.
    store : FeatureStore, optional
        Source of candidate/target features (for the 2-D map) and candidate source labels.
    candidates, targets : numpy.ndarray, optional
        Feature arrays ``[N, k]`` and ``[M, k]``; they take precedence over ``store``.
    title : str, optional
        Page title; defaults to ``"TAROT selection report: <method>"``.
    extra_sections : sequence of (heading, html), optional
        Additional sections appended after the built-in ones. Headings are escaped; bodies are inserted as HTML
        (use :func:`html_table` to build tables).
    seed : int
        Seed of the map's subsample and of t-SNE.
    embedding : {"pca", "tsne"}
        2-D map method. ``"tsne"`` needs scikit-learn and falls back to PCA (with a note) without it.
    max_points : int
        Largest number of points drawn in the map (candidates and targets together).
    lead_sections : sequence of (heading, html), optional
        Like ``extra_sections`` but placed first, before the summary (e.g. the downstream verdict of a demo).
    attachments : mapping of file name to path, optional
        Files copied into the report folder under the given plain names (e.g. a domain's figures that a given
        section shows with ``<img src="name.png">``). A missing file is an error before anything is written.

    Returns
    -------
    pathlib.Path
        Path of the written ``index.html``.
    """
    if not isinstance(result, SelectionResult):
        raise TypeError(f"write_report expects a SelectionResult, got {type(result).__name__}")
    if embedding not in ("pca", "tsne"):
        raise ValueError(f"embedding must be 'pca' or 'tsne', got {embedding!r}")
    if max_points < 10:
        raise ValueError(f"max_points must be at least 10, got {max_points}")
    files = {str(k): Path(v) for k, v in (attachments or {}).items()}
    for name, src in files.items():
        if Path(name).name != name or name in ("index.html", "report.json"):
            raise ValueError(f"attachment name {name!r}: expected a plain file name other than index.html/report.json")
        if not src.is_file():
            raise FileNotFoundError(f"{src}: attachment {name!r} not found")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.report-", dir=out.parent))
    try:
        page, meta = _render(result, tmp, store, candidates, targets, title, extra_sections, seed, embedding,
                             max_points, lead_sections)
        for name, src in files.items():
            shutil.copyfile(src, tmp / name)
        meta["attachments"] = sorted(files)
        (tmp / "index.html").write_text(page, encoding="utf-8")
        (tmp / "report.json").write_text(json.dumps(plain(meta), indent=2) + "\n", encoding="utf-8")
        out.mkdir(parents=True, exist_ok=True)
        for old in ("otm_curves.png", "map.png", "composition.png", "scores.png", "weights.png"):
            if (out / old).exists() and not (tmp / old).exists():
                (out / old).unlink()
        for produced in sorted(tmp.iterdir()):
            os.replace(produced, out / produced.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "index.html"


def _add_given_sections(sections: list, meta: dict, given: Sequence[tuple[str, str]] | None, name: str) -> None:
    """Append caller-made (heading, html) sections, recorded as ``"extra"`` in ``report.json``."""
    for item in given or ():
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"{name} items must be (heading, html) pairs, got {item!r}")
        sections.append((str(item[0]), str(item[1])))
        meta["sections"][str(item[0])] = "extra"


def _render(
    result: SelectionResult,
    out: Path,
    store: Any,
    candidates: np.ndarray | None,
    targets: np.ndarray | None,
    title: str | None,
    extra_sections: Sequence[tuple[str, str]] | None,
    seed: int,
    embedding: str,
    max_points: int,
    lead_sections: Sequence[tuple[str, str]] | None = None,
) -> tuple[str, dict]:
    title = title or f"TAROT selection report: {result.method}"
    summary = result.summary()
    sections: list[tuple[str, str]] = []
    meta: dict[str, Any] = {"title": title, "summary": summary, "sections": {}}

    _add_given_sections(sections, meta, lead_sections, "lead_sections")
    summary_rows = [(k, v) for k, v in summary.items() if k != "composition"]
    sections.append(("Summary", html_table(summary_rows, ["quantity", "value"])))

    for heading, builder in (
        ("OTM: distance vs depth", lambda: _otm_section(result, out)),
        ("2-D map", lambda: _map_section(result, out, store, candidates, targets, embedding, max_points, seed)),
        ("Source composition", lambda: _composition_section(result, out, store)),
        ("Scores and weights", lambda: _histogram_section(result, out)),
        ("Whitening", lambda: _whitening_section(result, out)),
        ("Selection diagnostics", lambda: _selection_section(result)),
    ):
        body, info = builder()
        sections.append((heading, body))
        meta["sections"][heading] = info or None

    config_rows = _flatten(result.config) if result.config else []
    sections.append((
        "Resolved configuration",
        html_table(config_rows, ["key", "value"]) if config_rows else _note("The result records no configuration."),
    ))
    diag_rows = _flatten(result.diagnostics, skip=("otm", "selection")) if result.diagnostics else []
    diag_rows = [(k, v) for k, v in diag_rows if k != "whitening.eigenvalues"]  # plotted in "Whitening"
    otm = result.diagnostics.get("otm") if isinstance(result.diagnostics, dict) else None
    if isinstance(otm, dict):
        diag_rows = [(f"otm.{k}", v) for k, v in otm.items() if k != "folds"] + diag_rows
    sections.append((
        "Diagnostics",
        html_table(diag_rows, ["key", "value"]) if diag_rows else _note("The result records no diagnostics."),
    ))
    _add_given_sections(sections, meta, extra_sections, "extra_sections")

    page_parts = [f"<h1>{html.escape(title)}</h1>"]
    page_parts.append(
        "<p>" + html.escape(
            f"{result.size:,} of {result.n_candidates:,} candidates selected by {result.method} "
            f"(ratio {_fmt(result.ratio)}, OT distance {_fmt(result.ot_distance)})."
        ) + "</p>"
    )
    toc = "".join(f'<li><a href="#s{i}">{html.escape(h)}</a></li>' for i, (h, _) in enumerate(sections))
    page_parts.append(f"<ul>{toc}</ul>")
    for i, (heading, content) in enumerate(sections):
        page_parts.append(f'<h2 id="s{i}">{html.escape(heading)}</h2>\n{content}')
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(page_parts)
        + "\n</body>\n</html>\n"
    )
    return page, meta
