"""The command-line convention of the four TAROT tools (``tarot``, ``tarot-vision``, ``tarot-motion``,
``tarot-llm``), as argparse helpers that every tool uses and a checker the tests run over every parser.

The same words in the same places:

==================  ===================================================================================
``--version``       on every tool: the distribution's version
``--config FILE``   YAML settings over the packaged defaults (every command that has settings)
``--set KEY=VALUE`` one override, YAML value, repeatable, applied last
``--print-config``  print the resolved settings and exit without running anything
``--store DIR``     the feature store a command reads (``select``; ``report`` where it draws maps)
``--out DIR``       the folder a command writes (its resolved settings are saved there)
``--no-progress``   hide progress bars
==================  ===================================================================================

User errors (bad input, a missing file, a misspelt option) end in one line ``<tool> <command>: error: <what and
where>`` and exit status 2, never a traceback (:func:`user_error_message`). Old spellings (``--features``,
``--run``, positional ``KEY=VALUE``, a positional store) keep working for one release and print a deprecation line
(:class:`DeprecatedAlias`, :func:`add_legacy_overrides`).

Nothing heavy is imported here, so ``--help`` and ``--version`` stay instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tarot.errors import OutputLockedError, StoreError

#: the standard flags, with the meaning every tool gives them
STANDARD_FLAGS = ("--config", "--set", "--print-config", "--store", "--out", "--no-progress")

#: exception types that are the user's input, not a bug: reported in one line with exit status 2 (a domain CLI adds
#: its own, e.g. its data-format errors)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, LookupError, OSError, ImportError, StoreError,
                                                OutputLockedError)


def distribution_version(dist: str) -> str:
    """The installed version of distribution ``dist`` (importlib.metadata; cheap, imports nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:  # running from a source tree without an install
        return "unknown"


def add_version(parser: argparse.ArgumentParser, dist: str) -> None:
    """``--version``: prints ``<prog> <version of dist>`` and exits."""
    parser.add_argument("--version", action="version", version=f"{parser.prog} {distribution_version(dist)}",
                        help="print the version and exit")


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: stores into the new flag's ``dest`` and prints one deprecation line to stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        warn_deprecated(parser.prog, str(option_string), self.new)
        setattr(namespace, self.dest, values)


def warn_deprecated(prog: str, old: str, new: str) -> None:
    print(f"{prog}: warning: {old} is deprecated and goes in the next release; use {new}", file=sys.stderr)


def add_settings(parser: argparse.ArgumentParser, *, defaults: str = "the packaged defaults",
                 example: str = "train.lr=0.001", print_config: bool = True, set_type: Any = None) -> None:
    """``--config FILE``, ``--set KEY=VALUE`` (repeatable, into ``args.overrides``) and ``--print-config``."""
    from pathlib import Path

    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help=f"YAML settings applied over {defaults}")
    kwargs: dict[str, Any] = {} if set_type is None else {"type": set_type}
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one setting (VALUE parsed as YAML), e.g. --set {example}; repeatable; "
                        "applied last", **kwargs)
    if print_config:
        parser.add_argument("--print-config", action="store_true",
                            help="print the resolved settings (defaults, --config, --set) and exit")


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda[:i]``: shorthand for ``--set device=...`` (into ``args.device``; None = the config's
    ``device`` setting, whose default is ``auto``). See :mod:`tarot.app.device`."""
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help="auto | cpu | cuda | cuda:<index>: where models run (same as --set device=DEVICE; "
                        "default: the config's device, auto = the first CUDA GPU when torch sees one, else the CPU)")


def device_override(args: argparse.Namespace) -> list[str]:
    """``args.overrides`` with ``device=<--device>`` appended when ``--device`` was given (so it wins)."""
    overrides = list(getattr(args, "overrides", []) or [])
    if getattr(args, "device", None) is not None:
        overrides.append(f"device={args.device}")
    return overrides


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    """``--dry-run`` of every ``select`` command: print the estimate and stop (see :func:`announce_estimate`)."""
    parser.add_argument("--dry-run", action="store_true",
                        help="print the predicted time and peak memory of each stage (from the feature store's "
                        "sizes, see 'tarot estimate') and exit without selecting or writing anything")


#: Predicted runs at least this long are announced on stderr before they start.
ANNOUNCE_SECONDS = 10.0


def announce_estimate(store: Any, options: Mapping[str, Any], *, dry_run: bool, progress: bool = True,
                      label: str | None = None, target_split: str = "target") -> bool:
    """Estimate a selection on ``store`` with ``tarot.select`` keyword ``options`` (:mod:`tarot.estimate`).

    On a dry run the per-stage table goes to stdout and the function returns True (the caller stops there, having
    written nothing). Otherwise a run predicted to take at least :data:`ANNOUNCE_SECONDS` is announced in one line
    on stderr (with ``progress``) and the function returns False.
    """
    from tarot.estimate import estimate_for_store

    if not dry_run and not progress:
        return False
    est = estimate_for_store(store, dict(options), target_split=target_split)
    prefix = f"{label}: " if label else ""
    if dry_run:
        print(prefix + est.table())
        return True
    if est.seconds >= ANNOUNCE_SECONDS:
        print(f"[tarot] {prefix}estimated {est.seconds:.0f} s and {est.peak_mb / 1024:.1f} GB peak for "
              f"{est.sizes['method']} on N={est.sizes['N']:,}, M={est.sizes['M']:,}, d={est.sizes['d']} "
              "(tarot estimate --help explains the model)", file=sys.stderr, flush=True)
    return False


def add_store(parser: argparse.ArgumentParser, *, required: bool = True, help: str = "feature store directory",
              old: Iterable[str] = ()) -> None:
    """``--store DIR`` (into ``args.store``); ``old`` spellings still work, with a deprecation line."""
    from pathlib import Path

    old = tuple(old)  # with old spellings argparse cannot require --store: call require(args, parser, "store")
    parser.add_argument("--store", type=Path, required=required and not old, default=None, metavar="DIR", help=help)
    for flag in old:
        parser.add_argument(flag, dest="store", type=Path, action=DeprecatedAlias, new="--store")


def add_out(parser: argparse.ArgumentParser, *, required: bool = True, default: Any = None,
            help: str = "output directory (its resolved settings are saved there)", old: Iterable[str] = ()) -> None:
    """``--out DIR`` (into ``args.out``); ``old`` spellings (e.g. ``--run``) still work, with a deprecation line."""
    from pathlib import Path

    old = tuple(old)
    parser.add_argument("--out", type=Path, required=required and not old, default=default, metavar="DIR",
                        help=help)
    for flag in old:
        parser.add_argument(flag, dest="out", type=Path, action=DeprecatedAlias, new="--out")


def require(args: argparse.Namespace, parser: argparse.ArgumentParser, *names: str) -> None:
    """Exit 2 with argparse's message when a required flag (possibly given by an old spelling) is missing."""
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")


def add_legacy_overrides(parser: argparse.ArgumentParser) -> None:
    """Positional ``KEY=VALUE`` overrides (the old spelling of ``--set``), hidden from ``--help``."""
    parser.add_argument("legacy_overrides", nargs="*", default=[], help=argparse.SUPPRESS)


def merge_legacy_overrides(args: argparse.Namespace, prog: str) -> None:
    """Append positional overrides to ``args.overrides`` (before the ``--set`` ones), with a deprecation line."""
    legacy = list(getattr(args, "legacy_overrides", []) or [])
    if legacy:
        warn_deprecated(prog, f"positional KEY=VALUE ({legacy[0]})", "--set KEY=VALUE")
        args.overrides = legacy + list(getattr(args, "overrides", []) or [])


def output_guard(args: argparse.Namespace) -> Any:
    """The lock of the command's ``--out`` folder (:func:`tarot.locking.output_lock`), so that a second run into the
    same folder is refused while the first runs; a no-op context for commands without ``--out``, for
    ``--print-config`` and ``--dry-run`` (they write nothing) and for one rank of a sharded run (the ranks share
    ``--out`` and write their own shards). Inside it, a write error that names no file (a full disk, a file-size
    limit) is given the ``--out`` folder's name (:func:`tarot.fileio.naming_write_errors`)."""
    import contextlib
    import os

    out = getattr(args, "out", None)
    if out is None or getattr(args, "print_config", False) or getattr(args, "dry_run", False):
        return contextlib.nullcontext()
    from tarot.fileio import naming_write_errors
    from tarot.locking import output_lock

    world = getattr(args, "world_size", None) or int(os.environ.get("WORLD_SIZE", "1") or 1)
    guard = contextlib.ExitStack()
    guard.enter_context(naming_write_errors(out))
    if world == 1:
        guard.enter_context(output_lock(out))
    return guard


def print_config(cfg: Any) -> Any:
    """``--print-config``: the resolved settings as YAML on stdout (plain types, keys in their order); returns them."""
    import yaml

    from tarot.fileio import plain

    print(yaml.safe_dump(plain(cfg), sort_keys=False), end="")
    return cfg


def user_error_message(exc: BaseException) -> str:
    """An exception's message on one line (a KeyError's without repr quotes)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def report_user_error(prog: str, command: str | None, exc: BaseException) -> int:
    """Print ``<prog> <command>: error: <first line>`` to stderr and return exit status 2."""
    where = f"{prog} {command}" if command else prog
    print(f"{where}: error: {user_error_message(exc)}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------------------------- checking parsers
def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def visible_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings shown in ``--help`` (deprecated aliases are hidden)."""
    return {s for a in parser._actions if a.help is not argparse.SUPPRESS for s in a.option_strings}


def check_convention(parser: argparse.ArgumentParser, needs: Mapping[str, Iterable[str]]) -> list[str]:
    """Problems of one tool's parser against the convention; empty when it follows it.

    ``needs`` maps each sub-command to the standard flags it must have (e.g. ``{"select": {"--store", "--out",
    "--config", "--set", "--print-config", "--no-progress"}}``). Checked: ``--version`` on the tool; every listed
    sub-command exists and shows its flags; a shown standard flag takes the standard value (``--set`` is repeatable
    and stores into ``overrides``, ``--no-progress`` and ``--print-config`` are switches); no shown positional takes
    ``KEY=VALUE`` overrides.
    """
    problems = []
    prog = parser.prog
    if "--version" not in visible_flags(parser):
        problems.append(f"{prog}: no --version")
    subs = subcommands(parser)
    for command, flags in needs.items():
        sub = subs.get(command)
        if sub is None:
            problems.append(f"{prog}: no command {command!r}")
            continue
        shown = visible_flags(sub)
        problems += [f"{prog} {command}: no {flag}" for flag in sorted(set(flags) - shown)]
        for action in sub._actions:
            if action.help is argparse.SUPPRESS:
                continue
            if "--set" in action.option_strings and not (isinstance(action, argparse._AppendAction)
                                                         and action.dest == "overrides"):
                problems.append(f"{prog} {command}: --set must be repeatable into 'overrides'")
            for switch in ("--no-progress", "--print-config"):
                if switch in action.option_strings and not isinstance(action, argparse._StoreTrueAction):
                    problems.append(f"{prog} {command}: {switch} must be a switch")
            if not action.option_strings and "KEY=VALUE" in str(action.metavar or ""):
                problems.append(f"{prog} {command}: positional KEY=VALUE overrides (use --set)")
    return problems


def check_read_only_output(module: str, tool: str, argv: Sequence[str], parent: Any) -> str:
    """Test helper of the four packages: run ``<module>.main(argv + ["--out", parent/"out"])`` in a subprocess with
    ``parent`` made read-only, and fail (AssertionError listing the problems) unless the tool ends with exit
    status 2 and one stderr line that starts with ``tool`` and names the output folder, with no traceback and no
    output folder left behind. Returns that line.

    Root ignores permissions, so a root run drops the two capabilities that let it (``setpriv``); without setpriv
    the check cannot be made and ``unittest.SkipTest`` is raised (a skip under pytest)."""
    import os
    import shutil
    import subprocess
    import unittest
    from pathlib import Path

    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise unittest.SkipTest("running as root without setpriv: read-only folders cannot be enforced")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    out = parent / "out"
    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    parent.chmod(0o555)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-c", code, *map(str, argv), "--out", str(out)],
                              capture_output=True, text=True, timeout=300)
    finally:
        parent.chmod(0o755)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    problems: list[str] = []
    if proc.returncode != 2:
        problems.append(f"exit status {proc.returncode}, expected 2")
    if len(lines) != 1 or "Traceback" in proc.stderr:
        problems.append(f"stderr is not one line: {proc.stderr[-2000:]!r}")
    elif not lines[0].startswith(f"{tool} ") or f"cannot write output folder {out}" not in lines[0]:
        problems.append(f"the line does not name the tool and the output folder: {lines[0]!r}")
    if out.exists():
        problems.append(f"{out} was created")
    assert not problems, f"{tool} {' '.join(map(str, argv))} into a read-only folder: " + "; ".join(problems)
    return lines[0]


def kill_while_writing(module: str, argv: Sequence[str], out: Any, after_lock_s: float = 0.3,
                       timeout_s: float = 300.0) -> bool:
    """Test helper of the four packages: start ``<module>.main(argv + ["--out", out])`` in a subprocess, wait until it
    holds the lock of ``out`` (its work has begun: arguments read, inputs opened), let it run ``after_lock_s``
    seconds more and kill it with SIGKILL, as a crash would. Returns True when it was killed before it finished
    (False when it finished first, or never took the lock before ``timeout_s``); the caller then checks what was
    left in ``out`` and reruns the command."""
    import os
    import signal
    import subprocess
    import time

    from tarot.locking import lock_path

    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, argv), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock, deadline = lock_path(out), time.monotonic() + timeout_s
    try:
        while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(after_lock_s)
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    return killed and lock.exists()
