"""Merging the shard stores of a sharded featurization into one :class:`~tarot.features.store.FeatureStore`:
:func:`check_shards` (complete, one of every rank, the same identity, rows that tile every split),
:func:`concatenated_labels` (ids, sources and groups in rank order, checked against the recorded full-split hashes)
and :func:`merge_stores` (the merged arrays, per-checkpoint arrays included, and a complete manifest)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tarot.errors import StoreError
from tarot.features.store import MANIFEST, SPEC_FIELDS, FeatureStore, labels_hash

__all__ = ["check_shards", "concatenated_labels", "merge_stores"]


def _spec(store: FeatureStore, key: str) -> Any:
    if key == "split totals":
        return {k: v["total"] for k, v in store.manifest["splits"].items()}
    return store.manifest.get(key)


def check_shards(shards: list[FeatureStore]) -> tuple[list[FeatureStore], dict[str, int]]:
    """The shards in rank order and the row count of every split, or a :class:`StoreError` naming what is wrong."""
    for s in shards:
        if s.manifest.get("shard") is None:
            raise StoreError(f"merge: {s.path} is not a shard (its manifest has no shard entry)")
        if not s.complete:
            raise StoreError(f"merge: shard {s.path} is incomplete; finish it before merging")
    first = shards[0]
    world = first.manifest["shard"]["world"]
    ranks = sorted(s.manifest["shard"]["rank"] for s in shards)
    for s in shards:
        if s.manifest["shard"]["world"] != world:
            raise StoreError(f"merge: {s.path} has world size {s.manifest['shard']['world']}, {first.path} has {world}")
    dup = sorted({r for r in ranks if ranks.count(r) > 1})
    if dup:
        raise StoreError(f"merge: rank(s) {dup} given more than once")
    missing = sorted(set(range(world)) - set(ranks))
    if missing:
        raise StoreError(f"merge: missing shard rank(s) {missing} of world size {world}")
    for s in shards[1:]:
        for key in (*SPEC_FIELDS, "split totals"):
            if _spec(first, key) != _spec(s, key):
                raise StoreError(f"merge: shard {s.path} differs from {first.path} in {key!r}; refusing to merge")
    shards = sorted(shards, key=lambda s: s.manifest["shard"]["rank"])
    counts: dict[str, int] = {}
    for split in first.splits:
        total = first.manifest["splits"][split]["total"]
        pos = 0
        for s in shards:
            info = s.manifest["splits"][split]
            if info["row_start"] != pos:
                raise StoreError(
                    f"merge: split {split!r} of shard {s.path} starts at row {info['row_start']}, expected {pos}"
                )
            pos = info["row_stop"]
        if pos != total:
            raise StoreError(f"merge: split {split!r} shards cover rows [0, {pos}), expected [0, {total})")
        counts[split] = total
    return shards, counts


def concatenated_labels(shards: list[FeatureStore], kind: str) -> dict[str, list[str] | None]:
    """The ``kind`` labels (ids, sources or groups) of every split over the shards in rank order, checked against
    the full-split hash every shard recorded."""
    first = shards[0]
    res: dict[str, list[str] | None] = {}
    for split in first.splits:
        parts = [s.manifest[kind].get(split) for s in shards]
        if all(p is None for p in parts):
            res[split] = None
        elif any(p is None for p in parts):
            raise StoreError(f"merge: some shards lack {kind} for split {split!r}")
        else:
            res[split] = [v for p in parts for v in p]
        if labels_hash(res[split]) != first.manifest["labels_sha256"][kind][split]:
            raise StoreError(f"merge: concatenated {kind} of split {split!r} do not match the recorded full list")
    return res


def merge_stores(shards: list[FeatureStore], out: str | os.PathLike) -> FeatureStore:
    """Merge opened, complete shard stores into a new complete store at ``out`` (which must not hold a store)."""
    if not shards:
        raise StoreError("merge: no shard directories given")
    shards, counts = check_shards(shards)
    full = {kind: concatenated_labels(shards, kind) for kind in ("ids", "sources", "groups")}
    outp = Path(out)
    if (outp / MANIFEST).exists():
        raise StoreError(f"merge: {outp} already holds a feature store; choose a new output path")
    fm = shards[0].manifest
    manifest = FeatureStore.build_manifest(
        fm["dim"], counts, ids=full["ids"], sources=full["sources"], groups=full["groups"],
        projector=fm["projector"], checkpoints=fm["checkpoints"], batch_size=fm["batch_size"],
        precondition=fm["precondition"], full_labels=full,
        extra={"featurizer": fm.get("featurizer"), "merged_from": [str(s.path) for s in shards]},
    )
    store = FeatureStore(outp, manifest)
    outp.mkdir(parents=True, exist_ok=True)
    for split in shards[0].splits:
        arr = np.lib.format.open_memmap(outp / f"{split}.npy", mode="w+", dtype=np.float32,
                                        shape=(counts[split], fm["dim"]))
        for s in shards:
            info = s.manifest["splits"][split]
            arr[info["row_start"] : info["row_stop"]] = s.features(split)
        arr.flush()
        del arr
    store._merge_partials(shards, counts)
    store._manifest["status"] = "complete"
    store.write_manifest()
    return store
