"""Selection on the shards of a sharded featurization without merging them first.

:class:`ShardedStore` reads the complete shard stores written by ``featurize_to_store(shard=(rank, world))`` (or
``featurize_distributed``) as one store: the same checks as a merge (one complete shard of every rank, the same
featurization, rows that tile every split, labels that match the recorded full lists), but no copy. Its
``features(split)`` is a :class:`RowConcat` over the shards' read-only memmaps: row blocks are read from the shards
they fall in, so whitening and the streamed neighbour search read the shards block by block, exactly as they read one
store (and a selection gives the same result as on the merged store, tested).

:func:`open_store` opens either kind from a path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from tarot.errors import StoreError
from tarot.features.merge import check_shards, concatenated_labels
from tarot.features.store import MANIFEST, FeatureStore

__all__ = ["RowConcat", "ShardedStore", "open_store", "shard_dirs"]

_SHARD = re.compile(r"^shard-(\d{5})-of-(\d{5})$")


class RowConcat:
    """Read-only row-wise concatenation of 2-D arrays of one dtype and width (e.g. memmaps), without a copy.

    Supports what the selection reads: ``shape``, ``dtype``, ``ndim``, ``len``, row slices (``x[s:e]``, copied from
    the parts they span), integer or boolean row indices, a single row, and ``numpy.asarray`` (the whole array)."""

    def __init__(self, parts: list[Any]) -> None:
        if not parts:
            raise ValueError("RowConcat needs at least one part")
        widths = {p.shape[1:] for p in parts}
        dtypes = {np.dtype(p.dtype) for p in parts}
        if len(widths) != 1 or len(dtypes) != 1 or any(p.ndim != 2 for p in parts):
            raise ValueError(f"parts must be 2-D with one width and dtype, got {widths} and {dtypes}")
        self.parts = parts
        self.offsets = np.concatenate([[0], np.cumsum([p.shape[0] for p in parts])]).astype(np.int64)
        self.dtype = dtypes.pop()
        self.shape = (int(self.offsets[-1]), int(parts[0].shape[1]))
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def _slice(self, start: int, stop: int) -> np.ndarray:
        pieces = []
        for i, part in enumerate(self.parts):
            lo, hi = max(start, self.offsets[i]), min(stop, self.offsets[i + 1])
            if lo < hi:
                pieces.append(np.asarray(part[lo - self.offsets[i] : hi - self.offsets[i]]))
        if not pieces:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.where(rows < 0, rows + self.shape[0], rows)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        for i in np.unique(part):
            at = np.flatnonzero(part == i)
            out[at] = np.asarray(self.parts[i][rows[at] - self.offsets[i]])
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            out = self._slice(start, stop) if step == 1 else self._take(np.arange(start, stop, step))
        elif isinstance(key, (int, np.integer)):
            out = self._take(np.asarray([int(key)]))[0]
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                if idx.shape != (self.shape[0],):
                    raise IndexError(f"boolean index of shape {idx.shape} for {self.shape[0]} rows")
                idx = np.flatnonzero(idx)
            out = self._take(idx.astype(np.int64).ravel()).reshape(*idx.shape, self.shape[1])
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self._slice(0, self.shape[0])
        return whole if dtype is None else whole.astype(dtype, copy=False)


def shard_dirs(path: str | os.PathLike) -> list[Path]:
    """The ``shard-RRRRR-of-WWWWW`` sub-folders of ``path`` (sorted by rank); empty if there are none."""
    p = Path(path)
    if not p.is_dir():
        return []
    found = [d for d in p.iterdir() if d.is_dir() and _SHARD.match(d.name)]
    return sorted(found, key=lambda d: int(_SHARD.match(d.name).group(1)))  # type: ignore[union-attr]


class ShardedStore:
    """Complete shard stores read as one store (see the module docstring).

    Parameters
    ----------
    shards : list of FeatureStore
        One complete shard of every rank of one sharded featurization (any order).
    path : path-like, optional
        The folder holding the shards (reported as the store's path).
    """

    def __init__(self, shards: list[FeatureStore], path: str | os.PathLike | None = None) -> None:
        if not shards:
            raise StoreError("sharded store: no shards given")
        self.shards, self._counts = check_shards(list(shards))
        self._labels = {kind: concatenated_labels(self.shards, kind) for kind in ("ids", "sources", "groups")}
        self.path = Path(path) if path is not None else self.shards[0].path.parent
        first = self.shards[0].manifest
        self._manifest = {**first, "shard": None, "status": "complete", "sharded_from":
                          [str(s.path) for s in self.shards],
                          "splits": {k: {"total": n, "row_start": 0, "row_stop": n} for k, n in self._counts.items()}}

    @classmethod
    def open(cls, path: str | os.PathLike) -> ShardedStore:
        """The shards under ``path`` (its ``shard-RRRRR-of-WWWWW`` sub-folders)."""
        dirs = shard_dirs(path)
        if not dirs:
            raise StoreError(f"{path}: no shard-RRRRR-of-WWWWW folders (not a sharded feature store)")
        return cls([FeatureStore.open(d) for d in dirs], path=path)

    @property
    def manifest(self) -> dict[str, Any]:
        return self._manifest

    @property
    def splits(self) -> list[str]:
        return list(self._counts)

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def complete(self) -> bool:
        return True

    def count(self, split: str) -> int:
        if split not in self._counts:
            from tarot.errors import MissingSplitError

            raise MissingSplitError(f"feature store {self.path} has no split {split!r} (splits: {self.splits})")
        return self._counts[split]

    def progress(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for s in self.shards:
            for split, done in s.progress().items():
                acc = out.setdefault(split, {})
                for ck, rows in done.items():
                    acc[ck] = acc.get(ck, 0) + rows
        return out

    def features(self, split: str) -> RowConcat:
        self.count(split)
        return RowConcat([s.features(split) for s in self.shards])

    def ids(self, split: str) -> list[str]:
        self.count(split)
        return self._labels["ids"][split]  # type: ignore[return-value]

    def sources(self, split: str) -> list[str] | None:
        self.count(split)
        return self._labels["sources"][split]

    def groups(self, split: str) -> list[str] | None:
        self.count(split)
        return self._labels["groups"][split]

    def checkpoint_weights(self) -> list[float]:
        return self.shards[0].checkpoint_weights()

    def checkpoint_features(self, split: str) -> list[RowConcat] | None:
        per_shard = [s.checkpoint_features(split) for s in self.shards]
        complete = [p for p in per_shard if p is not None]
        if len(complete) < len(per_shard):
            return None
        return [RowConcat([p[ci] for p in complete]) for ci in range(len(complete[0]))]


def open_store(path: str | os.PathLike) -> FeatureStore | ShardedStore:
    """A feature store at ``path``, or the shards of a sharded featurization under it, read as one store."""
    p = Path(path)
    if (p / MANIFEST).is_file() or not shard_dirs(p):
        return FeatureStore.open(p)
    return ShardedStore.open(p)
