"""Image-classification data: CIFAR-10 python pickle batches, Fashion-MNIST IDX files, scikit-learn digits.

All loaders return ``(images, labels)`` with images uint8 ``[N, C, H, W]`` and labels int64 ``[N]``.
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = (
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
DIGITS_CLASSES = tuple(str(i) for i in range(10))

# ---------------------------------------------------------------------------------------------------- CIFAR-10

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only allows numpy array reconstruction and ``_codecs.encode``."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _load_pickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CIFAR-10 batch file missing")
    try:
        with path.open("rb") as f:
            obj = _RestrictedUnpickler(io.BufferedReader(f), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a CIFAR-10 python pickle batch ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict with bytes keys, got {type(obj).__name__}")
    return obj


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch (``data_batch_N`` or ``test_batch``).

    Returns
    -------
    images : np.ndarray
        uint8 [N, 3, 32, 32] (rows are 1024 R, 1024 G, 1024 B values, each 32×32 row-major).
    labels : np.ndarray
        int64 [N] in 0…9.
    """
    path = Path(path)
    obj = _load_pickle(path)
    if b"data" not in obj or b"labels" not in obj:
        raise ValueError(f"{path}: missing b'data' or b'labels' (keys: {sorted(map(repr, obj))[:6]})")
    data, labels = obj[b"data"], obj[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
        raise ValueError(f"{path}: b'data' must be uint8 [N, 3072], got {desc}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0-9, found {int(labels.min())}..{int(labels.max())}")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read ``cifar-10-batches-py`` (``train`` = data_batch_1…5 concatenated, ``test`` = test_batch).

    Training batches that are absent are an error only if none exists; ``batches.meta`` is checked when present.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: CIFAR-10 folder missing (expected cifar-10-batches-py/)")
    meta = root / "batches.meta"
    if meta.is_file():
        names = _load_pickle(meta).get(b"label_names")
        if names is None or len(names) != 10:
            raise ValueError(f"{meta}: expected 10 b'label_names'")
    if split == "test":
        return read_cifar_batch(root / "test_batch")
    if split != "train":
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    files = sorted(root.glob("data_batch_[0-9]*"))
    if not files:
        raise FileNotFoundError(f"{root}: no data_batch_* files")
    parts = [read_cifar_batch(f) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---------------------------------------------------------------------------------------------------- Fashion-MNIST

FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: IDX file missing")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, header {dims} implies {expected}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_dir() -> Path | None:
    """Folder of the Debian ``dataset-fashion-mnist`` files, or None when the package is not installed."""
    if shutil.which("dpkg") is None:
        return None
    proc = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    for line in proc.stdout.split():
        if line.endswith("train-images-idx3-ubyte.gz") and Path(line).is_file():
            return Path(line).parent
    return None


def read_fashion_mnist(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read Fashion-MNIST IDX files from ``root``: images uint8 [N, 1, 28, 28], labels int64 [N]."""
    if split not in FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    img_name, lab_name = FASHION_FILES[split]
    images = read_idx(Path(root) / img_name)
    labels = read_idx(Path(root) / lab_name).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match")
    return images[:, None], labels


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8×8 handwritten digits as uint8 [N, 1, 8, 8] (0–16 rescaled to 0–255)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images[:, None], d.target.astype(np.int64)


def load_demo_source(
    name: str = "auto", fashion_root: str | Path | None = None
) -> tuple[str, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Pick the real embedded image set of the demo.

    Parameters
    ----------
    name : {"auto", "digits", "fashion_mnist"}
        ``auto`` uses Fashion-MNIST when the Debian package is installed, else scikit-learn digits (with a log line).
    fashion_root : path, optional
        A folder holding the four Fashion-MNIST ``*-ubyte.gz`` files (instead of the Debian package's folder).

    Returns
    -------
    (name, images uint8 [N,1,H,W], labels int64 [N], class names)
    """
    if name in ("auto", "fashion_mnist"):
        root = Path(fashion_root) if fashion_root else fashion_mnist_dir()
        if root is not None:
            images, labels = read_fashion_mnist(root, "train")
            return "fashion_mnist", images, labels, FASHION_CLASSES
        if name == "fashion_mnist":
            raise FileNotFoundError(
                "Fashion-MNIST not found: install the Debian package (apt-get install dataset-fashion-mnist) "
                "or use dataset=digits"
            )
        log.info("Debian package dataset-fashion-mnist not installed: using scikit-learn digits")
    elif name != "digits":
        raise ValueError(f"unknown demo dataset {name!r}; expected auto, digits or fashion_mnist")
    images, labels = load_digits_images()
    return "digits", images, labels, DIGITS_CLASSES
