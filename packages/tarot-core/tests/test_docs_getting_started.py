"""The commands of docs/getting-started.md marked ``<!-- doctest: run -->`` are executed (the quick demo, inspect,
a store written from arrays, select and report), so the page cannot drift from the ``tarot`` CLI. Also checks that
the generated CLI reference page (docs/cli/tarot.md) matches the parser.

The extraction logic lives in ``tests_docs/doccmd.py`` at the repository root; see that file for the markers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "getting-started.md"
sys.path.insert(0, str(ROOT / "tests_docs"))
doccmd = pytest.importorskip("doccmd", reason="needs the repository checkout (tests_docs/doccmd.py)")


def test_getting_started_commands(tmp_path):
    log = doccmd.run_page(PAGE, tmp_path, timeout=600)
    assert sum(line.endswith("ran") for line in log) == 2, log
    assert (tmp_path / "runs" / "demo-quick" / "index.html").is_file()
    assert (tmp_path / "runs" / "my-report" / "index.html").is_file()


def test_doc_block_extraction(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "<!-- doctest: run -->\n```bash\necho hi > out.txt\n```\n\n"
        "<!-- doctest: file c.yaml -->\n```yaml\na: 1\n```\n"
        "text between\n```bash\nnot marked\n```\n"
        "<!-- doctest: check -->\n\n```bash\nX=1 tarot select s --method otm --ratio auto \\\n  --out o  # c\n```\n"
    )
    blocks = doccmd.extract(page)
    assert [b.kind for b in blocks] == ["run", "file", "check"]
    assert blocks[1].arg == "c.yaml" and blocks[1].text == "a: 1\n"
    assert doccmd.commands(blocks[2].text) == [
        ["tarot", "select", "s", "--method", "otm", "--ratio", "auto", "--out", "o"]
    ]
    log = doccmd.run_page(page, tmp_path / "w")
    assert (tmp_path / "w" / "out.txt").read_text() == "hi\n" and (tmp_path / "w" / "c.yaml").is_file()
    assert log[-1].endswith("parsed 1 command(s)")
    bad = tmp_path / "bad.md"
    bad.write_text("<!-- doctest: check -->\n```bash\ntarot select --no-such-flag\n```\n")
    with pytest.raises(AssertionError, match="rejected by tarot's argument parser"):
        doccmd.run_page(bad, tmp_path / "w2")


def test_cli_reference_is_current():
    doccmd.assert_cli_reference_current("tarot")
