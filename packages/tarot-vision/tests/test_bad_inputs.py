"""Bad input to tarot-vision, one row per case: exit status 2, one stderr line naming the file or key and what was
expected, no traceback, and no artifact that looks complete."""

from __future__ import annotations

import pytest
from tarot.app.conventions import check_read_only_output
from tarot_vision.cli import main
from vision_fixtures import make_gta5


def _gta(t, **kw):
    return make_gta5(t / "gta5", mismatch=None, **kw)


def _gta_without_label(t):
    root = _gta(t)
    (root / "labels" / "00002.png").unlink()
    return root


def _gta_truncated_image(t):
    root = _gta(t)
    img = root / "images" / "00003.png"
    img.write_bytes(img.read_bytes()[:40])
    return root


def _write(path, text):
    path.write_text(text)
    return path


CASES = {
    "cityscapes folder missing": (lambda t: ["convert", "cityscapes", "--root", t / "nowhere"],
                                  "Cityscapes image folder missing", None),
    "label missing": (lambda t: ["convert", "gta5", "--root", _gta_without_label(t)], "00002.png: no label found",
                      None),
    "truncated image": (lambda t: ["convert", "gta5", "--root", _gta_truncated_image(t)],
                        "00003.png: image file is truncated or corrupted", "gta5/labels/00003_labelTrainIds.png"),
    "unknown config key": (lambda t: ["featurize", "--out", t / "f", "--set", "featurize.proj_dimm=8"],
                           "unknown config key 'featurize.proj_dimm'", "f/features/manifest.json"),
    "override without =": (lambda t: ["featurize", "--out", t / "f", "--set", "featurize.proj_dim"],
                           "expected key=value", None),
    "config not a mapping": (lambda t: ["featurize", "--out", t / "f", "--config", _write(t / "c.yaml", "- 1\n")],
                             "c.yaml", None),
    "config file missing": (lambda t: ["featurize", "--out", t / "f", "--config", t / "none.yaml"], "none.yaml",
                            None),
    "candidate root not set": (lambda t: ["featurize", "--out", t / "f", "--set", "candidate.root=null"],
                               "candidate.root is not set", "f/features/manifest.json"),
    "missing feature store": (lambda t: ["select", "--store", t / "nostore", "--out", t / "s"], "nostore",
                              "s/selection/result.json"),
    "missing checkpoint": (lambda t: ["evaluate", "--checkpoint", t / "none.pth", "--out", t / "e", "--set",
                                      f"target.root={t}"], "none.pth", "e/metrics.json"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_complete(case, tmp_path, capsys):
    build, message, artifact = CASES[case]
    rc = main([*map(str, build(tmp_path)), "--no-progress"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("tarot-vision "), err
    assert message in lines[0] and "Traceback" not in err
    if artifact is not None:
        assert not (tmp_path / artifact).exists()


def test_read_only_output_folder_is_one_line_exit_2(tmp_path):
    """An --out inside a read-only folder: one line naming the folder, exit 2, nothing written."""
    argv = ["select", "--store", tmp_path / "nostore"]
    check_read_only_output("tarot_vision.cli", "tarot-vision", argv, tmp_path / "ro")
