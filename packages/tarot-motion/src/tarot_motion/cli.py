"""``tarot-motion`` command line: convert-metadrive, preprocess, train, featurize, select, evaluate, demo.

Every command that takes ``--config`` reads a YAML file (sections data / preprocess / model / train / featurize /
select; see ``tarot_motion.config.DEFAULTS``) and applies ``--set section.key=value`` overrides on top; the resolved
config is written as ``config.yaml`` into the output folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .config import ConfigError, load_config, save_config
from .errors import MotionDataError, write_json

EPILOG = """examples:
  tarot-motion convert --out data/waymo_md                  # the real Waymo scenarios shipped in metadrive 0.3.0.1
  tarot-motion preprocess --config motion.yaml
  tarot-motion train --config motion.yaml --out runs/warmup --set train.epochs=5
  tarot-motion featurize --config motion.yaml --checkpoint runs/warmup/epoch2.pt --checkpoint runs/warmup/epoch5.pt \\
      --out runs/features
  tarot-motion select --config motion.yaml --store runs/features --out runs/sel_otm --set select.method=otm
  tarot-motion train --config motion.yaml --selection runs/sel_otm/selection --out runs/train_otm
  tarot-motion evaluate --config motion.yaml --checkpoint runs/train_otm/last.pt --out runs/eval_otm
  tarot-motion demo --out runs/demo                          # everything above on the embedded real data

config (YAML) sections: data (candidates: [{path, label}], target: {path, label}, val: {path, label}, cache_dir,
workers, skip_invalid), preprocess (UniTraj keys), model (AutoBot-Ego), train, featurize, select. --print-config shows
the resolved settings of a command without running it. The old verb convert-metadrive still works for one release."""


def _common(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    from tarot.app.conventions import add_device, add_out, add_progress, add_settings

    add_settings(p, defaults="the built-in defaults (tarot_motion.config.DEFAULTS)", example="train.lr=0.001")
    add_device(p)
    add_out(p, required=out_required, help="output folder (the resolved config.yaml is saved there)")
    add_progress(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    ap = argparse.ArgumentParser(
        prog="tarot-motion",
        description="TAROT targeted data selection for motion prediction: ScenarioNet data, UniTraj-style "
        "preprocessing, AutoBot-Ego, selection through tarot-core.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from tarot.app.conventions import add_version

    add_version(ap, "tarot-motion")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", aliases=["convert-metadrive"],
                       help="convert legacy MetaDrive pickles to a ScenarioNet database",
                       description="Convert the legacy MetaDrive scenario pickles (default: the three real Waymo "
                       "scenarios inside metadrive-simulator==0.3.0.1, found without importing metadrive) into a "
                       "ScenarioNet database of 81-step windows.")
    p.add_argument("--out", type=Path, required=True, help="output database folder")
    p.add_argument("--files", type=Path, nargs="*", help="legacy pickles (default: the embedded files of --source)")
    p.add_argument("--source", choices=["waymo", "argoverse1"], default="waymo",
                   help="waymo: legacy MetaDrive scenario pickles (default); argoverse1: the Argoverse-1 log format "
                   "of the same wheel (positions only, no map)")
    p.add_argument("--window", type=int, default=81, help="window length in steps (default 81 = 21 past + 60 future)")
    p.add_argument("--stride", type=int, default=10, help="window stride in steps (default 10)")
    p = sub.add_parser("preprocess", help="preprocess every configured database into the cache",
                       description="UniTraj-style preprocessing of data.candidates / data.target / data.val (or one "
                       "--db) into data.cache_dir; skipped scenarios are counted per reason and printed.")
    _common(p, out_required=False)
    p.add_argument("--db", type=Path, help="preprocess only this database")
    p.add_argument("--label", help="source label for --db")
    p = sub.add_parser("train", help="train AutoBot-Ego on the candidates or on a selection",
                       description="Train from train.init (scratch with train.seed, or checkpoint:<path>) on "
                       "data.candidates, or on a saved selection of them (--selection; repeat weights and merged "
                       "targets honoured); evaluates on data.val after training.")
    _common(p)
    p.add_argument("--selection", type=Path, help="a SelectionResult folder written by `select`")
    p = sub.add_parser("featurize", help="per-sample projected gradients of candidates and target",
                       description="Featurise data.candidates and data.target with tarot-core's gradient featurizer, "
                       "summed over the given checkpoints (in the given order).")
    _common(p)
    p.add_argument("--checkpoint", type=Path, action="append", required=True,
                   help="checkpoint file (repeatable; order is kept)")
    from tarot.app.argtypes import add_shard_arguments

    add_shard_arguments(p)  # --rank/--world-size/--merge, torchrun-aware (tarot-core owns the sharding)
    p = sub.add_parser("select", help="select candidates with a tarot-core method",
                       description="tarot.select on a feature store (select.method: random, topk_mean, less, "
                       "round_robin, fixed_size, otm, tsds; select.ratio; select.weighting; select.merge_targets). "
                       "Writes the SelectionResult, the per-source composition and tarot-core's HTML report.")
    _common(p)
    from tarot.app.conventions import add_dry_run, add_store

    add_store(p, help="feature store folder (or the --out folder of `featurize`, which holds it as store/)")
    add_dry_run(p)
    p = sub.add_parser("evaluate", help="minADE6 / minFDE6 / miss rate / brier-FDE on data.val",
                       description="Evaluate a checkpoint on data.val (overall and per source data set).")
    _common(p)
    p.add_argument("--checkpoint", type=Path, required=True)
    p = sub.add_parser("demo", help="the embedded real-data demo (several seeds; GPU when present)",
                       description="Warm-up -> featurize -> select (random, topk_mean, fixed_size 20%, otm) -> train "
                       "-> evaluate on the real Waymo scenarios embedded in metadrive-simulator==0.3.0.1 (install "
                       "with: pip install --no-deps metadrive-simulator==0.3.0.1). Resumable.")
    from tarot.app.conventions import add_device, add_out, add_progress, add_settings

    add_out(p, required=False, default=Path("runs/motion-demo"), help="output folder (default runs/motion-demo)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per method (default 3)")
    p.add_argument("--quick", action="store_true", help="tiny run (a few steps, subsampled data) for smoke tests")
    p.add_argument("--target-scenario", type=int, default=0, choices=[0, 1, 2],
                   help="which embedded scenario is the target domain (default 0)")
    add_settings(p, defaults="the demo's settings", example="train.epochs=4")
    add_device(p)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1; more threads were slower on a shared 2-core CPU)")
    add_progress(p)
    return ap


def _cmd(args: argparse.Namespace) -> Any:
    from . import pipeline

    progress = not getattr(args, "no_progress", False)
    if args.command == "convert-metadrive":
        from tarot.app.conventions import warn_deprecated

        warn_deprecated("tarot-motion", "the verb convert-metadrive", "tarot-motion convert")
        args.command = "convert"
    if args.command == "convert":
        from .convert import convert_argoverse1, convert_metadrive

        conv = convert_argoverse1 if args.source == "argoverse1" else convert_metadrive
        rep = conv(args.out, files=args.files or None, window=args.window, stride=args.stride)
        write_json(args.out / "convert_report.json", rep)
        print(f"wrote {rep['scenarios']} scenarios ({rep['full_window_agents']} fully valid agent windows) to "
              f"{args.out}")
        return rep
    from tarot.app.conventions import device_override

    overrides = device_override(args)
    if args.command == "demo":
        from tarot.app.conventions import print_config

        from .demo import demo_config, run_demo

        if args.print_config:
            return print_config(demo_config(args.out, quick=args.quick, overrides=overrides, config=args.config))
        return run_demo(args.out, seeds=args.seeds, quick=args.quick, target_scenario=args.target_scenario,
                        overrides=overrides, progress=progress, threads=args.threads, config=args.config)
    cfg = load_config(args.config, overrides)
    if args.print_config:
        from tarot.app.conventions import print_config

        return print_config(cfg)
    if args.command == "select":
        import tarot
        from tarot.app.conventions import announce_estimate

        store_dir = args.store
        if not (store_dir / "manifest.json").exists() and (store_dir / "store").is_dir():
            store_dir = store_dir / "store"  # the output folder of `featurize`
        store = tarot.open_store(store_dir)  # a store, or the shards of a sharded featurization (not merged)
        if announce_estimate(store, pipeline.select_kwargs(cfg["select"]), dry_run=args.dry_run, progress=progress):
            return None  # --dry-run: nothing written
    from tarot.app.device import pick_device

    device = pick_device(cfg["device"])  # checked before anything is written
    if args.out is not None:
        save_config(cfg, args.out)
    if args.command == "preprocess":
        from .preprocess import load_cache, preprocess_database, summarize_skips

        if args.db is not None:
            d = load_cache(preprocess_database(args.db, cfg["data"]["cache_dir"], cfg["preprocess"], label=args.label,
                                               workers=int(cfg["data"]["workers"]),
                                               skip_invalid=bool(cfg["data"]["skip_invalid"]), progress=progress))
            print(summarize_skips(d["index"]))
            return d["index"]
        for key in ("candidates", "target", "val"):
            pipeline.load_split(cfg, key, progress=progress)
        return None
    if args.command == "train":
        cand = _require(pipeline.load_split(cfg, "candidates", progress=progress), "data.candidates")
        val = pipeline.load_split(cfg, "val", progress=progress)
        train_ds: Any = cand
        if args.selection is not None:
            import tarot

            res = tarot.SelectionResult.load(str(args.selection))
            tgt = pipeline.load_split(cfg, "target", progress=progress) if res.merged_targets else None
            train_ds = pipeline.training_set(cand, res, tgt)
        from .train import build_model, evaluate, train_model

        model = build_model(cfg["model"], init=str(cfg["train"]["init"]), seed=int(cfg["train"]["seed"]))
        info = train_model(model, train_ds, cfg["train"], args.out, val_ds=val, progress=progress, device=device)
        result = {"train": {k: v for k, v in info.items() if k != "history"}, "init": cfg["train"]["init"]}
        if val is not None:
            result["metrics"] = evaluate(model, val, batch_size=int(cfg["train"]["eval_batch_size"]),
                                         device=device)["metrics"]
        write_json(args.out / "metrics.json", result)
        print(json.dumps(result.get("metrics", result["train"]), indent=1))
        return result
    if args.command == "featurize":
        cand = _require(pipeline.load_split(cfg, "candidates", progress=progress), "data.candidates")
        tgt = _require(pipeline.load_split(cfg, "target", progress=progress), "data.target")
        from tarot.features.distributed import shard_from_args

        store = pipeline.featurize(cfg["model"], cfg["featurize"], args.checkpoint, {"candidate": cand, "target": tgt},
                                   args.out / "store", progress=progress, shard=shard_from_args(args),
                                   merge=args.merge, device=device)
        print(f"feature store: {args.out / 'store'} (candidate {len(cand)}, target {len(tgt)} rows)")
        return store
    if args.command == "select":
        from tarot.app.report import write_report

        res = pipeline.select(store, cfg["select"], out=args.out / "selection", progress=progress)
        comp = pipeline.composition(res, list(store.sources("candidate")))
        write_json(args.out / "composition.json", comp)
        write_report(res, args.out / "report", store=store, title=f"tarot-motion selection ({res.method})")
        print(json.dumps({**res.summary(), "composition": comp}, indent=1, default=float))
        return res
    if args.command == "evaluate":
        from .metrics import constant_velocity_metrics
        from .train import build_model, evaluate

        val = _require(pipeline.load_split(cfg, "val", progress=progress), "data.val")
        model = build_model(cfg["model"], init=f"checkpoint:{args.checkpoint}")
        ev = evaluate(model, val, batch_size=int(cfg["train"]["eval_batch_size"]), device=device)
        # the field's trivial baseline on the same windows, for reference (constant/ prefix)
        cv = constant_velocity_metrics(val, future_len=int(cfg["model"].get("future_len", 60)))["metrics"]
        metrics = {**ev["metrics"], **{k.replace("val/", "constant_velocity/", 1): v for k, v in cv.items()}}
        write_json(args.out / "metrics.json", metrics)
        print(json.dumps(metrics, indent=1))
        return metrics
    raise AssertionError(args.command)


def _require(value: Any, key: str) -> Any:
    if value is None:
        raise ConfigError(f"{key}: not configured (set it in the YAML config or with --set)")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input ends with a one-line error and exit status 2."""
    from tarot.app.conventions import USER_ERRORS, output_guard, report_user_error

    args = build_parser().parse_args(argv)
    bad_input: tuple[type[BaseException], ...] = (MotionDataError, ConfigError, *USER_ERRORS)
    try:
        with output_guard(args):  # one run per --out folder at a time
            _cmd(args)
    except bad_input as exc:  # bad input: one line, exit 2, no traceback
        return report_user_error("tarot-motion", args.command, exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
