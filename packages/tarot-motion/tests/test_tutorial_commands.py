"""The commands of docs/tutorials/motion.md are executed (blocks marked ``<!-- doctest: run -->``: the quick demo and
the step-by-step pipeline on the real Waymo scenarios embedded in metadrive-simulator) or parsed and their config
validated (``<!-- doctest: check -->``), so the tutorial cannot drift from the CLI.

The extraction logic lives in ``tests_docs/doccmd.py`` at the repository root; see that file for the markers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "tutorials" / "motion.md"
sys.path.insert(0, str(ROOT / "tests_docs"))
doccmd = pytest.importorskip("doccmd", reason="needs the repository checkout (tests_docs/doccmd.py)")


def _metadrive_installed() -> bool:
    try:
        from tarot_motion.convert import legacy_waymo_files

        return len(legacy_waymo_files()) == 3
    except Exception:  # noqa: BLE001 - any failure means the embedded scenarios are not there
        return False


def _validate(prog: str, args, workdir: Path) -> None:
    """Overrides and config files of a tutorial command must only use known config keys."""
    if prog != "tarot-motion" or args.command == "convert-metadrive":
        return
    from tarot_motion.config import load_config

    if args.command == "demo":
        load_config(None, args.overrides)
        return
    config = args.config if args.config is None or args.config.is_absolute() else workdir / args.config
    load_config(config, args.overrides)


@pytest.mark.skipif(not _metadrive_installed(), reason="needs metadrive-simulator==0.3.0.1 (installed --no-deps)")
def test_motion_tutorial_commands(tmp_path):
    log = doccmd.run_page(PAGE, tmp_path, validate=_validate, timeout=900)
    assert sum(line.endswith("ran") for line in log) >= 4, log
    assert (tmp_path / "runs" / "sel" / "report" / "index.html").is_file()
    assert (tmp_path / "runs" / "eval" / "metrics.json").is_file()


def test_cli_reference_is_current():
    doccmd.assert_cli_reference_current("tarot-motion")
