"""Unit tests of the docs tooling that runs in the light docs venv (no torch): the griffe reST rewrite, the CLI
page renderer and the doc-block helpers. Run by ``nox -s docs`` before the strict build."""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests_docs"))
sys.path.insert(0, str(ROOT / "scripts"))

import doccmd  # noqa: E402
import gen_cli_docs  # noqa: E402


def _griffe_rst():
    spec = importlib.util.spec_from_file_location("griffe_rst", ROOT / "scripts" / "griffe_rst.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rst_roles_and_math_become_markdown():
    conv = _griffe_rst().rst_to_markdown
    assert conv("See :func:`select` and :class:`~tarot.result.SelectionResult`.") == (
        "See `select` and `SelectionResult`."
    )
    assert conv(":meth:`tarot.FeatureStore.open`") == "`tarot.FeatureStore.open`"
    assert conv("with :math:`\\lambda` here") == "with $\\lambda$ here"
    out = conv("Fit:\n\n.. math:: a = b,\n\nnext")
    assert "$$ a = b, $$" in out and out.endswith("next")
    out = conv("Text\n\n.. math::\n\n    f_i = 1,\\qquad\n    g_j = 2\n\nafter")
    assert "$$\nf_i = 1,\\qquad\ng_j = 2\n$$" in out and out.endswith("after")


def test_cli_page_from_a_parser():
    ap = argparse.ArgumentParser(prog="demo-prog", description="Does *things* with <files>.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run it", description="Run the thing.")
    p.add_argument("src", help="input file")
    p.add_argument("--out", default="runs/x", help="output folder")
    p.add_argument("--mode", choices=["a", "b"], default="a", help="mode")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides")
    gen_cli_docs.PROGRAMS["demo-prog"] = ("demo.cli", "demo")
    try:
        text = gen_cli_docs.render("demo-prog", ap, "demo")
    finally:
        del gen_cli_docs.PROGRAMS["demo-prog"]
    assert "Does \\*things\\* with &lt;files&gt;." in text and "\\<" not in text
    assert "## demo-prog run" in text and "| `src` | yes | input file |" in text
    assert "| `--out OUT` |  | output folder. Default: runs/x. |" in text
    assert "mode. Default: a." in text and "| `KEY=VALUE` |  | overrides |" in text


def test_append_args_joins_continuations():
    text = "tool convert x\ntool run a \\\n    b  # note\necho done\n"
    out = doccmd.append_args(text, "tool", ["k=1", "s=[1, 2]"], when=lambda argv: argv[1] == "run")
    lines = out.splitlines()
    assert lines[0] == "tool convert x" and lines[2] == "echo done" and len(lines) == 3
    assert shlex.split(lines[1]) == ["tool", "run", "a", "b", "k=1", "s=[1, 2]"]
