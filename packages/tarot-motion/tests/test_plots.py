"""Trajectory figures (tarot_motion.plots): which samples are shown and what the figure is drawn from."""

from __future__ import annotations

import numpy as np
import pytest
from tarot_motion.data import MotionDataset
from tarot_motion.plots import TrajectoryPanel, panel_from_model, pick_examples, plot_trajectories


def _data(speeds: list[float], agents: list[str], final_valid: list[bool], drift: list[float] | None = None) -> dict:
    n, T, A, P = len(speeds), 60, 3, 21
    t = np.arange(1, T + 1) * 0.1
    gt = np.zeros((n, T, 4), np.float32)
    gt[:, :, 0] = np.asarray(speeds)[:, None] * t
    gt[:, :, 1] = np.asarray(drift if drift is not None else [0.0] * n)[:, None] * t**2  # sideways: a turn
    gmask = np.ones((n, T), np.float32)
    gmask[~np.asarray(final_valid), -1] = 0
    obj = np.zeros((n, A, P, 39), np.float32)
    obj[:, 0, :, 0] = np.linspace(-5, 0, P)
    obj[:, 0, -1, 35] = np.asarray(speeds)
    roads = np.zeros((n, 4, 20, 29), np.float32)
    roads[:, :, :, 0] = np.linspace(-20, 40, 20)
    roads[:, :, :, 1] = np.arange(4)[:, None] * 3.5
    return {"obj_trajs": obj, "obj_trajs_mask": np.ones((n, A, P), bool), "track_index_to_predict": np.zeros(n),
            "map_polylines": roads, "map_polylines_mask": np.ones((n, 4, 20), bool), "center_gt_trajs": gt,
            "center_gt_trajs_mask": gmask, "center_gt_final_valid_idx": np.full(n, T - 1, np.float32),
            "center_objects_type": np.ones(n, np.int64), "dataset_name": ["waymo"] * n,
            "source_folder": ["db"] * n, "scenario_id": [f"s{i}" for i in range(n)], "center_objects_id": agents}


def test_pick_examples_one_window_per_agent_sharpest_turn_first():
    ds = MotionDataset(_data([10.0] * 6, ["a", "a", "b", "c", "d", "e"], [True, True, True, True, True, False],
                             drift=[1.0, -9.0, 8.0, 12.0, 3.0, 20.0]))
    # e turns most but its final position is not valid; a's best window is row 1 (a turn to the right counts too)
    assert pick_examples(ds, n=3) == [3, 1, 2]
    assert pick_examples(ds, n=10) == [3, 1, 2, 4]


def test_plot_trajectories_draws_every_panel(tmp_path):
    ds = MotionDataset(_data([5.0, 10.0], ["a", "b"], [True, True]))
    cv = np.repeat(ds.array("center_gt_trajs")[:, None, :, :2], 6, axis=1)
    probs = np.full((2, 6), 1 / 6)
    panels = [TrajectoryPanel("perfect", cv, probs, np.array([0.0, 0.0])),
              TrajectoryPanel("frozen", np.zeros_like(cv), probs)]
    png = plot_trajectories(ds, [0, 1], panels, tmp_path / "t.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]  # no temporary file left
    with pytest.raises(ValueError, match="panel 'frozen': predictions for 2 samples, expected 1"):
        plot_trajectories(ds, [0], panels[1:], tmp_path / "u.png")


def test_panel_from_model_uses_the_model_predictions():
    from tarot_motion.train import build_model, predict

    ds = MotionDataset(_data([5.0, 10.0, 7.0], ["a", "b", "c"], [True] * 3))
    cfg = {"hidden_size": 16, "tx_hidden_size": 32, "tx_num_heads": 2, "map_heads": 2, "num_modes": 2}
    model = build_model(cfg, seed=0)
    panel = panel_from_model("m", model, ds, [2, 0], scores=[1.0, 2.0])
    traj, probs = predict(model, ds)
    np.testing.assert_allclose(panel.traj, traj[[2, 0], :, :, :2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(panel.probs, probs[[2, 0]], rtol=1e-5, atol=1e-6)
    assert panel.scores.tolist() == [1.0, 2.0]
