"""The ``tarot`` command line.

Subcommands
-----------
``tarot select --store STORE --method M (--ratio R | --ratio auto | --n N) --out DIR``
    run a selector on a feature store and save the :class:`~tarot.result.SelectionResult` (plus ``config.yaml``);
``tarot inspect PATH``
    describe a feature store or a saved result;
``tarot report RESULT [--store STORE] --out DIR``
    write the HTML report of a saved result;
``tarot demo --out DIR [--quick]``
    selection on a built-in synthetic mixture, with the HTML report;
``tarot merge SHARDS... --out STORE``
    merge feature-store shards written by several processes;
``tarot estimate (--store STORE | --candidates N --targets M --dim D) [--samples S --params P --proj-dim K]``
    predicted time and peak memory per stage of a selection (and of featurization), from the sizes alone.

User errors (bad arguments, missing files, invalid configurations) print one line to stderr and exit with status 2;
no output directory is left behind when a command fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from tarot.app.argtypes import positive_int
from tarot.app.conventions import (
    USER_ERRORS,
    add_dry_run,
    add_out,
    add_progress,
    add_settings,
    add_store,
    announce_estimate,
    output_guard,
    print_config,
    report_user_error,
    warn_deprecated,
)

__all__ = ["main", "build_parser"]

_METHOD_TEXT = {
    "random": "a uniform random subset of the requested size (a baseline).",
    "topk_mean": "score every candidate by its mean whitened cosine similarity to all targets and keep the highest "
    "scores (DsDm / 'average influence' style). Tends to collapse onto the dominant target mode.",
    "less": "LESS: score = the best mean similarity over target subtasks (needs target group labels in the store); "
    "keep the highest.",
    "round_robin": "targets take turns picking their nearest not-yet-chosen candidate.",
    "fixed_size": "TAROT Algorithm 1: take whole rounds of every target's nearest neighbours, and fill the last "
    "partial round with the candidates that lower the OT distance to the targets most. Follows the target's mode "
    "proportions at a fixed budget.",
    "otm": "TAROT Algorithm 2: grow neighbourhoods of part of the targets until the OT distance to the held-out "
    "targets stops falling; the union over folds is the selection and also sets the ratio (--ratio auto).",
    "tsds": "baseline TSDS (Liu et al. 2024): a sampling distribution from kNN optimal transport with a density "
    "penalty on near-duplicates; --ratio sets the number of draws with replacement (their counts are the weights).",
}


def _methods() -> tuple[str, ...]:
    """Selection methods the installed library provides, in the documented order."""
    from tarot.methods import METHODS  # names only: torch and POT load when a command runs

    known = [m for m in _METHOD_TEXT if m in METHODS]
    return tuple(known + [m for m in METHODS if m not in known])


def _method_help(methods: Sequence[str]) -> str:
    import textwrap

    lines = ["selection methods:"]
    for m in methods:
        body = textwrap.wrap(_METHOD_TEXT.get(m, "see the tarot.selectors documentation."), width=64)
        lines.append(f"  {m:<12} {body[0]}")
        lines.extend(f"  {'':<12} {rest}" for rest in body[1:])
    lines += [
        "",
        "selection size: --ratio R keeps floor(R * N) of the N candidates (at least 1), --n N keeps exactly N,",
        "--ratio auto (otm only) lets OTM choose the size.",
        "",
        "store: --store DIR (the old positional STORE still works, with a deprecation warning).",
        "",
        "select() options (--config / --set): seed, weighting, beta, ridge, fit_on, space, eps, ot_tol, ...; and",
        "the selector options below (an unknown or out-of-range option is refused with the list of valid ones):",
        "",
    ]
    from tarot.options import options_help  # no numpy, torch or POT

    lines.append(options_help(width=96))
    return "\n".join(lines)


def _ratio(text: str) -> float | str:
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or 'auto', got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or 'auto', got {text!r}")
    return value


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


# ------------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    """Build the ``tarot`` argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="tarot",
        description="TAROT: targeted data selection via optimal transport. Selects, from a pool of candidate "
        "training samples, the ones whose (whitened gradient) features best match a small target set.",
        epilog="Run 'tarot <command> --help' for the options of one command.",
    )
    from tarot._version import __version__

    parser.add_argument("--version", action="version", version=f"tarot {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)

    # select --------------------------------------------------------------------------------------
    defaults = _select_defaults()
    methods = _methods()
    p = sub.add_parser(
        "select",
        help="select candidates from a feature store and save the result",
        description="Run one selection method on a feature store (a directory written by featurize_to_store) and "
        "save the result (indices, repeat weights, ratio, OT distance, diagnostics) into --out, with the fully "
        "resolved configuration as config.yaml beside it.",
        epilog=_method_help(methods),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store(p, required=False, help="feature store directory (candidate and target splits)")
    p.add_argument("legacy_store", nargs="?", default=None, help=argparse.SUPPRESS)  # old positional STORE
    p.add_argument("--method", choices=methods, default=None, help="selection method (see below; or 'method' in "
                   "--config)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--ratio", type=_ratio, default=None, metavar="R|auto",
                      help="fraction of the candidate pool to keep, in (0, 1]; 'auto' lets otm choose it")
    size.add_argument("--n", type=positive_int, default=None, metavar="N", help="number of candidates to keep")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of random choices (random selector, random fills); default {defaults.get('seed')}")
    p.add_argument("--weighting", action=argparse.BooleanOptionalAction, default=None,
                   help="turn OT-potential repeat weights on or off: selected samples that serve under-covered "
                   "targets are repeated more often in training, and every selected sample is kept at least once "
                   f"(default: {'on' if defaults.get('weighting') else 'off'})")
    p.add_argument("--beta", type=float, default=None,
                   help="strength of the weighting (step size of the potential-based reweighting; default "
                   f"{defaults.get('beta')}; larger values move more mass but can overshoot)")
    p.add_argument("--merge-targets", action=argparse.BooleanOptionalAction, default=None,
                   help="also add the target samples themselves to the training set (recorded in the result)")
    add_settings(p, defaults="select()'s defaults (command-line flags override the file)",
                 example="patience=2 --set ridge=1e-3", set_type=_key_value)
    add_out(p, help="directory receiving the saved result (a previous result there is replaced)")
    add_dry_run(p)
    add_progress(p)
    p.set_defaults(func=_cmd_select)

    # inspect -------------------------------------------------------------------------------------
    p = sub.add_parser(
        "inspect",
        help="describe a feature store or a saved selection result",
        description="Print what a feature store holds (dimensions, projector, checkpoints, counts per split, "
        "how complete each split is, source labels) or summarise a saved selection result (method, size, ratio, "
        "OT distance, per-source composition).",
    )
    p.add_argument("path", metavar="PATH", help="feature store directory or selection result directory")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.set_defaults(func=_cmd_inspect)

    # report --------------------------------------------------------------------------------------
    p = sub.add_parser(
        "report",
        help="write the HTML report of a saved result",
        description="Write index.html, report.json and PNG plots for a saved selection result: OTM distance-vs-"
        "depth curves, a 2-D map of candidates/targets/selection (needs --store), per-source composition, and "
        "score and weight histograms. Sections without data are left out with a note.",
    )
    p.add_argument("result", metavar="RESULT", help="selection result directory (written by 'tarot select')")
    add_store(p, required=False, help="feature store the result was selected from (for the 2-D map)")
    add_out(p, help="report directory")
    p.add_argument("--title", default=None, help="page title")
    p.add_argument("--embedding", choices=("pca", "tsne"), default="pca",
                   help="2-D map method: pca (fast, default) or tsne (needs scikit-learn)")
    p.add_argument("--seed", type=int, default=0, help="seed of the map's subsample")
    p.set_defaults(func=_cmd_report)

    # demo ----------------------------------------------------------------------------------------
    p = sub.add_parser(
        "demo",
        help="run the selectors on a built-in synthetic mixture and write a report",
        description="Build a synthetic candidate pool (several target modes plus off-target data) and a target "
        "set with uneven mode proportions, run random, topk_mean, fixed_size and otm on it, save each result and "
        "write one HTML report comparing them.",
    )
    add_out(p, help="output directory")
    p.add_argument("--quick", action="store_true", help="a smaller mixture that runs in seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of the mixture and the selectors")
    p.set_defaults(func=_cmd_demo)

    # merge ---------------------------------------------------------------------------------------
    p = sub.add_parser(
        "merge",
        help="merge feature-store shards into one store",
        description="Merge the shards written by several featurisation processes (featurize_to_store(..., "
        "shard=(rank, world))) into one feature store.",
    )
    p.add_argument("shards", nargs="+", metavar="SHARD",
                   help="shard directories, or one parent directory holding shard-XXXXX-of-XXXXX sub-stores")
    add_out(p, help="merged store directory (must not exist)")
    p.set_defaults(func=_cmd_merge)

    # estimate ------------------------------------------------------------------------------------
    p = sub.add_parser(
        "estimate",
        help="predict the time and peak memory of a selection (and of featurization) from the sizes",
        description="Predict, per stage, the wall time and the peak resident memory of 'tarot select' on a store "
        "(--store) or on given sizes (--candidates/--targets/--dim), and of featurizing --samples samples with "
        "--params gradient parameters projected to --proj-dim. The formulas are fitted to the project's benchmark "
        "(nox -s bench, two CPU cores; predicted totals within 2x of the measured ones there) and scaled to this "
        "machine by a 0.1 s GEMM probe; every 'select' command also takes --dry-run to print its own estimate.",
        epilog="example: tarot estimate --candidates 200000 --targets 5000 --dim 1024 --method fixed_size "
        "--ratio 0.1 --weighting",
    )
    add_store(p, required=False, help="feature store whose sizes to use (no features are read)")
    p.add_argument("--candidates", type=positive_int, metavar="N", help="number of candidates")
    p.add_argument("--targets", type=positive_int, metavar="M", help="number of targets")
    p.add_argument("--dim", type=positive_int, metavar="D", help="feature dimension")
    p.add_argument("--method", choices=methods, default="fixed_size", help="selection method (default fixed_size)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--ratio", type=_ratio, default=None, metavar="R|auto", help="budget as a fraction (default "
                      "0.1; otm: its own size, predicted at M/2)")
    size.add_argument("--n", type=positive_int, default=None, metavar="N", help="budget as a count")
    p.add_argument("--weighting", action=argparse.BooleanOptionalAction,
                   default=bool(defaults.get("weighting", False)),
                   help="potential weighting (one more OT solve; two where the continuous weights are measured "
                   "too, on problems of at most 2 million pairs)")
    p.add_argument("--whiten", action=argparse.BooleanOptionalAction,
                   default=bool(defaults.get("whiten_features", True)), help="whitening of the features")
    p.add_argument("--samples", type=positive_int, metavar="S", help="featurization: samples to featurize")
    p.add_argument("--params", type=positive_int, metavar="P", help="featurization: parameters whose gradients are "
                   "projected (LoRA: the adapter's)")
    p.add_argument("--proj-dim", type=positive_int, default=None, metavar="K",
                   help="featurization: projection size (default: --dim, else 8192)")
    p.add_argument("--forward-flops", type=float, default=None, metavar="F",
                   help="featurization: flops of one sample's forward pass through the whole model (default 2 x "
                   "params, right for dense layers; give the real figure for convolutions, sequences or LoRA)")
    p.add_argument("--projector", choices=("dense", "sjlt"), default="dense", help="featurization: projector")
    p.add_argument("--checkpoints", type=positive_int, default=1, help="featurization: checkpoints (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="featurization: batch size (default 64)")
    p.add_argument("--gflops", type=float, default=None,
                   help="GEMM rate of the target machine in GFLOP/s (default: measured here)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.set_defaults(func=_cmd_estimate)
    return parser


def _select_defaults() -> dict[str, Any]:
    """Default values of tarot.select's keyword options (shown in --help), read from the source of ``tarot.api``
    without importing it (that would load torch and POT just to print the help)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("tarot.api")
    if spec is None or spec.origin is None:
        return {}
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "select")
    out: dict[str, Any] = {}
    for arg, default in zip(fn.args.kwonlyargs, fn.args.kw_defaults):
        if default is not None:
            with contextlib.suppress(ValueError):  # only literal defaults are shown
                out[arg.arg] = ast.literal_eval(default)
    return out


# ------------------------------------------------------------------------------------------------ helpers
class UserError(Exception):
    """An error caused by the command's input; reported as one line, exit status 2."""


_CAUGHT: tuple[type[BaseException], ...] = (UserError, *USER_ERRORS)  # reported in one line by main


@contextlib.contextmanager
def _clean_on_failure(path: Path) -> Iterator[Path]:
    """Remove ``path`` if the block fails and ``path`` did not exist before it."""
    existed = path.exists()
    try:
        yield path
    except BaseException:
        if not existed and path.exists():
            shutil.rmtree(path, ignore_errors=True)
        raise


def _is_result_dir(path: Path) -> bool:
    return (path / "result.json").is_file() and (path / "arrays.npz").is_file()


def _open_store(path: str | os.PathLike) -> Any:
    """A feature store, or the shards of a sharded featurization under ``path`` read as one (not merged)."""
    from tarot.features.sharded import open_store

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such feature store directory")
    return open_store(p)


def _load_config(path: str | None) -> dict:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise UserError(f"{p}: not valid YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of select() options at the top level, got {type(data).__name__}")
    return data


def _select_options(args: argparse.Namespace) -> dict:
    """Merge the YAML config, the explicit flags and the --set overrides (in that order) into select() kwargs."""
    options = _load_config(args.config)
    for key in ("store", "candidates", "targets"):
        if key in options:
            raise UserError(f"{args.config}: option {key!r} is given on the command line, not in the config")
    if args.method is not None:
        options["method"] = args.method
    if options.get("method") is None:
        raise UserError("no method: give --method M (or 'method' in --config)")
    if args.ratio is not None:
        options["ratio"] = args.ratio
        options.pop("n", None)
    if args.n is not None:
        options["n"] = args.n
        options.pop("ratio", None)
    for flag in ("seed", "weighting", "beta", "merge_targets"):
        value = getattr(args, flag)
        if value is not None:
            options[flag] = value
    for key, value in args.overrides:
        options[key] = value
    methods = _methods()
    if options.get("method") not in methods:
        raise UserError(f"unknown method {options.get('method')!r}; expected one of {', '.join(methods)}")
    if "ratio" not in options and "n" not in options and options["method"] != "otm":
        raise UserError(f"method {options['method']} needs a size: --ratio R or --n N")
    allowed = _known_options(options["method"])
    unknown = sorted(k for k in options if k not in allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise UserError(f"unknown option(s) {', '.join(unknown)} for method {options['method']}; known: {known}")
    return options


def _known_options(method: str) -> set[str]:
    """Keyword options accepted by tarot.select plus the keyword-only options of the method's selector."""
    import inspect

    from tarot.api import select
    from tarot.options import SELECTOR_OPTIONS, selector_options

    params = inspect.signature(select).parameters
    names = {k for k, v in params.items() if v.kind is not inspect.Parameter.VAR_KEYWORD}
    names -= {"candidates", "targets"}
    if method in SELECTOR_OPTIONS:
        names |= set(selector_options(method))
    return names


def _brief(value: Any) -> Any:
    """A manifest value for one line: long lists by their length, nested settings by their type."""
    if isinstance(value, list) and (len(value) > 6 or any(isinstance(v, dict) for v in value)):
        return f"[{len(value)} entries]"
    if isinstance(value, dict):
        return value.get("type", f"{{{len(value)} keys}}")
    return value


def _print_kv(rows: Sequence[tuple[str, Any]], indent: str = "") -> None:
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        print(f"{indent}{key:<{width}}  {value}")


def _result_rows(summary: dict) -> list[tuple[str, Any]]:
    rows = []
    for key in ("method", "selected", "n_candidates", "ratio", "ot_distance", "weighted", "training_items",
                "merged_targets"):
        value = summary.get(key)
        if isinstance(value, float):
            value = f"{value:.6g}"
        rows.append((key, value))
    return rows


def _print_composition(selected: dict, pool: dict | None = None) -> None:
    total = sum(selected.values()) or 1
    print("composition (selected" + (" / pool" if pool else "") + "):")
    for label in sorted(set(selected) | set(pool or {})):
        line = f"  {label}: {selected.get(label, 0)} ({selected.get(label, 0) / total:.1%})"
        if pool:
            line += f" / {pool.get(label, 0)}"
        print(line)


# ------------------------------------------------------------------------------------------------ commands
def _cmd_select(args: argparse.Namespace) -> int:
    if args.legacy_store is not None:
        if args.store is not None:
            raise UserError("give the store once: --store DIR (the positional STORE is the old spelling)")
        warn_deprecated("tarot select", "the positional STORE", "--store DIR")
        args.store = Path(args.legacy_store)
    options = _select_options(args)
    if args.print_config:
        print_config({**options, "store": None if args.store is None else str(args.store), "out": str(args.out)})
        return 0
    if args.store is None:
        raise UserError("the following arguments are required: --store")
    if args.no_progress:
        options["progress"] = False
    out = Path(args.out)
    if out.exists() and not (out.is_dir() and (_is_result_dir(out) or not any(out.iterdir()))):
        raise UserError(f"{out}: exists and is not a selection result directory; choose another --out")
    store = _open_store(args.store)
    if announce_estimate(store, {**_select_defaults(), **options}, dry_run=args.dry_run, progress=not
                         args.no_progress):
        return 0
    import tarot

    result = tarot.select(store, **options)
    config = {**result.config, "store": str(Path(args.store).resolve())}
    text = yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)
    # replaces a previous result's files (result.json last), keeps anything else in the folder (a report, say)
    result.save(out, extra_files={"config.yaml": text})
    summary = result.summary()
    _print_kv(_result_rows(summary))
    _print_composition(summary["composition"])
    print(f"saved to {out}")
    return 0


def _cmd_estimate(args: argparse.Namespace) -> int:
    from tarot.estimate import estimate_featurization, estimate_for_store, estimate_selection

    sizes = (args.candidates, args.targets, args.dim)
    if args.store is not None and any(v is not None for v in sizes):
        raise UserError("give either --store or --candidates/--targets/--dim, not both")
    if args.store is None and any(v is None for v in sizes) and any(v is not None for v in sizes):
        raise UserError("--candidates, --targets and --dim go together")
    feat_given = args.samples is not None or args.params is not None
    if feat_given and (args.samples is None or args.params is None):
        raise UserError("featurization needs both --samples and --params")
    if args.store is None and sizes[0] is None and not feat_given:
        raise UserError("nothing to estimate: give --store, or --candidates/--targets/--dim, or --samples/--params")
    budget = {"ratio": args.ratio, "n": args.n}
    results = []
    if args.store is not None:
        options = {"method": args.method, **budget, "weighting": args.weighting, "whiten_features": args.whiten}
        results.append(("selection", estimate_for_store(_open_store(args.store), options, gflops=args.gflops)))
    elif sizes[0] is not None:
        results.append(("selection", estimate_selection(*sizes, method=args.method, **budget,
                                                        weighting=args.weighting, whiten=args.whiten,
                                                        gflops=args.gflops)))
    if feat_given:
        k = args.proj_dim or args.dim or 8192
        results.append(("featurization", estimate_featurization(
            args.samples, args.params, k, forward_flops=args.forward_flops, projector=args.projector,
            checkpoints=args.checkpoints, batch_size=args.batch_size, gflops=args.gflops)))
    if args.json:
        print(json.dumps({name: est.as_dict() for name, est in results}, indent=1))
    else:
        print("\n\n".join(f"{name}: {est.table()}" for name, est in results))
    return 0


def _store_description(store: Any) -> dict:
    """Manifest, per-split counts, completeness and source composition of a feature store."""
    progress = store.progress()
    splits: dict[str, dict[str, Any]] = {}
    for split in store.splits:
        rows = store.count(split)
        done = progress.get(split, {})
        info: dict[str, Any] = {"rows": rows, "dim": store.dim, "rows_done_per_checkpoint": done,
                                "complete": bool(store.complete)}
        if store.complete:
            store.features(split)  # a truncated or corrupt array file is an error naming it, not "complete"
        sources = store.sources(split)
        if sources is not None:
            counts: dict[str, int] = {}
            for s in sources:
                counts[str(s)] = counts.get(str(s), 0) + 1
            info["sources"] = dict(sorted(counts.items()))
        groups = store.groups(split)
        if groups is not None:
            info["groups"] = len(set(groups))
        splits[split] = info
    return {"kind": "feature store", "status": store.manifest.get("status"), "manifest": store.manifest,
            "splits": splits}


def _cmd_inspect(args: argparse.Namespace) -> int:
    from tarot.result import SelectionResult

    path = Path(args.path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if _is_result_dir(path):
        result = SelectionResult.load(path)
        summary = result.summary()
        pool: dict[str, int] | None = None
        if result.candidate_sources is not None:
            pool = {}
            for s in result.candidate_sources:
                pool[str(s)] = pool.get(str(s), 0) + 1
        if args.json:
            print(json.dumps({"kind": "selection result", "summary": summary, "pool": pool, "config": result.config},
                             indent=2, default=str))
            return 0
        print(f"selection result: {path}")
        _print_kv(_result_rows(summary), indent="  ")
        otm = result.diagnostics.get("otm") if isinstance(result.diagnostics, dict) else None
        if isinstance(otm, dict) and otm.get("folds"):
            depths = [f.get("best_depth") for f in otm["folds"] if isinstance(f, dict)]
            print(f"  otm kept depths per fold: {depths}")
        _print_composition(summary["composition"], pool)
        return 0
    desc = _store_description(_open_store(path))
    if args.json:
        print(json.dumps(desc, indent=2, default=str))
        return 0
    print(f"feature store: {path} ({desc['status']})")
    manifest = desc["manifest"]
    rows: list[tuple[str, Any]] = []
    for key, value in manifest.items():
        if key == "checkpoints" and isinstance(value, list):
            rows.append((key, ", ".join(
                f"{c.get('name', '?')} (weight {c.get('weight', 1)})" if isinstance(c, dict) else str(c) for c in value
            ) or "none"))
        elif key == "projector" and isinstance(value, dict):
            rows.append((key, ", ".join(f"{k}={_brief(v)}" for k, v in value.items())))
        elif not isinstance(value, (list, dict)):
            rows.append((key, value))
    _print_kv(rows, indent="  ")
    for split, info in desc["splits"].items():
        done = info["rows_done_per_checkpoint"]
        state = "complete" if info["complete"] else (
            "incomplete: " + (", ".join(f"{k} {v}/{info['rows']}" for k, v in done.items()) or "no rows written")
        )
        print(f"  {split}: {info['rows']} rows x {info['dim']}, {state}")
        if "groups" in info:
            print(f"    {info['groups']} target groups")
        for label, count in (info.get("sources") or {}).items():
            print(f"    {label}: {count} ({count / max(info['rows'], 1):.1%})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from tarot.app.report import write_report
    from tarot.result import SelectionResult

    result = SelectionResult.load(args.result)
    store = _open_store(args.store) if args.store else None
    page = write_report(result, args.out, store=store, title=args.title, seed=args.seed, embedding=args.embedding)
    print(f"report written to {page}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tarot.app.demo import run_demo

    out = Path(args.out)
    with _clean_on_failure(out):
        page = run_demo(out, quick=args.quick, seed=args.seed)
    print(f"demo report written to {page}")
    print(f"its candidates and targets are a feature store; next, e.g.:\n"
          f"  tarot select --store {out / 'store'} --method fixed_size --ratio 0.2 --weighting "
          f"--out {out / 'my-selection'}\n"
          f"  tarot report {out / 'my-selection'} --store {out / 'store'} --out {out / 'my-report'}")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from tarot.features.store import FeatureStore

    out = Path(args.out)
    if out.exists():
        raise UserError(f"{out}: already exists; merge writes a new store")
    for shard in args.shards:
        if not Path(shard).is_dir():
            raise FileNotFoundError(f"{shard}: no such shard directory")
    single = Path(args.shards[0])
    # one directory that is not itself a store: the parent holding shard-XXXXX-of-XXXXX sub-stores
    source: Any = single if len(args.shards) == 1 and not (single / "manifest.json").exists() else [
        Path(s) for s in args.shards
    ]
    with _clean_on_failure(out):
        store = FeatureStore.merge(source, out)
    counts = ", ".join(f"{split}: {store.count(split)} rows" for split in store.splits)
    print(f"merged {len(args.shards)} shards into {out} ({counts})")
    return 0


# ------------------------------------------------------------------------------------------------ entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tarot`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 2 on a user error (one line on stderr, no traceback), 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with output_guard(args):  # one run per --out folder at a time
            return int(args.func(args))
    except _CAUGHT as exc:  # StoreError is a ValueError; MissingSplitError also a KeyError
        return report_user_error("tarot", args.command, exc)
    except KeyboardInterrupt:
        print(f"tarot {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
