"""On-disk feature store: one fp32 ``.npy`` array per split plus a JSON manifest.

Layout of a store directory::

    manifest.json                         dims, dtype, projector config, checkpoints + weights, per-split ids,
                                          source labels, target groups, counts, status, versions
    <split>.npy                           final features [n, k] float32 (written when every row is done)
    partial/<split>.ckpt<c>.npy           per-(split, checkpoint) projected gradients P·Γ_c(z), unweighted
    partial/<split>.ckpt<c>.mask.npy      uint8 completion mask, one entry per row

Every array is a plain ``.npy`` file (``np.lib.format.open_memmap``). Rows are written batch by batch: the feature
rows are flushed first, then their mask entries (``msync``), so a killed run resumes at the first unfinished batch and,
the batches being the same, produces identical bytes. The manifest is replaced atomically (temporary file, fsync,
``os.replace``). A store is ``complete`` only when every row of every split and checkpoint is done and the weighted
sums :math:`\\phi = \\sum_c w_c P\\Gamma_c` are written; reading features of an incomplete store raises.

A sharded run writes ``shard-{rank:05d}-of-{world:05d}`` sub-stores holding contiguous row ranges;
:meth:`FeatureStore.merge` checks and concatenates them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from tarot._version import __version__
from tarot.errors import MissingSplitError, StoreError  # noqa: F401  (re-exported)
from tarot.fileio import write_text_atomic

__all__ = ["FeatureStore", "StoreError"]

FORMAT = "tarot-feature-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_SHARD_RE = re.compile(r"^shard-(\d{5})-of-(\d{5})$")
_ROW_BLOCK = 8192
# fields that must agree between a store on disk and a run that resumes it, and between shards of one merge
SPEC_FIELDS = ("dim", "dtype", "projector", "checkpoints", "batch_size", "precondition", "labels_sha256")


# ---------------------------------------------------------------------------------------------- small helpers
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    out["tarot"] = __version__
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        pass
    return out


def labels_hash(values: Sequence[str] | None) -> str | None:
    """SHA-256 of a label list (ids, sources or groups), order-sensitive; None stays None."""
    if values is None:
        return None
    h = hashlib.sha256()
    for v in values:
        h.update(str(v).encode())
        h.update(b"\0")
    return h.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` atomically (:func:`tarot.fileio.write_text_atomic`: temporary file, fsync, rename)."""
    write_text_atomic(path, json.dumps(obj, indent=1))


def check_split_name(split: str) -> str:
    """Validate a split name (it becomes a file name)."""
    if not isinstance(split, str) or not _SPLIT_RE.match(split):
        raise StoreError(f"split name {split!r} is not allowed: use letters, digits, '_', '.', '-'")
    return split


def check_labels(kind: str, split: str, values: Sequence[Any] | None, n: int) -> list[str] | None:
    """Validate a per-row label list (``kind`` = ids/sources/groups) of split ``split`` with ``n`` rows."""
    if values is None:
        return None
    vals = [str(v) for v in values]
    if len(vals) != n:
        raise StoreError(f"{kind} of split {split!r}: {len(vals)} labels for {n} rows")
    return vals


def _as_fp32(split: str, arr: Any, allow_fp16: bool) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise StoreError(f"features of split {split!r} must be 2-D [rows, dim], got shape {a.shape}")
    if a.dtype == np.float16 and not allow_fp16:
        raise StoreError(
            f"features of split {split!r} are float16: refused (precision loss, B4); pass allow_fp16=True to accept "
            "them (stored upcast to float32)"
        )
    if not np.issubdtype(a.dtype, np.floating):
        raise StoreError(f"features of split {split!r} have dtype {a.dtype}, expected a floating type")
    a = a.astype(np.float32, copy=False)
    finite = np.isfinite(a).all(axis=1)
    if not finite.all():
        raise StoreError(f"features of split {split!r}: row {int(np.argmin(finite))} has non-finite values")
    return a


def load_npy(path: str | os.PathLike, mmap_mode: Literal["r", "r+"] = "r") -> np.memmap:
    """``np.load`` of one array file of a store, memory-mapped; a missing, truncated or corrupt file raises a
    :class:`StoreError` that names it (numpy's own messages, e.g. "mmap length is greater than file size", do not)."""
    try:
        return cast(np.memmap, np.load(path, mmap_mode=mmap_mode))
    except FileNotFoundError:
        raise StoreError(f"{path}: missing array file of the feature store") from None
    except (ValueError, OSError, EOFError) as exc:
        raise StoreError(f"{path}: not a readable .npy array ({exc}); the file is truncated or corrupt") from None


def check_unique_ids(ids: Sequence[Any], what: str) -> None:
    """Raise :class:`StoreError` naming the first id that appears twice (row positions included)."""
    first: dict[Any, int] = {}
    for row, value in enumerate(ids):
        if value in first:
            raise StoreError(f"{what} are not unique: {value!r} appears at rows {first[value]} and {row}")
        first[value] = row


# ---------------------------------------------------------------------------------------------- the store
class FeatureStore:
    """A directory of per-split feature arrays with a manifest (see module docstring).

    Use :meth:`open`, :meth:`from_arrays` or :func:`tarot.featurize_to_store` to obtain one.
    """

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self._manifest = manifest

    # ------------------------------------------------------------------ reading
    @classmethod
    def open(cls, path: str | os.PathLike) -> FeatureStore:
        """Open an existing store (complete or not) at ``path``."""
        p = Path(path)
        mf = p / MANIFEST
        if not mf.is_file():
            raise StoreError(f"{p} is not a feature store: {mf} does not exist")
        try:
            manifest = json.loads(mf.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{mf}: unreadable manifest ({exc})") from exc
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{mf}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{mf}: format_version {manifest.get('format_version')}, expected {FORMAT_VERSION}")
        for split, values in (manifest.get("ids") or {}).items():  # an edited or foreign manifest
            if values is not None:
                check_unique_ids(values, f"{mf}: ids of split {split!r}")
        return cls(p, manifest)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest (a copy-free view: do not mutate)."""
        return self._manifest

    @property
    def splits(self) -> list[str]:
        """Split names, in manifest order."""
        return list(self._manifest["splits"])

    @property
    def dim(self) -> int:
        """Feature dimension k."""
        return int(self._manifest["dim"])

    @property
    def complete(self) -> bool:
        """True when every row of every split is written."""
        return self._manifest.get("status") == "complete"

    def __len__(self) -> int:
        return sum(int(s["count"]) for s in self._manifest["splits"].values())

    def _split(self, split: str) -> dict[str, Any]:
        info = self._manifest["splits"].get(split)
        if info is None:
            raise MissingSplitError(f"feature store {self.path} has no split {split!r} (splits: {self.splits})")
        return info

    def count(self, split: str) -> int:
        """Number of rows of ``split`` in this store."""
        return int(self._split(split)["count"])

    def progress(self) -> dict[str, dict[str, int]]:
        """Rows done per split and checkpoint: ``{split: {checkpoint name: rows done}}``."""
        out: dict[str, dict[str, int]] = {}
        for split in self.splits:
            out[split] = {}
            for ci, ck in enumerate(self._manifest.get("checkpoints", [])):
                mpath = self.partial_paths(split, ci)[1]
                if self.complete:
                    out[split][ck["name"]] = self.count(split)
                elif mpath.is_file():
                    out[split][ck["name"]] = int(load_npy(mpath, mmap_mode="r").sum())
                else:
                    out[split][ck["name"]] = 0
        return out

    def features(self, split: str) -> np.memmap:
        """Read-only memmap ``[n, k]`` float32 of ``split``; raises :class:`StoreError` on an incomplete store."""
        info = self._split(split)
        if not self.complete:
            done = self.progress().get(split, {})
            state = ", ".join(f"{k}: {v}/{info['count']}" for k, v in done.items()) or "no rows"
            raise StoreError(
                f"feature store {self.path} is incomplete (split {split!r} rows done per checkpoint: {state}); "
                "rerun featurize_to_store with the same arguments to resume"
            )
        arr = load_npy(self.path / info["file"], mmap_mode="r")
        if arr.dtype != np.float32 or arr.shape != (info["count"], self.dim):
            raise StoreError(
                f"{self.path / info['file']}: array {arr.dtype} {arr.shape}, "
                f"expected float32 ({info['count']}, {self.dim})"
            )
        return arr

    def ids(self, split: str) -> list[str]:
        """Sample ids of ``split`` (default: global row numbers as strings)."""
        self._split(split)
        return list(self._manifest["ids"][split])

    def sources(self, split: str) -> list[str] | None:
        """Per-sample source labels of ``split``, or None."""
        self._split(split)
        v = self._manifest.get("sources", {}).get(split)
        return None if v is None else list(v)

    def groups(self, split: str) -> list[str] | None:
        """Per-sample group (subtask) labels of ``split``, or None."""
        self._split(split)
        v = self._manifest.get("groups", {}).get(split)
        return None if v is None else list(v)

    def __repr__(self) -> str:
        counts = {s: self.count(s) for s in self.splits}
        return f"FeatureStore({str(self.path)!r}, dim={self.dim}, splits={counts}, status={self._manifest['status']!r})"

    # ------------------------------------------------------------------ manifest construction
    @staticmethod
    def build_manifest(
        dim: int,
        counts: Mapping[str, int],
        ids: Mapping[str, Sequence[Any] | None] | None = None,
        sources: Mapping[str, Sequence[Any] | None] | None = None,
        groups: Mapping[str, Sequence[Any] | None] | None = None,
        projector: dict[str, Any] | None = None,
        checkpoints: list[dict[str, Any]] | None = None,
        row_ranges: Mapping[str, tuple[int, int, int]] | None = None,
        shard: dict[str, int] | None = None,
        batch_size: int | None = None,
        precondition: dict[str, str | None] | None = None,
        extra: dict[str, Any] | None = None,
        full_labels: Mapping[str, Mapping[str, Sequence[str] | None]] | None = None,
    ) -> dict[str, Any]:
        """Manifest dict for a new (incomplete) store.

        ``row_ranges[split] = (row_start, row_stop, total)`` places the store's rows inside the full split (shards);
        ``full_labels[kind][split]`` are the full-split label lists whose hashes shards must agree on.
        """
        ids, sources, groups = dict(ids or {}), dict(sources or {}), dict(groups or {})
        splits: dict[str, Any] = {}
        id_lists: dict[str, list[str]] = {}
        for split, n in counts.items():
            check_split_name(split)
            start, stop, total = (row_ranges or {}).get(split, (0, int(n), int(n)))
            if stop - start != n:
                raise StoreError(f"split {split!r}: row range [{start}, {stop}) does not hold {n} rows")
            splits[split] = {
                "count": int(n),
                "file": f"{split}.npy",
                "row_start": start,
                "row_stop": stop,
                "total": total,
            }
            given = check_labels("ids", split, ids.get(split), n)
            id_lists[split] = given if given is not None else [str(i) for i in range(start, stop)]
            check_unique_ids(id_lists[split], f"ids of split {split!r}")
        full = full_labels or {
            "ids": id_lists,
            "sources": {s: check_labels("sources", s, sources.get(s), counts[s]) for s in counts},
            "groups": {s: check_labels("groups", s, groups.get(s), counts[s]) for s in counts},
        }
        hashes = {kind: {s: labels_hash(full[kind].get(s)) for s in counts} for kind in ("ids", "sources", "groups")}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "status": "incomplete",
            "dim": int(dim),
            "dtype": "float32",
            "projector": projector,
            "checkpoints": checkpoints or [],
            "batch_size": batch_size,
            "precondition": precondition or {},
            "shard": shard,
            "splits": splits,
            "ids": id_lists,
            "sources": {s: check_labels("sources", s, sources.get(s), counts[s]) for s in counts},
            "groups": {s: check_labels("groups", s, groups.get(s), counts[s]) for s in counts},
            "labels_sha256": hashes,
            "created_with": _versions(),
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(extra or {}),
        }

    def write_manifest(self) -> None:
        """Persist the in-memory manifest atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / MANIFEST, self._manifest)

    @classmethod
    def create_or_resume(cls, path: str | os.PathLike, manifest: dict[str, Any]) -> FeatureStore:
        """Create a store with ``manifest`` at ``path``, or reopen an existing one after checking it matches.

        The fields in :data:`SPEC_FIELDS`, the split layout, shard and labels must agree, else :class:`StoreError`.
        """
        p = Path(path)
        if (p / MANIFEST).is_file():
            old = cls.open(p)
            for key in (*SPEC_FIELDS, "splits", "shard", "ids", "sources", "groups"):
                if old.manifest.get(key) != manifest.get(key):
                    raise StoreError(
                        f"feature store {p} exists with a different {key!r} than this run; resume with the same "
                        "arguments or use a new path"
                    )
            return old
        if p.exists() and any(p.iterdir()):
            raise StoreError(f"{p} exists, is not empty and has no {MANIFEST}: refusing to write a store there")
        store = cls(p, manifest)
        store.write_manifest()
        return store

    # ------------------------------------------------------------------ partial (per checkpoint) arrays
    def partial_paths(self, split: str, ci: int) -> tuple[Path, Path]:
        """(features, mask) paths of checkpoint index ``ci`` for ``split``."""
        base = self.path / "partial" / f"{split}.ckpt{ci:03d}"
        return base.with_name(base.name + ".npy"), base.with_name(base.name + ".mask.npy")

    def checkpoint_weights(self) -> list[float]:
        """The weight :math:`w_c` of every checkpoint, in manifest order (the summed features are
        :math:`\\sum_c w_c F_c`)."""
        return [float(c.get("weight", 1.0)) for c in self._manifest["checkpoints"]]

    def checkpoint_features(self, split: str) -> list[np.memmap] | None:
        """The per-checkpoint features :math:`F_c` of ``split`` (read-only memmaps, manifest order), or None when
        they were not kept (``featurize_to_store(..., keep_partials=True)`` keeps them) or are incomplete."""
        n = self.count(split)  # a MissingSplitError for an unknown split
        out = []
        for ci in range(len(self._manifest["checkpoints"])):
            fpath, mpath = self.partial_paths(split, ci)
            if not (fpath.is_file() and mpath.is_file()) or int(load_npy(mpath, mmap_mode="r").sum()) != n:
                return None
            arr = load_npy(fpath, mmap_mode="r")
            if arr.shape != (n, self.dim):
                raise StoreError(f"{fpath}: per-checkpoint features of shape {arr.shape}, expected ({n}, {self.dim})")
            out.append(arr)
        return out

    def open_partial(self, split: str, ci: int) -> tuple[np.memmap, np.memmap]:
        """Writable memmaps (features ``[n, k]`` float32, mask ``[n]`` uint8), created zero-filled if absent."""
        fpath, mpath = self.partial_paths(split, ci)
        n = self.count(split)
        fpath.parent.mkdir(parents=True, exist_ok=True)
        if fpath.is_file() and mpath.is_file():
            feats = np.lib.format.open_memmap(fpath, mode="r+")
            mask = np.lib.format.open_memmap(mpath, mode="r+")
            if (
                feats.shape != (n, self.dim)
                or feats.dtype != np.float32
                or mask.shape != (n,)
                or mask.dtype != np.uint8
            ):
                raise StoreError(f"{fpath}: partial array {feats.dtype}{feats.shape} does not match ({n}, {self.dim})")
            return feats, mask
        feats = np.lib.format.open_memmap(fpath, mode="w+", dtype=np.float32, shape=(n, self.dim))
        feats.flush()
        mask = np.lib.format.open_memmap(mpath, mode="w+", dtype=np.uint8, shape=(n,))
        mask.flush()
        return feats, mask

    @staticmethod
    def write_rows(feats: np.memmap, mask: np.memmap, rows: slice, values: np.ndarray) -> None:
        """Write ``values`` into ``feats[rows]``, flush, then mark ``mask[rows]`` done and flush (crash-safe order)."""
        feats[rows] = values
        feats.flush()
        mask[rows] = 1
        mask.flush()

    def finalize(self, keep_partials: bool = False) -> None:
        r"""Write :math:`\phi = \sum_c w_c F_c` for every split (float64 accumulation, checkpoints summed in name
        order so the list order does not matter) and mark the store complete."""
        ckpts = self._manifest["checkpoints"]
        order = sorted(range(len(ckpts)), key=lambda i: ckpts[i]["name"])
        for split in self.splits:
            n = self.count(split)
            parts = []
            for ci in order:
                fpath, mpath = self.partial_paths(split, ci)
                mask = load_npy(mpath, mmap_mode="r")
                if int(mask.sum()) != n:
                    raise StoreError(f"{mpath}: {int(mask.sum())}/{n} rows done; cannot finalize split {split!r}")
                parts.append((float(ckpts[ci]["weight"]), load_npy(fpath, mmap_mode="r")))
            out = np.lib.format.open_memmap(
                self.path / f"{split}.npy", mode="w+", dtype=np.float32, shape=(n, self.dim)
            )
            for lo in range(0, n, _ROW_BLOCK):
                acc = np.zeros((min(_ROW_BLOCK, n - lo), self.dim), dtype=np.float64)
                for w, arr in parts:
                    acc += w * arr[lo : lo + _ROW_BLOCK].astype(np.float64)
                out[lo : lo + _ROW_BLOCK] = acc.astype(np.float32)
            out.flush()
            del out
        self._manifest["status"] = "complete"
        self.write_manifest()
        if not keep_partials:
            shutil.rmtree(self.path / "partial", ignore_errors=True)

    # ------------------------------------------------------------------ construction from arrays
    @classmethod
    def from_arrays(
        cls,
        path: str | os.PathLike,
        arrays: Mapping[str, Any],
        ids: Mapping[str, Sequence[Any]] | None = None,
        sources: Mapping[str, Sequence[Any]] | None = None,
        groups: Mapping[str, Sequence[Any]] | None = None,
        allow_fp16: bool = False,
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> FeatureStore:
        """Write a complete store from in-memory arrays ``{split: [n, k]}`` (float32; float64 is cast, float16 only
        with ``allow_fp16=True``). Refuses to overwrite an existing store unless ``overwrite=True``."""
        if not arrays:
            raise StoreError("from_arrays: no splits given")
        data = {check_split_name(s): _as_fp32(s, a, allow_fp16) for s, a in arrays.items()}
        dims = {a.shape[1] for a in data.values()}
        if len(dims) != 1:
            raise StoreError(f"from_arrays: splits have different dims {sorted(dims)}")
        p = Path(path)
        if (p / MANIFEST).exists():
            if not overwrite:
                raise StoreError(f"{p} already holds a feature store; pass overwrite=True to replace it")
            shutil.rmtree(p)
        manifest = cls.build_manifest(
            dims.pop(), {s: a.shape[0] for s, a in data.items()}, ids=ids, sources=sources, groups=groups, extra=extra
        )
        store = cls(p, manifest)
        p.mkdir(parents=True, exist_ok=True)
        for split, a in data.items():
            out = np.lib.format.open_memmap(p / f"{split}.npy", mode="w+", dtype=np.float32, shape=a.shape)
            out[:] = a
            out.flush()
            del out
        store._manifest["status"] = "complete"
        store.write_manifest()
        return store

    # ------------------------------------------------------------------ merging shards
    @staticmethod
    def _shard_dirs(shard_dirs_or_parent: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
        if isinstance(shard_dirs_or_parent, (str, os.PathLike)):
            parent = Path(shard_dirs_or_parent)
            dirs = (
                sorted(d for d in parent.iterdir() if d.is_dir() and _SHARD_RE.match(d.name)) if parent.is_dir() else []
            )
            if not dirs:
                raise StoreError(f"merge: no shard-XXXXX-of-XXXXX directories under {parent}")
            return dirs
        dirs = [Path(d) for d in shard_dirs_or_parent]
        if not dirs:
            raise StoreError("merge: no shard directories given")
        return dirs

    @classmethod
    def merge(
        cls, shard_dirs_or_parent: str | os.PathLike | Iterable[str | os.PathLike], out: str | os.PathLike
    ) -> FeatureStore:
        """Merge complete shard stores (a parent directory, or a list of shard directories) into one store at ``out``.

        Checks: every shard complete; same world size and every rank 0..world-1 present exactly once; identical dim,
        dtype, projector, checkpoints, batch size, preconditioners and full-split label hashes; row ranges disjoint and
        covering ``[0, total)`` of every split; merged ids hash to the recorded full-split hash. See
        :func:`tarot.features.merge.merge_stores`.
        """
        from tarot.features.merge import merge_stores

        return merge_stores([cls.open(d) for d in cls._shard_dirs(shard_dirs_or_parent)], out)

    def _merge_partials(self, shards: list[FeatureStore], counts: dict[str, int]) -> None:
        """Concatenate the shards' per-checkpoint arrays (kept with ``keep_partials=True``) when every shard has all
        of them, so that per-checkpoint consumers (e.g. LESS scoring) work on a merged store too."""
        n_ck = len(self._manifest["checkpoints"])
        wanted = [(split, ci) for split in self.splits for ci in range(n_ck)]
        if not wanted or not all(s.partial_paths(sp, ci)[0].is_file() for s in shards for sp, ci in wanted):
            return
        for split, ci in wanted:
            fpath, mpath = self.partial_paths(split, ci)
            fpath.parent.mkdir(parents=True, exist_ok=True)
            out = np.lib.format.open_memmap(fpath, mode="w+", dtype=np.float32, shape=(counts[split], self.dim))
            for s in shards:
                info = s.manifest["splits"][split]
                out[info["row_start"] : info["row_stop"]] = load_npy(s.partial_paths(split, ci)[0], mmap_mode="r")
            out.flush()
            del out
            mask = np.lib.format.open_memmap(mpath, mode="w+", dtype=np.uint8, shape=(counts[split],))
            mask[:] = 1
            mask.flush()
            del mask
