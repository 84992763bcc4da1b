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
6. select with tarot-core: the baselines random, topk_mean, round_robin and tsds and TAROT's fixed_size (all at ratio
   0.2) and otm (ratio chosen by OTM);
7. train from scratch (same optimizer-step budget, several seeds) on each selection (also the baselines topk_mean and
   fixed_size on the warm-up model's encoder embeddings), on random, topk_mean, fixed_size and otm with the
   featurised target samples merged in, on the whole pool and on the target samples alone; evaluate
   minADE6/minFDE6/miss rate/brier-FDE on the validation set, beside the constant-velocity extrapolation;
8. verdict: every TAROT row against every other row by a paired two-level bootstrap (seeds × validation windows,
   :func:`tarot.method_verdict`) on brier-FDE; write ``report/<method>/index.html`` (verdict and tables first,
   then tarot-core's plots) and ``results.json``.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tarot.app.device import device_name, pick_device
from torch.utils.data import ConcatDataset

from .config import load_config, save_config
from .convert import METADRIVE_INSTALL, convert_argoverse1, convert_metadrive, legacy_waymo_files
from .data import MotionDataset, concat_data
from .errors import write_json
from .metrics import constant_velocity_metrics
from .preprocess import load_cache, preprocess_database, summarize_skips
from .safe_pickle import load_legacy_pickle

METHODS = ("random", "topk_mean", "round_robin", "tsds", "fixed_size", "otm")
TAROT_METHODS = ("fixed_size", "otm")
MERGED_METHODS = ("random", "topk_mean", "fixed_size", "otm")  # also trained with the target samples merged in
# every training set of the comparison: each selection alone and with the featurised target samples merged in, the
# whole pool and the target samples alone; constant_velocity (no training) is added to the table
# baselines on another feature source: the same selectors on the warm-up model's encoder embeddings
EMBEDDING_METHODS = ("embeddings_topk_mean", "embeddings_fixed_size")
TRAIN_SETS = (*METHODS, *(f"{m}+targets" for m in MERGED_METHODS), *EMBEDDING_METHODS, "all_candidates",
              "target_only")
DEMO_BASE: dict[str, Any] = {
    "preprocess": {"object_type": ["VEHICLE", "PEDESTRIAN", "CYCLIST"], "max_num_roads": 32},
    # residual over constant velocity, positions in units of 10 m, no entropy term: measured on the demo split,
    # the stock settings (no prior, metres, entropy weight 40) stay worse than constant velocity after 400 steps
    "model": {"hidden_size": 32, "tx_hidden_size": 64, "tx_num_heads": 2, "map_heads": 2, "dropout": 0.0,
              "map_dropout": 0.0, "prior": "constant_velocity", "input_scale": 10.0, "entropy_weight": 0.0,
              "num_queries_enc": 32},  # Wayformer's latents (model.name=wayformer), reduced like the rest
    "train": {"batch_size": 16, "lr": 1e-3, "max_steps": 300, "milestones": [1000], "eval_batch_size": 64},
    "featurize": {"proj_dim": 256, "batch_size": 16},
    "select": {"ratio": 0.2},  # whitening ridge: tarot-core's data-chosen default
}
QUICK: dict[str, Any] = {
    "model": {"hidden_size": 16, "tx_hidden_size": 32, "tx_num_heads": 2, "map_heads": 2, "future_len": 60,
              "num_queries_enc": 8},
    "preprocess": {"max_num_roads": 8},
    "train": {"batch_size": 16, "max_steps": 2},
    "featurize": {"proj_dim": 32, "batch_size": 8},
    "select": {"options": {"folds": 3}},
}
MODEL_TITLES = {"autobot": "AutoBot-Ego", "wayformer": "Wayformer-Ego"}
WARMUP_STEPS = 120
WARMUP_BATCH = 16  # fixed, so that --set train.batch_size=... changes only the runs on the selections


def _select_cfg(select: dict[str, Any], method: str, seed: int) -> dict[str, Any]:
    """The ``select`` section for one of the demo's methods: ``select.options`` reduced to what that method takes (an
    option no selector takes is an error)."""
    from tarot.options import options_for_method

    try:
        opts = options_for_method(method, select.get("options") or {})
    except ValueError as exc:
        raise SystemExit(f"tarot-motion demo: select.options: {exc}") from None
    return {**select, "method": method, "seed": seed, "options": opts}


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


#: model settings that the other model ignores: left out of the stage keys, so that a setting one model does not read
#: never discards the finished stages of the other (and runs made before ``model.name`` existed stay valid)
UNUSED_MODEL_KEYS = {"autobot": ("name", "num_queries_enc", "max_agents"),
                     "wayformer": ("entropy_weight", "kl_weight", "ade_fde_weight", "map_heads", "map_dropout")}


def model_key(model: dict[str, Any]) -> dict[str, Any]:
    """The model settings that decide a stage's outputs (:data:`UNUSED_MODEL_KEYS` left out)."""
    unused = UNUSED_MODEL_KEYS.get(model.get("name", "autobot"), ())
    return {k: v for k, v in model.items() if k not in unused}


def _deep_update(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in a.items()}
    for k, v in b.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _fmt(vals: list[float]) -> str:
    a = np.asarray(vals, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def demo_config(out: str | Path, quick: bool = False, overrides: list[str] | None = None,
                config: str | Path | None = None) -> dict[str, Any]:
    """The demo's settings: defaults <- demo base (<- the quick preset) <- ``config`` (YAML) <- ``overrides``."""
    base = _deep_update(DEMO_BASE, QUICK) if quick else DEMO_BASE
    cfg = load_config(config, overrides, base=base)
    cfg["data"]["cache_dir"] = str(Path(out) / "cache")
    return cfg


def run_demo(out: str | Path, seeds: int = 3, quick: bool = False, target_scenario: int = 0,
             overrides: list[str] | None = None, progress: bool = True, log: Any = print,
             threads: int | None = 1, config: str | Path | None = None) -> dict[str, Any]:
    """Run the embedded real demo end to end; returns the results dict also written to ``out/results.json``.

    ``threads`` sets ``torch.set_num_threads`` (default 1: on a small shared CPU, two intra-op threads competing with
    other processes made training several times slower); None keeps torch's default.
    """
    import tarot
    import torch

    if threads is not None:
        torch.set_num_threads(int(threads))
    from tarot.app.report import write_report

    from . import pipeline
    from .train import build_model, train_model

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        files = legacy_waymo_files()
    except FileNotFoundError as exc:
        raise SystemExit(f"tarot-motion demo: {exc}\n  install it with: {METADRIVE_INSTALL}") from None
    cfg = demo_config(out, quick=quick, overrides=overrides, config=config)
    device = pick_device(cfg["device"])
    log(f"device: {device_name(device)}")
    warmup_steps = 4 if quick else WARMUP_STEPS
    save_config({**cfg, "demo": {"seeds": seeds, "quick": quick, "target_scenario": target_scenario,
                                 "warmup_steps": warmup_steps, "warmup_batch_size": WARMUP_BATCH, "threads": threads,
                                 "methods": list(TRAIN_SETS) + ["constant_velocity"]}}, out)

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
    wkey = {"train": wcfg, "model": model_key(cfg["model"]), "preprocess": cfg["preprocess"], "n_pool": len(cand)}
    _claim(wdir, wkey)
    save_config({"train": wcfg, "model": cfg["model"]}, wdir)
    wmodel = build_model(cfg["model"], init="scratch", seed=0)
    winfo = train_model(wmodel, cand, wcfg, wdir, progress=progress, device=device)
    e = winfo["epochs"]
    ckpts = [wdir / f"epoch{max(1, e // 2)}.pt", wdir / f"epoch{e}.pt"]
    log(f"warm-up: {winfo['steps']} steps, checkpoints {[c.name for c in ckpts]}")

    # 5. featurise
    t0 = time.perf_counter()
    _claim(out / "features", {"warmup": wkey, "featurize": cfg["featurize"], "ckpts": [c.name for c in ckpts],
                              "n_target": len(tgt)})
    store = pipeline.featurize(cfg["model"], cfg["featurize"], ckpts, {"candidate": cand, "target": tgt},
                               out / "features", sources={"candidate": cand_sources, "target": tgt.sources},
                               progress=progress, device=device)
    t_feat = time.perf_counter() - t0

    # 6. select
    selections: dict[str, Any] = {}
    for method in METHODS:
        for seed in range(seeds) if method == "random" else [0]:
            key = f"{method}" if method != "random" else f"random_s{seed}"
            sdir = out / "selections" / key
            scfg = _select_cfg(cfg["select"], method, seed)
            _claim(sdir, {"select": scfg, "features": cfg["featurize"], "warmup": wkey})
            if (sdir / "result.json").exists():  # SelectionResult.save is atomic
                selections[key] = tarot.SelectionResult.load(str(sdir))
                continue
            selections[key] = pipeline.select(store, scfg, out=sdir, progress=progress)
    _claim(out / "embeddings", {"warmup": wkey, "ckpt": ckpts[-1].name, "n_target": len(tgt)})
    emb_store = pipeline.embed(cfg["model"], ckpts[-1], {"candidate": cand, "target": tgt}, out / "embeddings",
                               sources={"candidate": cand_sources, "target": tgt.sources}, progress=progress,
                               device=device)
    for key in EMBEDDING_METHODS:
        sdir = out / "selections" / key
        scfg = _select_cfg(cfg["select"], key.removeprefix("embeddings_"), 0)
        _claim(sdir, {"select": scfg, "embeddings": ckpts[-1].name, "warmup": wkey})
        if (sdir / "result.json").exists():
            selections[key] = tarot.SelectionResult.load(str(sdir))
            continue
        selections[key] = pipeline.select(emb_store, scfg, out=sdir, progress=progress)
    # 7. train on each training set, several seeds, same step budget; constant velocity needs no training
    runs: dict[str, list[dict[str, Any]]] = {}
    all_sel = tarot.select(store, method="random", ratio=1.0, seed=0, compute_ot=True, progress=False)
    for name in TRAIN_SETS:
        runs[name] = []
        base_name = name.removesuffix("+targets")
        for seed in range(seeds):
            res = None if name == "target_only" else all_sel if name == "all_candidates" else \
                selections[f"random_s{seed}" if base_name == "random" else base_name]
            rdir = out / "runs" / name / f"seed{seed}"
            tcfg = {**cfg["train"], "seed": seed, "init": "scratch"}
            _claim(rdir, {"train": tcfg, "model": model_key(cfg["model"]), "val": len(val), "n_target": len(tgt),
                          "indices": None if res is None else res.indices.tolist(),
                          "weights": None if res is None or res.weights is None else res.weights.tolist()})
            if (rdir / "metrics.json").exists():
                runs[name].append(json.loads((rdir / "metrics.json").read_text()))
                continue
            if res is None:
                train_ds: Any = tgt
            else:
                train_ds = pipeline.training_set(cand, res)
                if name.endswith("+targets"):
                    train_ds = ConcatDataset([train_ds, tgt])
            save_config({"train": tcfg, "model": cfg["model"], "training_set": name,
                         "selection": None if res is None else res.summary()}, rdir)
            r = pipeline.train_and_evaluate(cfg["model"], tcfg, train_ds, val, rdir, progress=False, device=device)
            runs[name].append(r)
            log(f"{name:>20s} seed {seed}: brier-FDE {r['metrics']['val/brier_fde']:.3f} "
                f"minADE6 {r['metrics']['val/minADE6']:.3f} ({r['train_items']} items)")
    cv = constant_velocity_metrics(val, future_len=int(cfg["model"].get("future_len", 60)))
    runs["constant_velocity"] = [cv] * seeds

    # 8. table + verdict + report
    rows = []
    metric_keys = ("minADE6", "minFDE6", "brier_fde", "miss_rate")
    for name, rs in runs.items():
        res = {"all_candidates": all_sel, "target_only": None, "constant_velocity": None}.get(
            name, selections.get("random_s0" if name.startswith("random") else name.removesuffix("+targets")))
        row: dict[str, Any] = {"method": name, "selected": 0 if res is None else res.size,
                               "ratio": 0.0 if res is None else round(res.ratio, 3),
                               "ot_distance": None if res is None else res.ot_distance,
                               "merged_targets": len(tgt) if name.endswith("+targets") or name == "target_only"
                               else 0}
        for m in metric_keys:
            vals = [r["metrics"][f"val/{m}"] for r in rs]
            row[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                      "values": vals}
        row["composition"] = {} if res is None else pipeline.composition(res, cand_sources)
        rows.append(row)
    best = min(rows, key=lambda r: r["brier_fde"]["mean"])
    scores = {name: [r["per_sample"]["brier_fde"] for r in rs] for name, rs in runs.items()}
    tarot_rows = [n for n in runs if n.removesuffix("+targets") in TAROT_METHODS]
    verdict = tarot.method_verdict(scores, tarot_rows, [n for n in runs if n not in tarot_rows],
                                   "brier-FDE (m) on the held-out target windows", higher_is_better=False)
    results = {"target_scenario": tgt_name, "n_candidates": len(cand), "n_target": len(tgt), "n_val": len(val),
               "seeds": seeds, "quick": quick, "rows": rows, "best_method": best["method"],
               "verdict": verdict["text"], "comparisons": verdict,
               "device": device_name(device), "featurize_seconds": t_feat,
               "wall_seconds": time.perf_counter() - t_start,
               "skipped": {ix["db_root"]: ix["skipped"] for ix in data["index"]}}
    traj_html, traj_png = _trajectories(out, cfg, rows, runs, tarot_rows, val, device, log)
    results["trajectories"] = traj_png.name
    table = _html_table(rows, metric_keys)
    md = _markdown_table(rows, metric_keys)
    notes = (f"<p><b>{html.escape(verdict['text'])}</b></p><p>Validation: {len(val)} samples of scenario "
             f"{tgt_name} (agents disjoint from the {len(tgt)} featurised target samples). Every training run starts "
             f"from scratch (seeded) and takes {cfg['train']['max_steps']} optimizer steps of batch "
             f"{cfg['train']['batch_size']}; mean ± std over {seeds} seeds (Adam lr {cfg['train']['lr']}). The "
             f"verdict compares every TAROT row (selection alone and with the target samples merged in) with every "
             f"other row by a paired two-level bootstrap over seeds and validation windows; 'wins' needs the "
             f"interval to exclude zero against all of them. Model: a reduced "
             f"{MODEL_TITLES.get(cfg['model']['name'], cfg['model']['name'])} (hidden "
             f"{cfg['model']['hidden_size']}, {cfg['preprocess']['max_num_roads']} map polylines) that predicts "
             f"the residual over the constant-velocity extrapolation of the agent's current velocity "
             f"(model.prior={cfg['model']['prior']}, positions scaled by 1/{cfg['model']['input_scale']:g}, "
             + ("entropy term off: with it the short CPU budget only shrinks the predicted scales). "
                if cfg["model"]["name"] == "autobot" else
                "UniTraj's Wayformer loss: the Gaussian NLL of the mode nearest the truth plus the mode "
                "cross-entropy). ")
             + "constant_velocity is that extrapolation alone (one mode, probability 1). Data: Waymo Open Motion "
             "Dataset scenarios and one Argoverse-1 log (CC BY-NC-SA 4.0; no map, velocities and headings derived "
             "from positions) shipped in metadrive-simulator 0.3.0.1.</p>"
             + _comparison_table(verdict))
    for key in TAROT_METHODS:
        write_report(selections[key], out / "report" / key, store=store,
                     title=f"TAROT motion demo: {key} selection (target {tgt_name})",
                     lead_sections=[("Does TAROT win?", notes + table), ("Trajectories", traj_html)],
                     attachments={traj_png.name: traj_png})
    (out / "results.md").write_text(md + "\n\n" + verdict["text"] + "\n")
    write_json(out / "results.json", results)
    log(md)
    log(verdict["text"])
    return results


def _trajectories(out: Path, cfg: dict[str, Any], rows: list[dict[str, Any]], runs: dict[str, list[dict[str, Any]]],
                  tarot_rows: list[str], val: MotionDataset, device: Any, log: Any) -> tuple[str, Path]:
    """The report's "Trajectories" section: a few held-out agents (:func:`tarot_motion.plots.pick_examples`) predicted
    by the seed-0 model of the best TAROT row, of the best trained baseline (by mean brier-FDE) and by constant
    velocity; returns (html, path of ``out/trajectories.png``)."""
    from .metrics import constant_velocity_prediction
    from .plots import TrajectoryPanel, panel_from_model, pick_examples, plot_trajectories
    from .train import build_model

    mean = {r["method"]: r["brier_fde"]["mean"] for r in rows}
    best_tarot = min(tarot_rows, key=lambda n: mean[n])
    best_base = min((n for n in runs if n not in tarot_rows and n != "constant_velocity"), key=lambda n: mean[n])
    picks = pick_examples(val, n=3)
    panels = []
    for name in (best_tarot, best_base):
        model = build_model(cfg["model"], init=f"checkpoint:{out / 'runs' / name / 'seed0' / 'last.pt'}")
        scores = np.asarray(runs[name][0]["per_sample"]["brier_fde"])[picks]
        panels.append(panel_from_model(f"{name} (seed 0)", model, val, picks, scores, device=device))
    sub = val.subset(picks)
    cv_traj, cv_probs = constant_velocity_prediction(sub.array("obj_trajs"), sub.array("track_index_to_predict"),
                                                     future_len=int(cfg["model"].get("future_len", 60)))
    panels.append(TrajectoryPanel("constant_velocity", cv_traj, cv_probs,
                                  np.asarray(runs["constant_velocity"][0]["per_sample"]["brier_fde"])[picks]))
    png = plot_trajectories(val, picks, panels, out / "trajectories.png")
    log(f"trajectories: {', '.join(val.ids[i] for i in picks)} -> {png}")
    text = (f"<p>Three held-out validation agents (for each, the window whose true future turns most: the largest "
            f"sideways offset of its end in the agent's frame), predicted "
            f"by the seed-0 model of the best TAROT row (<b>{html.escape(best_tarot)}</b>), of the best trained "
            f"baseline (<b>{html.escape(best_base)}</b>, both by mean brier-FDE over seeds) and by constant velocity. "
            "Black: observed history; green: ground-truth future (★ its end); coloured: the predicted modes, the "
            "likeliest solid, the others dashed and fainter the less likely; grey: map polylines. Center-agent "
            "frame, metres; each panel's title gives that window's brier-FDE.</p>"
            '<img src="trajectories.png" alt="history, ground truth and predicted modes of three held-out agents">')
    return text, png


def _comparison_table(verdict: dict[str, Any]) -> str:
    """Paired differences (baseline − method: positive = the TAROT row has the lower brier-FDE) as HTML."""
    head = "".join(f"<th>{h}</th>" for h in ("TAROT row", "baseline", "mean gain", "95 % interval", "verdict"))
    body = "".join(
        f"<tr><td>{html.escape(c['method'])}</td><td>{html.escape(c['baseline'])}</td><td>{c['mean']:+.3f}</td>"
        f"<td>{c['low']:+.3f} … {c['high']:+.3f}</td><td>{html.escape(c['verdict'])}</td></tr>"
        for c in verdict["comparisons"])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown_table(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    head = "| method | selected | ratio | " + " | ".join(keys) + " | composition (selected/pool) |"
    lines = [head, "|" + "---|" * (4 + len(keys))]
    for r in rows:
        comp = ", ".join(f"{k}: {v['selected']}/{v['pool']}" for k, v in r["composition"].items())
        vals = " | ".join(_fmt(r[k]["values"]) for k in keys)
        lines.append(f"| {r['method']} | {r['selected']} | {r['ratio']} | {vals} | {comp} |")
    return "\n".join(lines)


def _html_table(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("method", "selected", "ratio", *keys, "composition"))
    body = []
    for r in rows:
        comp = "<br>".join(f"{html.escape(k)}: {v['selected']}/{v['pool']} ({100 * v['fraction_of_selection']:.0f}%)"
                           for k, v in r["composition"].items())
        cells = [r["method"], str(r["selected"]), str(r["ratio"])] + [_fmt(r[k]["values"]) for k in keys]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + f"<td>{comp}</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
