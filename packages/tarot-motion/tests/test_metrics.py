import numpy as np
from tarot_motion.metrics import aggregate, per_sample_metrics


def _gt(T=60):
    return np.stack([np.arange(1, T + 1, dtype=float), np.zeros(T)], 1)[None]


def test_perfect_mode_only_brier_term():
    gt = _gt()
    pred = np.zeros((1, 6, 60, 5))
    pred[0, :, :, 1] = 5.0  # other modes 5 m off laterally
    pred[0, 2, :, 0:2] = gt[0]
    probs = np.array([[0.1, 0.1, 0.5, 0.1, 0.1, 0.1]])
    m = per_sample_metrics(pred, probs, gt, np.ones((1, 60)), np.array([59]))
    assert m["minADE6"][0] == 0 and m["minFDE6"][0] == 0 and m["miss_rate"][0] == 0
    np.testing.assert_allclose(m["brier_fde"][0], 0.25)


def test_fde_uses_last_valid_step():
    gt = _gt()
    mask = np.ones((1, 60))
    mask[0, 30:] = 0
    pred = np.zeros((1, 6, 60, 5))
    pred[0, :, :, 0:2] = gt[0]
    pred[0, :, 29, 1] = 3.0  # error 3 m at the last valid step
    pred[0, :, 59, 1] = 100.0  # garbage after the mask ends is ignored
    m = per_sample_metrics(pred, np.full((1, 6), 1 / 6), gt, mask, np.array([29]))
    np.testing.assert_allclose(m["minFDE6"][0], 3.0)
    np.testing.assert_allclose(m["minADE6"][0], 3.0 / 30)
    assert m["miss_rate"][0] == 1.0
    np.testing.assert_allclose(m["brier_fde"][0], 3.0 + (5 / 6) ** 2)


def test_ties_take_first_mode():
    gt = _gt()
    pred = np.zeros((1, 6, 60, 5))
    pred[0, :, :, 0:2] = gt[0]
    pred[0, :, :, 1] = 1.0  # every mode 1 m off: a six-way tie
    probs = np.array([[0.3, 0.2, 0.2, 0.1, 0.1, 0.1]])
    m = per_sample_metrics(pred, probs, gt, np.ones((1, 60)), np.array([59]))
    np.testing.assert_allclose(m["brier_fde"][0], 1.0 + 0.7**2)
    np.testing.assert_allclose(m["minADE6"][0], 1.0)


def test_aggregate_per_source():
    per = {"minADE6": np.array([1.0, 2.0, 4.0])}
    out = aggregate(per, ["waymo", "av2", "waymo"], split="val")
    assert out["val/minADE6"] == 7 / 3 and out["val/waymo/minADE6"] == 2.5 and out["val/av2/minADE6"] == 2.0
    assert out["val/count"] == 3


def test_constant_velocity_baseline_is_exact_on_constant_velocity_agents_and_certain():
    from tarot_motion.metrics import constant_velocity_metrics, constant_velocity_prediction
    from test_model import _dataset

    ds = _dataset()  # the fixture agents drive at constant velocity
    res = constant_velocity_metrics(ds)
    assert res["metrics"]["val/minADE6"] < 1e-3 and res["metrics"]["val/miss_rate"] == 0.0
    # one certain mode: brier-FDE equals FDE (no (1 - p)^2 penalty)
    np.testing.assert_allclose(res["per_sample"]["brier_fde"], res["per_sample"]["minFDE6"])
    traj, probs = constant_velocity_prediction(ds.array("obj_trajs"), ds.array("track_index_to_predict"))
    assert traj.shape == (len(ds), 6, 60, 2) and probs[:, 0].tolist() == [1.0] * len(ds)
    # a braking agent: the extrapolation overshoots by 0.5·a·t² at the horizon
    gt = ds.array("center_gt_trajs").copy()
    t = np.arange(1, 61) * 0.1
    gt[..., 0] -= 0.5 * 2.0 * t**2
    per = per_sample_metrics(traj, probs, gt, ds.array("center_gt_trajs_mask"), ds.array("center_gt_final_valid_idx"))
    np.testing.assert_allclose(per["minFDE6"], 36.0, atol=1e-3)
