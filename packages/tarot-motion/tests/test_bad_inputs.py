"""Bad input to tarot-motion, one row per case: every command ends with exit status 2, one stderr line that names
the file, key or step and what was expected, no traceback, and no artifact that looks complete."""

from __future__ import annotations

import pickle

import pytest
import yaml
from fixtures import varied, write_flat_db, write_legacy_scenario
from tarot.app.conventions import check_read_only_output
from tarot_motion.cli import main


def _db(tmp_path, name="db", n=3):
    return write_flat_db(tmp_path / name, [varied("waymo", i) for i in range(n)])


def _config(tmp_path, **data):
    cfg = {"data": {"cache_dir": str(tmp_path / "cache"), **data}}
    path = tmp_path / "motion.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _truncated_pickle(tmp_path):
    src = tmp_path / "legacy.pkl"
    write_legacy_scenario(src, T=91)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 3])
    return src


def _scenario_without_positions(tmp_path):
    db = _db(tmp_path, "nopos", n=2)
    target = sorted(db.glob("sd_*.pkl"))[0]  # a scenario file (not the summary or mapping)
    sc = pickle.loads(target.read_bytes())
    track = next(iter(sc["tracks"].values()))
    del track["state"]["position"]
    target.write_bytes(pickle.dumps(sc))
    return db


CASES = {
    "unknown config key": (lambda t: ["train", "--out", t / "o", "--set", "train.lrr=1"], "train.lrr", None),
    "override without =": (lambda t: ["train", "--out", t / "o", "--set", "train.lr"], "expected key=value", None),
    "config file missing": (lambda t: ["train", "--out", t / "o", "--config", t / "none.yaml"], "none.yaml", None),
    "config not a mapping": (lambda t: ["train", "--out", t / "o", "--config", _write(t / "l.yaml", "- 1\n")],
                             "l.yaml", None),
    "candidates not configured": (lambda t: ["train", "--out", t / "o"], "data.candidates", "o/last.pt"),
    "misspelt database entry key": (
        lambda t: ["preprocess", "--config", _config(t, candidates=[{"path": str(_db(t)), "lable": "x"}])],
        "unknown key(s) 'lable'", None),
    "empty database folder": (lambda t: ["preprocess", "--db", _mkdir(t / "empty"), "--set",
                                         f"data.cache_dir={t / 'c'}"], "empty database", None),
    "missing database folder": (lambda t: ["preprocess", "--db", t / "nowhere", "--set",
                                           f"data.cache_dir={t / 'c'}"], "nowhere", None),
    "scenario without positions": (lambda t: ["preprocess", "--db", _scenario_without_positions(t), "--set",
                                              f"data.cache_dir={t / 'c'}"], "position", None),
    "truncated legacy pickle": (lambda t: ["convert", "--out", t / "db", "--files", _truncated_pickle(t)],
                                "legacy.pkl", "db/dataset_summary.pkl"),
    "missing feature store": (lambda t: ["select", "--store", t / "nostore", "--out", t / "s"], "nostore",
                              "s/selection/result.json"),
    "missing checkpoint": (lambda t: ["evaluate", "--checkpoint", t / "none.pt", "--out", t / "e", "--config",
                                      _config(t, val={"path": str(_db(t))})], "none.pt", "e/metrics.json"),
}


def _write(path, text):
    path.write_text(text)
    return path


def _mkdir(path):
    path.mkdir()
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_complete(case, tmp_path, capsys):
    build, message, artifact = CASES[case]
    argv = [str(a) for a in build(tmp_path)]
    rc = main(argv + ([] if argv[0] == "convert" else ["--no-progress"]))  # progress bars also go to stderr
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("tarot-motion "), err
    assert message in lines[0] and "Traceback" not in err
    if artifact is not None:
        assert not (tmp_path / artifact).exists()


def test_read_only_output_folder_is_one_line_exit_2(tmp_path):
    """An --out inside a read-only folder: one line naming the folder, exit 2, nothing written."""
    argv = ["select", "--store", tmp_path / "nostore"]
    check_read_only_output("tarot_motion.cli", "tarot-motion", argv, tmp_path / "ro")
