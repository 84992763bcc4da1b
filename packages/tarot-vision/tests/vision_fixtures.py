"""Generators writing Cityscapes / GTA5 trees and CIFAR-10 batches in their real on-disk formats (uniquely named
so that it cannot clash with other packages' test helpers when several test trees run in one process)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

# Every id of the Cityscapes table (0-33) plus ids that must become 255: 34 (lane forks), 200, 255.
ALL_IDS = list(range(34)) + [34, 200, 255]

# The spec's table written out independently of tarot_vision.labels: name -> (id, trainId)
SPEC_TABLE = {
    "unlabeled": (0, 255), "ego vehicle": (1, 255), "rectification border": (2, 255), "out of roi": (3, 255),
    "static": (4, 255), "dynamic": (5, 255), "ground": (6, 255), "road": (7, 0), "sidewalk": (8, 1),
    "parking": (9, 255), "rail track": (10, 255), "building": (11, 2), "wall": (12, 3), "fence": (13, 4),
    "guard rail": (14, 255), "bridge": (15, 255), "tunnel": (16, 255), "pole": (17, 5), "polegroup": (18, 255),
    "traffic light": (19, 6), "traffic sign": (20, 7), "vegetation": (21, 8), "terrain": (22, 9), "sky": (23, 10),
    "person": (24, 11), "rider": (25, 12), "car": (26, 13), "truck": (27, 14), "bus": (28, 15),
    "caravan": (29, 255), "trailer": (30, 255), "train": (31, 16), "motorcycle": (32, 17), "bicycle": (33, 18),
}  # fmt: skip


def expected_train_ids(ids: np.ndarray) -> np.ndarray:
    """Independent reference mapping built from SPEC_TABLE (loops, no LUT)."""
    table = {i: t for i, t in SPEC_TABLE.values()}
    out = np.empty(ids.shape, dtype=np.uint8)
    for idx, v in np.ndenumerate(ids):
        out[idx] = table.get(int(v), 255)
    return out


def label_pattern(h: int, w: int, shift: int = 0) -> np.ndarray:
    """Label ids tiling ALL_IDS in 4x4 blocks, so every id appears."""
    ys, xs = np.mgrid[0:h, 0:w]
    k = (ys // 4) * ((w + 3) // 4) + xs // 4 + shift
    return np.asarray(ALL_IDS, dtype=np.uint8)[k % len(ALL_IDS)]


def rgb_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save_palettised(ids: np.ndarray, path: Path) -> None:
    """Save ids as a mode-"P" PNG whose palette maps index -> an arbitrary colour (as GTA5 does)."""
    im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), np.ascontiguousarray(ids).tobytes())
    rng = np.random.default_rng(1)
    im.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())
    im.save(path)


def make_cityscapes(root: Path, h: int = 32, w: int = 64) -> Path:
    cities = {"train": ["aachen", "bochum"], "val": ["frankfurt", "lindau"]}
    n = 0
    for split, names in cities.items():
        for city in names:
            img_dir = root / "leftImg8bit" / split / city
            gt_dir = root / "gtFine" / split / city
            img_dir.mkdir(parents=True)
            gt_dir.mkdir(parents=True)
            for frame in (19, 20):
                base = f"{city}_000000_{frame:06d}"
                Image.fromarray(rgb_image(h, w, n)).save(img_dir / f"{base}_leftImg8bit.png")
                Image.fromarray(label_pattern(h, w, shift=n)).save(gt_dir / f"{base}_gtFine_labelIds.png")
                (gt_dir / f"{base}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": h, "imgWidth": w}))
                n += 1
    return root


def make_gta5(root: Path, n: int = 4, h: int = 24, w: int = 48, mismatch: int | None = 3) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for i in range(1, n + 1):
        stem = f"{i:05d}"
        Image.fromarray(rgb_image(h, w, 100 + i)).save(root / "images" / f"{stem}.png")
        lh, lw = (h + 2, w - 4) if i == mismatch else (h, w)
        save_palettised(label_pattern(lh, lw, shift=i), root / "labels" / f"{stem}.png")
    return root


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], name: bytes = b"training batch 1 of 5"):
    obj = {
        b"batch_label": name,
        b"labels": list(map(int, labels)),
        b"data": images.reshape(len(labels), 3072),
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(labels))],
    }
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar(root: Path, per_batch: int = 20, batches: int = 3) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b in range(1, batches + 1):
        imgs = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(root / f"data_batch_{b}", imgs, rng.integers(0, 10, per_batch).tolist())
    imgs = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
    write_cifar_batch(root / "test_batch", imgs, [i % 10 for i in range(per_batch)], b"testing batch 1 of 1")
    meta = {
        b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                "horse", "ship", "truck")],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }  # fmt: skip
    with (root / "batches.meta").open("wb") as f:
        pickle.dump(meta, f, protocol=2)
    (root / "readme.html").write_text("<html></html>")
    return root
