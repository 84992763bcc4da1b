import pickle

import numpy as np
import pytest
from fixtures import (
    av2_scenario,
    file_name,
    nuscenes_scenario,
    waymo_scenario,
    write_evil_pickle,
    write_flat_db,
    write_merged_db,
    write_nested_db,
)
from tarot_motion.errors import MotionDataError
from tarot_motion.safe_pickle import load_scenarionet_pickle
from tarot_motion.scenarionet import ScenarioNetDatabase, read_scenario, validate_scenario


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_flat_db_all_three_styles(tmp_path):
    scs = [waymo_scenario(), nuscenes_scenario(), nuscenes_scenario("scene-0002", T=66), av2_scenario()]
    db = ScenarioNetDatabase(write_flat_db(tmp_path / "db", scs))
    assert len(db) == 4
    loaded = [db.load(i) for i in range(4)]
    assert [s["length"] for s in loaded] == [91, 81, 66, 110]
    # real dtypes survive the restricted unpickler
    assert loaded[0]["tracks"]["1"]["state"]["valid"].dtype == bool
    assert loaded[1]["tracks"]["ego"]["state"]["length"].shape == (81, 1)
    assert loaded[1]["tracks"]["ego"]["state"]["valid"].dtype == np.float64
    assert isinstance(loaded[0]["metadata"]["number_summary"]["object_types"], set)
    assert {e.folder for e in db} == {"db"}


def test_nested_db_uses_worker_folders(tmp_path):
    root = write_nested_db(tmp_path / "nusc", [[nuscenes_scenario("scene-0001")], [nuscenes_scenario("scene-0002")]])
    db = ScenarioNetDatabase(root)
    assert sorted(e.folder for e in db) == ["nusc/nuscenes_0", "nusc/nuscenes_1"]
    assert db.load(1)["id"] == "scene-0002"


def test_merged_db_relative_paths_with_dotdot(tmp_path):
    a = write_flat_db(tmp_path / "src" / "waymo", [waymo_scenario()])
    b = write_nested_db(tmp_path / "src" / "nusc", [[nuscenes_scenario()]])
    merged = write_merged_db(tmp_path / "out" / "merged", [a, b])
    mapping = load_scenarionet_pickle(merged / "dataset_mapping.pkl")
    assert all(v.startswith("..") for v in mapping.values())
    db = ScenarioNetDatabase(merged)
    assert len(db) == 2
    assert {db.load(i)["metadata"]["dataset"] for i in range(2)} == {"waymo", "nuscenes"}


def test_missing_summary_and_mapping_fallback(tmp_path):
    root = write_flat_db(tmp_path / "bare", [waymo_scenario(), av2_scenario()], with_index=False)
    db = ScenarioNetDatabase(root)
    assert len(db) == 2 and all(e.summary == {} for e in db)
    # summary present but mapping empty -> every key maps to ''
    with open(root / "dataset_summary.pkl", "wb") as fh:
        pickle.dump({file_name(waymo_scenario()): {}}, fh, protocol=4)
    with open(root / "dataset_mapping.pkl", "wb") as fh:
        pickle.dump({}, fh, protocol=4)
    assert len(ScenarioNetDatabase(root)) == 1


def test_empty_database_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MotionDataError) as exc:
        ScenarioNetDatabase(tmp_path / "empty")
    assert "empty database" in _one_line(exc)


def test_mapping_to_missing_directory_names_key(tmp_path):
    root = write_flat_db(tmp_path / "db", [waymo_scenario()])
    name = file_name(waymo_scenario())
    with open(root / "dataset_mapping.pkl", "wb") as fh:
        pickle.dump({name: "../nowhere"}, fh, protocol=4)
    with pytest.raises(MotionDataError) as exc:
        ScenarioNetDatabase(root)
    msg = _one_line(exc)
    assert name in msg and "nowhere" in msg


def test_summary_lists_missing_file(tmp_path):
    root = write_flat_db(tmp_path / "db", [waymo_scenario()])
    (root / file_name(waymo_scenario())).unlink()
    with pytest.raises(MotionDataError) as exc:
        ScenarioNetDatabase(root)
    assert "does not exist" in _one_line(exc)


def test_summary_key_not_scenario_file(tmp_path):
    root = write_flat_db(tmp_path / "db", [waymo_scenario()])
    with open(root / "dataset_summary.pkl", "wb") as fh:
        pickle.dump({"notes.txt": {}}, fh, protocol=4)
    with pytest.raises(MotionDataError) as exc:
        ScenarioNetDatabase(root)
    assert "notes.txt" in _one_line(exc)


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda s: s.pop("map_features"), "map_features"),
        (lambda s: s["metadata"].pop("ts"), "metadata.ts"),
        (lambda s: s["tracks"]["1"]["state"].__setitem__("heading", np.zeros(90)), "tracks.1.state.heading"),
        (lambda s: s["tracks"]["1"]["metadata"].__setitem__("object_id", "2"), "tracks.1.metadata.object_id"),
        (lambda s: s["tracks"]["1"].__setitem__("type", "UNSET"), "tracks.1.type"),
        (lambda s: s["tracks"]["1"]["state"].__setitem__("length", np.zeros((91, 0))), "tracks.1.state.length"),
        (lambda s: s["metadata"].__setitem__("sdc_id", "nope"), "metadata.sdc_id"),
    ],
)
def test_bad_scenarios_name_file_and_key(tmp_path, mutate, key):
    sc = waymo_scenario()
    mutate(sc)
    path = tmp_path / "sd_waymo_v1.2_bad.pkl"
    with open(path, "wb") as fh:
        pickle.dump(sc, fh, protocol=4)
    with pytest.raises(MotionDataError) as exc:
        read_scenario(path)
    msg = _one_line(exc)
    assert str(path) in msg and key in msg


def test_disallowed_global_is_rejected(tmp_path):
    path = tmp_path / "sd_waymo_v1.2_evil.pkl"
    write_evil_pickle(path)
    with pytest.raises(MotionDataError) as exc:
        load_scenarionet_pickle(path)
    msg = _one_line(exc)
    assert "disallowed global" in msg and "system" in msg and str(path) in msg


def test_validate_accepts_scalar_shapes_and_valid_dtypes():
    validate_scenario(waymo_scenario(), "w")
    validate_scenario(nuscenes_scenario(T=66), "n")
    validate_scenario(av2_scenario(), "a")


def test_numpy_scalars_in_pickle_allowed(tmp_path):
    path = tmp_path / "x.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"a": np.float32(1.5), "b": np.arange(3)}, fh, protocol=4)
    d = load_scenarionet_pickle(path)
    assert d["a"] == np.float32(1.5) and d["b"].tolist() == [0, 1, 2]
