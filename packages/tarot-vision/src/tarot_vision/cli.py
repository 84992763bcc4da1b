"""``tarot-vision`` command line: convert, featurize, select, train, evaluate, demo, lds."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("tarot_vision")

EPILOG = """\
typical GTA5 -> Cityscapes run (backend torch needs only torch + torchvision; backend=mmseg needs the [mmseg] extra):
  tarot-vision convert gta5 --root data/gta5
  tarot-vision convert cityscapes --root data/cityscapes
  tarot-vision featurize --out runs/feat --set candidate.root=data/gta5 --set target.root=data/cityscapes \\
      --set 'featurize.checkpoints=[{name: warm, path: warm.pth}]'
  tarot-vision select --store runs/feat --out runs/sel --set select.method=otm --set select.ratio=auto
  tarot-vision train --selection runs/sel --out runs/train --set backend=mmseg --set candidate.root=data/gta5
  tarot-vision evaluate --checkpoint runs/train/work/final_state_dict.pth --out runs/eval --set backend=mmseg \\
      --set target.root=data/cityscapes
embedded real-data demo (CPU, a few minutes; writes an HTML report):
  tarot-vision demo --out runs/vision-demo

Settings come from the packaged YAML defaults (configs/seg.yaml, demo.yaml, lds.yaml), then --config FILE, then
--set KEY=VALUE overrides (values are YAML: --set seeds=[0,1,2] --set select.ratio=auto). Each command saves
config.resolved.yaml beside its outputs. Use --print-config to see the defaults. Old spellings (--features,
positional KEY=VALUE) still work for one release, with a deprecation warning.
"""


def _common(p: argparse.ArgumentParser, name: str) -> None:
    from tarot.app.conventions import add_device, add_legacy_overrides, add_progress, add_settings

    example = {"seg": "train.iters=200", "demo": "seeds=[0,1,2,3]", "lds": "subsets.m=20"}[name]
    add_settings(p, defaults=f"the packaged {name}.yaml defaults", example=example)
    add_device(p)
    add_progress(p)
    add_legacy_overrides(p)  # the old positional KEY=VALUE spelling


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per step)."""
    parser = argparse.ArgumentParser(
        prog="tarot-vision",
        description="TAROT targeted data selection for vision: GTA5 -> Cityscapes segmentation (torchvision or "
        "mmsegmentation DeepLabV3), the CIFAR-10/ResNet-9 influence check, and an embedded real-image demo.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from tarot.app.conventions import add_version

    add_version(parser, "tarot-vision")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (and tracebacks)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "convert",
        help="write _labelTrainIds.png files (34 ids -> 19 trainIds, rest 255)",
        description="Map Cityscapes *_gtFine_labelIds.png or GTA5 palettised labels/NNNNN.png to "
        "trainId PNGs beside them and write the stem lists (<split>.txt / all.txt) that mmseg "
        "ann_files use. Reruns skip finished files.",
    )
    p.add_argument("dataset", choices=["cityscapes", "gta5"])
    p.add_argument(
        "--root", type=Path, required=True, help="dataset folder (leftImg8bit/ + gtFine/, or images/ + labels/)"
    )
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="Cityscapes splits (default: train val)")
    p.add_argument(
        "--on-size-mismatch",
        choices=["resize", "error"],
        default="resize",
        help="label/image size mismatch: resize the label (nearest) and count it, or stop",
    )
    p.add_argument("--on-missing", choices=["error", "skip"], default="error", help="image without a label")
    p.add_argument("--overwrite", action="store_true", help="rewrite existing trainId files")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    # name: (config, help, description, extra arguments as (flags, kwargs))
    commands: dict[str, tuple[str, str, str, list[tuple[str, dict[str, Any]]]]] = {
        "featurize": ("seg", "per-sample gradient features of the pool and the targets (seg.yaml)",
                      "Featurise candidate (GTA5) and target (Cityscapes) images with a segmenter's projected "
                      "per-sample loss gradients (decode head by default) into a tarot FeatureStore under "
                      "OUT/features (resumable).", []),
        "select": ("seg", "tarot.select on a feature store; writes the mmseg ann_file and a report",
                   "Select candidates with tarot-core (select.method, select.ratio; OT-potential repeat weights by "
                   "default). Writes OUT/selection, OUT/ann_file.txt (selected stems, a line per repeat) and "
                   "OUT/report/index.html.",
                   []),
        "train": ("seg", "train a segmenter on a selection's ann_file (mmseg Runner or torch loop)",
                  "Train from train.init (scratch by default, seeded) on the ann_file of a selection; "
                  "backend=mmseg uses mmseg's own Runner with InfiniteSampler.",
                  [("--selection", {"type": Path, "help": "select output folder (uses its ann_file.txt)"})]),
        "evaluate": ("seg", "mIoU on Cityscapes val",
                     "mIoU (19 classes, NaN-mean) of a trained checkpoint on target.root's evaluate.split, "
                     "predicted in 'whole' mode at evaluate.scale; writes OUT/metrics.json.",
                     [("--checkpoint", {"type": Path, "required": True, "help": "state-dict file written by train"})]),
        "demo": ("demo", "embedded real-image demo with an HTML report (CPU, minutes)",
                 "Targeted selection on real images (scikit-learn digits, or Fashion-MNIST when the Debian package "
                 "dataset-fashion-mnist is installed): heterogeneous shifted pool, small multimodal target; "
                 "random / topk_mean / fixed_size 5-20-50% / otm, each retrained from scratch over several "
                 "seeds; writes OUT/report/index.html and OUT/results.json.",
                 [("--quick", {"action": "store_true",
                               "help": "tiny run (2 seeds, small sets, few steps) for smoke tests"})]),
        "lds": ("lds", "linear datamodeling score: whitened distance vs cosine/dot/TRAK (CPU scale)",
                "Influence-estimation check: train models on random subsets, compare predicted and actual target "
                "margins (Spearman) for TAROT's whitened feature distance and baselines. Uses CIFAR-10 python "
                "batches if data.cifar_root is set, else real digits/Fashion-MNIST.",
                [("--quick", {"action": "store_true", "help": "tiny run for smoke tests"})]),
    }  # fmt: skip
    for name, (config, help_, description, extra) in commands.items():
        p = sub.add_parser(name, help=help_, description=description)
        if name == "demo":
            p.add_argument(
                "--out", type=Path, default=Path("runs/vision-demo"), help="output folder (runs/vision-demo)"
            )
        else:
            p.add_argument("--out", type=Path, required=True, help="output folder")
        for flag, kwargs in extra:
            p.add_argument(flag, **kwargs)
        if name == "select":
            from tarot.app.conventions import add_dry_run, add_store

            add_store(p, help="feature store: the featurize output folder or the store itself", old=("--features",))
            add_dry_run(p)
        if name == "featurize":
            from tarot.app.argtypes import add_shard_arguments

            add_shard_arguments(p)  # --rank/--world-size/--merge, torchrun-aware (tarot-core owns the sharding)
        _common(p, config)
    return parser


def _resolve(args: argparse.Namespace, name: str, extra: dict | None = None) -> dict:
    from tarot.app.conventions import device_override
    from tarot.app.device import pick_device

    from .config import resolve_config

    cfg = resolve_config(name, args.config, device_override(args), preset=extra)
    pick_device(cfg["device"])  # a bad spelling or a missing GPU is one line, before anything is written
    return cfg


def _run(args: argparse.Namespace) -> int:
    from tarot.app.conventions import merge_legacy_overrides

    merge_legacy_overrides(args, f"tarot-vision {args.command}")
    progress = not getattr(args, "no_progress", False)
    if args.command == "convert":
        from .segdata import convert

        summary = convert(
            args.dataset,
            args.root,
            splits=args.splits,
            on_size_mismatch=args.on_size_mismatch,
            on_missing=args.on_missing,
            overwrite=args.overwrite,
            progress=progress,
        )
        print(json.dumps(summary["splits"]))
        return 0

    name = {"demo": "demo", "lds": "lds"}.get(args.command, "seg")
    quick: dict[str, Any] | None = None
    if getattr(args, "quick", False):
        if args.command == "demo":
            from .demo import QUICK as demo_quick

            quick = dict(demo_quick)
        else:
            from .lds import QUICK as lds_quick

            quick = dict(lds_quick)
    cfg = _resolve(args, name, quick)
    if args.print_config:
        from tarot.app.conventions import print_config

        print_config(cfg)
        return 0
    from .config import save_resolved

    if args.command == "demo":
        from .demo import run_demo

        result = run_demo(cfg, args.out, progress=progress)
        for r in result["table"]:
            print(f"{r['label']:<26} n={r['n_mean']:>7.0f}  target acc {r['acc_mean']:.3f} ± {r['acc_std']:.3f}")
        print(f"verdict: {result['verdict']}")
        print(f"report: {result['report']}  ({result['wall_time_s']:.0f} s, {result['dataset']})")
        return 0
    if args.command == "lds":
        from .lds import run_lds

        result = run_lds(cfg, args.out, progress=progress)
        for method, v in result["lds"].items():
            print(f"{method:<8} LDS {v['mean']:+.3f}  (95% CI {v['ci'][0]:+.3f} .. {v['ci'][1]:+.3f})")
        return 0

    from . import segpipe

    if args.command == "select":
        from tarot.app.conventions import announce_estimate

        store = segpipe.open_store(args.store)  # opened once: the estimate and the selection read the same store
        if announce_estimate(store, segpipe.select_kwargs(cfg), dry_run=args.dry_run, progress=progress):
            return 0  # --dry-run: nothing written
    save_resolved(cfg, args.out, args.command)
    if args.command == "featurize":
        from tarot.features.distributed import shard_from_args

        store = segpipe.featurize(cfg, args.out, progress=progress, shard=shard_from_args(args), merge=args.merge)
        print(f"features: {store.path}")
    elif args.command == "select":
        print(json.dumps(segpipe.select(cfg, store, args.out, progress=progress), default=str))
    elif args.command == "train":
        ann = args.selection / "ann_file.txt" if args.selection else None
        print(f"checkpoint: {segpipe.train(cfg, args.out, ann_file=ann, progress=progress)}")
    elif args.command == "evaluate":
        metrics = segpipe.evaluate(cfg, args.checkpoint, args.out, progress=progress)
        print(f"mIoU {metrics['mIoU']:.2f} %")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors are reported as one line (``-v`` shows the traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "select":
        from tarot.app.conventions import require

        require(args, parser, "store")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", message=r".*(build_loss|avg_non_ignore).*")  # mmseg deprecation chatter
    from tarot.app.conventions import USER_ERRORS, output_guard, report_user_error

    try:
        with output_guard(args):  # one run per --out folder at a time
            return _run(args)
    except USER_ERRORS as exc:  # bad input, a missing file or store, an unknown option: one line, exit 2
        if args.verbose:
            raise
        return report_user_error("tarot-vision", args.command, exc)


if __name__ == "__main__":
    sys.exit(main())
