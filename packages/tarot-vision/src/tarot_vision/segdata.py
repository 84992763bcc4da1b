"""Cityscapes and GTA5 in their real on-disk layouts: scanning, trainId conversion, ann_files and a torch dataset.

Layouts (see ``specs/vision.md`` §1, §3)::

    <cityscapes>/leftImg8bit/<split>/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png
    <cityscapes>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      (mode L, ids 0-33)
    <cityscapes>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png (written by conversion)
    <gta5>/images/NNNNN.png
    <gta5>/labels/NNNNN.png                   (mode P: palette index = Cityscapes id)
    <gta5>/labels/NNNNN_labelTrainIds.png     (written by conversion)

Samples are addressed by *stem* (``aachen/aachen_000000_000019``, ``00001``), the unit of mmseg's ``ann_file``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .labels import (
    IGNORE_INDEX,
    LabelFormatError,
    check_image,
    check_train_ids,
    ids_to_train_ids,
    image_size,
    read_label_png,
    read_rgb,
    save_train_ids,
)

log = logging.getLogger(__name__)

CITYSCAPES_IMG_SUFFIX = "_leftImg8bit.png"
CITYSCAPES_IDS_SUFFIX = "_gtFine_labelIds.png"
CITYSCAPES_TRAINIDS_SUFFIX = "_gtFine_labelTrainIds.png"
GTA_IMG_SUFFIX = ".png"
GTA_TRAINIDS_SUFFIX = "_labelTrainIds.png"
_CITY_NAME = re.compile(r"^([a-z_]+)_(\d{6})_(\d{6})_leftImg8bit\.png$")
_GTA_NAME = re.compile(r"^(\d{5})\.png$")

#: mmseg's SegDataPreProcessor statistics (RGB order, 0-255 scale).
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SegRecord:
    """One image with its source label (ids) and trainId label paths."""

    stem: str
    image: Path
    label_ids: Path  # Cityscapes labelIds PNG / GTA5 palettised PNG
    label_train: Path  # the converted _labelTrainIds.png (may not exist yet)
    dataset: str  # "cityscapes" or "gta5"


def scan_cityscapes(root: str | Path, split: str) -> list[SegRecord]:
    """List a Cityscapes split in sorted stem order.

    Parameters
    ----------
    root : str or Path
        Directory holding ``leftImg8bit/`` and ``gtFine/``.
    split : str
        ``train``, ``val`` or ``test``.

    Returns
    -------
    list of SegRecord
        One record per ``*_leftImg8bit.png``; label paths are derived, not checked (see :func:`check_records`).
    """
    root = Path(root)
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise FileNotFoundError(f"{img_dir}: Cityscapes image folder missing (expected leftImg8bit/{split}/<city>/)")
    records = []
    for path in sorted(img_dir.glob(f"*/*{CITYSCAPES_IMG_SUFFIX}")):
        m = _CITY_NAME.match(path.name)
        if m is None or m.group(1) != path.parent.name:
            raise ValueError(
                f"{path}: expected <city>_<seq:06d>_<frame:06d>_leftImg8bit.png inside the folder of its city"
            )
        base = path.name[: -len(CITYSCAPES_IMG_SUFFIX)]
        city = path.parent.name
        gt = root / "gtFine" / split / city
        records.append(
            SegRecord(
                stem=f"{city}/{base}",
                image=path,
                label_ids=gt / f"{base}{CITYSCAPES_IDS_SUFFIX}",
                label_train=gt / f"{base}{CITYSCAPES_TRAINIDS_SUFFIX}",
                dataset="cityscapes",
            )
        )
    if not records:
        raise FileNotFoundError(f"{img_dir}: no *{CITYSCAPES_IMG_SUFFIX} files found")
    return records


def scan_gta5(root: str | Path) -> list[SegRecord]:
    """List GTA5 frames (``images/NNNNN.png``) in sorted order; converted ``*_labelTrainIds.png`` are not sources."""
    root = Path(root)
    img_dir = root / "images"
    if not img_dir.is_dir():
        raise FileNotFoundError(f"{img_dir}: GTA5 image folder missing (expected images/NNNNN.png)")
    records = []
    for path in sorted(img_dir.iterdir()):
        m = _GTA_NAME.match(path.name)
        if m is None:
            continue
        stem = m.group(1)
        records.append(
            SegRecord(
                stem=stem,
                image=path,
                label_ids=root / "labels" / f"{stem}.png",
                label_train=root / "labels" / f"{stem}{GTA_TRAINIDS_SUFFIX}",
                dataset="gta5",
            )
        )
    if not records:
        raise FileNotFoundError(f"{img_dir}: no NNNNN.png frames found")
    return records


def scan(dataset: str, root: str | Path, split: str = "train") -> list[SegRecord]:
    """Dispatch to :func:`scan_cityscapes` or :func:`scan_gta5` by name."""
    if dataset == "cityscapes":
        return scan_cityscapes(root, split)
    if dataset == "gta5":
        return scan_gta5(root)
    raise ValueError(f"unknown segmentation dataset {dataset!r}; expected 'cityscapes' or 'gta5'")


def _source_modes(rec: SegRecord) -> tuple[str, ...]:
    # GTA5 labels are palettised (index = id); Cityscapes labelIds are mode L. A re-saved L GTA label keeps the ids.
    return ("P", "L") if rec.dataset == "gta5" else ("L",)


def _fit_label(
    label: np.ndarray, img_wh: tuple[int, int], where: Path, on_size_mismatch: str
) -> tuple[np.ndarray, bool]:
    h, w = label.shape
    if (w, h) == tuple(img_wh):
        return label, False
    if on_size_mismatch == "error":
        raise LabelFormatError(f"{where}: label is {w}x{h} but its image is {img_wh[0]}x{img_wh[1]}")
    if on_size_mismatch != "resize":
        raise ValueError(f"on_size_mismatch must be 'resize' or 'error', got {on_size_mismatch!r}")
    resized = Image.fromarray(label).resize((int(img_wh[0]), int(img_wh[1])), resample=Image.Resampling.NEAREST)
    return np.asarray(resized), True


def is_stale(rec: SegRecord) -> bool:
    """True when the converted ``_labelTrainIds.png`` exists but its source label was modified after it was written
    (the converted file then no longer says what the source says)."""
    if not (rec.label_train.is_file() and rec.label_ids.is_file()):
        return False
    return rec.label_ids.stat().st_mtime_ns > rec.label_train.stat().st_mtime_ns


def load_train_ids(rec: SegRecord, on_size_mismatch: str = "resize") -> np.ndarray:
    """Return the trainId map of a record at its image's size.

    Uses the converted ``_labelTrainIds.png`` when present and not older than its source (validated to 0…18/255),
    else maps the source ids through the LUT on the fly (a stale converted file is logged and not used).
    """
    stale = is_stale(rec)
    if stale:
        log.warning("%s is older than its source %s; mapping the source instead (rerun `tarot-vision convert`)",
                    rec.label_train, rec.label_ids)
    if rec.label_train.is_file() and not stale:
        arr = check_train_ids(read_label_png(rec.label_train, ("L",)), rec.label_train)
        where = rec.label_train
    else:
        arr = ids_to_train_ids(read_label_png(rec.label_ids, _source_modes(rec)))
        where = rec.label_ids
    arr, _ = _fit_label(arr, image_size(rec.image), where, on_size_mismatch)
    return arr


def check_records(records: Sequence[SegRecord], on_missing: str = "error") -> list[SegRecord]:
    """Check that every record has a source label or a converted label.

    Parameters
    ----------
    on_missing : {"error", "skip"}
        ``error`` raises naming the first image without a label; ``skip`` drops such records with a warning.
    """
    kept = []
    for rec in records:
        if rec.label_ids.is_file() or rec.label_train.is_file():
            kept.append(rec)
        elif on_missing == "error":
            raise FileNotFoundError(f"{rec.image}: no label found (expected {rec.label_ids})")
        else:
            log.warning("skipping %s: label %s missing", rec.image, rec.label_ids)
    return kept


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def convert(
    dataset: str,
    root: str | Path,
    splits: Sequence[str] = ("train", "val"),
    on_size_mismatch: str = "resize",
    on_missing: str = "error",
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write ``_labelTrainIds.png`` beside every source label and one stem list per split.

    Cityscapes: ``gtFine/<split>/<city>/*_gtFine_labelIds.png`` → ``*_gtFine_labelTrainIds.png``, stem lists
    ``<root>/<split>.txt`` (mmseg's converter format: ``city/stem`` per line). GTA5: ``labels/NNNNN.png`` →
    ``labels/NNNNN_labelTrainIds.png``, stem list ``<root>/all.txt``. Each PNG is written through a temporary file,
    so an interrupted run never leaves a truncated label; rerunning skips finished files unless ``overwrite``, and
    rewrites a converted file whose source label is newer (counted as ``refreshed``). Every image whose label is
    written is checked to be an intact file (:func:`~tarot_vision.labels.check_image`).

    Returns
    -------
    dict
        Summary (counts per split, resized labels, skipped files); also written to ``<root>/conversion.json``.
    """
    root = Path(root)
    summary: dict = {"dataset": dataset, "root": str(root), "on_size_mismatch": on_size_mismatch, "splits": {}}
    for split in splits if dataset == "cityscapes" else ["all"]:
        records = check_records(scan(dataset, root, split), on_missing=on_missing)
        written = existing = resized = refreshed = 0
        for rec in tqdm(records, desc=f"convert {dataset}/{split}", disable=not progress):
            stale = is_stale(rec)
            if rec.label_train.is_file() and not overwrite and not stale:
                existing += 1
                continue
            refreshed += int(stale)
            ids = read_label_png(rec.label_ids, _source_modes(rec))
            train, was_resized = _fit_label(
                ids_to_train_ids(ids), check_image(rec.image), rec.label_ids, on_size_mismatch
            )
            resized += int(was_resized)
            save_train_ids(train, rec.label_train)
            src_ns = rec.label_ids.stat().st_mtime_ns
            if rec.label_train.stat().st_mtime_ns < src_ns:  # a source stamped in the future (clock skew)
                os.utime(rec.label_train, ns=(src_ns, src_ns))
            written += 1
        if refreshed:
            log.info("%s/%s: %d converted labels were older than their source and were rewritten", dataset, split,
                     refreshed)
        if resized:
            log.warning(
                "%s/%s: %d labels differed in size from their image and were resized (nearest)", dataset, split, resized
            )
        _atomic_write_text(root / f"{split}.txt", "".join(f"{r.stem}\n" for r in records))
        summary["splits"][split] = {
            "images": len(records),
            "written": written,
            "existing": existing,
            "refreshed": refreshed,
            "resized": resized,
        }
    _atomic_write_text(root / "conversion.json", json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------------------------------------------- ann_file


def write_ann_file(stems: Sequence[str], path: str | Path, repeats: Sequence[int] | None = None) -> Path:
    """Write an mmseg ``ann_file``: one stem per line (no suffix), each repeated ``repeats[i]`` times, in order.

    With mmseg's ``InfiniteSampler`` a line that appears r times is sampled r times as often, which is how TAROT's
    integer repeat weights reach training.
    """
    path = Path(path)
    if repeats is not None and len(repeats) != len(stems):
        raise ValueError(f"{path}: {len(stems)} stems but {len(repeats)} repeat counts")
    lines = []
    for i, stem in enumerate(stems):
        if not stem or "\n" in stem or stem.endswith(".png"):
            raise ValueError(f"{path}: stem {stem!r} (row {i}) must be a non-empty path without suffix")
        r = 1 if repeats is None else int(repeats[i])
        if r < 0:
            raise ValueError(f"{path}: negative repeat count {r} for stem {stem!r} (row {i})")
        lines.extend([stem] * r)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(path, "".join(f"{s}\n" for s in lines))
    return path


def write_selection_ann_file(result, stems: Sequence[str], path: str | Path) -> Path:
    """Write the ann_file of a ``tarot.SelectionResult``: its indices into ``stems`` with repeat weights."""
    from tarot import repeat_indices

    idx = np.asarray(repeat_indices(result), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(stems)):
        raise ValueError(f"{path}: selection index {int(idx.max())} outside the {len(stems)} candidate stems")
    return write_ann_file([stems[i] for i in idx], path)


def read_ann_file(path: str | Path) -> list[str]:
    """Read an ann_file (one stem per line; blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ann_file missing")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def resolve_ann_file(path: str | Path, dataset: str, root: str | Path, split: str = "train") -> list[SegRecord]:
    """Turn an ann_file into records in file order (duplicates kept), as mmseg's ``BaseSegDataset`` does."""
    root = Path(root)
    out = []
    for lineno, stem in enumerate(read_ann_file(path), start=1):
        if dataset == "gta5":
            rec = SegRecord(
                stem,
                root / "images" / f"{stem}{GTA_IMG_SUFFIX}",
                root / "labels" / f"{stem}.png",
                root / "labels" / f"{stem}{GTA_TRAINIDS_SUFFIX}",
                "gta5",
            )
        elif dataset == "cityscapes":
            rec = SegRecord(
                stem,
                root / "leftImg8bit" / split / f"{stem}{CITYSCAPES_IMG_SUFFIX}",
                root / "gtFine" / split / f"{stem}{CITYSCAPES_IDS_SUFFIX}",
                root / "gtFine" / split / f"{stem}{CITYSCAPES_TRAINIDS_SUFFIX}",
                "cityscapes",
            )
        else:
            raise ValueError(f"unknown segmentation dataset {dataset!r}")
        if not rec.image.is_file():
            raise FileNotFoundError(f"{path}:{lineno}: stem {stem!r} has no image {rec.image}")
        out.append(rec)
    return out


# ---------------------------------------------------------------------------------------------------- torch dataset


def _resize_pad(img: np.ndarray, label: np.ndarray | None, size: tuple[int, int]):
    """Resize keeping the aspect ratio to fit inside ``size`` (H, W), then pad right/bottom (image 0, label 255)."""
    H, W = size
    h, w = img.shape[:2]
    scale = min(H / h, W / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img_r = np.asarray(Image.fromarray(img).resize((nw, nh), resample=Image.Resampling.BILINEAR))
    out_img = np.zeros((H, W, 3), dtype=np.uint8)
    out_img[:nh, :nw] = img_r
    out_lab = None
    if label is not None:
        lab_r = np.asarray(Image.fromarray(label).resize((nw, nh), resample=Image.Resampling.NEAREST))
        out_lab = np.full((H, W), IGNORE_INDEX, dtype=np.uint8)
        out_lab[:nh, :nw] = lab_r
    return out_img, out_lab


def _center_crop(img: np.ndarray, label: np.ndarray, size: tuple[int, int]):
    H, W = size
    h, w = img.shape[:2]
    if h < H or w < W:
        return _resize_pad(img, label, size)
    top, left = (h - H) // 2, (w - W) // 2
    return img[top : top + H, left : left + W], label[top : top + H, left : left + W]


def normalize(img: np.ndarray) -> torch.Tensor:
    """uint8 RGB [H, W, 3] → float32 [3, H, W] normalised with mmseg's mean/std."""
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float()
    mean = torch.tensor(MEAN_RGB).view(3, 1, 1)
    std = torch.tensor(STD_RGB).view(3, 1, 1)
    return (x - mean) / std


class SegmentationDataset(Dataset):
    """Fixed-size segmentation samples ``{"image": float [3,H,W], "label": long [H,W]}`` from records.

    Every sample has the same size (required by the vmapped featurizer): ``fit="resize_pad"`` (test-time style:
    keep-ratio resize into ``size`` then pad with ignore) or ``fit="center_crop"``. ``train=True`` adds a seeded
    random horizontal flip.
    """

    def __init__(
        self,
        records: Sequence[SegRecord],
        size: tuple[int, int] = (256, 512),
        fit: str = "resize_pad",
        on_size_mismatch: str = "resize",
        train: bool = False,
        seed: int = 0,
    ) -> None:
        if fit not in ("resize_pad", "center_crop"):
            raise ValueError(f"fit must be 'resize_pad' or 'center_crop', got {fit!r}")
        self.records = list(records)
        self.size = (int(size[0]), int(size[1]))
        self.fit = fit
        self.on_size_mismatch = on_size_mismatch
        self.train = train
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def stems(self) -> list[str]:
        return [r.stem for r in self.records]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rec = self.records[i]
        img = read_rgb(rec.image)
        lab = load_train_ids(rec, self.on_size_mismatch)
        if self.fit == "resize_pad":
            img, lab = _resize_pad(img, lab, self.size)
        else:
            img, lab = _center_crop(img, lab, self.size)
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            if rng.random() < 0.5:
                img, lab = img[:, ::-1], lab[:, ::-1]
        return {"image": normalize(img), "label": torch.from_numpy(np.ascontiguousarray(lab)).long()}
