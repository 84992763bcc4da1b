"""Draw the figures of the docs site with tarot itself and write them as PNGs into docs/figures/.

Run it in a venv that has tarot-core (torch, numpy, matplotlib), e.g. the dev venv::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_doc_figures.py

The PNGs and ``docs/figures/numbers.json`` (the values quoted on the Concepts page) are committed, so building the
docs needs neither torch nor this script. Every number is computed here from seeded data; rerun the script after
changing the selectors and update the text if the numbers move.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tarot  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLORS = {"mode0": "#3f51b5", "mode1": "#ff7043", "mode2": "#43a047", "off_target": "#9e9e9e"}


def _save(fig: plt.Figure, out: Path, name: str) -> None:
    fig.savefig(out / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out / name}")


def fig_whitening(out: Path, numbers: dict) -> None:
    """Anisotropic, correlated 2-D data: raw, whitened (before normalisation), whitened unit rows."""
    rng = np.random.default_rng(0)
    A = np.array([[3.0, 0.0], [2.2, 0.45]])
    x = (rng.normal(size=(600, 2)) @ A.T + np.array([4.0, 1.0])).astype(np.float64)
    w = tarot.Whitener.fit(x)
    z = w.transform(x, normalize=False, dtype=np.float64)
    zn = w.transform(x, normalize=True, dtype=np.float64)
    numbers["whitening"] = {
        "cov_raw": np.cov(x.T, bias=True).round(3).tolist(),
        "cov_whitened": np.cov(z.T, bias=True).round(4).tolist(),
    }
    # two probe points at the same Euclidean distance from the mean, along and across the main axis
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    axes[0].scatter(x[:, 0], x[:, 1], s=4, alpha=0.5, color="#3f51b5")
    axes[0].set_title("raw features x")
    axes[1].scatter(z[:, 0], z[:, 1], s=4, alpha=0.5, color="#3f51b5")
    axes[1].set_title(r"whitened $z = (x-\mu)L^{-\top}$ (Cov ≈ I)")
    axes[2].scatter(zn[:, 0], zn[:, 1], s=4, alpha=0.3, color="#3f51b5")
    axes[2].set_title(r"L2-normalised $\hat z = z/\|z\|$")
    for ax in axes:
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    fig.suptitle("tarot.Whitener on 600 correlated 2-D points", y=1.02)
    _save(fig, out, "whitening.png")


def fig_projection(out: Path, numbers: dict) -> None:
    """JL projection keeps inner products: cosines before vs after a seeded Rademacher projection."""
    rng = np.random.default_rng(1)
    p, k, n = 20000, 512, 200
    base = rng.normal(size=(8, p))
    x = base[rng.integers(0, 8, n)] + 0.8 * rng.normal(size=(n, p))
    proj = tarot.Projector(p, proj_dim=k, seed=0)
    y = proj.project(torch.from_numpy(x.astype(np.float32))).numpy().astype(np.float64)

    def cosines(a: np.ndarray) -> np.ndarray:
        u = a / np.linalg.norm(a, axis=1, keepdims=True)
        c = u @ u.T
        return c[np.triu_indices(len(a), 1)]

    cx, cy = cosines(x), cosines(y)
    err = float(np.max(np.abs(cx - cy)))
    numbers["projection"] = {
        "p": p,
        "k": k,
        "n": n,
        "max_abs_cosine_error": round(err, 4),
        "std_cosine_error": round(float(np.std(cx - cy)), 4),
    }
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.scatter(cx, cy, s=2, alpha=0.3, color="#3f51b5")
    ax.plot([-0.1, 1], [-0.1, 1], color="k", lw=0.8)
    ax.set_xlabel(f"cosine in the original space (p = {p:,})")
    ax.set_ylabel(f"cosine after projection (k = {k})")
    ax.set_title("tarot.Projector (Rademacher, seed 0)")
    ax.grid(alpha=0.3)
    _save(fig, out, "projection.png")


def _unit_angles(theta: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(theta), np.sin(theta)], axis=1)


def fig_potentials(out: Path, numbers: dict) -> None:
    """Spec §7.2 example: 90 candidates near target mode A, 10 near mode B, targets split 50/50."""
    rng = np.random.default_rng(2)
    cand = _unit_angles(np.concatenate([rng.normal(0.0, 0.15, 90), rng.normal(np.pi / 2, 0.15, 10)]))
    tgt = _unit_angles(np.concatenate([rng.normal(0.0, 0.15, 50), rng.normal(np.pi / 2, 0.15, 50)]))
    res = tarot.entropic_ot(cand, tgt)
    f = res.f - res.f.mean()
    numbers["potentials"] = {
        "ot_value": round(res.value, 4),
        "f_mean_A": round(float(f[:90].mean()), 4),
        "f_mean_B": round(float(f[90:].mean()), 4),
        "converged": bool(res.converged),
    }
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    t = np.linspace(0, 2 * np.pi, 200)
    axes[0].plot(np.cos(t), np.sin(t), color="#dddddd", lw=0.8, zorder=0)
    axes[0].scatter(tgt[:, 0], tgt[:, 1], marker="x", s=22, color="k", label="targets (50 A, 50 B)")
    sc = axes[0].scatter(
        cand[:, 0] * 1.08, cand[:, 1] * 1.08, c=f, cmap="coolwarm", s=22, label="candidates (90 near A, 10 near B)"
    )
    fig.colorbar(sc, ax=axes[0], label="potential f (mean removed)")
    axes[0].set_aspect("equal")
    axes[0].set_xlim(-0.4, 1.4)
    axes[0].set_ylim(-0.4, 1.4)
    axes[0].legend(loc="lower left", fontsize=8)
    axes[0].set_title("candidates coloured by their OT potential")
    bins = np.linspace(f.min(), f.max(), 30)
    axes[1].hist(f[:90], bins=bins, alpha=0.7, label="near A (over-supplied)", color="#e57373")
    axes[1].hist(f[90:], bins=bins, alpha=0.8, label="near B (under-supplied)", color="#3f51b5")
    axes[1].set_xlabel("f (mean removed)")
    axes[1].set_ylabel("candidates")
    axes[1].legend(fontsize=8)
    axes[1].set_title("smaller f ⇒ adding mass there lowers OT")
    _save(fig, out, "potentials.png")


def fig_selection(out: Path, numbers: dict) -> None:
    """Mode shares of random / topk_mean / fixed_size at n = 150 and OTM (unweighted and weighted)."""
    mix = tarot.make_mixture(seed=0)
    runs = {}
    for method, kw in (
        ("random", {"n": 150}),
        ("topk_mean", {"n": 150}),
        ("fixed_size", {"n": 150}),
        ("otm", {"ratio": "auto", "weighting": True}),
    ):
        runs[method] = tarot.select(mix.candidates, mix.targets, method=method, seed=0, progress=False, **kw)
    rows = []
    for method, res in runs.items():
        rows.append((method, mix.mode_shares(res.indices), res.ot_distance, res.size))
    otm = runs["otm"]
    rows.append(
        ("otm weighted", mix.mode_shares(otm.indices, otm.weights), otm.diagnostics.get("weighted_ot"), otm.size)
    )
    target = {f"mode{m}": float(np.mean(mix.target_modes == m)) for m in range(3)}
    target["off_target"] = 0.0
    rows.append(("targets", target, None, len(mix.targets)))
    numbers["selection"] = {
        "mixture": mix.config,
        "rows": [
            {
                "method": m,
                "shares": {k: round(v, 3) for k, v in s.items()},
                "ot_distance": None if d is None else round(float(d), 3),
                "size": int(n),
            }
            for m, s, d, n in rows
        ],
        "otm_ratio": round(otm.ratio, 3),
    }
    fig, ax = plt.subplots(figsize=(10, 4.2))
    labels = list(COLORS)
    width = 0.8 / len(labels)
    xs = np.arange(len(rows))
    for i, lab in enumerate(labels):
        ax.bar(xs + (i - 1.5) * width, [r[1][lab] for r in rows], width, color=COLORS[lab], label=lab.replace("_", "-"))
    ticks = []
    for method, _, d, n in rows:
        ticks.append(f"{method}\nn={n}" + ("" if d is None else f"\nOT {d:.3f}"))
    ax.set_xticks(xs, ticks, fontsize=8)
    ax.set_ylabel("share of the selection")
    ax.set_ylim(0, 1.05)
    ax.legend(ncol=4, fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("tarot.make_mixture(seed=0): 1,500 candidates (40 % off-target), 200 targets at 0.6/0.3/0.1")
    _save(fig, out, "selection_shares.png")

    folds = otm.diagnostics["otm"]["folds"]
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for fd in folds:
        (line,) = ax.plot(fd["sizes"], fd["values"], marker=".", lw=1, alpha=0.8)
        if fd.get("best_depth") is not None:
            i = fd["depths"].index(fd["best_depth"])
            ax.scatter([fd["sizes"][i]], [fd["values"][i]], color=line.get_color(), s=50, zorder=3, edgecolor="k")
    ax.set_xlabel("|C_d|: candidates in the fold's neighbourhood of depth d")
    ax.set_ylabel("OT distance to the held-out targets")
    ax.set_title(f"OTM, {len(folds)} folds (circle = kept argmin depth)")
    ax.grid(alpha=0.3)
    numbers["otm"] = {
        "best_depths": [fd.get("best_depth") for fd in folds],
        "size": otm.size,
        "ratio": round(otm.ratio, 3),
    }
    _save(fig, out, "otm_curves.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    numbers: dict = {"tarot_version": tarot.__version__}
    fig_whitening(args.out, numbers)
    fig_projection(args.out, numbers)
    fig_potentials(args.out, numbers)
    fig_selection(args.out, numbers)
    (args.out / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main()
