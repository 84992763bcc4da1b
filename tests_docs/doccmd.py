"""Extract and execute the shell blocks of the docs that are marked for testing.

A fenced block is picked up when the line before it (blank lines aside) is an HTML comment of the form

``<!-- doctest: run -->``
    run the block with ``bash -euo pipefail`` in the page's working directory;
``<!-- doctest: check -->``
    do not run it; parse every command line of a known program (``tarot``, ``tarot-vision``, …) with that program's
    argparse parser and hand the parsed arguments to a package-specific validator (e.g. config keys of overrides);
``<!-- doctest: file NAME -->``
    write the block's text to ``NAME`` in the working directory (a config file the following blocks use).

Blocks of one page run in order in one working directory, so later blocks see what earlier ones wrote. The comments
are invisible in the rendered site. This module is imported by the packages' ``test_tutorial_commands.py`` and by
``packages/tarot-core/tests/test_docs_getting_started.py`` from the repository checkout (it has no dependencies).
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_MARK = re.compile(r"^<!--\s*doctest:\s*(run|check|file)\s*(.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)")

PARSERS = {
    "tarot": "tarot.app.cli",
    "tarot-vision": "tarot_vision.cli",
    "tarot-motion": "tarot_motion.cli",
    "tarot-llm": "tarot_llm.cli",
}


@dataclass
class Block:
    kind: str  # run | check | file
    arg: str  # file name for "file"
    lang: str
    text: str
    line: int  # 1-based line of the opening fence

    def label(self, page: Path) -> str:
        shown = page.relative_to(ROOT) if page.resolve().is_relative_to(ROOT) else page
        return f"{shown}:{self.line} ({self.kind})"


def extract(page: str | Path) -> list[Block]:
    """Marked fenced blocks of a Markdown page, in order."""
    lines = Path(page).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: tuple[str, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _MARK.match(line.strip())
        if m:
            pending = (m.group(1), m.group(2))
            i += 1
            continue
        f = _FENCE.match(line.strip())
        if f:
            fence, lang = f.group(1), f.group(2)
            start = i
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i])
                i += 1
            indent = len(line) - len(line.lstrip())
            body = [b[indent:] if b[:indent].isspace() else b for b in body]
            if pending is not None:
                blocks.append(Block(pending[0], pending[1], lang, "\n".join(body) + "\n", start + 1))
            pending = None
            i += 1
            continue
        if line.strip():
            pending = None  # the marker must directly precede its block
        i += 1
    return blocks


def commands(text: str) -> list[list[str]]:
    """Shell command lines of a block (continuations joined, comments and heredoc bodies dropped), as argv lists."""
    out: list[list[str]] = []
    joined: list[str] = []
    heredoc: str | None = None
    buf = ""
    for raw in text.splitlines():
        if heredoc is not None:
            if raw.strip() == heredoc:
                heredoc = None
            continue
        line = raw.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        joined.append(buf + line)
        buf = ""
        m = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", line)
        if m:
            heredoc = m.group(1)
    for line in joined:
        for part in re.split(r"\s*(?:&&|;|\|\|)\s*", line):
            try:
                argv = shlex.split(part, comments=True)
            except ValueError:
                continue
            while argv and "=" in argv[0] and not argv[0].startswith("-") and argv[0].split("=")[0].isidentifier():
                argv = argv[1:]  # leading VAR=value assignments
            if argv:
                out.append(argv)
    return out


def parse_command(argv: list[str]):
    """Parse ``argv`` with its program's parser; returns (program, namespace) or None for other programs."""
    prog = argv[0]
    if prog not in PARSERS:
        return None
    parser = importlib.import_module(PARSERS[prog]).build_parser()
    try:
        return prog, parser.parse_args(argv[1:])
    except SystemExit as exc:  # argparse reports the error on stderr
        raise AssertionError(f"{shlex.join(argv)}: rejected by {prog}'s argument parser (exit {exc.code})") from None


def bin_dir() -> str:
    """Directory of the running interpreter's console scripts (the venv's bin/)."""
    return str(Path(sys.executable).parent)


def run_page(
    page: str | Path,
    workdir: Path,
    *,
    validate: Callable[[str, object, Path], None] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
    only: Callable[[Block], bool] | None = None,
    rewrite: Callable[[Block], str | None] | None = None,
) -> list[str]:
    """Run every marked block of ``page`` in ``workdir``; return a log of what was done. Raises on failure.

    ``rewrite(block)`` may return replacement shell text for a ``run`` or ``check`` block (e.g. the same commands
    with small settings appended, see :func:`append_args`); a checked block with a replacement is then also run.
    """
    page = Path(page)
    blocks = extract(page)
    if not blocks:
        raise AssertionError(f"{page}: no blocks marked with <!-- doctest: ... -->")
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    full_env["PATH"] = bin_dir() + os.pathsep + full_env.get("PATH", "")
    done = []
    for block in blocks:
        if only is not None and not only(block):
            continue
        where = block.label(page)
        if block.kind == "file":
            target = workdir / block.arg
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
            done.append(f"{where}: wrote {block.arg}")
            continue
        if block.kind == "check":
            n = 0
            for argv in commands(block.text):
                parsed = parse_command(argv)
                if parsed is None:
                    continue
                if validate is not None:
                    validate(parsed[0], parsed[1], workdir)
                n += 1
            if n == 0:
                raise AssertionError(f"{where}: no command of a known program to check")
            done.append(f"{where}: parsed {n} command(s)")
        text = rewrite(block) if rewrite is not None else None
        if block.kind == "run" or text is not None:
            script = text if text is not None else block.text
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=workdir,
                env=full_env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if proc.returncode != 0:
                raise AssertionError(
                    f"{where}: exit status {proc.returncode}\n--- block ---\n{script}"
                    f"--- stdout (tail) ---\n{proc.stdout[-3000:]}\n--- stderr (tail) ---\n"
                    f"{proc.stderr[-3000:]}"
                )
            done.append(f"{where}: ran" + (" (rewritten)" if text is not None else ""))
    return done


def append_args(text: str, prog: str, args: list[str], when: Callable[[list[str]], bool] | None = None) -> str:
    """``text`` with continuation lines joined and ``args`` appended to every command line of ``prog`` for which
    ``when(argv)`` holds: e.g. small-size config overrides for a test run of a full-size tutorial command."""
    out = []
    buf = ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        line = buf + raw
        buf = ""
        code = line.split(" #", 1)[0].rstrip()
        try:
            argv = shlex.split(code)
        except ValueError:
            argv = []
        if argv and argv[0] == prog and (when is None or when(argv)):
            line = code + " " + " ".join(shlex.quote(a) for a in args)
        out.append(line)
    return "\n".join(out) + "\n"


def assert_cli_reference_current(prog: str) -> None:
    """Fail unless docs/cli/PROG.md equals what ``scripts/gen_cli_docs.py`` generates from the installed parser."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check", "--only", prog],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
