"""Reader (and writer) for ScenarioNet databases, without importing metadrive or scenarionet.

Layout (motion spec section 1): ``dataset_summary.pkl`` (file name -> metadata), ``dataset_mapping.pkl`` (file name ->
sub-directory relative to the root, ``''`` for the root itself, possibly with ``..`` for merged databases) and one
``sd_*.pkl`` file per scenario. Every pickle is loaded with :func:`tarot_motion.safe_pickle.load_scenarionet_pickle`.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MotionDataError
from .safe_pickle import load_scenarionet_pickle

SUMMARY_FILE = "dataset_summary.pkl"
MAPPING_FILE = "dataset_mapping.pkl"

REQUIRED_TOP_KEYS = ("id", "version", "length", "metadata", "tracks", "dynamic_map_states", "map_features")
REQUIRED_METADATA_KEYS = ("metadrive_processed", "coordinate", "ts")
KNOWN_OBJECT_TYPES = frozenset(
    {
        "VEHICLE",
        "PEDESTRIAN",
        "CYCLIST",
        "OTHER",
        "TRAFFIC_CONE",
        "TRAFFIC_BARRIER",
        "TRAFFIC_OBJECT",
        "TRAFFIC_LIGHT",
        "GROUND_PLANE",
        "INVISIBLE_WALL",
        "BUILDING",
    }
)
_DIGITS = re.compile(r"^\d+\.pkl$")


def is_scenario_file(name: str) -> bool:
    """Whether ``name`` is a scenario file name (``sd_*.pkl`` or a legacy all-digits ``0.pkl``)."""
    base = os.path.basename(name)
    return base.endswith(".pkl") and (base.startswith("sd_") or bool(_DIGITS.match(base)))


@dataclass(frozen=True)
class ScenarioEntry:
    """One scenario of a database: file name, resolved path, summary metadata and source folder."""

    name: str
    path: Path
    folder: str
    summary: Mapping[str, Any] = field(default_factory=dict)


def _read_dir_index(root: Path) -> list[ScenarioEntry]:
    """Entries listed by ``root``'s summary/mapping pair, with the fallback rules of the spec."""
    summary_path = root / SUMMARY_FILE
    mapping_path = root / MAPPING_FILE
    if summary_path.exists():
        summary = load_scenarionet_pickle(summary_path)
        if not isinstance(summary, dict):
            raise MotionDataError(summary_path, None, f"expected a dict, got {type(summary).__name__}")
    else:
        names = sorted(p.name for p in root.iterdir() if p.is_file() and is_scenario_file(p.name))
        if not names:
            # nested per-worker folders without a top-level summary: read each worker folder's own index
            entries: list[ScenarioEntry] = []
            for child in sorted(p for p in root.iterdir() if p.is_dir() and (p / SUMMARY_FILE).exists()):
                entries.extend(_read_dir_index(child))
            return entries
        summary = {n: {} for n in names}
    mapping: dict[str, str] = {}
    if mapping_path.exists():
        mapping = load_scenarionet_pickle(mapping_path)
        if not isinstance(mapping, dict):
            raise MotionDataError(mapping_path, None, f"expected a dict, got {type(mapping).__name__}")
    if not mapping:
        mapping = {k: "" for k in summary}
    entries = []
    checked_dirs: dict[str, Path] = {}
    for name in summary:
        if not isinstance(name, str) or not is_scenario_file(name):
            raise MotionDataError(summary_path, repr(name), "summary key is not a scenario file name (sd_*.pkl)")
        if name not in mapping:
            raise MotionDataError(mapping_path, name, "summary key has no entry in the mapping")
        sub = mapping[name]
        if not isinstance(sub, str):
            raise MotionDataError(mapping_path, name, f"mapping value must be a str path, got {type(sub).__name__}")
        if sub not in checked_dirs:
            d = Path(os.path.normpath(root / sub))
            if not d.is_dir():
                raise MotionDataError(mapping_path, name, f"mapped directory {sub!r} does not exist under {root}")
            checked_dirs[sub] = d
        path = checked_dirs[sub] / name
        if not path.is_file():
            raise MotionDataError(path, None, f"scenario listed in {summary_path.name} does not exist")
        meta = summary[name] if isinstance(summary[name], Mapping) else {}
        folder = os.path.relpath(checked_dirs[sub], root.parent)
        entries.append(ScenarioEntry(name=name, path=path, folder=folder, summary=meta))
    return entries


class ScenarioNetDatabase:
    """A ScenarioNet database on disk.

    Parameters
    ----------
    root : path
        The database root (the folder holding ``dataset_summary.pkl``).

    Raises
    ------
    MotionDataError
        If the root is missing, empty, or its index points to missing files/directories.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise MotionDataError(self.root, None, "database directory does not exist")
        self.entries = _read_dir_index(self.root)
        if not self.entries:
            raise MotionDataError(self.root, None, "empty database: no summary entries and no sd_*.pkl files")

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ScenarioEntry]:
        return iter(self.entries)

    def load(self, i: int) -> dict[str, Any]:
        """Load and validate scenario ``i``."""
        return read_scenario(self.entries[i].path)


def read_scenario(path: str | Path) -> dict[str, Any]:
    """Load one ``sd_*.pkl`` file with the restricted unpickler and validate it (see :func:`validate_scenario`)."""
    scenario = load_scenarionet_pickle(path)
    validate_scenario(scenario, path)
    return scenario


def _check_array(value: Any, T: int, path: Any, key: str, width: int | None = None) -> None:
    if not isinstance(value, np.ndarray):
        raise MotionDataError(path, key, f"expected a numpy array, got {type(value).__name__}")
    if value.ndim not in (1, 2) or value.shape[0] != T or (value.ndim == 2 and value.shape[1] == 0):
        raise MotionDataError(path, key, f"expected shape [T={T}] or [T={T}, d>0], got {list(value.shape)}")
    if width is not None and (value.ndim != 2 or value.shape[1] < width):
        raise MotionDataError(path, key, f"expected shape [T={T}, >={width}], got {list(value.shape)}")


def validate_scenario(sc: Any, path: str | Path | None = None) -> None:
    """Check the ScenarioDescription schema rules (motion spec section 2.6); raise a one-line error on violation."""
    if not isinstance(sc, dict):
        raise MotionDataError(path, None, f"expected a scenario dict, got {type(sc).__name__}")
    for k in REQUIRED_TOP_KEYS:
        if k not in sc:
            raise MotionDataError(path, k, "missing required top-level key")
    T = sc["length"]
    if isinstance(T, np.integer):
        T = int(T)
    if not isinstance(T, int) or T <= 0:
        raise MotionDataError(path, "length", f"expected a positive int, got {T!r}")
    meta = sc["metadata"]
    if not isinstance(meta, dict):
        raise MotionDataError(path, "metadata", "expected a dict")
    for k in REQUIRED_METADATA_KEYS:
        if k not in meta:
            raise MotionDataError(path, f"metadata.{k}", "missing required metadata key")
    ts = np.asarray(meta["ts"])
    if ts.shape != (T,):
        raise MotionDataError(path, "metadata.ts", f"expected shape ({T},), got {ts.shape}")
    tracks = sc["tracks"]
    if not isinstance(tracks, dict):
        raise MotionDataError(path, "tracks", "expected a dict")
    for tid, tr in tracks.items():
        base = f"tracks.{tid}"
        if not isinstance(tid, str):
            raise MotionDataError(path, base, f"track ids must be str, got {type(tid).__name__}")
        if not isinstance(tr, dict) or "type" not in tr or "state" not in tr:
            raise MotionDataError(path, base, "expected a dict with 'type' and 'state'")
        if tr["type"] not in KNOWN_OBJECT_TYPES:
            raise MotionDataError(path, f"{base}.type", f"unknown or UNSET object type {tr['type']!r}")
        tmeta = tr.get("metadata")
        if not isinstance(tmeta, dict) or tmeta.get("object_id") != tid:
            got = tmeta.get("object_id") if isinstance(tmeta, dict) else None
            raise MotionDataError(path, f"{base}.metadata.object_id", f"must equal the track key {tid!r}, got {got!r}")
        state = tr["state"]
        if not isinstance(state, dict):
            raise MotionDataError(path, f"{base}.state", "expected a dict")
        for req in ("position", "heading", "valid"):
            if req not in state:
                raise MotionDataError(path, f"{base}.state.{req}", "missing required state key")
        for sk, sv in state.items():
            _check_array(sv, T, path, f"{base}.state.{sk}", width=2 if sk in ("position", "velocity") else None)
    sdc = meta.get("sdc_id")
    if sdc is not None and sdc not in tracks:
        raise MotionDataError(path, "metadata.sdc_id", f"{sdc!r} is not a key of tracks")
    mf = sc["map_features"]
    if not isinstance(mf, dict):
        raise MotionDataError(path, "map_features", "expected a dict")
    for fid, feat in mf.items():
        if not isinstance(feat, dict) or "type" not in feat:
            raise MotionDataError(path, f"map_features.{fid}", "expected a dict with a 'type'")
        if str(feat["type"]).startswith("LANE_") and "polyline" not in feat:
            raise MotionDataError(path, f"map_features.{fid}.polyline", "every lane needs a polyline")
    if not isinstance(sc["dynamic_map_states"], dict):
        raise MotionDataError(path, "dynamic_map_states", "expected a dict")


# --------------------------------------------------------------------------------------------- writing


def _atomic_pickle(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)
    os.replace(tmp, path)


def summarize_scenario(sc: Mapping[str, Any]) -> dict[str, Any]:
    """Summary metadata for ``dataset_summary.pkl``: the scenario metadata with lists/tuples instead of arrays/sets."""
    meta = dict(sc["metadata"])
    meta["ts"] = [float(t) for t in np.asarray(meta["ts"]).tolist()]
    ns = meta.get("number_summary")
    if isinstance(ns, dict):
        meta["number_summary"] = {k: (tuple(sorted(v)) if isinstance(v, set) else v) for k, v in ns.items()}
    return meta


def write_database(out: str | Path, scenarios: list[dict[str, Any]], dataset: str, version: str) -> Path:
    """Write scenarios as a ScenarioNet database (one ``sd_*.pkl`` per scenario, summary and mapping written last).

    The summary/mapping pair is written after every scenario file, so an interrupted write never looks complete.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for sc in scenarios:
        validate_scenario(sc, f"<converted {sc.get('id')}>")
        name = f"sd_{dataset}_{version}_{sc['id']}.pkl"
        _atomic_pickle(sc, out / name)
        summary[name] = summarize_scenario(sc)
    _atomic_pickle({k: "" for k in summary}, out / MAPPING_FILE)
    _atomic_pickle(summary, out / SUMMARY_FILE)
    return out


def object_summary(tracks: Mapping[str, Any], T: int) -> dict[str, dict[str, Any]]:
    """Per-object summary as ScenarioNet computes it, using valid steps only."""
    out: dict[str, dict[str, Any]] = {}
    for tid, tr in tracks.items():
        valid = np.asarray(tr["state"]["valid"]).reshape(T).astype(bool)
        pos = np.asarray(tr["state"]["position"])[:, :2]
        idx = np.flatnonzero(valid)
        moving = float(np.linalg.norm(np.diff(pos[idx], axis=0), axis=1).sum()) if idx.size > 1 else 0.0
        cont = 0
        if idx.size:
            run = valid[idx[0] :]
            stop = np.flatnonzero(~run)
            cont = int(stop[0]) if stop.size else int(run.size)
        out[tid] = {
            "type": tr["type"],
            "object_id": tid,
            "track_length": int(T),
            "moving_distance": moving,
            "valid_length": int(valid.sum()),
            "continuous_valid_length": cont,
        }
    return out


def number_summary(sc: Mapping[str, Any], obj_summary: Mapping[str, Any]) -> dict[str, Any]:
    """Scenario-level counts as ScenarioNet stores them."""
    types = [o["type"] for o in obj_summary.values()]
    moving = [o["type"] for o in obj_summary.values() if o["moving_distance"] > 0]
    map_types: dict[str, int] = {}
    for f in sc["map_features"].values():
        map_types[f["type"]] = map_types.get(f["type"], 0) + 1
    heights = [
        float(np.asarray(f["polyline"])[:, 2].max() - np.asarray(f["polyline"])[:, 2].min())
        for f in sc["map_features"].values()
        if "polyline" in f and np.asarray(f["polyline"]).ndim == 2 and np.asarray(f["polyline"]).shape[1] == 3
    ]
    return {
        "num_objects": len(types),
        "object_types": set(types),
        "num_objects_each_type": {t: types.count(t) for t in set(types)},
        "num_moving_objects": len(moving),
        "num_moving_objects_each_type": {t: moving.count(t) for t in set(moving)},
        "num_traffic_lights": len(sc["dynamic_map_states"]),
        "num_traffic_light_types": set(),
        "num_traffic_light_each_step": {},
        "num_map_features": len(sc["map_features"]),
        "map_height_diff": max(heights) if heights else 0.0,
    }
