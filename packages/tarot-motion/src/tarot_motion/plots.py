"""Trajectory figures for the reports: history, ground truth and the K predicted modes over the map polylines.

Everything is drawn in the center agent's frame of the preprocessed sample (UniTraj's agent-centric frame: the agent
at the origin, heading along +x), so the map, the past, the future and the predictions line up without any
transformation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import MotionDataset


@dataclass
class TrajectoryPanel:
    """One column of the figure: a predictor's output on the chosen samples.

    Attributes
    ----------
    name : str
        Column title (e.g. ``"fixed_size+targets"``).
    traj : ndarray [S, K, T, >=2]
        Predicted positions of every mode (center frame, metres) for the S chosen samples.
    probs : ndarray [S, K]
        Mode probabilities; the line width and opacity of a mode grow with it, the most likely mode is solid.
    scores : ndarray [S], optional
        A per-sample metric shown in each panel's title (e.g. brier-FDE in metres).
    """

    name: str
    traj: np.ndarray
    probs: np.ndarray
    scores: np.ndarray | None = None


def pick_examples(ds: MotionDataset, n: int = 3) -> list[int]:
    """``n`` samples worth looking at, one per agent: of each agent's windows the one whose ground-truth future turns
    most, then the agents whose chosen window turns most. "Turns" is the sideways offset ``|y|`` of the final
    ground-truth position in the agent's frame (heading along +x), so a straight drive or a parked car ranks low and
    no predictor's output enters the choice. Only windows with a valid final position qualify; ties go to the
    lower index, so the choice is deterministic."""
    gt = ds.array("center_gt_trajs")[..., :2].astype(np.float64)
    final_ok = ds.array("center_gt_trajs_mask")[:, -1] > 0
    turn = np.where(final_ok, np.abs(gt[:, -1, 1]), -np.inf)
    agents = [i.rsplit("/", 1)[-1] for i in ds.ids]
    best: dict[str, int] = {}
    for i in np.argsort(-turn, kind="stable"):
        if np.isfinite(turn[i]) and agents[i] not in best:
            best[agents[i]] = int(i)
    ranked = sorted(best.values(), key=lambda i: (-turn[i], i))
    return ranked[:n]


def plot_trajectories(ds: MotionDataset, rows: Sequence[int], panels: Sequence[TrajectoryPanel], path: str | Path,
                      metric: str = "brier-FDE", unit: str = "m") -> Path:
    """Draw a grid of ``len(rows)`` samples × ``len(panels)`` predictors and save it as a PNG.

    Each panel shows the map polylines (grey), the center agent's observed history (black), its ground-truth future
    (green, a star at the end) and the predicted modes (one colour per mode; the most likely solid, the others dashed,
    more transparent the less likely). The axes are equal and shared along a row, so the columns compare directly.
    """
    from tarot.app.report import _pyplot

    rows = [int(r) for r in rows]
    if not rows or not panels:
        raise ValueError("plot_trajectories needs at least one sample and one panel")
    for p in panels:
        if np.asarray(p.traj).shape[0] != len(rows) or np.asarray(p.probs).shape[0] != len(rows):
            raise ValueError(f"panel {p.name!r}: predictions for {np.asarray(p.traj).shape[0]} samples, expected "
                             f"{len(rows)}")
    plt = _pyplot()
    sub = ds.subset(rows)
    hist = sub.array("obj_trajs")[..., :2]
    hist_mask = sub.array("obj_trajs_mask") > 0
    track = sub.array("track_index_to_predict").astype(np.int64)
    gt = sub.array("center_gt_trajs")[..., :2]
    gt_mask = sub.array("center_gt_trajs_mask") > 0
    roads = sub.array("map_polylines")[..., :2]
    road_mask = sub.array("map_polylines_mask") > 0
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(3.6 * len(panels), 3.4 * len(rows)), squeeze=False)
    for r in range(len(rows)):
        h = hist[r, track[r]][hist_mask[r, track[r]]]
        g = gt[r][gt_mask[r]]
        pts = [h, g] + [np.asarray(p.traj)[r, :, :, :2].reshape(-1, 2) for p in panels]
        allp = np.concatenate([q for q in pts if len(q)])
        lo, hi = allp.min(0), allp.max(0)
        centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2 * 1.15, 5.0)
        for c, p in enumerate(panels):
            ax = axes[r, c]
            for line, m in zip(roads[r], road_mask[r]):
                if m.sum() > 1:
                    ax.plot(line[m, 0], line[m, 1], color="0.8", lw=0.8, zorder=0)
            probs = np.asarray(p.probs, dtype=float)[r]
            order = np.argsort(probs)  # the likeliest is drawn last, on top
            for rank, k in enumerate(order):
                q = np.asarray(p.traj)[r, k, :, :2]
                top = rank == len(order) - 1
                ax.plot(q[:, 0], q[:, 1], color=colours[k % 10], lw=0.8 + 2.0 * probs[k], ls="-" if top else "--",
                        alpha=0.35 + 0.65 * float(probs[k] / max(probs.max(), 1e-12)), zorder=2)
            ax.plot(h[:, 0], h[:, 1], color="k", lw=2.0, zorder=3, label="history")
            if len(g):
                ax.plot(g[:, 0], g[:, 1], color="tab:green", lw=2.0, zorder=3, label="ground truth")
                ax.plot(g[-1, 0], g[-1, 1], marker="*", ms=10, color="tab:green", zorder=4)
            ax.set_xlim(centre[0] - half, centre[0] + half)
            ax.set_ylim(centre[1] - half, centre[1] + half)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
            score = "" if p.scores is None else f"\n{metric} {float(np.asarray(p.scores)[r]):.2f} {unit}"
            ax.set_title(f"{p.name}{score}", fontsize=9)
            if c == 0:
                ax.set_ylabel(sub.ids[r], fontsize=7)
    axes[0, 0].legend(loc="best", fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out


def panel_from_model(name: str, model: Any, ds: MotionDataset, rows: Sequence[int], scores: Any = None,
                     device: Any = None) -> TrajectoryPanel:
    """A :class:`TrajectoryPanel` of a trained model's predictions on ``ds[rows]`` (eval mode)."""
    from .train import predict

    traj, probs = predict(model, ds.subset(list(rows)), batch_size=max(len(rows), 1), device=device)
    return TrajectoryPanel(name, traj[..., :2], probs, None if scores is None else np.asarray(scores, dtype=float))
