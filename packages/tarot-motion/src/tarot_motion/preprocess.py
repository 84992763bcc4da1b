"""UniTraj-style preprocessing of ScenarioNet scenarios into agent-centric samples (motion spec section 4).

One sample per center agent: 21 past + 60 future steps at 10 Hz, 15 agents x 21 steps x 39 features, 256 map
polylines x 20 points x 29 features, ground truth in the center frame, the source label and the database folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MotionDataError, write_json
from .scenarionet import ScenarioNetDatabase, read_scenario

DEFAULT_CONFIG: dict[str, Any] = {
    "past_len": 21,
    "future_len": 60,
    "object_type": ["VEHICLE"],
    "line_type": ["lane", "stop_sign", "road_edge", "road_line", "crosswalk", "speed_bump"],
    "masked_attributes": ["z_axis", "size"],
    "trajectory_sample_interval": 1,
    "only_train_on_ego": False,
    "center_offset_of_map": [30.0, 0.0],
    "max_num_agents": 15,
    "map_range": 100.0,
    "max_num_roads": 256,
    "max_points_per_lane": 20,
    "starting_frame": 0,
    "max_data_num": None,
}

OBJECT_TYPE_CODE = {"UNSET": 0, "VEHICLE": 1, "PEDESTRIAN": 2, "CYCLIST": 3, "OTHER": 4}
POLYLINE_TYPE_CODE = {
    "LANE_FREEWAY": 1,
    "LANE_SURFACE_STREET": 2,
    "LANE_SURFACE_UNSTRUCTURE": 2,
    "LANE_BIKE_LANE": 3,
    "ROAD_LINE_BROKEN_SINGLE_WHITE": 6,
    "ROAD_LINE_SOLID_SINGLE_WHITE": 7,
    "ROAD_EDGE_SIDEWALK": 7,
    "ROAD_LINE_SOLID_DOUBLE_WHITE": 8,
    "ROAD_LINE_BROKEN_SINGLE_YELLOW": 9,
    "ROAD_LINE_BROKEN_DOUBLE_YELLOW": 10,
    "ROAD_LINE_SOLID_SINGLE_YELLOW": 11,
    "ROAD_LINE_SOLID_DOUBLE_YELLOW": 12,
    "ROAD_LINE_PASSING_DOUBLE_YELLOW": 13,
    "ROAD_EDGE_BOUNDARY": 15,
    "ROAD_EDGE_MEDIAN": 16,
    "STOP_SIGN": 17,
    "CROSSWALK": 18,
    "SPEED_BUMP": 19,
}
ARRAY_KEYS = (
    "obj_trajs",
    "obj_trajs_mask",
    "track_index_to_predict",
    "obj_trajs_pos",
    "obj_trajs_last_pos",
    "center_objects_world",
    "center_objects_type",
    "map_center",
    "obj_trajs_future_state",
    "obj_trajs_future_mask",
    "center_gt_trajs",
    "center_gt_trajs_mask",
    "center_gt_final_valid_idx",
    "center_gt_trajs_src",
    "map_polylines",
    "map_polylines_mask",
    "map_polylines_center",
    "kalman_difficulty",
    "trajectory_type",
)
STRING_KEYS = ("scenario_id", "center_objects_id", "dataset_name", "source_folder")
#: bumped when preprocessing changes what a cache holds (2: velocity derived from positions where a track has none,
#: NaN on valid steps refused), so that older caches are rebuilt instead of reused
CACHE_FORMAT = 2


def resolve_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults merged with ``overrides``; unknown keys are an error."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    for k, v in (overrides or {}).items():
        if k not in cfg:
            raise MotionDataError(None, f"preprocess.{k}", f"unknown preprocessing key (known: {sorted(cfg)})")
        cfg[k] = v
    return cfg


def _bucket(type_str: str) -> str | None:
    if type_str.startswith("LANE_"):
        return "lane"
    if type_str.startswith("ROAD_LINE_") or type_str == "UNKNOWN_LINE":
        return "road_line"
    if type_str.startswith("ROAD_EDGE_"):
        return "road_edge"
    return {"STOP_SIGN": "stop_sign", "CROSSWALK": "crosswalk", "SPEED_BUMP": "speed_bump"}.get(type_str)


def resample_polyline(points: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Resample a polyline at ``step`` metres along its xy length; the result has z = 0 (as UniTraj does)."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    if xy.shape[0] < 2:
        return np.concatenate([xy, np.zeros((xy.shape[0], 1))], axis=1)
    seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = cum[-1]
    if total <= 0:
        return np.concatenate([xy[:1], np.zeros((1, 1))], axis=1)
    s = np.arange(0.0, total, step)
    if total - s[-1] > 1e-6:
        s = np.append(s, total)
    out = np.stack([np.interp(s, cum, xy[:, 0]), np.interp(s, cum, xy[:, 1])], axis=1)
    return np.concatenate([out, np.zeros((out.shape[0], 1))], axis=1)


def _with_dir(pts: np.ndarray, code: int) -> np.ndarray:
    prev = np.concatenate([pts[:1], pts[:-1]], axis=0)
    diff = pts - prev
    d = diff / np.clip(np.linalg.norm(diff, axis=1, keepdims=True), 1e-6, None)
    return np.concatenate([pts, d, np.full((pts.shape[0], 1), float(code))], axis=1)


def encode_map_features(map_features: Mapping[str, Any], line_types: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """World-frame map points.

    Returns
    -------
    points : ndarray [P, 7]
        ``x, y, z, dir_x, dir_y, dir_z, type_code`` rows for every kept feature, concatenated.
    feat_id : ndarray [P] int
        Which feature each point belongs to (0..F-1 in kept order).
    dropped : dict
        Count of map features dropped per type string (type code 0 or bucket disabled or no geometry).
    """
    rows: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    dropped: dict[str, int] = {}
    for feat in map_features.values():
        t = str(feat.get("type"))
        code = POLYLINE_TYPE_CODE.get(t, 0)
        bucket = _bucket(t)
        if code == 0 or bucket is None or bucket not in line_types:
            dropped[t] = dropped.get(t, 0) + 1
            continue
        if bucket == "lane":
            pts = np.asarray(feat["polyline"], dtype=np.float64)
            pts = _pad3(pts)
            if pts.shape[0] < 20:
                pts = resample_polyline(pts)
        elif bucket in ("road_line", "road_edge"):
            geom = feat.get("polyline", feat.get("polygon"))
            if geom is None:
                dropped[t] = dropped.get(t, 0) + 1
                continue
            pts = resample_polyline(np.asarray(geom, dtype=np.float64))
        elif bucket == "stop_sign":
            pts = _pad3(np.asarray(feat["position"], dtype=np.float64).reshape(1, -1))
        else:
            geom = feat.get("polygon")
            if geom is None:
                dropped[t] = dropped.get(t, 0) + 1
                continue
            pts = _pad3(np.asarray(geom, dtype=np.float64))
        if pts.shape[0] == 0:
            dropped[t] = dropped.get(t, 0) + 1
            continue
        rows.append(_with_dir(pts, code))
        ids.append(np.full(pts.shape[0], len(rows) - 1, dtype=np.int64))
    if not rows:
        return np.zeros((0, 7)), np.zeros(0, dtype=np.int64), dropped
    return np.concatenate(rows), np.concatenate(ids), dropped


def _pad3(pts: np.ndarray) -> np.ndarray:
    if pts.ndim != 2:
        pts = pts.reshape(-1, pts.shape[-1])
    if pts.shape[1] == 2:
        return np.concatenate([pts, np.zeros((pts.shape[0], 1))], axis=1)
    return pts[:, :3]


def _rotate(xy: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([xy[..., 0] * c - xy[..., 1] * s, xy[..., 0] * s + xy[..., 1] * c], axis=-1)


def map_for_center(points: np.ndarray, feat_id: np.ndarray, center: np.ndarray, cfg: Mapping[str, Any]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Agent-centric map polylines for one center (motion spec section 4.6).

    Returns ``map_polylines [R, n, 29]``, ``map_polylines_mask [R, n]`` and ``map_polylines_center [R, 3]`` with
    ``R = max_num_roads`` and ``n = max_points_per_lane``.
    """
    R, n = int(cfg["max_num_roads"]), int(cfg["max_points_per_lane"])
    polylines = np.zeros((R, n, 29), dtype=np.float32)
    mask = np.zeros((R, n), dtype=bool)
    centers = np.zeros((R, 3), dtype=np.float32)
    if points.shape[0] == 0:
        return polylines, mask, centers
    p = points.copy()
    p[:, 0:3] -= center[0:3]
    p[:, 0:2] = _rotate(p[:, 0:2], -center[6])
    p[:, 3:5] = _rotate(p[:, 3:5], -center[6])
    ox, oy = cfg["center_offset_of_map"]
    rng = float(cfg["map_range"])
    inr = (np.abs(p[:, 0] - ox) < rng) & (np.abs(p[:, 1] - oy) < rng)
    first = np.ones_like(inr)
    first[1:] = feat_id[1:] != feat_id[:-1]
    prev_in = np.concatenate([[False], inr[:-1]])
    start = inr & (first | ~prev_in)
    idx = np.flatnonzero(inr)
    if idx.size == 0:
        return polylines, mask, centers
    run_id = np.cumsum(start)[idx] - 1
    lengths = np.bincount(run_id)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    k = np.arange(n)
    L = lengths[:, None]
    sel = np.where(L > n, np.floor(k[None, :] * (L - 1) / max(n - 1, 1) + 1e-9).astype(np.int64), k[None, :])
    valid = k[None, :] < np.minimum(L, n)
    sel = np.where(valid, sel, 0)
    gather = idx[offsets[:, None] + sel]  # [runs, n]
    pts = p[gather]  # [runs, n, 7]
    dist = np.linalg.norm(pts[..., 0:2] - np.array([ox, oy]), axis=-1)
    mean_dist = (dist * valid).sum(1) / valid.sum(1)
    order = np.argsort(mean_dist, kind="stable")[:R]
    pts, valid = pts[order], valid[order]
    prev = np.concatenate([pts[:, :1, 0:3], pts[:, :-1, 0:3]], axis=1)
    onehot = np.zeros(pts.shape[:2] + (20,), dtype=np.float32)
    codes = pts[..., 6].astype(np.int64)
    np.put_along_axis(onehot, codes[..., None], 1.0, axis=-1)
    feat = np.concatenate([pts[..., 0:6], prev, onehot], axis=-1) * valid[..., None]
    r = feat.shape[0]
    polylines[:r] = feat
    mask[:r] = valid
    centers[:r] = (pts[..., 0:3] * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)
    return polylines, mask, centers


REQUIRED_STATE = ("position", "length", "width", "height", "heading", "valid")


def finite_velocity(pos: np.ndarray, valid: np.ndarray, dt: float = 0.1) -> np.ndarray:
    """Velocity ``[T, 2]`` from positions by differences between neighbouring valid steps (central inside a run,
    one-sided at its ends, zero for an isolated step)."""
    T = pos.shape[0]
    vel = np.zeros((T, 2))
    for t in np.flatnonzero(valid):
        prev_ok = t > 0 and valid[t - 1]
        next_ok = t + 1 < T and valid[t + 1]
        if prev_ok and next_ok:
            vel[t] = (pos[t + 1, :2] - pos[t - 1, :2]) / (2 * dt)
        elif next_ok:
            vel[t] = (pos[t + 1, :2] - pos[t, :2]) / dt
        elif prev_ok:
            vel[t] = (pos[t, :2] - pos[t - 1, :2]) / dt
    return vel


def track_array(state: Mapping[str, Any], T: int, *, path: Any = None, track: str = "?", dt: float = 0.1,
                info: dict[str, int] | None = None) -> np.ndarray:
    """``[T, 10]`` array ``x, y, z, l, w, h, heading, vx, vy, valid`` (scalar states may be ``[T]`` or ``[T, 1]``).

    A state without ``velocity`` gets it from the positions (:func:`finite_velocity`, counted in
    ``info["velocity_derived_tracks"]``); any other missing key, or a NaN/inf value on a valid step, raises
    :class:`MotionDataError` naming the track (and step) instead of becoming zeros.
    """
    missing = [k for k in REQUIRED_STATE if k not in state]
    if missing:
        raise MotionDataError(path, f"tracks.{track}.state", f"missing {', '.join(missing)} (ScenarioNet tracks carry "
                              "position, length, width, height, heading, velocity and valid)")

    def col(key: str, width: int) -> np.ndarray:
        a = np.asarray(state[key], dtype=np.float64).reshape(T, -1)
        if a.shape[1] < width:
            a = np.concatenate([a, np.zeros((T, width - a.shape[1]))], axis=1)
        return a[:, :width]

    valid = np.asarray(state["valid"]).reshape(T).astype(np.float64)
    if "velocity" in state:
        vel = col("velocity", 2)
    else:
        vel = finite_velocity(col("position", 3), valid > 0, dt=dt)
        if info is not None:
            info["velocity_derived_tracks"] = info.get("velocity_derived_tracks", 0) + 1
    arr = np.concatenate(
        [col("position", 3), col("length", 1), col("width", 1), col("height", 1), col("heading", 1), vel,
         valid[:, None]],
        axis=1,
    )
    bad = ~np.isfinite(arr[:, :9]).all(axis=1) & (valid > 0)
    if bad.any():
        step = int(np.argmax(bad))
        names = ("x", "y", "z", "length", "width", "height", "heading", "vx", "vy")
        cols = [names[j] for j in np.flatnonzero(~np.isfinite(arr[step, :9]))]
        raise MotionDataError(path, f"tracks.{track}.state", f"non-finite {', '.join(cols)} at valid step {step}")
    arr[valid <= 0, :9] = 0.0  # garbage at invalid steps is never used
    return arr


def kalman_difficulty(past: np.ndarray, future: np.ndarray, dt: float = 0.1) -> np.ndarray:
    """Constant-velocity Kalman extrapolation error at 2/4/6 s (−1 where the ground truth is missing).

    ``past`` is ``[Tp, 10]`` and ``future`` ``[Tf, 10]`` in any common frame.
    """
    F = np.array([[1, 0, dt, 0], [0, 1, 0, dt], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    H = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float64)
    Q, Rm = np.eye(4) * 0.1, np.eye(2) * 0.1
    vidx = np.flatnonzero(past[:, 9] > 0)
    out = -np.ones(3)
    if vidx.size == 0:
        return out
    x = np.array([past[vidx[0], 0], past[vidx[0], 1], past[vidx[0], 7], past[vidx[0], 8]])
    P = np.eye(4)
    for t in range(vidx[0] + 1, past.shape[0]):
        x, P = F @ x, F @ P @ F.T + Q
        if past[t, 9] > 0:
            S = H @ P @ H.T + Rm
            K = P @ H.T @ np.linalg.inv(S)
            x = x + K @ (past[t, 0:2] - H @ x)
            P = (np.eye(4) - K @ H) @ P
    for i, step in enumerate((19, 39, 59)):
        if step < future.shape[0] and future[step, 9] > 0:
            pred = x[0:2] + x[2:4] * dt * (step + 1)
            out[i] = float(np.linalg.norm(pred - future[step, 0:2]))
    return out


def trajectory_type(track: np.ndarray) -> int:
    """Waymo's trajectory classification of a ``[T, 10]`` track (0 stationary ... 7 left turn, −1 failure)."""
    vidx = np.flatnonzero(track[:, 9] > 0)
    if vidx.size < 2:
        return -1
    s, e = track[vidx[0]], track[vidx[-1]]
    delta = e[0:2] - s[0:2]
    disp = float(np.linalg.norm(delta))
    hd = float(np.arctan2(np.sin(e[6] - s[6]), np.cos(e[6] - s[6])))
    dx, dy = _rotate(delta, -s[6])
    max_speed = max(float(np.linalg.norm(s[7:9])), float(np.linalg.norm(e[7:9])))
    if max_speed < 2.0 and disp < 5.0:
        return 0
    if abs(hd) < np.pi / 6:
        if abs(dy) < 5.0:
            return 1
        return 2 if dy < 0 else 3
    if hd < -np.pi / 6 and dy < 0:
        return 4 if dx < -5.0 else 5
    if dx < -5.0:
        return 6
    return 7


def _center_ids(sc: Mapping[str, Any], trajs: np.ndarray, ids: list[str], types: list[str], cfg: Mapping[str, Any],
                path: Any, cur: int) -> list[int]:
    meta = sc["metadata"]
    if cfg["only_train_on_ego"]:
        cand = [meta.get("sdc_id")]
    elif meta.get("tracks_to_predict"):
        cand = list(meta["tracks_to_predict"].keys())
    else:
        osum = meta.get("object_summary")
        if not isinstance(osum, Mapping):
            raise MotionDataError(path, "metadata.object_summary", "required when tracks_to_predict is absent")
        cand = []
        for tid, o in osum.items():
            try:
                ratio = o["valid_length"] / max(o["track_length"], 1)
                ok = o["type"] in ("VEHICLE", "PEDESTRIAN", "CYCLIST") and ratio >= 0.5
                ok = ok and not (o["type"] == "VEHICLE" and o["moving_distance"] < 2.0)
            except KeyError as exc:
                raise MotionDataError(path, f"metadata.object_summary.{tid}.{exc.args[0]}", "missing key") from None
            if ok:
                cand.append(tid)
    pos = {t: i for i, t in enumerate(ids)}
    out = []
    for tid in cand:
        i = pos.get(str(tid))
        if i is None or trajs[i, cur, 9] <= 0 or types[i] not in cfg["object_type"]:
            continue
        out.append(i)
    return out


def process_scenario(sc: Mapping[str, Any], cfg: Mapping[str, Any], path: Any = None, label: str | None = None,
                     folder: str = "") -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Turn one validated scenario into agent-centric samples.

    Returns
    -------
    samples : list of dict
        One record per center agent (motion spec section 4.8) plus ``source_folder``.
    info : dict
        Counts: ``map_dropped_<TYPE>`` per dropped map type, ``centers``.
    """
    past_len, fut_len = int(cfg["past_len"]), int(cfg["future_len"])
    total = past_len + fut_len
    cur = past_len - 1
    T = int(sc["length"])
    s0 = int(cfg["starting_frame"])
    ids = list(sc["tracks"].keys())
    types = [sc["tracks"][t]["type"] for t in ids]
    trajs = np.zeros((len(ids), total, 10))
    ts_all = np.asarray(sc["metadata"].get("ts", []), dtype=np.float64).reshape(-1)
    steps = np.diff(ts_all)
    dt = float(np.median(steps)) if steps.size and np.all(np.isfinite(steps)) and np.median(steps) > 0 else 0.1
    info: dict[str, int] = {}
    for i, tid in enumerate(ids):
        arr = track_array(sc["tracks"][tid]["state"], T, path=path, track=str(tid), dt=dt, info=info)[s0 : s0 + total]
        trajs[i, total - arr.shape[0] :] = arr  # short scenarios are zero-padded at the front
    k = int(cfg["trajectory_sample_interval"])
    if k > 1:
        keep = np.ones(total)
        keep[:past_len] = ((cur - np.arange(past_len)) % k == 0).astype(float)
        trajs[..., 9] *= keep
        trajs[trajs[..., 9] <= 0, :9] = 0.0
    ts = np.asarray(sc["metadata"]["ts"], dtype=np.float64).reshape(-1)[:past_len]
    ts = np.concatenate([ts, np.zeros(past_len - ts.shape[0])]) if ts.shape[0] < past_len else ts
    centers = _center_ids(sc, trajs, ids, types, cfg, path, cur)
    if not centers:
        return [], info
    points, feat_id, dropped = encode_map_features(sc["map_features"], list(cfg["line_type"]))
    for t, c in dropped.items():
        info[f"map_dropped_{t}"] = c
    sdc = sc["metadata"].get("sdc_id")
    dataset = label or str(sc["metadata"].get("dataset", "unknown"))
    type_code = np.array([OBJECT_TYPE_CODE.get(t, 0) for t in types])
    A = int(cfg["max_num_agents"])
    samples = []
    for ci in centers:
        c = trajs[ci, cur].copy()
        loc = trajs.copy()
        v = loc[..., 9:10] > 0
        loc[..., 0:3] -= c[0:3]
        loc[..., 0:2] = _rotate(loc[..., 0:2], -c[6])
        loc[..., 7:9] = _rotate(loc[..., 7:9], -c[6])
        loc[..., 6] -= c[6]
        loc[..., :9] *= v
        past, fut = loc[:, :past_len], loc[:, past_len:]
        pmask = past[..., 9] > 0
        keep_agents = np.flatnonzero(pmask.any(1))
        dist = np.where(past[keep_agents, cur, 9] > 0, np.linalg.norm(past[keep_agents, cur, 0:2], axis=1), 1e10)
        dist = np.where(keep_agents == ci, -1.0, dist)
        chosen = keep_agents[np.argsort(dist, kind="stable")[:A]]
        n = chosen.shape[0]
        feats = np.zeros((A, past_len, 39))
        p = past[chosen]
        feats[:n, :, 0:6] = p[..., 0:6]
        tc = type_code[chosen]
        feats[:n, :, 6] = (tc == 1)[:, None]
        feats[:n, :, 7] = (tc == 2)[:, None]
        feats[:n, :, 8] = (tc == 3)[:, None]
        feats[:n, :, 9] = (chosen == ci)[:, None]
        feats[:n, :, 10] = np.array([ids[j] == sdc for j in chosen])[:, None]
        feats[:n, :, 11:32] = np.eye(past_len)[None]
        feats[:n, :, 32] = ts[None, :]
        feats[:n, :, 33] = np.sin(p[..., 6])
        feats[:n, :, 34] = np.cos(p[..., 6])
        feats[:n, :, 35:37] = p[..., 7:9]
        acc = np.diff(p[..., 7:9], axis=1) / 0.1
        feats[:n, :, 37:39] = np.concatenate([acc[:, :1], acc], axis=1)
        m = np.zeros((A, past_len), dtype=bool)
        m[:n] = p[..., 9] > 0
        feats *= m[..., None]
        if "z_axis" in cfg["masked_attributes"]:
            feats[..., 2] = 0.0
        if "size" in cfg["masked_attributes"]:
            feats[..., 3:6] = 0.0
        last_pos = np.zeros((A, 3))
        last_valid = np.where(m[:n].any(1), past_len - 1 - np.argmax(m[:n, ::-1], axis=1), 0)
        last_pos[:n] = p[np.arange(n), last_valid, 0:3]
        fstate = np.zeros((A, fut_len, 4))
        fmask = np.zeros((A, fut_len), dtype=bool)
        f = fut[chosen]
        fstate[:n] = f[..., [0, 1, 7, 8]]
        fmask[:n] = f[..., 9] > 0
        gt_mask = fut[ci, :, 9] > 0
        final_idx = int(np.flatnonzero(gt_mask)[-1]) if gt_mask.any() else 0
        mp, mm, mc = map_for_center(points, feat_id, c, cfg)
        if "z_axis" in cfg["masked_attributes"]:
            mp[..., 2] = 0.0
        samples.append(
            {
                "scenario_id": str(sc["id"]),
                "obj_trajs": feats.astype(np.float32),
                "obj_trajs_mask": m,
                "track_index_to_predict": np.int64(0),
                "obj_trajs_pos": feats[..., 0:3].astype(np.float32),
                "obj_trajs_last_pos": last_pos.astype(np.float32),
                "center_objects_world": c.astype(np.float32),
                "center_objects_id": str(ids[ci]),
                "center_objects_type": np.int64(type_code[ci]),
                "map_center": np.zeros(3, dtype=np.float32),
                "obj_trajs_future_state": fstate.astype(np.float32),
                "obj_trajs_future_mask": fmask,
                "center_gt_trajs": fut[ci][:, [0, 1, 7, 8]].astype(np.float32),
                "center_gt_trajs_mask": gt_mask.astype(np.float32),
                "center_gt_final_valid_idx": np.float32(final_idx),
                "center_gt_trajs_src": trajs[ci].astype(np.float32),
                "map_polylines": mp,
                "map_polylines_mask": mm,
                "map_polylines_center": mc,
                "dataset_name": dataset,
                "source_folder": folder,
                "kalman_difficulty": kalman_difficulty(past[ci], fut[ci]),
                "trajectory_type": np.int64(trajectory_type(trajs[ci])),
            }
        )
    info["centers"] = len(samples)
    return samples, info


# ------------------------------------------------------------------------------------------------ caching


def stack_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of records: arrays get a leading axis, strings become lists."""
    out: dict[str, Any] = {k: np.stack([np.asarray(s[k]) for s in samples]) for k in ARRAY_KEYS}
    out.update({k: [str(s[k]) for s in samples] for k in STRING_KEYS})
    return out


def cache_key(db_root: Path, cfg: Mapping[str, Any], label: str | None) -> str:
    """Hash of the full database path, the preprocessing config, the label and the cache format."""
    blob = json.dumps({"db": str(Path(db_root).resolve()), "cfg": cfg, "label": label, "fmt": CACHE_FORMAT},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _process_entry(args: tuple) -> tuple[int, str, dict[str, int], str | None]:
    i, path, folder, cfg, label, part_path, skip_invalid = args
    try:
        sc = read_scenario(path)
        samples, info = process_scenario(sc, cfg, path=path, label=label, folder=folder)
    except MotionDataError as exc:
        if not skip_invalid:
            raise
        return i, "invalid", {}, str(exc)
    except (KeyError, ValueError, IndexError, TypeError) as exc:  # malformed content the schema check cannot see
        err = MotionDataError(path, None, f"cannot preprocess ({type(exc).__name__}: {exc})")
        if not skip_invalid:
            raise err from None
        return i, "invalid", {}, str(err)
    if not samples:
        return i, "no_valid_center", info, None
    arrays = stack_samples(samples)
    tmp = part_path.with_name(part_path.name + ".tmp.npz")
    columns: dict[str, Any] = {k: (np.asarray(v, dtype=str) if k in STRING_KEYS else np.asarray(v))
                               for k, v in arrays.items()}
    np.savez(tmp, **columns)
    os.replace(tmp, part_path)
    return i, "ok", info, None


def preprocess_database(db_root: str | Path, cache_root: str | Path, cfg: Mapping[str, Any] | None = None,
                        label: str | None = None, workers: int = 1, skip_invalid: bool = False,
                        progress: bool = True) -> Path:
    """Preprocess every scenario of a database into a durable, resumable cache.

    Parameters
    ----------
    db_root : path
        ScenarioNet database root.
    cache_root : path
        Parent folder of caches; this database's cache is ``cache_root/<hash of path+config+label>``.
    cfg : mapping, optional
        Preprocessing overrides (see :data:`DEFAULT_CONFIG`).
    label : str, optional
        Source label for every sample (default: the scenario's ``metadata.dataset``).
    workers : int
        Worker processes (1 = in-process).
    skip_invalid : bool
        Count schema errors as skipped scenarios (reason ``invalid``) instead of raising.

    Returns
    -------
    Path
        The cache directory; its ``index.json`` (written last) lists parts, sample counts and skip counts by reason.
    """
    from tqdm import tqdm

    cfg = resolve_config(cfg)
    db = ScenarioNetDatabase(db_root)
    out = Path(cache_root) / cache_key(db.root, cfg, label)
    index_path = out / "index.json"
    if index_path.exists():
        return out
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    entries = list(db)
    if cfg["max_data_num"] is not None:
        entries = entries[: int(cfg["max_data_num"])]
    jobs = [(i, e.path, e.folder, cfg, label, parts / f"{i:07d}.npz", skip_invalid) for i, e in enumerate(entries)]
    done_ok = {i for i, *_ in jobs if (parts / f"{i:07d}.npz").exists()}
    todo = [j for j in jobs if j[0] not in done_ok]
    results: list[tuple[int, str, dict[str, int], str | None]] = []
    bar = tqdm(total=len(todo), desc=f"preprocess {db.root.name}", disable=not progress, unit="scn")
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for r in pool.imap_unordered(_process_entry, todo):
                results.append(r)
                bar.update(1)
    else:
        for j in todo:
            results.append(_process_entry(j))
            bar.update(1)
    bar.close()
    # status of resumed parts is "ok"; skipped ones must be re-derived, so skips are recorded in a sidecar per run
    status_path = out / "status.json"
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    for i, st, info, err in results:
        status[str(i)] = {"status": st, "info": info, "error": err}
    for i in done_ok:
        status.setdefault(str(i), {"status": "ok", "info": {}, "error": None})
    write_json(status_path, status)
    skipped: dict[str, int] = {}
    errors: list[str] = []
    map_dropped: dict[str, int] = {}
    part_files, counts = [], []
    for i, *_ in jobs:
        st = status[str(i)]
        for k, v in st["info"].items():
            if k.startswith("map_dropped_"):
                map_dropped[k[12:]] = map_dropped.get(k[12:], 0) + v
        if st["status"] == "ok":
            part_files.append(f"{i:07d}.npz")
            counts.append(int(st["info"].get("centers", -1)))
        else:
            skipped[st["status"]] = skipped.get(st["status"], 0) + 1
            if st["error"]:
                errors.append(st["error"])
    index = {
        "format": CACHE_FORMAT,
        "db_root": str(db.root),
        "label": label,
        "config": cfg,
        "scenarios": len(jobs),
        "scenarios_used": len(part_files),
        "skipped": skipped,
        "errors": errors,
        "map_features_dropped": map_dropped,
        "parts": part_files,
    }
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, index_path)
    return out


def load_cache(cache_dir: str | Path) -> dict[str, Any]:
    """Load a finished cache (``index.json`` must exist) as stacked arrays + string lists + ``index``."""
    cache_dir = Path(cache_dir)
    index_path = cache_dir / "index.json"
    if not index_path.exists():
        raise MotionDataError(cache_dir, "index.json", "cache is incomplete (rerun preprocess to resume)")
    index = json.loads(index_path.read_text())
    chunks: dict[str, list] = {k: [] for k in ARRAY_KEYS + STRING_KEYS}
    for name in index["parts"]:
        with np.load(cache_dir / "parts" / name, allow_pickle=False) as z:
            for k in ARRAY_KEYS:
                chunks[k].append(z[k])
            for k in STRING_KEYS:
                chunks[k].extend(str(x) for x in z[k])
    if not index["parts"]:
        raise MotionDataError(cache_dir, None, f"no samples: skipped scenarios by reason {index['skipped']}")
    data: dict[str, Any] = {k: np.concatenate(chunks[k]) for k in ARRAY_KEYS}
    data.update({k: chunks[k] for k in STRING_KEYS})
    data["index"] = index
    return data


def summarize_skips(index: Mapping[str, Any]) -> str:
    """One line: samples used and skipped scenarios per reason."""
    sk = ", ".join(f"{k}={v}" for k, v in sorted(index["skipped"].items())) or "none"
    return f"{index['db_root']}: {index['scenarios_used']}/{index['scenarios']} scenarios used; skipped: {sk}"
