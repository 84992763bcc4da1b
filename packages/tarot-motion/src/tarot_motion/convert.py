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
        stats["windows"] += 1
        if not full:
            stats["windows_without_full_agent"] += 1
            continue
        stats["full_window_agents"] += len(full)
        sid = f"{legacy['id']}_s{s:03d}"
        ids = list(tracks)
        sc: dict[str, Any] = {
            "id": sid,
            "version": "metadrive_legacy",
            "length": window,
            "tracks": tracks,
            "dynamic_map_states": {},
            "map_features": map_features,
            "metadata": {
                "id": sid,
                "scenario_id": sid,
                "dataset": "waymo",
                "coordinate": "waymo",
                "metadrive_processed": False,
                "ts": ts_all[s:e] - ts_all[s],
                "sdc_id": sdc if sdc in tracks else None,
                "source_file": str(path.name),
                "source_window_start": s,
                "current_time_index": 20,
                "tracks_to_predict": {
                    t: {"track_index": ids.index(t), "track_id": t, "difficulty": 0, "object_type": tracks[t]["type"]}
                    for t in full
                },
                "tracks_to_predict_rule": "agents valid over the whole 81-step window",
                "traffic_lights_converted": False,
            },
        }
        if sc["metadata"]["sdc_id"] is None:
            del sc["metadata"]["sdc_id"]
        osum = object_summary(tracks, window)
        sc["metadata"]["object_summary"] = osum
        sc["metadata"]["number_summary"] = number_summary(sc, osum)
        scenarios.append(sc)
    return scenarios, stats


def convert_metadrive(out: str | Path, files: list[Path] | None = None, window: int = WINDOW, stride: int = STRIDE
                      ) -> dict[str, Any]:
    """Convert legacy MetaDrive pickles (default: the embedded Waymo scenarios) into one ScenarioNet database.

    Returns a report dict with per-file statistics and the total number of scenarios written.
    """
    files = list(files) if files is not None else legacy_waymo_files()
    allsc: list[dict[str, Any]] = []
    report: dict[str, Any] = {"files": {}, "window": window, "stride": stride}
    for p in files:
        legacy = load_legacy_pickle(p)
        if not isinstance(legacy, dict):
            raise MotionDataError(p, None, f"expected a dict, got {type(legacy).__name__}")
        scs, stats = convert_legacy_scenario(legacy, Path(p), window, stride)
        stats["scenarios_written"] = len(scs)
        report["files"][str(p)] = stats
        allsc.extend(scs)
    if not allsc:
        raise MotionDataError(out, None, "no windows with a fully valid agent: nothing to write")
    write_database(out, allsc, dataset="waymo", version="metadrive_legacy")
    report["scenarios"] = len(allsc)
    report["full_window_agents"] = sum(s["full_window_agents"] for s in report["files"].values())
    return report
