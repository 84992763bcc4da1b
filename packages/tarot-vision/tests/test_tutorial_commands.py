"""The commands of docs/tutorials/vision.md are executed (blocks marked ``<!-- doctest: run -->``) or parsed and
their config overrides validated (``<!-- doctest: check -->``), so the tutorial cannot drift from the CLI.

The extraction logic lives in ``tests_docs/doccmd.py`` at the repository root; see that file for the markers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "tutorials" / "vision.md"
sys.path.insert(0, str(ROOT / "tests_docs"))
doccmd = pytest.importorskip("doccmd", reason="needs the repository checkout (tests_docs/doccmd.py)")


def _validate(prog: str, args, workdir: Path) -> None:
    """Config overrides of a tutorial command must name existing keys of the command's packaged config."""
    if prog != "tarot-vision" or args.command == "convert":
        return
    from tarot_vision.config import resolve_config

    name = {"demo": "demo", "lds": "lds"}.get(args.command, "seg")
    config = args.config if args.config is None or args.config.is_absolute() else workdir / args.config
    resolve_config(name, config, args.overrides)


def test_vision_tutorial_commands(tmp_path):
    log = doccmd.run_page(PAGE, tmp_path, validate=_validate, timeout=900)
    assert any(line.endswith("ran") for line in log), log
    assert (tmp_path / "runs" / "vision-quick" / "report" / "index.html").is_file()


def test_cli_reference_is_current():
    doccmd.assert_cli_reference_current("tarot-vision")
