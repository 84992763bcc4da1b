"""Convert the legacy MetaDrive scenario pickles (shipped in ``metadrive-simulator==0.3.0.1``) to ScenarioNet.

The package is located with :func:`importlib.util.find_spec`; it is never imported (its pinned dependencies are not
installed). Each ~20 s scenario is split into 81-step windows (21 past + 60 future) with a stride of 10 steps, and
every window becomes one ScenarioNet scenario whose ``tracks_to_predict`` lists the agents valid over the whole window.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MotionDataError
from .preprocess import finite_velocity
from .safe_pickle import AgentType, RoadEdgeType, RoadLineType, load_legacy_pickle
from .scenarionet import number_summary, object_summary, write_database

METADRIVE_INSTALL = "pip install --no-deps metadrive-simulator==0.3.0.1"
WINDOW = 81
STRIDE = 10


def metadrive_assets() -> Path:
    """Folder ``metadrive/assets`` of the installed wheel, found without importing metadrive.

    Raises
    ------
    FileNotFoundError
        With the exact install command if the package is missing.
    """
    spec = importlib.util.find_spec("metadrive")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"metadrive-simulator is not installed; install it with: {METADRIVE_INSTALL}")
    assets = Path(list(spec.submodule_search_locations)[0]) / "assets"
    if not (assets / "waymo").is_dir():
        raise FileNotFoundError(
            f"{assets}/waymo not found (only metadrive-simulator 0.3.0.1 ships the scenarios); {METADRIVE_INSTALL}"
        )
    return assets


def legacy_waymo_files() -> list[Path]:
    """The three real Waymo scenario pickles inside the installed metadrive wheel, sorted by name."""
    return sorted((metadrive_assets() / "waymo").glob("*.pkl"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)


def _window_scenario(sid: str, tracks: dict[str, Any], full: list[str], window: int, ts: np.ndarray,
                     map_features: dict[str, Any], meta: dict[str, Any], sdc: str | None,
                     stats: dict[str, int]) -> dict[str, Any] | None:
    """One ScenarioNet window scenario: ``tracks_to_predict`` = the fully valid agents, summaries computed.

    Returns None (and counts ``windows_without_full_agent``) when no agent is valid over the whole window.
    """
    stats["windows"] += 1
    if not full:
        stats["windows_without_full_agent"] += 1
        return None
    stats["full_window_agents"] += len(full)
    ids = list(tracks)
    metadata = {
        "id": sid,
        "scenario_id": sid,
        "metadrive_processed": False,
        "ts": ts,
        **meta,
        "tracks_to_predict": {
            t: {"track_index": ids.index(t), "track_id": t, "difficulty": 0, "object_type": tracks[t]["type"]}
            for t in full
        },
        "tracks_to_predict_rule": "agents valid over the whole 81-step window",
    }
    if sdc is not None and sdc in tracks:
        metadata["sdc_id"] = sdc
    sc: dict[str, Any] = {"id": sid, "version": "metadrive_legacy", "length": window, "tracks": tracks,
                          "dynamic_map_states": {}, "map_features": map_features, "metadata": metadata}
    osum = object_summary(tracks, window)
    metadata["object_summary"] = osum
    metadata["number_summary"] = number_summary(sc, osum)
    return sc


def _convert_files(out: str | Path, files: list[Path], convert_one: Any, dataset: str, window: int, stride: int
                   ) -> dict[str, Any]:
    """Convert each file with ``convert_one(path, window, stride)`` and write one database (report returned)."""
    allsc: list[dict[str, Any]] = []
    report: dict[str, Any] = {"files": {}, "window": window, "stride": stride}
    for p in files:
        scs, stats = convert_one(Path(p), window, stride)
        stats["scenarios_written"] = len(scs)
        report["files"][str(p)] = stats
        allsc.extend(scs)
    if not allsc:
        raise MotionDataError(out, None, "no windows with a fully valid agent: nothing to write")
    write_database(out, allsc, dataset=dataset, version="metadrive_legacy")
    report["scenarios"] = len(allsc)
    report["full_window_agents"] = sum(s["full_window_agents"] for s in report["files"].values())
    return report


def _convert_map(legacy_map: dict[Any, Any], path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    out: dict[str, Any] = {}
    skipped: dict[str, int] = {}
    for fid, feat in legacy_map.items():
        key = str(fid)
        t = feat.get("type")
        if t == "center_lane":
            f: dict[str, Any] = {
                "type": "LANE_SURFACE_STREET",
                "polyline": np.asarray(feat["polyline"], dtype=np.float64),
                "entry_lanes": [str(x) for x in feat.get("entry", [])],
                "exit_lanes": [str(x) for x in feat.get("exit", [])],
            }
            for side in ("left", "right"):
                nbrs = []
                for n in feat.get(f"{side}_neighbor", []):
                    idx = list(n.get("indexes", [0, 0, 0, 0]))
                    nbrs.append(
                        {
                            "feature_id": str(n["id"]),
                            "self_start_index": int(idx[0]),
                            "self_end_index": int(idx[1]),
                            "neighbor_start_index": int(idx[2]),
                            "neighbor_end_index": int(idx[3]),
                            "boundaries": [
                                {"index": list(b.get("index", [])), "type": str(getattr(b.get("type"), "name", "")),
                                 "id": str(b.get("id"))}
                                for b in n.get("boundaries", [])
                            ],
                        }
                    )
                f[f"{side}_neighbor"] = nbrs
            if "interpolating" in feat:
                f["interpolating"] = bool(feat["interpolating"])
            out[key] = f
        elif isinstance(t, RoadLineType):
            name = "UNKNOWN_LINE" if t is RoadLineType.UNKNOWN else f"ROAD_LINE_{t.name}"
            out[key] = {"type": name, "polyline": np.asarray(feat["polyline"], dtype=np.float64)}
        elif isinstance(t, RoadEdgeType):
            if t is RoadEdgeType.UNKNOWN:
                skipped["road_edge_unknown"] = skipped.get("road_edge_unknown", 0) + 1
                continue
            out[key] = {"type": f"ROAD_EDGE_{t.name}", "polyline": np.asarray(feat["polyline"], dtype=np.float64)}
        elif t == "stop_sign":
            out[key] = {
                "type": "STOP_SIGN",
                "lane": [str(x) for x in feat.get("lanes", [])],
                "position": np.asarray(feat["pos"], dtype=np.float64).reshape(3),
            }
        elif t is None and feat.get("sign") == "cross_walk" and "polygon" in feat:
            out[key] = {"type": "CROSSWALK", "polygon": np.asarray(feat["polygon"], dtype=np.float64)}
        elif t is feat and "polygon" in feat:
            out[key] = {"type": "SPEED_BUMP", "polygon": np.asarray(feat["polygon"], dtype=np.float64)}
        else:
            raise MotionDataError(path, f"map.{fid}", f"unrecognised legacy map feature (keys {sorted(feat)})")
    return out, skipped


def convert_legacy_scenario(legacy: dict[str, Any], path: Path, window: int = WINDOW, stride: int = STRIDE
                            ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Split one legacy scenario into ScenarioNet window scenarios.

    Returns
    -------
    scenarios : list of dict
        One ScenarioNet scenario per window start (0, stride, ...) that has at least one agent valid over the whole
        window (windows without such an agent are counted in ``stats['windows_without_full_agent']``).
    stats : dict
        Counts: dropped UNSET tracks, skipped map features, windows, full-window agent samples.
    """
    for k in ("id", "ts", "tracks", "sdc_index", "map"):
        if k not in legacy:
            raise MotionDataError(path, k, "missing key in legacy MetaDrive scenario")
    ts_all = np.asarray(legacy["ts"], dtype=np.float64)
    T = ts_all.shape[0]
    stats = {"unset_tracks_dropped": 0, "windows": 0, "windows_without_full_agent": 0, "full_window_agents": 0}
    tracks_full: dict[str, Any] = {}
    for tid, tr in legacy["tracks"].items():
        typ = tr.get("type")
        if not isinstance(typ, AgentType):
            raise MotionDataError(path, f"tracks.{tid}.type", f"expected an AgentType member, got {typ!r}")
        if typ is AgentType.UNSET:
            stats["unset_tracks_dropped"] += 1
            continue
        st = np.asarray(tr["state"], dtype=np.float64)
        if st.shape != (T, 10):
            raise MotionDataError(path, f"tracks.{tid}.state", f"expected shape [{T}, 10], got {list(st.shape)}")
        tracks_full[str(tid)] = (typ.name, st)
    map_features, skipped = _convert_map(legacy["map"], path)
    stats.update({f"map_skipped_{k}": v for k, v in skipped.items()})
    sdc = str(legacy["sdc_index"])
    scenarios = []
    for s in range(0, T - window + 1, stride):
        e = s + window
        tracks: dict[str, Any] = {}
        full: list[str] = []
        for tid, (typ, st) in tracks_full.items():
            w = st[s:e]
            valid = w[:, 9] > 0
            if not valid.any() and tid != sdc:
                continue
            tracks[tid] = {
                "type": typ,
                "state": {
                    "position": w[:, 0:3].copy(),
                    "length": w[:, 3].copy(),
                    "width": w[:, 4].copy(),
                    "height": w[:, 5].copy(),
                    "heading": w[:, 6].copy(),
                    "velocity": w[:, 7:9].copy(),
                    "valid": valid,
                },
                "metadata": {"track_length": window, "type": typ, "object_id": tid, "dataset": "waymo"},
            }
            if valid.all():
                full.append(tid)
        meta = {"dataset": "waymo", "coordinate": "waymo", "source_file": str(path.name), "source_window_start": s,
                "current_time_index": 20, "traffic_lights_converted": False}
        sc = _window_scenario(f"{legacy['id']}_s{s:03d}", tracks, full, window, ts_all[s:e] - ts_all[s],
                              map_features, meta, sdc, stats)
        if sc is None:
            continue
        scenarios.append(sc)
    return scenarios, stats


def convert_metadrive(out: str | Path, files: list[Path] | None = None, window: int = WINDOW, stride: int = STRIDE
                      ) -> dict[str, Any]:
    """Convert legacy MetaDrive pickles (default: the embedded Waymo scenarios) into one ScenarioNet database.

    Returns a report dict with per-file statistics and the total number of scenarios written.
    """
    files = list(files) if files is not None else legacy_waymo_files()

    def one(p: Path, window: int, stride: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
        legacy = load_legacy_pickle(p)
        if not isinstance(legacy, dict):
            raise MotionDataError(p, None, f"expected a dict, got {type(legacy).__name__}")
        return convert_legacy_scenario(legacy, p, window, stride)

    return _convert_files(out, files, one, "waymo", window, stride)


# ------------------------------------------------------------------------------------------ Argoverse-1 log

ARGOVERSE_AV_ID = "00000000-0000-0000-0000-000000000000"


def argoverse1_files() -> list[Path]:
    """The Argoverse-1 log(s) inside the installed metadrive wheel (``assets/real_data/*.pkl``)."""
    return sorted((metadrive_assets() / "real_data").glob("*.pkl"))


def _heading_from_velocity(vel: np.ndarray, valid: np.ndarray, min_speed: float = 0.5) -> np.ndarray:
    """Heading = direction of motion where the speed exceeds ``min_speed``; held (and back-filled) elsewhere."""
    T = vel.shape[0]
    speed = np.linalg.norm(vel, axis=1)
    moving = valid & (speed > min_speed)
    heading = np.zeros(T)
    if not moving.any():
        return heading
    idx = np.flatnonzero(moving)
    raw = np.arctan2(vel[:, 1], vel[:, 0])
    last = raw[idx[0]]
    for t in range(T):
        if moving[t]:
            last = raw[t]
        heading[t] = last
    return heading


def convert_argoverse1_log(path: str | Path, window: int = WINDOW, stride: int = STRIDE
                           ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Split the Argoverse-1 log shipped in the metadrive wheel into ScenarioNet window scenarios (no map).

    The log stores only positions per step (``traj``: step string -> xy, steps from "1"); velocities are finite
    differences of valid neighbouring steps and headings the direction of motion (the stored ``heading`` entries have
    unverified semantics and are not used). Object types are not stored: every agent is recorded as ``VEHICLE``, sizes
    as 0 (masked by the default preprocessing anyway). Label: ``argoverse1``.
    """
    from .safe_pickle import load_scenarionet_pickle

    path = Path(path)
    obj = load_scenarionet_pickle(path)
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], dict)):
        raise MotionDataError(path, None, "expected a tuple (agents dict, city)")
    agents, city = obj
    steps_all: set[int] = set()
    for aid, a in agents.items():
        if not isinstance(a, dict) or not isinstance(a.get("traj"), dict):
            raise MotionDataError(path, f"agents.{aid}.traj", "expected a dict step -> xy")
        steps_all.update(int(s) for s in a["traj"])
    t0 = min(steps_all)
    T = max(steps_all) - t0 + 1
    full: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for aid, a in agents.items():
        pos = np.zeros((T, 2))
        valid = np.zeros(T, dtype=bool)
        for s, xy in a["traj"].items():
            xy = np.asarray(xy, dtype=np.float64).reshape(-1)
            if xy.shape[0] < 2:
                raise MotionDataError(path, f"agents.{aid}.traj.{s}", f"expected [2] xy, got {list(xy.shape)}")
            pos[int(s) - t0] = xy[:2]
            valid[int(s) - t0] = True
        full[str(aid)] = (pos, valid)
    stats = {"windows": 0, "windows_without_full_agent": 0, "full_window_agents": 0, "agents": len(full)}
    log_id = path.stem
    scenarios = []
    for s in range(0, T - window + 1, stride):
        tracks: dict[str, Any] = {}
        fullw: list[str] = []
        for aid, (pos, valid) in full.items():
            p, v = pos[s : s + window], valid[s : s + window]
            if not v.any():
                continue
            vel = finite_velocity(p, v)
            tracks[aid] = {
                "type": "VEHICLE",
                "state": {
                    "position": np.concatenate([p, np.zeros((window, 1))], axis=1) * v[:, None],
                    "heading": _heading_from_velocity(vel, v) * v,
                    "velocity": vel,
                    "length": np.zeros(window),
                    "width": np.zeros(window),
                    "height": np.zeros(window),
                    "valid": v.copy(),
                },
                "metadata": {"track_length": window, "type": "VEHICLE", "object_id": aid, "dataset": "argoverse1"},
            }
            if v.all():
                fullw.append(aid)
        meta = {"dataset": "argoverse1", "coordinate": "right-handed", "city": str(city), "source_file": path.name,
                "source_window_start": s, "map_converted": False}
        sc = _window_scenario(f"{log_id}_s{s:03d}", tracks, fullw, window, np.arange(window) / 10.0, {}, meta,
                              ARGOVERSE_AV_ID, stats)
        if sc is None:
            continue
        scenarios.append(sc)
    return scenarios, stats


def convert_argoverse1(out: str | Path, files: list[Path] | None = None, window: int = WINDOW,
                       stride: int = STRIDE) -> dict[str, Any]:
    """Convert the embedded Argoverse-1 log(s) into one ScenarioNet database (dataset label ``argoverse1``)."""
    files = list(files) if files is not None else argoverse1_files()
    return _convert_files(out, files, convert_argoverse1_log, "argoverse1", window, stride)
