"""Pictures for the reports: example images of a selection per source, and segmentation overlays.

Both write a PNG atomically (a temporary name, then a rename), so a report never links a half-written picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    from tarot.app.report import _pyplot as core_pyplot

    return core_pyplot()


def _save(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    plt = _pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(out)
    return out


def to_display(image: np.ndarray) -> np.ndarray:
    """An image as matplotlib shows it: ``[H, W]`` (grey) or ``[H, W, 3]``, values in [0, 1].

    Accepts ``[C, H, W]`` or ``[H, W, C]`` with C in {1, 3}, or ``[H, W]``; uint8 is scaled by 1/255, floats in
    [-1, 1] (the classifier's input range) are mapped to [0, 1], other floats are clipped to [0, 1]."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    a = a.astype(np.float64)
    if a.min() < 0:
        a = (a + 1.0) / 2.0
    return np.clip(a, 0.0, 1.0)


def selection_examples_figure(columns: Mapping[str, Mapping[str, tuple[Sequence[np.ndarray], str]]],
                              path: str | Path, per_row: int = 6) -> Path:
    """Example images of several selections side by side, one row per source.

    Parameters
    ----------
    columns : mapping
        ``{selection name: {source: (images, caption)}}``; ``images`` are at most ``per_row`` arrays (any layout
        :func:`to_display` takes), ``caption`` e.g. ``"12 of 80 selected"``. Sources missing from a selection get an
        empty cell with the caption ``"none selected"``.
    per_row : int
        Images per cell.
    """
    plt = _pyplot()
    names = list(columns)
    sources = sorted({s for col in columns.values() for s in col})
    if not names or not sources:
        raise ValueError("selection_examples_figure needs at least one selection with one source")
    cell_w, cell_h = 0.75 * per_row, 1.05
    fig, axes = plt.subplots(len(sources), len(names), figsize=(cell_w * len(names) + 1.2, cell_h * len(sources) + 0.6),
                             squeeze=False)
    for c, name in enumerate(names):
        for r, src in enumerate(sources):
            ax = axes[r, c]
            images, caption = columns[name].get(src, ((), "none selected"))
            tiles = [to_display(im) for im in list(images)[:per_row]]
            if tiles:
                h = max(t.shape[0] for t in tiles)
                w = max(t.shape[1] for t in tiles)
                rgb = any(t.ndim == 3 for t in tiles)
                strip = np.ones((h, (w + 1) * per_row - 1, 3) if rgb else (h, (w + 1) * per_row - 1))
                for k, t in enumerate(tiles):
                    t3 = np.repeat(t[..., None], 3, -1) if rgb and t.ndim == 2 else t
                    strip[: t.shape[0], k * (w + 1): k * (w + 1) + t.shape[1]] = t3
                ax.imshow(strip, cmap=None if rgb else "gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(caption, fontsize=7, loc="left")
            if c == 0:
                ax.set_ylabel(src, fontsize=8, rotation=0, ha="right", va="center")
        axes[0, c].annotate(name, xy=(0.5, 1.0), xytext=(0, 16), xycoords="axes fraction", textcoords="offset points",
                            ha="center", fontsize=10, fontweight="bold")
    fig.tight_layout()
    return _save(fig, path)


def colorize(train_ids: np.ndarray, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """trainId map ``[H, W]`` → RGB in [0, 1] with the Cityscapes palette; ignore (255) is black."""
    from .labels import PALETTE

    pal = np.zeros((256, 3), dtype=np.float64)
    pal[: len(palette or PALETTE)] = np.asarray(palette or PALETTE, dtype=np.float64) / 255.0
    return pal[np.asarray(train_ids, dtype=np.int64).clip(0, 255)]


def overlay_figure(items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, str]], path: str | Path,
                   alpha: float = 0.6) -> Path:
    """Segmentation overlays: one row per image with the image, the ground truth and the prediction, the label maps
    blended over the image (``alpha``) in the Cityscapes colours; ignored pixels (255) show the image alone.

    Parameters
    ----------
    items : sequence of (image [H, W, 3] uint8, ground truth [H, W], prediction [H, W], title)
        The trainId maps must have the image's size.
    """
    plt = _pyplot()
    if not items:
        raise ValueError("overlay_figure needs at least one image")
    h, w = np.asarray(items[0][0]).shape[:2]
    fig, axes = plt.subplots(len(items), 3, figsize=(3 * 3.2, len(items) * 3.2 * h / max(w, 1) + 0.5),
                             squeeze=False)
    for r, (image, gt, pred, title) in enumerate(items):
        img = to_display(image)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        for c, (lab, what) in enumerate(((None, "image"), (gt, "ground truth"), (pred, "prediction"))):
            ax = axes[r, c]
            shown = img
            if lab is not None:
                lab = np.asarray(lab)
                if lab.shape != img.shape[:2]:
                    raise ValueError(f"{title}: {what} is {lab.shape}, the image {img.shape[:2]}")
                keep = (lab != 255)[..., None]
                shown = np.where(keep, (1 - alpha) * img + alpha * colorize(lab), img)
            ax.imshow(shown, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title}: {what}" if c == 0 else what, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
