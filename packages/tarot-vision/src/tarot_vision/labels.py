"""Cityscapes label ids, the 19 training classes, and PNG label reading with format checks.

The mapping follows cityscapesScripts 2.3.0 (``labels.py``): 19 evaluated classes get trainIds 0…18, every other id
(0–6, 9, 10, 14–16, 18, 29, 30, anything ≥ 34, and the licence plate's −1, which cannot occur in a uint8 PNG) maps to
255 = ignore.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IGNORE_INDEX = 255
NUM_CLASSES = 19

#: Cityscapes label id -> trainId for the 19 evaluated classes (all others are 255).
ID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip


def _build_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in ID_TO_TRAINID.items():
        lut[label_id] = train_id
    lut.setflags(write=False)
    return lut


#: 256-entry uint8 lookup table: ``LUT[label_id] = trainId``.
LUT: np.ndarray = _build_lut()


class LabelFormatError(ValueError):
    """A label file does not have the expected format (mode, dtype, value range, size)."""


def ids_to_train_ids(ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes label-id array to trainIds through :data:`LUT`.

    Parameters
    ----------
    ids : np.ndarray
        Integer array of label ids (any shape). Values outside 0…255 (e.g. the licence plate's −1) map to 255.

    Returns
    -------
    np.ndarray
        uint8 array of the same shape with values in 0…18 or 255.
    """
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise LabelFormatError(f"label ids must be integers, got dtype {ids.dtype}")
    if ids.dtype == np.uint8:
        return LUT[ids]
    out = np.full(ids.shape, IGNORE_INDEX, dtype=np.uint8)
    inside = (ids >= 0) & (ids <= 255)
    out[inside] = LUT[ids[inside].astype(np.uint8)]
    return out


def check_train_ids(arr: np.ndarray, where: str | Path = "<array>") -> np.ndarray:
    """Validate a trainId map (values 0…18 or 255); return it unchanged.

    Raises
    ------
    LabelFormatError
        If any value is outside {0…18, 255} — typically a labelIds map used where trainIds are expected.
    """
    bad = (arr >= NUM_CLASSES) & (arr != IGNORE_INDEX)
    if bad.any():
        vals = sorted(set(np.unique(arr[bad]).tolist()))[:5]
        raise LabelFormatError(
            f"{where}: trainId map holds values {vals} outside 0-18/255 (a labelIds map used as trainIds?)"
        )
    return arr


def read_label_png(path: str | Path, modes: tuple[str, ...]) -> np.ndarray:
    """Read a single-channel label PNG as its raw integer values without any colour conversion.

    For mode ``"P"`` images the returned values are the palette *indices* (never the colours).

    Parameters
    ----------
    path : str or Path
        PNG file.
    modes : tuple of str
        Accepted PIL modes, e.g. ``("P",)`` for GTA5 labels or ``("L", "P")`` for Cityscapes labelIds.

    Returns
    -------
    np.ndarray
        uint8 array [H, W].
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file missing")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in modes:
                raise LabelFormatError(
                    f"{path}: label PNG has mode {mode!r}, expected {' or '.join(repr(m) for m in modes)} "
                    "(single-channel ids; colour renderings are not labels)"
                )
            arr = np.asarray(im)
    except (OSError, SyntaxError) as exc:  # PIL raises these for truncated / non-image files
        raise LabelFormatError(f"{path}: not a readable PNG ({exc})") from None
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise LabelFormatError(f"{path}: expected an 8-bit single-channel label, got {arr.dtype} {arr.shape}")
    return arr


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB [H, W, 3] (grey and palettised images are converted to RGB)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file missing")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def check_image(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image whose file is intact: PIL's ``verify`` walks every chunk (PNG CRCs included)
    without decoding the pixels, so a truncated or corrupted file is an error naming it here rather than deep in
    training."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
    except (OSError, SyntaxError, ValueError) as exc:
        raise LabelFormatError(f"{path}: image file is truncated or corrupted ({exc})") from None
    return size


def image_size(path: str | Path) -> tuple[int, int]:
    """Return (width, height) of an image file without decoding its pixels."""
    with Image.open(path) as im:
        return im.size


def save_train_ids(arr: np.ndarray, path: str | Path) -> None:
    """Write a trainId map as a mode-"L" uint8 PNG atomically (temporary file, then rename)."""
    path = Path(path)
    check_train_ids(arr, path)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(tmp, format="PNG")
    tmp.replace(path)


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """Render a trainId map with the Cityscapes palette (255 → black); returns uint8 [H, W, 3]."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:NUM_CLASSES] = np.asarray(PALETTE, dtype=np.uint8)
    return table[train_ids]
