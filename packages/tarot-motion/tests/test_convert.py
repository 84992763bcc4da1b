import numpy as np
import pytest
from fixtures import write_legacy_scenario
from tarot_motion.convert import convert_metadrive, legacy_waymo_files
from tarot_motion.errors import MotionDataError
from tarot_motion.preprocess import load_cache, preprocess_database
from tarot_motion.safe_pickle import load_legacy_pickle, load_scenarionet_pickle
from tarot_motion.scenarionet import ScenarioNetDatabase


def test_legacy_fixture_converts_to_valid_database(tmp_path):
    src = tmp_path / "legacy" / "0.pkl"
    write_legacy_scenario(src, T=101)
    report = convert_metadrive(tmp_path / "db", files=[src])
    st = report["files"][str(src)]
    # windows start at 0, 10, 20 (101 steps); track 11 is valid everywhere, track 12 from step 40 on
    assert st["windows"] == 3 and st["scenarios_written"] == 3
    assert st["unset_tracks_dropped"] == 1 and st["map_skipped_road_edge_unknown"] == 1
    assert report["full_window_agents"] == 3
    db = ScenarioNetDatabase(tmp_path / "db")
    assert len(db) == 3
    sc = db.load(1)
    assert sc["id"] == "legacyfixture_s010" and sc["length"] == 81
    assert set(sc["tracks"]) == {"11", "12"} and sc["metadata"]["sdc_id"] == "11"
    st11 = sc["tracks"]["11"]["state"]
    assert st11["valid"].dtype == bool and st11["position"].shape == (81, 3) and st11["heading"].shape == (81,)
    np.testing.assert_allclose(st11["position"][0, 0], 8.0, atol=1e-9)  # window starts at t = 1.0 s
    assert sc["metadata"]["ts"][0] == 0.0 and sc["metadata"]["ts"].shape == (81,)
    assert list(sc["metadata"]["tracks_to_predict"]) == ["11"]
    types = {f["type"] for f in sc["map_features"].values()}
    assert types == {"LANE_SURFACE_STREET", "ROAD_LINE_BROKEN_SINGLE_WHITE", "ROAD_EDGE_BOUNDARY", "UNKNOWN_LINE",
                     "STOP_SIGN", "CROSSWALK", "SPEED_BUMP"}
    lane = sc["map_features"]["1"]
    assert lane["exit_lanes"] == ["2"] and lane["left_neighbor"][0]["feature_id"] == "2"
    assert lane["left_neighbor"][0]["neighbor_end_index"] == 49
    assert sc["dynamic_map_states"] == {} and sc["metadata"]["traffic_lights_converted"] is False
    osum = sc["metadata"]["object_summary"]["12"]
    assert osum["valid_length"] == 51 and osum["continuous_valid_length"] == 51  # valid from window step 30
    summary = load_scenarionet_pickle(tmp_path / "db" / "dataset_summary.pkl")
    assert all(isinstance(v["ts"], list) for v in summary.values())
    # and it preprocesses: speed bump (19), crosswalk (18), stop sign (17), lane (2), line (6), edge (15)
    data = load_cache(preprocess_database(tmp_path / "db", tmp_path / "cache", progress=False))
    codes = set(np.argmax(data["map_polylines"][data["map_polylines_mask"]][:, 9:29], axis=1).tolist())
    assert codes == {2, 6, 15, 17, 18, 19}
    assert set(data["dataset_name"]) == {"waymo"}


def test_legacy_unpickler_rejects_other_globals(tmp_path):
    from fixtures import write_evil_pickle

    p = tmp_path / "0.pkl"
    write_evil_pickle(p)
    with pytest.raises(MotionDataError) as exc:
        load_legacy_pickle(p)
    assert "disallowed global" in str(exc.value)


def test_real_embedded_waymo_scenarios(tmp_path):
    try:
        files = legacy_waymo_files()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    assert [f.name for f in files] == ["0.pkl", "1.pkl", "2.pkl"]
    report = convert_metadrive(tmp_path / "db", files=files)
    # the data-source spec's count of (agent, window) pairs valid over all 81 steps
    assert [s["full_window_agents"] for s in report["files"].values()] == [65, 330, 38]
    assert report["scenarios"] == 36
    db = ScenarioNetDatabase(tmp_path / "db")
    assert len(db) == 36


def test_argoverse1_log_fixture(tmp_path):
    from fixtures import write_argoverse1_log
    from tarot_motion.convert import ARGOVERSE_AV_ID, convert_argoverse1

    src = tmp_path / "log.pkl"
    write_argoverse1_log(src, steps=100)
    rep = convert_argoverse1(tmp_path / "db", files=[src])
    st = rep["files"][str(src)]
    # 100 steps -> windows at 0, 10 (81 long); the agent with a gap at steps 30..34 is fully valid in neither
    assert st["windows"] == 2 and st["full_window_agents"] == 4 and rep["scenarios"] == 2
    db = ScenarioNetDatabase(tmp_path / "db")
    sc = db.load(1)
    assert sc["metadata"]["dataset"] == "argoverse1" and sc["map_features"] == {}
    assert sc["metadata"]["sdc_id"] == ARGOVERSE_AV_ID
    av = sc["tracks"][ARGOVERSE_AV_ID]["state"]
    np.testing.assert_allclose(av["velocity"], np.tile([10.0, 0.0], (81, 1)), atol=1e-9)  # 1 m per 0.1 s
    np.testing.assert_allclose(av["heading"], 0.0, atol=1e-9)
    ped = sc["tracks"]["5e98551d-aaaa"]["state"]
    np.testing.assert_allclose(ped["heading"], np.pi / 2, atol=1e-9)  # direction of motion, not the stored vectors
    gap = sc["tracks"]["d72d1add-bbbb"]["state"]
    assert gap["valid"].sum() == 76 and not gap["valid"][19:24].any()  # steps 30..34 at window start 10
    data = load_cache(preprocess_database(tmp_path / "db", tmp_path / "cache", progress=False))
    assert set(data["dataset_name"]) == {"argoverse1"} and not data["map_polylines_mask"].any()
    assert sorted(set(data["center_objects_id"])) == sorted([ARGOVERSE_AV_ID, "5e98551d-aaaa"])


def test_real_embedded_argoverse1_log(tmp_path):
    from tarot_motion.convert import argoverse1_files, convert_argoverse1

    try:
        files = argoverse1_files()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    assert len(files) == 1
    rep = convert_argoverse1(tmp_path / "db", files=files)
    assert rep["scenarios"] == 8 and rep["full_window_agents"] == 58
    assert len(ScenarioNetDatabase(tmp_path / "db")) == 8
