"""UniTraj's simplified motion metrics: minADE6, minFDE6, miss rate (2 m), brier-FDE (motion spec section 6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_NAMES = ("minADE6", "minFDE6", "miss_rate", "brier_fde")


def per_sample_metrics(pred: np.ndarray, probs: np.ndarray, gt: np.ndarray, mask: np.ndarray, final_idx: np.ndarray,
                       miss_threshold: float = 2.0) -> dict[str, np.ndarray]:
    """Per-sample metrics.

    Parameters
    ----------
    pred : ndarray [B, K, T, >=2]
        Predicted positions (center frame).
    probs : ndarray [B, K]
        Mode probabilities.
    gt : ndarray [B, T, >=2]
    mask : ndarray [B, T]
        Future validity.
    final_idx : ndarray [B]
        Last valid future index (FDE is taken there).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    m = np.asarray(mask, dtype=np.float64)
    d = np.linalg.norm(pred[..., :2] - gt[:, None, :, :2], axis=-1)  # [B, K, T]
    ade = (d * m[:, None]).sum(-1) / np.clip(m.sum(-1), 1.0, None)[:, None]
    fi = np.asarray(final_idx).astype(np.int64)
    fde = np.take_along_axis(d, fi[:, None, None].repeat(d.shape[1], 1), axis=2)[..., 0]  # [B, K]
    kstar = np.argmin(fde, axis=1)  # first minimum on ties
    min_fde = fde[np.arange(fde.shape[0]), kstar]
    p = np.asarray(probs, dtype=np.float64)[np.arange(fde.shape[0]), kstar]
    return {
        "minADE6": ade.min(1),
        "minFDE6": min_fde,
        "miss_rate": (min_fde > miss_threshold).astype(np.float64),
        "brier_fde": min_fde + (1.0 - p) ** 2,
    }


def aggregate(per_sample: dict[str, np.ndarray], sources: Sequence[str], split: str = "val") -> dict[str, float]:
    """Means overall (``{split}/{metric}``) and per source (``{split}/{source}/{metric}``)."""
    out: dict[str, float] = {}
    src = np.asarray(list(sources))
    for name, v in per_sample.items():
        out[f"{split}/{name}"] = float(np.mean(v)) if len(v) else float("nan")
        for s in sorted(set(src.tolist())):
            out[f"{split}/{s}/{name}"] = float(np.mean(v[src == s]))
    out[f"{split}/count"] = float(len(src))
    return out


def constant_velocity_prediction(obj_trajs: np.ndarray, track_index: np.ndarray, num_modes: int = 6,
                                 future_len: int = 60, dt: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The field's trivial baseline: the center agent's current velocity extrapolated over the future.

    Parameters
    ----------
    obj_trajs : ndarray [B, A, T_past, 39]
        UniTraj agent features in the center frame (velocity in columns 35:37).
    track_index : ndarray [B]
        Row of the center agent in ``obj_trajs``.

    Returns
    -------
    traj : ndarray [B, num_modes, future_len, 2]
        p(t) = v · dt · (t + 1) in every mode.
    probs : ndarray [B, num_modes]
        Probability 1 on mode 0 (a deterministic predictor is certain; its brier-FDE is its FDE).
    """
    b = np.arange(obj_trajs.shape[0])
    vel = np.asarray(obj_trajs, dtype=np.float64)[b, np.asarray(track_index, dtype=np.int64), -1, 35:37]
    steps = np.arange(1, future_len + 1, dtype=np.float64) * dt
    traj = np.repeat((vel[:, None, :] * steps[None, :, None])[:, None], num_modes, axis=1)
    probs = np.zeros((obj_trajs.shape[0], num_modes))
    probs[:, 0] = 1.0
    return traj, probs


def constant_velocity_metrics(ds, future_len: int = 60, dt: float = 0.1, split: str = "val") -> dict[str, Any]:
    """Metrics of :func:`constant_velocity_prediction` on a :class:`~tarot_motion.data.MotionDataset`, in the
    layout of :func:`tarot_motion.pipeline.train_and_evaluate` (``metrics`` and ``per_sample``)."""
    traj, probs = constant_velocity_prediction(ds.array("obj_trajs"), ds.array("track_index_to_predict"),
                                               future_len=future_len, dt=dt)
    per = per_sample_metrics(traj, probs, ds.array("center_gt_trajs"), ds.array("center_gt_trajs_mask"),
                             ds.array("center_gt_final_valid_idx"))
    return {"init": None, "seed": None, "train_items": 0, "steps": 0, "metrics": aggregate(per, ds.sources, split),
            "per_sample": {k: v.tolist() for k, v in per.items()}}
