import json
import pickle

import numpy as np
import pytest
from fixtures import av2_scenario, nuscenes_scenario, waymo_scenario, write_flat_db
from tarot_motion.errors import MotionDataError
from tarot_motion.preprocess import (
    encode_map_features,
    kalman_difficulty,
    load_cache,
    map_for_center,
    preprocess_database,
    process_scenario,
    resample_polyline,
    resolve_config,
    track_array,
    trajectory_type,
)


def _codes(sample):
    mp, mm = sample["map_polylines"], sample["map_polylines_mask"]
    return set(np.argmax(mp[mm][:, 9:29], axis=1).tolist())


def test_waymo_fixture_expected_sample():
    samples, info = process_scenario(waymo_scenario(), resolve_config())
    assert len(samples) == 1
    s = samples[0]
    assert s["dataset_name"] == "waymo" and s["center_objects_id"] == "1"
    assert _codes(s) == {2, 6, 15, 17, 18}
    assert s["center_gt_final_valid_idx"] == 59
    assert s["obj_trajs"].shape == (15, 21, 39) and s["obj_trajs"].dtype == np.float32
    assert s["map_polylines"].shape == (256, 20, 29) and s["map_polylines_mask"].shape == (256, 20)
    assert s["obj_trajs_future_state"].shape == (15, 60, 4) and s["center_gt_trajs_src"].shape == (81, 10)
    # center moves +10 m/s along x: ground truth in its own frame is (1, 2, 3, ...) m along x
    np.testing.assert_allclose(s["center_gt_trajs"][:, 0], np.arange(1, 61) * 1.0, atol=1e-4)
    np.testing.assert_allclose(s["center_gt_trajs"][:, 1], 0.0, atol=1e-4)
    np.testing.assert_allclose(s["center_gt_trajs"][:, 2], 10.0, atol=1e-4)
    # center is row 0 with is_center set and at the origin at the current step
    assert s["obj_trajs"][0, :, 9].all() and s["obj_trajs_mask"][0].all()
    np.testing.assert_allclose(s["obj_trajs"][0, 20, 0:2], 0.0, atol=1e-5)
    # agents sorted by distance at the current step: pedestrian (11.7 m) before the SDC (24.3 m), then padding
    assert s["obj_trajs"][1, 20, 7] == 1.0 and s["obj_trajs"][2, 20, 10] == 1.0 and s["obj_trajs"][0, 20, 10] == 0
    assert not s["obj_trajs_mask"][3:].any()
    # masked attributes (z, size) are zero; one-hot time step and timestamps
    assert np.all(s["obj_trajs"][..., 2] == 0) and np.all(s["obj_trajs"][..., 3:6] == 0)
    np.testing.assert_array_equal(s["obj_trajs"][0, :, 11:32], np.eye(21, dtype=np.float32))
    np.testing.assert_allclose(s["obj_trajs"][0, :, 32], np.arange(21) * 0.1, atol=1e-6)
    # pedestrian valid only at steps 5..39: past rows 0..4 are zero and masked
    ped = [i for i in range(15) if s["obj_trajs"][i, 20, 7] == 1.0][0]
    assert not s["obj_trajs_mask"][ped, :5].any() and s["obj_trajs_mask"][ped, 5:].all()
    assert np.all(s["obj_trajs"][ped, :5] == 0)
    assert s["trajectory_type"] == 1 and info["centers"] == 1
    np.testing.assert_allclose(s["kalman_difficulty"], [0, 0, 0], atol=0.5)


def test_agent_centric_rotation_av2():
    cfg = resolve_config({"object_type": ["VEHICLE", "CYCLIST"]})
    samples, _ = process_scenario(av2_scenario(), cfg)
    assert {s["center_objects_id"] for s in samples} == {"42", "43"}
    s = [x for x in samples if x["center_objects_id"] == "42"][0]  # heading +90 deg, 7 m/s
    np.testing.assert_allclose(s["center_gt_trajs"][:, 0], 0.7 * np.arange(1, 61), atol=1e-4)
    np.testing.assert_allclose(s["center_gt_trajs"][:, 1], 0.0, atol=1e-4)
    np.testing.assert_allclose(s["center_gt_trajs"][:, 2:4], np.tile([7.0, 0.0], (60, 1)), atol=1e-4)
    # heading in the center frame is 0 -> sin 0, cos 1
    np.testing.assert_allclose(s["obj_trajs"][0, :, 33:35], np.tile([0.0, 1.0], (21, 1)), atol=1e-6)
    assert s["center_objects_type"] == 1
    assert len(process_scenario(av2_scenario(), resolve_config())[0]) == 1  # default object_type = VEHICLE


def test_nuscenes_short_scenario_front_padding_and_garbage():
    sc = nuscenes_scenario("scene-0009", T=66)
    samples, info = process_scenario(sc, resolve_config())
    # object-summary filter: ego qualifies; tok_a is not valid at step 20 of the padded window; ped is not a VEHICLE
    assert [s["center_objects_id"] for s in samples] == ["ego"]
    s = samples[0]
    src = s["center_gt_trajs_src"]
    assert np.all(src[:15, 9] == 0) and np.all(src[15:, 9] == 1)  # 81 - 66 = 15 padded steps at the front
    assert s["center_gt_final_valid_idx"] == 59
    for k in ("obj_trajs", "obj_trajs_future_state", "map_polylines"):
        assert np.abs(s[k]).max() < 200, k  # the (-607, -1643) garbage never leaks
    assert _codes(s) == {2, 7}  # lane + sidewalk polygon (code 7); UNKNOWN_LINE dropped and counted
    assert info["map_dropped_UNKNOWN_LINE"] == 1


def test_tracks_to_predict_preferred_over_object_summary():
    samples, _ = process_scenario(nuscenes_scenario(with_ttp=True), resolve_config())
    assert [s["center_objects_id"] for s in samples] == ["tok_a"]
    samples, _ = process_scenario(nuscenes_scenario(), resolve_config({"only_train_on_ego": True}))
    assert [s["center_objects_id"] for s in samples] == ["ego"]


def test_missing_tracks_to_predict_and_object_summary_fails_clearly():
    sc = nuscenes_scenario(with_osum=False)
    with pytest.raises(MotionDataError) as exc:
        process_scenario(sc, resolve_config(), path="sd_x.pkl")
    assert "metadata.object_summary" in str(exc.value) and "sd_x.pkl" in str(exc.value)


def test_track_array_accepts_both_scalar_shapes():
    w = waymo_scenario()["tracks"]["1"]["state"]
    n = nuscenes_scenario()["tracks"]["ego"]["state"]
    a, b = track_array(w, 91), track_array(n, 81)
    assert a.shape == (91, 10) and b.shape == (81, 10)
    np.testing.assert_allclose(b[:, 3:6], np.tile([4.5, 2.0, 1.6], (81, 1)))


def test_a_state_without_velocity_gets_it_from_the_positions():
    sc = waymo_scenario()
    full, _ = process_scenario(waymo_scenario(), resolve_config())
    for track in sc["tracks"].values():
        del track["state"]["velocity"]
    derived, info = process_scenario(sc, resolve_config())
    assert info["velocity_derived_tracks"] == 3
    # the fixture moves at constant velocity, so finite differences recover it exactly
    np.testing.assert_allclose(derived[0]["obj_trajs"], full[0]["obj_trajs"], atol=1e-3)  # float32 positions


@pytest.mark.parametrize(("edit", "message"), [
    (lambda st: st.pop("length"), r"sd_x.pkl: tracks.1.state: missing length"),
    (lambda st: st.pop("heading"), r"tracks.1.state: missing heading"),
    (lambda st: st["position"].__setitem__((12, 0), np.nan), r"tracks.1.state: non-finite x at valid step 12"),
    (lambda st: st["velocity"].__setitem__((3, 1), np.inf), r"tracks.1.state: non-finite vy at valid step 3"),
])
def test_missing_or_non_finite_states_are_refused_with_track_and_step(edit, message):
    sc = waymo_scenario()
    st = sc["tracks"]["1"]["state"]
    for k in ("position", "velocity"):
        st[k] = np.array(st[k], dtype=np.float64)
    edit(st)
    with pytest.raises(MotionDataError, match=message):
        process_scenario(sc, resolve_config(), path="sd_x.pkl")


def test_non_finite_values_on_invalid_steps_are_ignored():
    sc = waymo_scenario()
    st = sc["tracks"]["9"]["state"]  # the pedestrian is valid on steps 5-39 only
    st["position"] = np.array(st["position"], dtype=np.float64)
    st["position"][60] = np.nan
    samples, _ = process_scenario(sc, resolve_config())
    assert all(np.isfinite(s["obj_trajs"]).all() for s in samples)


def test_resample_polyline_spacing():
    pts = np.array([[0.0, 0.0, 5.0], [10.0, 0.0, 5.0]])
    r = resample_polyline(pts)
    assert r.shape == (21, 3)
    np.testing.assert_allclose(np.diff(r[:, 0]), 0.5)
    assert np.all(r[:, 2] == 0)


def test_map_encoding_runs_subsample_and_features():
    # one lane of 61 points along x (every 5 m from -100 to 200) and a stop sign out of range
    xs = np.arange(-100.0, 201.0, 5.0)
    mf = {"a": {"type": "LANE_SURFACE_STREET", "polyline": np.stack([xs, np.zeros_like(xs), np.zeros_like(xs)], 1)},
          "s": {"type": "STOP_SIGN", "position": np.array([500.0, 0.0, 0.0])},
          "d": {"type": "DRIVEWAY", "polygon": np.zeros((4, 2))}}
    pts, fid, dropped = encode_map_features(mf, resolve_config()["line_type"])
    assert dropped == {"DRIVEWAY": 1} and pts.shape == (62, 7)
    cfg = resolve_config()
    center = np.zeros(10)
    mp, mm, mc = map_for_center(pts, fid, center, cfg)
    # in range: |x - 30| < 100 -> x in (-70, 130): -65..125 = 39 points -> one run, subsampled to 20
    assert mm[0].all() and not mm[1:].any()
    assert mp[0, 0, 0] == -65.0 and mp[0, -1, 0] == 125.0
    np.testing.assert_allclose(mp[0, 1:, 6], mp[0, :-1, 0])  # prev_x is the previous kept point
    assert mp[0, 0, 6] == mp[0, 0, 0]  # first point's prev is itself
    assert mp[0, 0, 9 + 2] == 1.0 and mp[0, 0, 3] == 1.0  # type one-hot (code 2), direction +x
    np.testing.assert_allclose(mc[0], [mp[0, :, 0].mean(), 0, 0], atol=1e-5)
    # a center rotated by +90 deg sees the lane along -y; the lane splits into one run inside the box
    center[6] = np.pi / 2
    mp2, mm2, _ = map_for_center(pts, fid, center, cfg)
    assert mm2[0].any() and np.allclose(mp2[mm2][:, 0], 0.0, atol=1e-6)


def test_map_run_split_when_leaving_range():
    # a U-shaped polyline that leaves the box and comes back yields two runs
    xs = np.concatenate([np.arange(0, 160, 2.0), np.arange(160, -1, -2.0)])
    ys = np.concatenate([np.zeros(80), np.full(81, 50.0)])
    mf = {"u": {"type": "ROAD_EDGE_BOUNDARY", "polyline": np.stack([xs, ys], 1)}}
    pts, fid, _ = encode_map_features(mf, resolve_config()["line_type"])
    mp, mm, _ = map_for_center(pts, fid, np.zeros(10), resolve_config())
    assert mm.any(-1).sum() == 2


def test_trajectory_type_and_kalman():
    T = 81
    tr = np.zeros((T, 10))
    tr[:, 9] = 1
    assert trajectory_type(tr) == 0  # stationary
    t = np.arange(T) * 0.1
    tr[:, 0] = 10 * t
    tr[:, 7] = 10
    assert trajectory_type(tr) == 1
    ang = np.linspace(0, np.pi / 2, T)  # left turn
    tr2 = np.zeros((T, 10))
    tr2[:, 9] = 1
    tr2[:, 0], tr2[:, 1], tr2[:, 6] = 30 * np.sin(ang), 30 * (1 - np.cos(ang)), ang
    tr2[:, 7:9] = np.stack([np.cos(ang), np.sin(ang)], 1) * 5
    assert trajectory_type(tr2) == 7
    kd = kalman_difficulty(tr[:21], tr[21:])
    assert kd.shape == (3,) and np.all(kd < 0.5)
    fut = tr[21:].copy()
    fut[39:, 9] = 0
    assert kalman_difficulty(tr[:21], fut)[2] == -1 and kalman_difficulty(tr[:21], fut)[1] == -1


def test_preprocess_database_cache_labels_skips_and_resume(tmp_path):
    scs = [waymo_scenario("w1"), av2_scenario("a1"), nuscenes_scenario("n1", T=66)]
    root = write_flat_db(tmp_path / "db", scs)
    bad = waymo_scenario("wbad")
    del bad["metadata"]["ts"]
    with open(root / "sd_waymo_v1.2_wbad.pkl", "wb") as fh:
        pickle.dump(bad, fh, protocol=4)
    stopped = waymo_scenario("wstop")
    for tr in stopped["tracks"].values():
        tr["state"]["valid"][:] = False  # no agent valid at the current step -> no center
    with open(root / "sd_waymo_v1.2_wstop.pkl", "wb") as fh:
        pickle.dump(stopped, fh, protocol=4)
    (root / "dataset_summary.pkl").unlink()  # no index: every sd_*.pkl present is a scenario
    (root / "dataset_mapping.pkl").unlink()
    # strict mode: the schema error stops the run with the file name
    with pytest.raises(MotionDataError) as exc:
        preprocess_database(root, tmp_path / "cache", progress=False)
    assert "wbad" in str(exc.value)
    out = preprocess_database(root, tmp_path / "cache", skip_invalid=True, progress=False)
    data = load_cache(out)
    idx = data["index"]
    assert idx["scenarios"] == 5 and idx["scenarios_used"] == 3
    assert idx["skipped"] == {"invalid": 1, "no_valid_center": 1}
    assert any("metadata.ts" in e for e in idx["errors"])
    assert sorted(data["dataset_name"]) == ["av2", "nuscenes", "waymo"]
    assert data["obj_trajs"].shape == (3, 15, 21, 39)
    # resumable: without index.json the finished parts are reused and the result is identical
    (out / "index.json").unlink()
    part = sorted((out / "parts").iterdir())[0]
    mtime = part.stat().st_mtime_ns
    out2 = preprocess_database(root, tmp_path / "cache", skip_invalid=True, progress=False)
    assert out2 == out and part.stat().st_mtime_ns == mtime
    assert json.loads((out / "index.json").read_text())["skipped"] == idx["skipped"]
    # a label overrides the per-scenario dataset name and gets its own cache
    out3 = preprocess_database(root, tmp_path / "cache", label="pool", skip_invalid=True, progress=False)
    assert out3 != out and set(load_cache(out3)["dataset_name"]) == {"pool"}


def test_incomplete_cache_is_refused(tmp_path):
    (tmp_path / "c" / "parts").mkdir(parents=True)
    with pytest.raises(MotionDataError) as exc:
        load_cache(tmp_path / "c")
    assert "incomplete" in str(exc.value)


def test_parallel_workers_give_identical_cache(tmp_path):
    scs = [waymo_scenario("w1"), av2_scenario("a1"), nuscenes_scenario("n1"), waymo_scenario("w2")]
    root = write_flat_db(tmp_path / "db", scs)
    serial = load_cache(preprocess_database(root, tmp_path / "c1", workers=1, progress=False))
    par = load_cache(preprocess_database(root, tmp_path / "c2", workers=2, progress=False))
    assert serial["scenario_id"] == par["scenario_id"]
    for k in ("obj_trajs", "map_polylines", "center_gt_trajs"):
        np.testing.assert_array_equal(serial[k], par[k])


def test_malformed_map_feature_names_the_file(tmp_path):
    sc = waymo_scenario("wm")
    del sc["map_features"]["500"]["position"]  # a stop sign without its position
    root = write_flat_db(tmp_path / "db", [sc])
    with pytest.raises(MotionDataError) as exc:
        preprocess_database(root, tmp_path / "c", progress=False)
    msg = str(exc.value)
    assert "sd_waymo_v1.2_wm.pkl" in msg and "position" in msg and "\n" not in msg
    out = preprocess_database(root, tmp_path / "c", skip_invalid=True, progress=False)
    assert json.loads((out / "index.json").read_text())["skipped"] == {"invalid": 1}
