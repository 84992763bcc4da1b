"""``tarot demo``: the selectors side by side on a built-in synthetic mixture, with an HTML report.

The mixture (:func:`tarot.app.synthetic.make_mixture`) has three target modes with proportions 0.6/0.3/0.1 and an
off-target mode that makes up 40 % of the candidate pool. The demo runs ``random``, ``topk_mean`` and ``fixed_size``
at ratio 0.1 and ``otm`` with ``ratio="auto"`` and potential weighting, saves every result under ``results/<method>``,
and writes one report (``index.html``) for the OTM result with a comparison table of all methods: selection size,
ratio, OT distance to the targets, share of each target mode and off-target share.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tarot.app.report import html_table, write_report

__all__ = ["run_demo", "DEMO_SIZES"]

# make_mixture arguments of the default and the quick demo
DEMO_SIZES: dict[str, dict[str, Any]] = {
    "default": {"n_per_mode": 300, "n_off_target": 600, "n_targets": 200, "dim": 16},
    "quick": {"n_per_mode": 80, "n_off_target": 160, "n_targets": 60, "dim": 8},
}
_RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("random", {"ratio": 0.1}),
    ("topk_mean", {"ratio": 0.1}),
    ("fixed_size", {"ratio": 0.1}),
    ("otm", {"ratio": "auto", "weighting": True}),
)


def plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """The mixture's config as JSON-friendly values (tuples and numpy scalars become lists and floats)."""
    return json.loads(json.dumps(config, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def run_demo(out_dir: str | os.PathLike, quick: bool = False, seed: int = 0, progress: bool = False) -> Path:
    """Run the demo selections and write results and report into ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
        Output directory: ``index.html`` (+ plots, ``report.json``), ``comparison.json``,
        ``results/<method>/`` (saved :class:`~tarot.result.SelectionResult` directories) and ``store/`` (the mixture
        as a :class:`~tarot.features.store.FeatureStore`, for ``tarot select`` / ``tarot report``).
    quick : bool
        Use a small mixture (seconds instead of about a minute).
    seed : int
        Seed of the mixture and of the selectors' random choices.
    progress : bool
        Show the library's progress bars.

    Returns
    -------
    pathlib.Path
        Path of the written ``index.html``.
    """
    import tarot

    out = Path(out_dir)
    sizes = DEMO_SIZES["quick" if quick else "default"]
    mix = tarot.make_mixture(seed=seed, **sizes)
    sources = mix.candidate_sources
    # the mixture as a feature store, so that `tarot select --store <out>/store ...` and `tarot report` work on it next
    tarot.FeatureStore.from_arrays(out / "store", {"candidate": mix.candidates, "target": mix.targets},
                                   sources={"candidate": sources,
                                            "target": [f"mode{m}" for m in mix.target_modes]},
                                   overwrite=True, extra={"synthetic_mixture": plain_config(mix.config)})
    results = {}
    rows: list[list[Any]] = []
    comparison: list[dict[str, Any]] = []
    n_modes = len(mix.proportions)
    for method, kwargs in _RUNS:
        t0 = time.perf_counter()
        res = tarot.select(mix.candidates, mix.targets, method=method, seed=seed, candidate_sources=sources,
                           progress=progress, **kwargs)
        seconds = time.perf_counter() - t0
        res.save(out / "results" / method)
        results[method] = res
        variants: list[tuple[str, np.ndarray | None, float | None]] = [(method, None, res.ot_distance)]
        if res.weights is not None:
            variants.append((f"{method} (weighted)", res.weights, res.diagnostics.get("weighted_ot")))
        for label, weights, ot_value in variants:
            shares = mix.mode_shares(res.indices, weights)
            comparison.append({"method": label, "selected": res.size, "ratio": res.ratio, "ot_distance": ot_value,
                               "shares": shares, "seconds": seconds})
            rows.append([label, res.size, res.ratio, ot_value, *[shares[f"mode{m}"] for m in range(n_modes)],
                         shares["off_target"], seconds])
    target_shares = [float(np.mean(mix.target_modes == m)) for m in range(n_modes)]
    rows.append(["targets", len(mix.targets), None, None, *target_shares, 0.0, None])
    header = ["method", "selected", "ratio", "OT distance", *[f"share mode{m}" for m in range(n_modes)],
              "off-target share", "seconds"]
    intro = (
        f"<p>Synthetic mixture: {len(mix.candidates):,} candidates ({sizes['n_per_mode']} per target mode, "
        f"{sizes['n_off_target']} off-target), {len(mix.targets)} targets with mode proportions "
        f"{', '.join(f'{p:g}' for p in mix.proportions)}, dimension {sizes['dim']}. random, topk_mean and "
        "fixed_size select 10 % of the pool; otm chooses its own ratio. The weighted row uses the OT-potential "
        "repeat counts of the OTM selection. OT distances are between the (uniform or weighted) selection and "
        "the targets in whitened feature space; lower is closer.</p>"
    )
    (out / "comparison.json").write_text(
        json.dumps({"mixture": mix.config, "methods": comparison}, indent=2, default=float) + "\n", encoding="utf-8"
    )
    return write_report(
        results["otm"],
        out,
        candidates=mix.candidates,
        targets=mix.targets,
        title="TAROT demo: OTM selection on a synthetic mixture",
        extra_sections=[("Comparison of selection methods", intro + html_table(rows, header))],
        seed=seed,
    )
