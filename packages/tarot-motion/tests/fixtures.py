"""Generators for ScenarioNet / legacy MetaDrive fixtures in exactly the real on-disk formats (plain pickled dicts)."""

from __future__ import annotations

import enum
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tarot_motion.scenarionet import number_summary, object_summary


def _dump(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)


def make_track(tid: str, typ: str, T: int, x0: float, y0: float, vx: float, vy: float, *,
               valid: np.ndarray | None = None, float_style: str = "waymo", dataset: str = "waymo") -> dict[str, Any]:
    """A straight constant-velocity track. ``waymo`` style: float32 [T] scalars, bool valid; ``nuscenes`` style:
    float64 [T,1] scalars, float valid, garbage positions at invalid steps."""
    t = np.arange(T) * 0.1
    valid = np.ones(T, dtype=bool) if valid is None else valid.astype(bool)
    pos = np.stack([x0 + vx * t, y0 + vy * t, np.full(T, 0.5)], axis=1)
    heading = np.full(T, np.arctan2(vy, vx) if (vx or vy) else 0.0)
    vel = np.tile([vx, vy], (T, 1)).astype(float)
    if float_style == "waymo":
        dt = np.float32
        state = {"position": pos.astype(dt), "heading": heading.astype(dt), "velocity": vel.astype(dt),
                 "length": np.full(T, 4.5, dt), "width": np.full(T, 2.0, dt), "height": np.full(T, 1.6, dt),
                 "valid": valid.copy()}
        pos_ref = state["position"]
        pos_ref[~valid] = 0.0
    else:
        pos[~valid] = [-607.45, -1643.21, 0.0]  # garbage at invalid steps, as in real nuScenes files
        vel[~valid] = [123.0, -55.0]
        state = {"position": pos, "heading": heading, "velocity": vel, "length": np.full((T, 1), 4.5),
                 "width": np.full((T, 1), 2.0), "height": np.full((T, 1), 1.6), "valid": valid.astype(np.float64)}
    return {"type": typ, "state": state,
            "metadata": {"track_length": T, "type": typ, "object_id": tid, "dataset": dataset}}


def waymo_map() -> dict[str, Any]:
    xs = np.linspace(-50.0, 250.0, 301)
    lane = np.stack([xs, np.zeros_like(xs), np.full_like(xs, 0.1)], axis=1).astype(np.float32)
    return {
        "100": {"type": "LANE_SURFACE_STREET", "polyline": lane, "entry_lanes": [], "exit_lanes": ["101"],
                "left_neighbor": [{"feature_id": "101", "self_start_index": "0", "self_end_index": "300",
                                   "neighbor_start_index": "0", "neighbor_end_index": "300", "boundaries": []}],
                "right_neighbor": [], "left_boundaries": [], "right_boundaries": [], "speed_limit_mph": 25.0,
                "speed_limit_kmh": 40.2, "interpolating": False},
        "200": {"type": "ROAD_LINE_BROKEN_SINGLE_WHITE",
                "polyline": np.stack([xs, np.full_like(xs, 2.0)], axis=1).astype(np.float32)},
        "300": {"type": "ROAD_EDGE_BOUNDARY",
                "polyline": np.stack([xs, np.full_like(xs, 6.0), np.zeros_like(xs)], axis=1).astype(np.float32)},
        "400": {"type": "CROSSWALK",
                "polygon": np.array([[40, -5, 0], [44, -5, 0], [44, 5, 0], [40, 5, 0]], dtype=np.float32)},
        "500": {"type": "STOP_SIGN", "lane": ["100"], "position": np.array([60.0, -3.0, 0.0], dtype=np.float32)},
    }


def _finish(sc: dict[str, Any], with_summaries: bool = True) -> dict[str, Any]:
    if with_summaries:
        osum = object_summary(sc["tracks"], sc["length"])
        sc["metadata"]["object_summary"] = osum
        sc["metadata"]["number_summary"] = number_summary(sc, osum)
    return sc


def waymo_scenario(sid: str = "wa1") -> dict[str, Any]:
    """Waymo-style: T = 91, 1-D float32 states, bool valid, tracks_to_predict, SDC, lane/line/edge/crosswalk/stop,
    traffic light."""
    T = 91
    ped_valid = np.zeros(T, dtype=bool)
    ped_valid[5:40] = True
    tracks = {
        "1": make_track("1", "VEHICLE", T, 0.0, 0.0, 10.0, 0.0),
        "7": make_track("7", "VEHICLE", T, -20.0, 4.0, 8.0, 0.0),  # SDC
        "9": make_track("9", "PEDESTRIAN", T, 30.0, -8.0, 0.0, 1.0, valid=ped_valid),
    }
    ts = (np.arange(T) * 0.1).astype(np.float64)
    sc = {
        "id": sid, "version": "v1.2", "length": T, "tracks": tracks,
        "dynamic_map_states": {"100": {"type": "TRAFFIC_LIGHT", "state": {"object_state": ["LANE_STATE_GO"] * T},
                                       "lane": "100", "stop_point": np.array([70.0, 0.0, 0.0], np.float32),
                                       "metadata": {"track_length": T, "type": "TRAFFIC_LIGHT", "object_id": "100",
                                                    "dataset": "waymo"}}},
        "map_features": waymo_map(),
        "metadata": {"id": sid, "scenario_id": sid, "dataset": "waymo", "coordinate": "waymo",
                     "metadrive_processed": False, "ts": ts, "sdc_id": "7", "current_time_index": 10,
                     "sdc_track_index": 1, "objects_of_interest": [], "source_file": "training.tfrecord-00000",
                     "track_length": T,
                     "tracks_to_predict": {"1": {"track_index": 0, "track_id": "1", "difficulty": 1,
                                                 "object_type": "VEHICLE"}}},
    }
    return _finish(sc)


def nuscenes_scenario(sid: str = "scene-0001", T: int = 81, with_ttp: bool = False, with_osum: bool = True
                      ) -> dict[str, Any]:
    """nuScenes-style: [T,1] float64 sizes, float valid, sdc 'ego', garbage at invalid steps, sidewalk polygon,
    UNKNOWN_LINE, empty dynamic_map_states; no tracks_to_predict by default (object-summary filter)."""
    other_valid = np.ones(T, dtype=bool)
    other_valid[: T // 5] = False
    tracks = {
        "ego": make_track("ego", "VEHICLE", T, 0.0, 0.0, 5.0, 0.0, float_style="nuscenes", dataset="nuscenes"),
        "tok_a": make_track("tok_a", "VEHICLE", T, 10.0, 3.0, 6.0, 0.5, float_style="nuscenes",
                            dataset="nuscenes", valid=other_valid),
        "tok_ped": make_track("tok_ped", "PEDESTRIAN", T, 5.0, -4.0, 0.0, 0.0, float_style="nuscenes",
                              dataset="nuscenes"),
    }
    xs = np.linspace(-20.0, 80.0, 11)
    mf = {
        "lane_a": {"type": "LANE_SURFACE_STREET", "polyline": np.stack([xs, np.zeros(11), np.zeros(11)], 1),
                   "entry_lanes": [], "exit_lanes": [], "left_neighbor": [], "right_neighbor": [],
                   "speed_limit_kmh": 50.0},
        "walk": {"type": "ROAD_EDGE_SIDEWALK", "polygon": np.array([[-10.0, 8.0], [60.0, 8.0], [60.0, 12.0],
                                                                      [-10.0, 12.0]])},
        "unk": {"type": "UNKNOWN_LINE", "polyline": np.stack([xs, np.full(11, -3.0)], 1)},
    }
    sc = {"id": sid, "version": "v1.0-trainval", "length": T, "tracks": tracks, "dynamic_map_states": {},
          "map_features": mf,
          "metadata": {"id": sid, "scenario_id": sid, "dataset": "nuscenes", "coordinate": "right-handed",
                       "metadrive_processed": False, "ts": np.arange(T) * 0.1, "sdc_id": "ego",
                       "map": "boston-seaport", "date": "2018-08-01", "sample_rate": 0.1}}
    if with_ttp:
        sc["metadata"]["tracks_to_predict"] = {"tok_a": {"track_index": 1, "track_id": "tok_a", "difficulty": 0,
                                                         "object_type": "VEHICLE"}}
    return _finish(sc, with_summaries=with_osum)


def av2_scenario(sid: str = "av2-0001") -> dict[str, Any]:
    """AV2-style: T = 110, current_time_index 49, sdc 'AV', ts = arange(T)/10."""
    T = 110
    tracks = {
        "AV": make_track("AV", "VEHICLE", T, 0.0, 0.0, 3.0, 3.0, dataset="av2"),
        "42": make_track("42", "VEHICLE", T, 5.0, -5.0, 0.0, 7.0, dataset="av2"),
        "43": make_track("43", "CYCLIST", T, -5.0, 5.0, 2.0, 0.0, dataset="av2"),
    }
    xs = np.linspace(-30.0, 30.0, 7)
    mf = {"l1": {"type": "LANE_SURFACE_STREET", "polyline": np.stack([xs, xs, np.zeros(7)], 1),
                 "entry_lanes": [], "exit_lanes": []},
          "e1": {"type": "ROAD_EDGE_BOUNDARY", "polyline": np.stack([xs, xs + 5.0, np.zeros(7)], 1)}}
    sc = {"id": sid, "version": "av2", "length": T, "tracks": tracks, "dynamic_map_states": {}, "map_features": mf,
          "metadata": {"id": sid, "scenario_id": sid, "dataset": "av2", "coordinate": "right-handed",
                       "metadrive_processed": False, "ts": np.arange(T) / 10, "sdc_id": "AV",
                       "current_time_index": 49, "sdc_track_index": 0, "objects_of_interest": ["42"],
                       "tracks_to_predict": {"42": {"track_index": 1, "track_id": "42", "difficulty": 0,
                                                    "object_type": "VEHICLE"},
                                             "43": {"track_index": 2, "track_id": "43", "difficulty": 0,
                                                    "object_type": "CYCLIST"}}}}
    return _finish(sc)


def summary_of(sc: dict[str, Any]) -> dict[str, Any]:
    from tarot_motion.scenarionet import summarize_scenario

    return summarize_scenario(sc)


def file_name(sc: dict[str, Any]) -> str:
    return f"sd_{sc['metadata']['dataset']}_{sc['version']}_{sc['id']}.pkl"


def write_flat_db(root: Path, scenarios: list[dict[str, Any]], with_index: bool = True) -> Path:
    """Single-folder database (mapping values '')."""
    root.mkdir(parents=True, exist_ok=True)
    summ = {}
    for sc in scenarios:
        _dump(sc, root / file_name(sc))
        summ[file_name(sc)] = summary_of(sc)
    if with_index:
        _dump(summ, root / "dataset_summary.pkl")
        _dump({k: "" for k in summ}, root / "dataset_mapping.pkl")
    return root


def write_nested_db(root: Path, workers: list[list[dict[str, Any]]], name: str = "nuscenes") -> Path:
    """Per-worker folders ``<name>_<i>/`` each with its own index, plus a top-level index mapping into them."""
    summ, mapping = {}, {}
    for i, scs in enumerate(workers):
        sub = f"{name}_{i}"
        write_flat_db(root / sub, scs)
        for sc in scs:
            summ[file_name(sc)] = summary_of(sc)
            mapping[file_name(sc)] = sub
    _dump(summ, root / "dataset_summary.pkl")
    _dump(mapping, root / "dataset_mapping.pkl")
    return root


def write_merged_db(merged: Path, sources: list[Path]) -> Path:
    """Merged database: only an index whose mapping values are paths of the source folders relative to the root."""
    import os

    from tarot_motion.safe_pickle import load_scenarionet_pickle

    merged.mkdir(parents=True, exist_ok=True)
    summ, mapping = {}, {}
    for src in sources:
        s = load_scenarionet_pickle(src / "dataset_summary.pkl")
        m = load_scenarionet_pickle(src / "dataset_mapping.pkl")
        for k, v in s.items():
            summ[k] = v
            mapping[k] = os.path.relpath(src / m[k], merged)
    _dump(summ, merged / "dataset_summary.pkl")
    _dump(mapping, merged / "dataset_mapping.pkl")
    return merged


# ------------------------------------------------------------------------------------------ legacy MetaDrive


def _legacy_enums() -> tuple[type, type, type]:
    AgentType = enum.Enum("AgentType", {"UNSET": 0, "VEHICLE": 1, "PEDESTRIAN": 2, "CYCLIST": 3, "OTHER": 4},
                          module="__main__")
    RoadLineType = enum.Enum("RoadLineType", {"UNKNOWN": 0, "BROKEN_SINGLE_WHITE": 1, "SOLID_SINGLE_WHITE": 2,
                                              "SOLID_DOUBLE_WHITE": 3, "BROKEN_SINGLE_YELLOW": 4,
                                              "BROKEN_DOUBLE_YELLOW": 5, "SOLID_SINGLE_YELLOW": 6,
                                              "SOLID_DOUBLE_YELLOW": 7, "PASSING_DOUBLE_YELLOW": 8},
                             module="__main__")
    RoadEdgeType = enum.Enum("RoadEdgeType", {"UNKNOWN": 0, "BOUNDARY": 1, "MEDIAN": 2}, module="__main__")
    return AgentType, RoadLineType, RoadEdgeType


def write_legacy_scenario(path: Path, T: int = 101) -> dict[str, Any]:
    """A legacy MetaDrive (pre-ScenarioNet) scenario: int keys, [T,10] states, enum members pickled under __main__,
    center_lane, cross_walk (key ``sign``), a self-referencing speed bump and list-valued dynamic_map_states."""
    AgentType, RoadLineType, RoadEdgeType = _legacy_enums()
    main = sys.modules["__main__"]
    saved = {n: getattr(main, n, None) for n in ("AgentType", "RoadLineType", "RoadEdgeType")}
    t = np.arange(T) * 0.1

    def state(x0: float, vx: float, valid: np.ndarray) -> np.ndarray:
        s = np.zeros((T, 10))
        s[:, 0] = x0 + vx * t
        s[:, 1] = 1.0
        s[:, 2] = 0.3
        s[:, 3:6] = [4.8, 2.0, 1.5]
        s[:, 7] = vx
        s[:, 9] = valid
        s[valid == 0, :9] = 0.0
        s[valid == 0, 2] = 0.01  # z small non-zero at invalid rows, as in the real files
        return s

    half = np.zeros(T)
    half[40:] = 1
    tracks = {
        11: {"type": AgentType.VEHICLE, "state": state(0.0, 8.0, np.ones(T))},
        12: {"type": AgentType.VEHICLE, "state": state(-10.0, 6.0, half)},
        13: {"type": AgentType.UNSET, "state": state(5.0, 0.0, np.ones(T))},
    }
    xs = np.linspace(-20, 120, 50)
    bump: dict[str, Any] = {"polygon": np.array([[30.0, -2, 0], [31, -2, 0], [31, 2, 0], [30, 2, 0]])}
    bump["type"] = bump
    legacy_map = {
        1: {"type": "center_lane", "polyline": np.stack([xs, np.ones(50), np.zeros(50)], 1), "width": np.ones((50, 2)),
            "interpolating": True, "entry": [], "exit": [2], "left_boundaries": [],
            "right_boundaries": [{"index": [0, 49], "type": RoadLineType.UNKNOWN, "id": 3}],
            "left_neighbor": [{"id": 2, "indexes": [0, 49, 0, 49],
                               "boundaries": [{"index": [0, 49], "type": RoadLineType.BROKEN_SINGLE_WHITE, "id": 3}]}],
            "right_neighbor": []},
        3: {"type": RoadLineType.BROKEN_SINGLE_WHITE, "polyline": np.stack([xs, np.full(50, 3.0), np.zeros(50)], 1)},
        4: {"type": RoadEdgeType.BOUNDARY, "polyline": np.stack([xs, np.full(50, 6.0), np.zeros(50)], 1)},
        5: {"type": RoadEdgeType.UNKNOWN, "polyline": np.stack([xs, np.full(50, 9.0), np.zeros(50)], 1)},
        6: {"type": RoadLineType.UNKNOWN, "polyline": np.stack([xs, np.full(50, -3.0), np.zeros(50)], 1)},
        7: {"type": "stop_sign", "lanes": [1], "pos": [50.0, -2.0, 0.0]},
        8: {"sign": "cross_walk", "polygon": np.array([[20.0, -4, 0], [22, -4, 0], [22, 4, 0], [20, 4, 0]])},
        9: bump,
    }
    legacy = {"id": "legacyfixture", "ts": list(t + np.random.default_rng(0).normal(0, 1e-3, T) * (t > 0)),
              "tracks": tracks, "dynamic_map_states": [{1: {"state": 6, "stop_point": [60.0, 1.0, 0.0]}}],
              "sdc_index": 11, "map": legacy_map}
    try:
        main.AgentType, main.RoadLineType, main.RoadEdgeType = AgentType, RoadLineType, RoadEdgeType
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            pickle.dump(legacy, fh, protocol=3)
    finally:
        for n, v in saved.items():
            if v is None:
                delattr(main, n)
            else:
                setattr(main, n, v)
    return legacy


class _Evil:
    def __reduce__(self):  # noqa: D105
        import os

        return (os.system, ("echo pwned",))


def write_evil_pickle(path: Path) -> None:
    """A pickle that references a disallowed global (``os.system`` / ``posix.system``)."""
    _dump({"id": "x", "payload": _Evil()}, path)


def varied(kind: str, i: int) -> dict[str, Any]:
    """Fixture scenario ``i`` of a kind with a distinct speed/direction for the center agent (for selection tests)."""
    if kind == "waymo":
        sc = waymo_scenario(f"w{i:03d}")
        tid = "1"
    elif kind == "av2":
        sc = av2_scenario(f"a{i:03d}")
        tid = "42"
    else:
        sc = nuscenes_scenario(f"scene-{i:04d}", with_ttp=True)
        tid = "tok_a"
    st = sc["tracks"][tid]["state"]
    T = sc["length"]
    ang = 0.3 * i
    speed = 4.0 + 1.5 * i
    t = np.arange(T) * 0.1
    pos = np.asarray(st["position"], dtype=np.float64).copy()
    pos[:, 0] = pos[0, 0] + speed * np.cos(ang) * t
    pos[:, 1] = pos[0, 1] + speed * np.sin(ang) * t
    valid = np.asarray(st["valid"]).reshape(T).astype(bool)
    pos[~valid] = st["position"][~valid]
    st["position"] = pos.astype(st["position"].dtype)
    st["velocity"] = np.tile([speed * np.cos(ang), speed * np.sin(ang)], (T, 1)).astype(st["velocity"].dtype)
    st["heading"] = np.full(st["heading"].shape, ang, dtype=st["heading"].dtype)
    return _finish(sc)


def write_argoverse1_log(path: Path, steps: int = 100) -> None:
    """Argoverse-1 log as shipped in metadrive 0.3.0.1: pickle of ``(agents, city)``; agents keyed by UUID strings
    with ``init_pos``, ``traj`` (step string from "1" -> xy) and ``heading`` (None for the AV, else step -> [2])."""
    av = "00000000-0000-0000-0000-000000000000"
    agents: dict[str, Any] = {}
    agents[av] = {"init_pos": np.array([100.0, 50.0]),
                  "traj": {str(s): np.array([100.0 + 1.0 * s, 50.0]) for s in range(1, steps + 1)}, "heading": None}
    agents["5e98551d-aaaa"] = {"init_pos": np.array([90.0, 40.0]),
                               "traj": {str(s): np.array([90.0, 40.0 + 0.5 * s]) for s in range(1, steps + 1)},
                               "heading": {str(s): np.array([2.8, -2.9]) for s in range(0, steps + 1)}}
    gap = {str(s): np.array([80.0 - 0.8 * s, 45.0]) for s in range(1, steps + 1) if not 30 <= s < 35}
    agents["d72d1add-bbbb"] = {"init_pos": np.array([80.0, 45.0]), "traj": gap,
                               "heading": {str(s): np.array([2.7, -3.0]) for s in range(0, steps + 1)}}
    _dump((agents, "PIT"), path)
