"""Report pictures of tarot-vision (tarot_vision.figures)."""

from __future__ import annotations

import numpy as np
import pytest
from tarot_vision.figures import colorize, overlay_figure, selection_examples_figure, to_display


def test_to_display_layouts_and_ranges():
    chw = np.full((1, 4, 5), 255, np.uint8)
    assert to_display(chw).shape == (4, 5) and to_display(chw).max() == 1.0
    rgb = np.zeros((3, 4, 5), np.float32) - 1.0  # the classifier's [-1, 1] input range
    assert to_display(rgb).shape == (4, 5, 3) and to_display(rgb).max() == 0.0
    assert to_display(np.full((4, 5, 3), 2.0)).max() == 1.0


def test_selection_examples_figure(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (1, 8, 8), dtype=np.uint8) for _ in range(3)]
    cols = {"TAROT": {"clean": (imgs, "3 of 10 selected")}, "random": {"noisy": (imgs[:1], "1 of 5 selected")}}
    png = selection_examples_figure(cols, tmp_path / "ex.png", per_row=4)
    assert png.read_bytes()[:4] == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["ex.png"]
    with pytest.raises(ValueError, match="at least one selection"):
        selection_examples_figure({}, tmp_path / "none.png")


def test_colorize_and_overlay(tmp_path):
    lab = np.array([[0, 13], [255, 18]])
    rgb = colorize(lab)
    assert np.allclose(rgb[0, 0], np.array([128, 64, 128]) / 255)
    assert np.allclose(rgb[0, 1], np.array([0, 0, 142]) / 255)
    assert np.allclose(rgb[1, 0], 0.0)  # ignore is black
    img = np.zeros((2, 2, 3), np.uint8)
    png = overlay_figure([(img, lab, lab, "a")], tmp_path / "ov.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="prediction is \\(1, 2\\), the image \\(2, 2\\)"):
        overlay_figure([(img, lab, lab[:1], "a")], tmp_path / "bad.png")
