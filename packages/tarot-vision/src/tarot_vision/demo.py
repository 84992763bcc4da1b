"""Embedded real-data demo: targeted selection from a heterogeneous pool of real images (``tarot-vision demo``).

Scenario (configurable in ``configs/demo.yaml``):

* real images: scikit-learn's handwritten digits (always installed) or Fashion-MNIST (Debian ``dataset-fashion-mnist``);
* the images are split into a *pool side* and a *target side* (disjoint images);
* **candidate pool**: every pool-side image of every class, each under one random shift — clean, noisy, rotated by
  90° or inverted. Candidates of the non-target classes are labelled ``other_classes``;
* **target**: a small, multimodal set from the target side — target classes only, 60 % inverted and 40 % rotated —
  and a disjoint held-out target test set drawn the same way;
* a small CNN is warmed up on the whole pool; its epoch checkpoints are featurised (projected per-sample loss
  gradients, summed) with tarot-core; selections are made with the baselines ``random``, ``topk_mean``, ``less``
  (maximum over the target shifts), ``round_robin`` and ``tsds`` at one budget (``select.baselines``), TAROT
  ``fixed_size`` at several ratios and ``otm``, and the same selectors on penultimate-layer embeddings; every
  selection (with its repeat weights) trains a fresh, seeded model for the same number of steps, alone and with the
  target set merged in (``select.merged_rows``), beside the whole pool and the target set alone; accuracy on the
  held-out target test set is reported as mean ± std over seeds, and the verdict compares every TAROT row with every
  other row by a paired two-level bootstrap (:func:`tarot.method_verdict`).

Everything that selects, whitens, transports or projects is tarot-core's.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset
from tqdm.auto import tqdm

from .cls_data import load_demo_source
from .cls_models import (
    ClassificationLoss,
    ImageClassDataset,
    accuracy,
    build_classifier,
    embedding_dim,
    penultimate,
    predict_logits,
    train_classifier,
)

log = logging.getLogger(__name__)

MARKER = "tarot-vision-demo.json"
SHIFTS = ("clean", "noisy", "rotated", "inverted")

#: Overrides applied by ``--quick`` (a tiny run for tests: two seeds, small sets, few steps).
QUICK = {
    "seeds": [0, 1],
    "scenario": {"pool_size": 400, "target_size": 40, "test_size": 150},
    "warmup": {"epochs": 2},
    "featurize": {"proj_dim": 128},
    "train": {"steps": 40},
}


def apply_shift(images: np.ndarray, shifts: np.ndarray, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    """Apply a named shift per image (uint8 [N, C, H, W]): clean, noisy, rotated (90°), inverted."""
    out = images.copy()
    for name in np.unique(shifts):
        sel = shifts == name
        if name == "clean":
            continue
        if name == "noisy":
            noise = rng.normal(0.0, noise_std * 255.0, size=out[sel].shape)
            out[sel] = np.clip(out[sel].astype(np.float64) + noise, 0, 255).astype(np.uint8)
        elif name == "rotated":
            out[sel] = np.rot90(out[sel], k=1, axes=(2, 3))
        elif name == "inverted":
            out[sel] = 255 - out[sel]
        else:
            raise ValueError(f"unknown shift {str(name)!r}; expected one of {SHIFTS}")
    return out


def downsample(images: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average uint8 [N, C, H, W] images so that the longer side is at most ``max_side`` (CPU budget)."""
    h, w = images.shape[-2:]
    if max(h, w) <= max_side:
        return images
    size = (max(1, round(h * max_side / max(h, w))), max(1, round(w * max_side / max(h, w))))
    x = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(images).float(), size)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def _draw(rng: np.random.Generator, weights: dict[str, float], n: int, what: str) -> np.ndarray:
    names = list(weights)
    p = np.asarray([float(weights[k]) for k in names])
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"{what}: shift proportions must be non-negative and not all zero, got {weights}")
    return np.asarray(names)[rng.choice(len(names), size=n, p=p / p.sum())]


@dataclass
class Scenario:
    """One seed's candidate pool, target set and held-out target test set."""

    pool: ImageClassDataset
    pool_sources: list[str]
    target: ImageClassDataset
    target_sources: list[str]
    test: ImageClassDataset
    test_sources: list[str]
    in_channels: int


def build_scenario(images: np.ndarray, labels: np.ndarray, sc: dict[str, Any], seed: int) -> Scenario:
    """Split real images into a shifted heterogeneous pool and a multimodal target/test set (see module doc)."""
    rng = np.random.default_rng([seed, 7])
    n = len(labels)
    perm = rng.permutation(n)
    n_target_side = int(round(float(sc["target_fraction"]) * n))
    target_side, pool_side = perm[:n_target_side], perm[n_target_side:]
    if sc.get("pool_size"):
        pool_side = pool_side[: int(sc["pool_size"])]
    classes = np.asarray(sc["target_classes"], dtype=np.int64)
    pool_shift = _draw(rng, sc["pool_shifts"], len(pool_side), "scenario.pool_shifts")
    pool_x = apply_shift(downsample(images[pool_side], int(sc["max_side"])), pool_shift, rng, float(sc["noise_std"]))
    pool_y = labels[pool_side]
    on_task = np.isin(pool_y, classes)
    pool_sources = [str(s) if t else "other_classes" for s, t in zip(pool_shift, on_task)]
    target_side = target_side[np.isin(labels[target_side], classes)]
    need = int(sc["target_size"]) + 10
    if len(target_side) < need:
        raise ValueError(f"scenario: only {len(target_side)} target-side images of the target classes, need >= {need}")
    t_shift = _draw(rng, sc["target_shifts"], len(target_side), "scenario.target_shifts")
    t_x = apply_shift(downsample(images[target_side], int(sc["max_side"])), t_shift, rng, float(sc["noise_std"]))
    t_y = labels[target_side]
    k = int(sc["target_size"])
    end = k + int(sc["test_size"]) if sc.get("test_size") else len(t_y)
    return Scenario(
        pool=ImageClassDataset(pool_x, pool_y),
        pool_sources=pool_sources,
        target=ImageClassDataset(t_x[:k], t_y[:k]),
        target_sources=[str(s) for s in t_shift[:k]],
        test=ImageClassDataset(t_x[k:end], t_y[k:end]),
        test_sources=[str(s) for s in t_shift[k:end]],
        in_channels=images.shape[1],
    )


def method_specs(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The compared selections: label, tarot.select arguments."""
    sel = cfg["select"]
    r = float(sel["baseline_ratio"])
    known = ("random", "topk_mean", "less", "round_robin", "tsds")
    bad = [b for b in sel["baselines"] if b not in known]
    if bad:
        raise ValueError(f"select.baselines: unknown selector(s) {bad}; expected some of {list(known)}")
    # baselines at the same budget; less scores by target group (the target shifts); tsds weights by its own draws
    specs = [{"label": f"{b} {r:.0%}", "method": b, "ratio": r, "weighting": False} for b in sel["baselines"]]
    for fr in sel["fixed_ratios"]:
        specs.append(
            {
                "label": f"TAROT fixed_size {float(fr):.0%}",
                "method": "fixed_size",
                "ratio": float(fr),
                "weighting": bool(sel["weighting"]),
            }
        )
    specs.append({"label": "TAROT otm (auto)", "method": "otm", "ratio": "auto", "weighting": bool(sel["weighting"])})
    if sel["embedding_rows"]:  # the same selectors on the warm-up model's penultimate-layer embeddings (baselines)
        specs += [
            {"label": f"embeddings topk_mean {r:.0%}", "method": "topk_mean", "ratio": r, "weighting": False},
            {"label": f"embeddings fixed_size {r:.0%}", "method": "fixed_size", "ratio": r,
             "weighting": bool(sel["weighting"])},
            {"label": "embeddings otm (auto)", "method": "otm", "ratio": "auto", "weighting": bool(sel["weighting"])},
        ]
        for s in specs[-3:]:
            s["features"] = "embeddings"
    return specs


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FileExistsError(
            f"{out}: exists, is not empty and is not a tarot-vision demo folder; choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    for child in out.iterdir():  # only what an earlier demo run wrote
        if child.is_dir() and (child.name.startswith("seed_") or child.name == "report"):
            shutil.rmtree(child)
    for name in ("results.json", "results.csv", "COMPLETE"):
        (out / name).unlink(missing_ok=True)
    (out / MARKER).write_text(json.dumps({"what": "tarot-vision demo output folder"}) + "\n")


@contextlib.contextmanager
def summarised_ot_warnings(where: str, counts: dict[str, int]) -> Iterator[None]:
    """Collect tarot-core's "entropic OT did not reach tol" warnings into one log line (others pass through)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    n = 0
    for w in caught:
        if "did not reach tol" in str(w.message):
            n += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    counts[where] = n
    if n:
        log.warning(
            "%s: %d entropic OT solves stopped before their tolerance (tarot-core reports those values as "
            "not converged)",
            where,
            n,
        )


def _train_eval(scn: Scenario, train_ds, cfg: dict[str, Any], seed: int, num_classes: int) -> dict[str, Any]:
    from tarot.app.device import pick_device

    torch.manual_seed(seed)  # init = scratch, seeded (never the featurisation model; algorithm.md B8)
    model = build_classifier(cfg["model"]["arch"], num_classes, scn.in_channels, cfg["model"]["width"])
    tr = cfg["train"]
    train_classifier(
        model,
        train_ds,
        epochs=1,
        batch_size=int(tr["batch_size"]),
        lr=float(tr["lr"]),
        seed=seed,
        augment_shift=int(tr["augment_shift"]),
        max_steps=int(tr["steps"]),
        device=pick_device(cfg["device"]),
    )
    logits = predict_logits(model, scn.test)
    correct = (logits.argmax(1) == scn.test.y).numpy().astype(np.float64)
    out: dict[str, Any] = {"target_acc": float(correct.mean()), "correct": correct.tolist()}
    src = np.asarray(scn.test_sources)
    for mode in sorted(set(scn.test_sources)):
        out[f"acc_{mode}"] = accuracy(model, scn.test.subset(np.flatnonzero(src == mode)))
    return out


def run_seed(images, labels, cfg: dict[str, Any], seed: int, out: Path, progress: bool) -> dict[str, Any]:
    """One seed: scenario, warm-up, featurisation, all selections, retraining and evaluation."""
    import tarot
    from tarot import Checkpoint, WeightedSubset, featurize_to_store, gradient_featurizer
    from tarot.app.device import pick_device

    device = pick_device(cfg["device"])
    t0 = time.perf_counter()
    scn = build_scenario(images, labels, cfg["scenario"], seed)
    num_classes = int(labels.max()) + 1
    on_target = {str(k) for k in cfg["scenario"]["target_shifts"]}
    seed_dir = out / f"seed_{seed}"
    # warm-up on the whole pool; every epoch's checkpoint is featurised
    torch.manual_seed(10_000 + seed)
    model = build_classifier(cfg["model"]["arch"], num_classes, scn.in_channels, cfg["model"]["width"])
    wu = cfg["warmup"]
    epochs = int(wu["epochs"])
    states = train_classifier(
        model,
        scn.pool,
        epochs=epochs,
        batch_size=int(wu["batch_size"]),
        lr=float(wu["lr"]),
        seed=10_000 + seed,
        checkpoint_epochs=range(1, epochs + 1),
        progress=progress,
        desc=f"seed {seed} warm-up",
        device=device,
    )
    warm_acc = accuracy(model, scn.test)
    t_warm = time.perf_counter()
    fz = cfg["featurize"]
    feat = gradient_featurizer(
        model,
        ClassificationLoss(),
        proj_dim=int(fz["proj_dim"]),
        seed=seed,
        projector=fz["projector"],
        params=fz["params"],
        factor_dim=int(fz["factor_dim"]),
        device=device,
    )
    ckpts = [Checkpoint(name=f"epoch{e}", state_dict=states[e]) for e in sorted(states)]
    store = featurize_to_store(
        feat,
        {"candidate": scn.pool, "target": scn.target},
        seed_dir / "features",
        checkpoints=ckpts,
        batch_size=int(fz["batch_size"]),
        sources={"candidate": scn.pool_sources, "target": scn.target_sources},
        groups={"target": scn.target_sources},
        progress=progress,
    )
    emb_store = None
    if cfg["select"]["embedding_rows"]:  # the "embeddings + same selectors" baselines: final warm-up model
        efeat = tarot.EmbeddingFeaturizer(model, penultimate, dim=embedding_dim(model), device=device)
        emb_store = featurize_to_store(
            efeat, {"candidate": scn.pool, "target": scn.target}, seed_dir / "embeddings",
            checkpoints=[Checkpoint(name=f"epoch{epochs}", state_dict=states[epochs])],
            batch_size=int(fz["batch_size"]), sources={"candidate": scn.pool_sources, "target": scn.target_sources},
            progress=progress)
    t_feat = time.perf_counter()
    rows = []
    results = {}
    ot_warnings: dict[str, int] = {}
    on_mask = np.asarray([s in on_target for s in scn.pool_sources])  # other classes are "other_classes"
    for spec in tqdm(method_specs(cfg), desc=f"seed {seed} select + retrain", disable=not progress):
        features = emb_store if spec.get("features") == "embeddings" else store
        with summarised_ot_warnings(f"seed {seed} {spec['label']}", ot_warnings):
            res = tarot.select(
                features,
                method=spec["method"],
                seed=seed,
                weighting=spec["weighting"],
                eps=float(cfg["select"]["eps"]),
                ridge=cfg["select"]["ridge"],
                ratio=spec["ratio"],
                progress=False,
            )
        res.save(seed_dir / "selections" / spec.get("features", "gradients") / spec["method"] / str(spec["ratio"]))
        results[spec["label"]] = res
        counts = res.repeat_counts()
        selected = WeightedSubset(scn.pool, res)
        variants: list[tuple[str, Dataset, bool]] = [(spec["label"], selected, False)]
        # what a practitioner would do: train on the selection plus the targets
        if cfg["select"]["merged_rows"] and spec.get("features") != "embeddings":
            variants.append((f"{spec['label']} + targets", ConcatDataset([selected, scn.target]), True))
        for label, train_ds, merged in variants:
            rows.append(
                {
                    "label": label,
                    "method": spec["method"],
                    "features": spec.get("features", "gradients"),
                    "budget": spec["ratio"],
                    "merged_targets": len(scn.target) if merged else 0,
                    "n": int(res.size),
                    "ratio": float(res.size / len(scn.pool)),
                    "on_target_share": float(on_mask[res.indices].mean()) if res.size else 0.0,
                    "on_target_share_weighted": float((on_mask[res.indices] * counts).sum() / max(1, counts.sum())),
                    "ot_distance": None if res.ot_distance is None else float(res.ot_distance),
                    "weighted_ot_distance": res.diagnostics.get("weighted_ot"),
                    **_train_eval(scn, train_ds, cfg, seed, num_classes),
                }
            )
    full = _train_eval(scn, scn.pool, cfg, seed, num_classes)
    rows.append(
        {
            "label": "full pool (100%)",
            "method": "full",
            "budget": 1.0,
            "merged_targets": 0,
            "n": len(scn.pool),
            "ratio": 1.0,
            "on_target_share": float(on_mask.mean()),
            "on_target_share_weighted": float(on_mask.mean()),
            "ot_distance": None,
            **full,
        }
    )
    tgt = _train_eval(scn, scn.target, cfg, seed, num_classes)
    rows.append(
        {
            "label": "target set only",
            "method": "target_only",
            "budget": None,
            "merged_targets": len(scn.target),
            "n": len(scn.target),
            "ratio": 0.0,
            "on_target_share": 1.0,
            "on_target_share_weighted": 1.0,
            "ot_distance": None,
            **tgt,
        }
    )
    t_end = time.perf_counter()
    info = {
        "seed": seed,
        "pool": len(scn.pool),
        "target": len(scn.target),
        "test": len(scn.test),
        "pool_composition": {str(k): int(v) for k, v in zip(*np.unique(scn.pool_sources, return_counts=True))},
        "warmup_target_acc": warm_acc,
        "train_init": "scratch (seeded per seed)",
        "ot_solves_not_converged": {k: v for k, v in ot_warnings.items() if v},
        "timing_s": {"warmup": t_warm - t0, "featurize": t_feat - t_warm, "select_train_eval": t_end - t_feat},
    }
    return {"rows": rows, "info": info, "results": results, "store": store, "scenario": scn}


def _aggregate(per_seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    labels = [r["label"] for r in per_seed[0]["rows"]]
    table = []
    for label in labels:
        rs = [next(r for r in s["rows"] if r["label"] == label) for s in per_seed]
        acc = np.asarray([r["target_acc"] for r in rs])
        row = {
            "label": label,
            "method": rs[0]["method"],
            "features": rs[0].get("features", "gradients"),
            "budget": rs[0]["budget"],
            "seeds": len(rs),
            "n_mean": float(np.mean([r["n"] for r in rs])),
            "ratio_mean": float(np.mean([r["ratio"] for r in rs])),
            "on_target_share": float(np.mean([r["on_target_share"] for r in rs])),
            "on_target_share_weighted": float(np.mean([r["on_target_share_weighted"] for r in rs])),
            "acc_mean": float(acc.mean()),
            "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "acc_per_seed": acc.tolist(),
        }
        ots = [r["ot_distance"] for r in rs if r["ot_distance"] is not None]
        row["ot_mean"] = float(np.mean(ots)) if ots else None
        row["merged_targets"] = rs[0].get("merged_targets", 0)
        for key in rs[0]:
            if key.startswith("acc_"):
                row[key + "_mean"] = float(np.mean([r[key] for r in rs]))
        table.append(row)
    return table


def _fmt(r: dict[str, Any]) -> str:
    return f"{r['acc_mean']:.3f} ± {r['acc_std']:.3f}"


def is_tarot_row(row: dict[str, Any]) -> bool:
    """TAROT rows: fixed_size and otm selections on gradient features, alone or with the targets merged in (the same
    selectors on embeddings are baselines)."""
    return row["method"] in ("fixed_size", "otm") and row.get("features", "gradients") == "gradients"


def comparisons(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`tarot.method_verdict` on held-out target accuracy: every TAROT row against every other row (random,
    topk_mean, their merged variants, the full pool and the target set alone), paired by seed and test image."""
    import tarot

    labels = [r["label"] for r in per_seed[0]["rows"]]
    scores = {lb: [next(r for r in s["rows"] if r["label"] == lb)["correct"] for s in per_seed] for lb in labels}
    methods = [r["label"] for r in per_seed[0]["rows"] if is_tarot_row(r)]
    baselines = [lb for lb in labels if lb not in methods]
    return tarot.method_verdict(scores, methods, baselines, "held-out target accuracy", higher_is_better=True)


def verdict(table: list[dict[str, Any]], comp: dict[str, Any] | None = None) -> str:
    """The computed verdict (``comp`` from :func:`comparisons`) followed by plain notes on the table: OTM's chosen
    ratio and the best rows."""
    out = [] if comp is None else [comp["text"].rstrip(".")]
    tarot_rows = [r for r in table if is_tarot_row(r)]
    if tarot_rows:
        best = max(tarot_rows, key=lambda r: r["acc_mean"])
        out.append(f"best TAROT row: {best['label']} ({_fmt(best)}, {best['ratio_mean']:.0%} of the pool)")
        others = [r for r in table if not is_tarot_row(r)]
        if others:
            top = max(others, key=lambda r: r["acc_mean"])
            out.append(f"best other row: {top['label']} ({_fmt(top)})")
    for r in table:
        if r["method"] == "otm" and not r.get("merged_targets") and is_tarot_row(r):
            out.append(f"OTM chose {r['ratio_mean']:.0%} of the pool ({_fmt(r)})")
    return "; ".join(out) + "."


def _plot_png(table: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    y = np.arange(len(table))
    colors = ["#1f77b4" if r["label"].startswith("TAROT") else "#999999" for r in table]
    ax.barh(y, [r["acc_mean"] for r in table], xerr=[r["acc_std"] for r in table], color=colors, capsize=3)
    ax.set_yticks(y, [r["label"] for r in table])
    ax.invert_yaxis()
    ax.set_xlabel("held-out target accuracy (mean ± std over seeds)")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _html_table(rows: list[list[str]], header: list[str]) -> str:
    from html import escape

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table border="1" cellpadding="4"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _comparison_html(comp: dict[str, Any]) -> str:
    rows = [[c["method"], c["baseline"], f"{c['mean']:+.3f}", f"{c['low']:+.3f} … {c['high']:+.3f}", c["verdict"]]
            for c in comp["comparisons"]]
    return ("<p>Paired differences in held-out target accuracy (TAROT row − baseline), two-level bootstrap over "
            f"seeds and test images, {100 * comp['confidence']:g} % intervals:</p>"
            + _html_table(rows, ["TAROT row", "baseline", "difference", "interval", "verdict"]))


def _report_sections(table, per_seed, cfg, source_name: str, elapsed: float,
                     comp: dict[str, Any]) -> list[tuple[str, str]]:
    from html import escape

    rows = [
        [
            r["label"],
            f"{r['n_mean']:.0f}",
            f"{r['ratio_mean']:.1%}",
            f"{r['on_target_share']:.1%}",
            f"{r['on_target_share_weighted']:.1%}",
            f"{r['acc_mean']:.3f} ± {r['acc_std']:.3f}",
            *(f"{r.get(f'acc_{m}_mean', float('nan')):.3f}" for m in cfg["scenario"]["target_shifts"]),
            "-" if r["ot_mean"] is None else f"{r['ot_mean']:.3f}",
        ]
        for r in table
    ]
    header = [
        "selection",
        "n",
        "ratio",
        "on-target share",
        "on-target share (weighted)",
        "target accuracy (mean ± std)",
        *(f"acc. {m}" for m in cfg["scenario"]["target_shifts"]),
        "OT distance",
    ]
    seeds = [s["info"]["seed"] for s in per_seed]
    seed_notes = "".join(
        f"<li>seed {s['info']['seed']}: pool {s['info']['pool']} ({s['info']['pool_composition']}), target "
        f"{s['info']['target']}, held-out test {s['info']['test']}; warm-up model's target accuracy "
        f"{s['info']['warmup_target_acc']:.3f}; time {sum(s['info']['timing_s'].values()):.0f} s</li>"
        for s in per_seed
    )
    sc = cfg["scenario"]
    text = (
        f"<p><b>Verdict:</b> {escape(verdict(table, comp))}</p>"
        f"<p>Data: real images from <b>{source_name}</b>. Target task: classes {sc['target_classes']} under the "
        f"shifts {sc['target_shifts']} (multimodal). Candidate pool: all classes under {sc['pool_shifts']}; "
        f"candidates outside the target classes are labelled <i>other_classes</i>. 'On-target share' = fraction "
        f"of the selection whose class and shift match the target (inverted/rotated target-class images). "
        f"Every selection trains a fresh seeded {cfg['model']['arch']} for {cfg['train']['steps']} steps "
        f"(batch {cfg['train']['batch_size']}), sampling each selected image in proportion to its repeat weight; "
        f"accuracy is measured on held-out target images never used for selection. Seeds: {seeds} "
        f"(std with ddof=1). Total wall time {elapsed:.0f} s.</p><ul>{seed_notes}</ul>"
    )
    img = f'<img alt="accuracy per selection" src="data:image/png;base64,{_plot_png(table)}">'
    return [("Does TAROT win? Held-out target accuracy", text + _html_table(rows, header) + img
             + _comparison_html(comp))]


def _examples_section(first: dict[str, Any], shown: str, cfg: dict[str, Any], per_row: int = 6) -> tuple[str, str]:
    """The report's "What was selected": for the first seed, example images of every source in the shown TAROT
    selection and in the random baseline at the same budget, beside the target set, closest to the target first."""
    import tarot
    from tarot.app.report import examples_by_source

    from .figures import selection_examples_figure

    scn: Scenario = first["scenario"]
    pool_x = scn.pool.x.numpy()
    labels = list(scn.pool_sources)
    pool_n = {s: labels.count(s) for s in set(labels)}
    sim = np.asarray(tarot.select(first["store"], method="topk_mean", ratio=1.0, progress=False).scores)
    ratio = float(cfg["select"]["baseline_ratio"])
    columns: dict[str, dict[str, tuple[list[np.ndarray], str]]] = {}
    for name in (shown, f"random {ratio:.0%}"):
        res = first["results"].get(name)
        if res is None:
            continue
        picked = examples_by_source(res, sim, per_source=per_row, sources=labels)
        taken = res.composition(labels)
        columns[name] = {src: ([pool_x[i] for i in idx], f"{taken[src]} of {pool_n[src]} selected")
                         for src, idx in picked.items()}
    tsrc = np.asarray(scn.target_sources)
    columns["target set"] = {str(src): ([scn.target.x[i].numpy() for i in np.flatnonzero(tsrc == src)[:per_row]],
                                        f"{int((tsrc == src).sum())} target images")
                             for src in sorted(set(scn.target_sources))}
    for src in pool_n:
        columns["target set"].setdefault(src, ([], "not in the target"))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        png_bytes = selection_examples_figure(columns, Path(tmp) / "examples.png", per_row=per_row).read_bytes()
    text = (f"<p>Seed {first['info']['seed']}: up to {per_row} images of every pool source in <b>{shown}</b> and in "
            f"the random baseline at the same budget ({ratio:.0%}), and the target set's images per target shift. "
            "Within a source, the images closest to the target come first (tarot's topk_mean score, the mean cosine "
            "of the whitened gradient feature to the target features). Each caption gives how many of that source's "
            "pool images the selection took. Sources: the shift of a target-class image, or <i>other_classes</i>."
            "</p>")
    img = (f'<img alt="example images per source" src="data:image/png;base64,'
           f'{base64.b64encode(png_bytes).decode()}">')
    return "What was selected", text + img


def run_demo(cfg: dict[str, Any], out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run the demo for every seed and write ``results.json``, ``results.csv`` and ``report/index.html``.

    ``COMPLETE`` is written last; a run that stops early leaves no ``COMPLETE`` and no report.
    """
    import tarot

    from .config import save_resolved

    t0 = time.perf_counter()
    out = Path(out)
    seeds = [int(s) for s in cfg["seeds"]]
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    _prepare_out(out)
    save_resolved(cfg, out, "demo")
    source_name, images, labels, _ = load_demo_source(cfg["dataset"], cfg["fashion_mnist_root"])
    log.info("demo data: %s, %d images", source_name, len(labels))
    per_seed = [run_seed(images, labels, cfg, s, out, progress) for s in seeds]
    table = _aggregate(per_seed)
    comp = comparisons(per_seed)
    elapsed = time.perf_counter() - t0
    doc = {
        "dataset": source_name,
        "seeds": seeds,
        "table": table,
        "verdict": verdict(table, comp),
        "comparisons": comp,
        "per_seed": [{"info": s["info"], "rows": s["rows"]} for s in per_seed],
        "wall_time_s": elapsed,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    csv = ["label,n_mean,ratio_mean,on_target_share,acc_mean,acc_std"]
    csv += [
        f"{r['label']},{r['n_mean']:.1f},{r['ratio_mean']:.4f},{r['on_target_share']:.4f},{r['acc_mean']:.4f},"
        f"{r['acc_std']:.4f}"
        for r in table
    ]
    (out / "results.csv").write_text("\n".join(csv) + "\n")
    first = per_seed[0]
    shown = next(label for label in first["results"] if label.startswith("TAROT fixed_size"))
    ratio = float(cfg["select"]["baseline_ratio"])
    shown = next((lb for lb in first["results"] if lb == f"TAROT fixed_size {ratio:.0%}"), shown)
    report = tarot.write_report(
        first["results"][shown],
        out / "report",
        store=first["store"],
        title=f"{cfg['report']['title']} ({source_name}; plots: seed {seeds[0]}, {shown})",
        lead_sections=[*_report_sections(table, per_seed, cfg, source_name, elapsed, comp),
                       _examples_section(first, shown, cfg)],
        seed=seeds[0],
    )
    (out / "COMPLETE").write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    return {"table": table, "report": report, "verdict": doc["verdict"], "comparisons": comp,
            "dataset": source_name, "wall_time_s": elapsed}
