"""``tarot-motion demo``: TAROT on the real Waymo scenarios embedded in ``metadrive-simulator==0.3.0.1``.

Stages (each resumable; rerunning the command continues where it stopped):

1. convert the three legacy MetaDrive pickles (Waymo) and the Argoverse-1 log of the same wheel into two ScenarioNet
   databases (81-step windows, stride 10; the Argoverse log has no map);
2. preprocess (UniTraj-style) into a cache;
3. split: the windows of one scenario form the target domain (its center agents split alternately into a target set,
   which is featurised, and a validation set, which is only evaluated); the windows of the other scenarios are the
   candidate pool together with the Argoverse-1 windows (source label = ``<dataset>/<first 8 characters of the
   scenario or log id>``);
4. warm-up training of AutoBot-Ego on the pool from scratch, keeping two checkpoints;
5. featurise pool and target at both checkpoints with tarot-core's per-sample gradient featurizer;
6. select with tarot-core: random, topk_mean, fixed_size (ratio 0.2) and otm (ratio chosen by OTM);
7. train from scratch on each selection (same optimizer-step budget for every method, several seeds) and on the whole
   pool as a reference; evaluate minADE6/minFDE6/miss rate/brier-FDE on the validation set;
8. write ``report/index.html`` (tarot-core plots + comparison table + per-source composition) and ``results.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .config import load_config, save_config
from .convert import METADRIVE_INSTALL, convert_argoverse1, convert_metadrive, legacy_waymo_files
from .data import MotionDataset, concat_data
from .errors import write_json
from .preprocess import load_cache, preprocess_database, summarize_skips
from .safe_pickle import load_legacy_pickle

METHODS = ("random", "topk_mean", "fixed_size", "otm")
DEMO_BASE: dict[str, Any] = {
    "preprocess": {"object_type": ["VEHICLE", "PEDESTRIAN", "CYCLIST"], "max_num_roads": 32},
    "model": {"hidden_size": 32, "tx_hidden_size": 64, "tx_num_heads": 2, "map_heads": 2, "dropout": 0.0,
              "map_dropout": 0.0},
    "train": {"batch_size": 16, "lr": 5e-3, "max_steps": 100, "milestones": [1000], "eval_batch_size": 64},
    "featurize": {"proj_dim": 256, "batch_size": 16},
    "select": {"ratio": 0.2, "options": {"ridge": 1e-2}},  # few rows per dimension: tarot-core advises ridge 1e-2
}
QUICK: dict[str, Any] = {
    "model": {"hidden_size": 16, "tx_hidden_size": 32, "tx_num_heads": 2, "map_heads": 2, "future_len": 60},
    "preprocess": {"max_num_roads": 8},
    "train": {"batch_size": 16, "max_steps": 2},
    "featurize": {"proj_dim": 32, "batch_size": 8},
    "select": {"options": {"folds": 3}},
}
WARMUP_STEPS = 120
WARMUP_BATCH = 16  # fixed, so that --set train.batch_size=... changes only the runs on the selections


def _claim(path: Path, key: Any) -> None:
    """Resumability guard for a stage folder: record the configuration ``key`` that owns ``path``.

    If ``path`` was made under another key, it is removed first (its partial or finished outputs belong to another
    configuration and must not be resumed or reused). The marker lives beside the folder
    (``.<name>.stage.json``), so stages that replace their folder atomically keep it.
    """
    import shutil

    want = json.dumps(key, sort_keys=True, default=str)
    marker = path.parent / f".{path.name}.stage.json"
    if marker.exists() and marker.read_text() != want and path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(want)
    tmp.replace(marker)


def _deep_update(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in a.items()}
    for k, v in b.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _fmt(vals: list[float]) -> str:
    a = np.asarray(vals, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def run_demo(out: str | Path, seeds: int = 3, quick: bool = False, target_scenario: int = 0,
             overrides: list[str] | None = None, progress: bool = True, log: Any = print,
             threads: int | None = 1) -> dict[str, Any]:
    """Run the embedded real demo end to end; returns the results dict also written to ``out/results.json``.

    ``threads`` sets ``torch.set_num_threads`` (default 1: on a small shared CPU, two intra-op threads competing with
    other processes made training several times slower); None keeps torch's default.
    """
    import tarot
    import torch

    if threads is not None:
        torch.set_num_threads(int(threads))
    from tarot.report import write_report

    from . import pipeline
    from .train import build_model, train_model

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        files = legacy_waymo_files()
    except FileNotFoundError as exc:
        raise SystemExit(f"tarot-motion demo: {exc}\n  install it with: {METADRIVE_INSTALL}") from None
    base = _deep_update(DEMO_BASE, QUICK) if quick else DEMO_BASE
    cfg = load_config(None, overrides, base=base)
    cfg["data"]["cache_dir"] = str(out / "cache")
    warmup_steps = 4 if quick else WARMUP_STEPS
    save_config({**cfg, "demo": {"seeds": seeds, "quick": quick, "target_scenario": target_scenario,
                                 "warmup_steps": warmup_steps, "warmup_batch_size": WARMUP_BATCH, "threads": threads,
                                 "methods": list(METHODS) + ["all_candidates"]}}, out)

    # 1-2. convert + preprocess
    db = out / "data" / "waymo_metadrive"
    if not (db / "dataset_summary.pkl").exists():
        rep = convert_metadrive(db, files=files)
        write_json(out / "data" / "convert_report.json", rep)
        log(f"converted {len(files)} legacy scenarios -> {rep['scenarios']} window scenarios "
            f"({rep['full_window_agents']} fully valid agent windows)")
    av_db = out / "data" / "argoverse1_metadrive"
    if not (av_db / "dataset_summary.pkl").exists():
        rep = convert_argoverse1(av_db)
        write_json(out / "data" / "convert_report_argoverse1.json", rep)
        log(f"converted the Argoverse-1 log -> {rep['scenarios']} window scenarios (no map)")
    parts = []
    for d in (db, av_db):
        part = load_cache(preprocess_database(d, cfg["data"]["cache_dir"], cfg["preprocess"], progress=progress))
        log(summarize_skips(part["index"]))
        parts.append(part)
    data = concat_data(parts)

    # 3. split by original scenario
    scen = np.array([s.rsplit("_s", 1)[0] for s in data["scenario_id"]])
    present = set(scen.tolist())
    order = [sid for sid in (load_legacy_pickle(f)["id"] for f in files) if sid in present]  # file order 0, 1, 2
    tgt_name = order[target_scenario]
    tgt_rows = np.flatnonzero(scen == tgt_name)
    cand_rows = np.flatnonzero(scen != tgt_name)
    agents = sorted(set(data["center_objects_id"][i] for i in tgt_rows))
    val_agents = set(agents[1::2])
    val_rows = np.array([i for i in tgt_rows if data["center_objects_id"][i] in val_agents], dtype=np.int64)
    tgt_rows = np.array([i for i in tgt_rows if data["center_objects_id"][i] not in val_agents], dtype=np.int64)
    if quick:
        cand_rows, tgt_rows, val_rows = cand_rows[::12], tgt_rows[::4], val_rows[::4]
    cand = MotionDataset(data, cand_rows)
    tgt = MotionDataset(data, tgt_rows)
    val = MotionDataset(data, val_rows)
    cand_sources = [f"{data['dataset_name'][i]}/{scen[i][:8]}" for i in cand_rows]  # short labels for plots
    log(f"target scenario {tgt_name}: {len(tgt)} target + {len(val)} validation samples "
        f"({len(agents)} agents); candidate pool {len(cand)} samples from {sorted(set(cand_sources))}")

    # 4. warm-up
    wcfg = {**cfg["train"], "batch_size": WARMUP_BATCH, "max_steps": warmup_steps, "seed": 0, "init": "scratch",
            "checkpoint_every": 1}
    wdir = out / "warmup"
    wkey = {"train": wcfg, "model": cfg["model"], "preprocess": cfg["preprocess"], "n_pool": len(cand)}
    _claim(wdir, wkey)
    save_config({"train": wcfg, "model": cfg["model"]}, wdir)
    wmodel = build_model(cfg["model"], init="scratch", seed=0)
    winfo = train_model(wmodel, cand, wcfg, wdir, progress=progress)
    e = winfo["epochs"]
    ckpts = [wdir / f"epoch{max(1, e // 2)}.pt", wdir / f"epoch{e}.pt"]
    log(f"warm-up: {winfo['steps']} steps, checkpoints {[c.name for c in ckpts]}")

    # 5. featurise
    t0 = time.perf_counter()
    _claim(out / "features", {"warmup": wkey, "featurize": cfg["featurize"], "ckpts": [c.name for c in ckpts],
                              "n_target": len(tgt)})
    store = pipeline.featurize(cfg["model"], cfg["featurize"], ckpts, {"candidate": cand, "target": tgt},
                               out / "features", sources={"candidate": cand_sources, "target": tgt.sources},
                               progress=progress)
    t_feat = time.perf_counter() - t0

    # 6. select
    selections: dict[str, Any] = {}
    for method in METHODS:
        for seed in range(seeds) if method == "random" else [0]:
            key = f"{method}" if method != "random" else f"random_s{seed}"
            sdir = out / "selections" / key
            scfg = {**cfg["select"], "method": method, "seed": seed}
            _claim(sdir, {"select": scfg, "features": cfg["featurize"], "warmup": wkey})
            if (sdir / "result.json").exists():  # SelectionResult.save is atomic
                selections[key] = tarot.SelectionResult.load(str(sdir))
                continue
            selections[key] = pipeline.select(store, scfg, out=sdir, progress=progress)
    # 7. train on each selection + the whole pool, several seeds, same step budget
    runs: dict[str, list[dict[str, Any]]] = {}
    all_sel = tarot.select(store, method="random", ratio=1.0, seed=0, compute_ot=True, progress=False)
    for name in list(METHODS) + ["all_candidates"]:
        runs[name] = []
        for seed in range(seeds):
            res = all_sel if name == "all_candidates" else selections[f"random_s{seed}" if name == "random" else name]
            rdir = out / "runs" / name / f"seed{seed}"
            tcfg = {**cfg["train"], "seed": seed, "init": "scratch"}
            _claim(rdir, {"train": tcfg, "model": cfg["model"], "indices": res.indices.tolist(),
                          "weights": None if res.weights is None else res.weights.tolist(), "val": len(val)})
            if (rdir / "metrics.json").exists():
                runs[name].append(json.loads((rdir / "metrics.json").read_text()))
                continue
            save_config({"train": tcfg, "model": cfg["model"], "selection": res.summary()}, rdir)
            r = pipeline.train_and_evaluate(cfg["model"], tcfg, pipeline.training_set(cand, res), val, rdir,
                                            progress=False)
            runs[name].append(r)
            log(f"{name:>14s} seed {seed}: brier-FDE {r['metrics']['val/brier_fde']:.3f} "
                f"minADE6 {r['metrics']['val/minADE6']:.3f} ({r['train_items']} items)")

    # 8. table + report
    rows = []
    metric_keys = ("minADE6", "minFDE6", "brier_fde", "miss_rate")
    for name, rs in runs.items():
        res = all_sel if name == "all_candidates" else selections["random_s0" if name == "random" else name]
        row = {"method": name, "selected": res.size, "ratio": round(res.ratio, 3),
               "ot_distance": res.ot_distance}
        for m in metric_keys:
            vals = [r["metrics"][f"val/{m}"] for r in rs]
            row[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                      "values": vals}
        row["composition"] = pipeline.composition(res, cand_sources)
        rows.append(row)
    best = min(rows, key=lambda r: r["brier_fde"]["mean"])
    tarot_rows = [r for r in rows if r["method"] in ("fixed_size", "otm")]
    base_rows = [r for r in rows if r["method"] in ("random", "topk_mean")]
    verdict = _verdict(min(tarot_rows, key=lambda r: r["brier_fde"]["mean"]),
                       min(base_rows, key=lambda r: r["brier_fde"]["mean"]), seeds)
    results = {"target_scenario": tgt_name, "n_candidates": len(cand), "n_target": len(tgt), "n_val": len(val),
               "seeds": seeds, "quick": quick, "rows": rows, "best_method": best["method"], "verdict": verdict,
               "featurize_seconds": t_feat, "wall_seconds": time.perf_counter() - t_start,
               "skipped": {ix["db_root"]: ix["skipped"] for ix in data["index"]}}
    table = _html_table(rows, metric_keys)
    md = _markdown_table(rows, metric_keys)
    notes = (f"<p>{verdict}</p><p>Validation: {len(val)} samples of scenario {tgt_name} (agents disjoint from the "
             f"{len(tgt)} featurised target samples). Every training run starts from scratch (seeded) and takes "
             f"{cfg['train']['max_steps']} optimizer steps of batch {cfg['train']['batch_size']}; mean ± std over "
             f"{seeds} seeds (Adam lr {cfg['train']['lr']}, no decay). Reduced AutoBot-Ego (hidden "
             f"{cfg['model']['hidden_size']}, dropout {cfg['model']['dropout']}, "
             f"{cfg['preprocess']['max_num_roads']} map polylines) to fit a CPU budget: the models are far from "
             f"converged; read differences between methods against the ± seed spread. Data: Waymo Open "
             f"Motion Dataset scenarios and one Argoverse-1 log (CC BY-NC-SA 4.0; no map, velocities and headings "
             f"derived from positions) shipped in metadrive-simulator 0.3.0.1.</p>")
    for key in ("fixed_size", "otm"):
        write_report(selections[key], out / "report" / key, store=store,
                     title=f"TAROT motion demo: {key} selection (target {tgt_name})",
                     extra_sections=[("Results on the target validation split", notes + table)])
    (out / "results.md").write_text(md + "\n\n" + verdict + "\n")
    write_json(out / "results.json", results)
    log(md)
    log(verdict)
    return results


def _verdict(t: dict[str, Any], b: dict[str, Any], seeds: int) -> str:
    """Honest one-line comparison of the best TAROT row and the best baseline row (brier-FDE, lower is better)."""
    tm, bm = t["brier_fde"]["mean"], b["brier_fde"]["mean"]
    se = float(np.sqrt((t["brier_fde"]["std"] ** 2 + b["brier_fde"]["std"] ** 2) / max(seeds, 1)))
    head = (f"brier-FDE: best TAROT selection ({t['method']}) {tm:.3f} vs best baseline ({b['method']}) {bm:.3f} "
            f"(difference {bm - tm:+.3f}, standard error of the difference {se:.3f} over {seeds} seeds): ")
    if seeds > 1 and abs(bm - tm) <= 2 * se:
        return head + "no clear winner; the difference is within the seed noise."
    return head + ("TAROT wins on this run." if tm < bm else "TAROT does NOT win on this run.")


def _markdown_table(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    head = "| method | selected | ratio | " + " | ".join(keys) + " | composition (selected/pool) |"
    lines = [head, "|" + "---|" * (4 + len(keys))]
    for r in rows:
        comp = ", ".join(f"{k}: {v['selected']}/{v['pool']}" for k, v in r["composition"].items())
        vals = " | ".join(_fmt(r[k]["values"]) for k in keys)
        lines.append(f"| {r['method']} | {r['selected']} | {r['ratio']} | {vals} | {comp} |")
    return "\n".join(lines)


def _html_table(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    import html

    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("method", "selected", "ratio", *keys, "composition"))
    body = []
    for r in rows:
        comp = "<br>".join(f"{html.escape(k)}: {v['selected']}/{v['pool']} ({100 * v['fraction_of_selection']:.0f}%)"
                           for k, v in r["composition"].items())
        cells = [r["method"], str(r["selected"]), str(r["ratio"])] + [_fmt(r[k]["values"]) for k in keys]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + f"<td>{comp}</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
