r"""Out-of-core helpers: a memory budget and output arrays that spill to memmapped temporary files.

Selection on a :class:`tarot.features.store.FeatureStore` reads the features through read-only memmaps. The whitening
statistics are streamed over row blocks (:meth:`tarot.geometry.whitening.Whitener.fit`), the whitened rows are
written block by block into an output array, and top-k scoring streams candidate blocks
(:func:`tarot.geometry.scoring.topk_neighbors`). This module decides where the whitened output lives: in RAM when
it fits the memory budget, otherwise in a memmapped temporary file (unlinked at creation, so the disk space is
released as soon as the array is garbage-collected, also after a crash).

Memory budget
-------------
``memory_budget(None)`` resolves, in order: the ``TAROT_MEMORY_BUDGET`` environment variable (bytes, or a size such
as ``"512M"``, ``"8G"``, ``"1.5GiB"``), else half of the memory currently available (``MemAvailable`` of
``/proc/meminfo``; half of the physical memory where that is unavailable; 4 GiB as the last resort).

Temporary files go to ``workdir``, else ``TAROT_TMPDIR``, else :func:`tempfile.gettempdir` (avoid a ``tmpfs``
``/tmp``: it is RAM).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence

import numpy as np

__all__ = ["BUDGET_ENV", "TMPDIR_ENV", "parse_bytes", "memory_budget", "temp_memmap", "output_arrays"]

BUDGET_ENV = "TAROT_MEMORY_BUDGET"
TMPDIR_ENV = "TAROT_TMPDIR"
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_bytes(value: int | float | str) -> int:
    """Parse a byte count: an integer, or a string such as ``"4096"``, ``"512M"``, ``"8G"``, ``"1.5GiB"``.

    Units are binary (K = 1024). Raises :class:`ValueError` on anything else or a negative value.
    """
    if isinstance(value, bool):
        raise ValueError(f"memory size must be a number of bytes or a string like '8G', got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"memory size must be a finite number >= 0, got {value!r}")
        return int(value)
    m = _SIZE_RE.match(str(value))
    if m is None:
        raise ValueError(f"cannot parse memory size {value!r}: use bytes or a size like '512M', '8G', '1.5GiB'")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def available_bytes() -> int:
    """Memory available now (``MemAvailable`` of /proc/meminfo; physical memory, else 8 GiB, where unreadable)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return 8 * 1024**3


def memory_budget(budget: int | float | str | None = None) -> int:
    """Bytes that in-RAM outputs may take: ``budget`` if given, else ``$TAROT_MEMORY_BUDGET``, else half the
    available memory (see the module docstring)."""
    if budget is not None:
        return parse_bytes(budget)
    env = os.environ.get(BUDGET_ENV)
    if env:
        try:
            return parse_bytes(env)
        except ValueError as exc:
            raise ValueError(f"${BUDGET_ENV}: {exc}") from None
    return available_bytes() // 2


def temp_memmap(shape: Sequence[int], dtype: np.dtype | type = np.float32,
                workdir: str | os.PathLike | None = None) -> np.memmap:
    """A writable, zero-filled :class:`numpy.memmap` backed by an already-unlinked temporary file.

    The file has no name on disk once this returns; its space is freed when the last reference to the array goes
    away (or the process ends). ``workdir`` defaults to ``$TAROT_TMPDIR``, else the system temporary directory.
    """
    shape = tuple(int(s) for s in shape)
    directory = workdir if workdir is not None else (os.environ.get(TMPDIR_ENV) or None)
    if directory is not None and not os.path.isdir(directory):
        raise FileNotFoundError(f"temporary directory {directory} does not exist")
    if int(np.prod(shape)) * np.dtype(dtype).itemsize == 0:
        raise ValueError(f"cannot memory-map an empty array of shape {shape}")
    where = None if directory is None else str(directory)
    with tempfile.TemporaryFile(prefix="tarot-", suffix=".f32", dir=where) as fh:
        # mmap duplicates the descriptor, so the mapping outlives the (anonymous) file object
        return np.memmap(fh, dtype=dtype, mode="w+", shape=shape)


def output_arrays(shapes: Sequence[Sequence[int]], dtype: np.dtype | type = np.float32, *,
                  memory_budget_bytes: int | float | str | None = None,
                  workdir: str | os.PathLike | None = None) -> list[np.ndarray]:
    """Allocate one output array per shape: in RAM while the running total fits the budget, else memmapped.

    Arrays are placed smallest first (targets before candidates in a selection), so the small, densely reused ones
    stay in RAM and only the large ones spill to :func:`temp_memmap` files. Returned in the order of ``shapes``.

    Parameters
    ----------
    shapes : sequence of shapes
    dtype : numpy dtype
    memory_budget_bytes : int, float or str, optional
        See :func:`memory_budget`; ``0`` forces every non-empty output onto disk.
    workdir : path, optional
        Directory of the temporary files.
    """
    budget = memory_budget(memory_budget_bytes)
    itemsize = np.dtype(dtype).itemsize
    sizes = [int(np.prod([int(s) for s in shape])) * itemsize for shape in shapes]
    out: list[np.ndarray | None] = [None] * len(shapes)
    used = 0
    for i in sorted(range(len(shapes)), key=lambda j: sizes[j]):
        if sizes[i] == 0 or used + sizes[i] <= budget:
            out[i] = np.empty(tuple(int(s) for s in shapes[i]), dtype=dtype)
            used += sizes[i]
        else:
            out[i] = temp_memmap(shapes[i], dtype, workdir)
    return out  # type: ignore[return-value]
