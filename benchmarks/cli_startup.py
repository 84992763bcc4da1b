"""Start-up time of the four command lines: wall seconds of ``--help`` and ``--version`` (and of a sub-command's
``--help``), median of several runs side by side, and whether torch was imported. Writes
``benchmarks/results/cli_startup.md``.

Run it in a venv where the tools are installed (the dev venv, or ``nox -s cli_startup``)::

    python benchmarks/cli_startup.py [--repeat 5] [--out benchmarks/results]

A tool that is not installed is listed as skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

TOOLS = {  # program -> (cli module, a sub-command)
    "tarot": ("tarot.app.cli", "select"),
    "tarot-vision": ("tarot_vision.cli", "select"),
    "tarot-motion": ("tarot_motion.cli", "select"),
    "tarot-llm": ("tarot_llm.cli", "select"),
}
PROBE = ("import sys, runpy; sys.argv = [{prog!r}, *{args!r}]\n"
         "try:\n    runpy.run_module({module!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "sys.stderr.write('TORCH=%s' % ('torch' in sys.modules))\n")


def measure(prog: str, module: str, args: list[str], repeat: int) -> tuple[float, bool]:
    times, torch_loaded = [], False
    code = PROBE.format(prog=prog, args=args, module=module)
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0 or "TORCH=" not in proc.stderr:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"{prog} {' '.join(args)} failed: {last}")
        torch_loaded = torch_loaded or "TORCH=True" in proc.stderr
    return statistics.median(times), torch_loaded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (median reported; default 5)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder of cli_startup.md")
    args = ap.parse_args(argv)
    base, _ = measure("python", "this", [], args.repeat)  # `import this`: the interpreter's own start-up
    rows = [f"| python itself (`import this`) | {base:.2f} | | |"]
    for prog, (module, sub) in TOOLS.items():
        if importlib.util.find_spec(module.split(".")[0]) is None:
            rows.append(f"| {prog} | skipped (not installed) | | |")
            continue
        cells = []
        loaded = False
        for a in (["--help"], ["--version"], [sub, "--help"]):
            t, torch_loaded = measure(prog, module, a, args.repeat)
            cells.append(f"{t:.2f}")
            loaded = loaded or torch_loaded
        rows.append(f"| {prog} | {' | '.join(cells)} | {'yes' if loaded else 'no'} |")
    table = "\n".join([
        "# CLI start-up", "",
        f"Median wall seconds of {args.repeat} runs each, side by side in one run "
        "(`python benchmarks/cli_startup.py`), "
        f"{platform.machine()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}.", "",
        "| tool | `--help` (s) | `--version` (s) | `select --help` (s) | torch imported |",
        "|---|---|---|---|---|", *rows, ""])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cli_startup.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
