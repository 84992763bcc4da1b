"""Bad input to tarot-llm, one row per case: exit status 2, one stderr line naming the file, line or key and what
was expected, no traceback, and no artifact that looks complete."""

from __future__ import annotations

import json

import pytest
from tarot.app.conventions import check_read_only_output
from tarot_llm.cli import main


def _lines(path, *records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


DOLLY = {"instruction": "Say hi", "context": "", "response": "hi", "category": "open_qa"}
CASES = {
    "invalid JSON line": (lambda t: ["convert", "dolly", _lines(t / "d.jsonl", DOLLY, '{"instruction": '),
                                     t / "out.jsonl"], "d.jsonl:2: invalid JSON", "out.jsonl"),
    "empty response": (lambda t: ["convert", "dolly", _lines(t / "d.jsonl", {**DOLLY, "response": "  "}),
                                  t / "out.jsonl"], "d.jsonl:1", "out.jsonl"),
    "unknown OASST1 role": (lambda t: ["convert", "oasst1", _lines(t / "o.jsonl", {
        "message_id": "r", "parent_id": None, "role": "moderator", "text": "Q"}), t / "out.jsonl"],
        "o.jsonl:1: unknown role 'moderator'", "out.jsonl"),
    "raw file missing": (lambda t: ["convert", "flan_v2", t / "none.jsonl", t / "out.jsonl"], "none.jsonl",
                         "out.jsonl"),
    "unknown config key": (lambda t: ["select", "--out", t / "run", "--set", "select.ratoi=0.1"],
                           "unknown config key 'select.ratoi'", "run/selection/summary.json"),
    "config file missing": (lambda t: ["warmup", "--out", t / "run", "--config", t / "none.yaml"], "none.yaml",
                            "run/warmup"),
    "missing feature store": (lambda t: ["select", "--out", t / "run", "--store", t / "nostore"], "nostore",
                              "run/selection/summary.json"),
    "train before select": (lambda t: ["train", "--out", t / "run"], "selection", "run/train"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_complete(case, tmp_path, capsys):
    build, message, artifact = CASES[case]
    argv = [str(a) for a in build(tmp_path)]
    rc = main(argv + ([] if argv[0] == "convert" else ["--no-progress"]))
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("tarot-llm "), err
    assert message in lines[0] and "Traceback" not in err
    assert not (tmp_path / artifact).exists()


def test_read_only_output_folder_is_one_line_exit_2(tmp_path):
    """An --out inside a read-only folder: one line naming the folder, exit 2, nothing written."""
    check_read_only_output("tarot_llm.cli", "tarot-llm", ["select", "--store", tmp_path / "nostore"], tmp_path / "ro")
