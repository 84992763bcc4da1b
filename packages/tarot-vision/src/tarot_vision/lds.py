"""Linear datamodeling score (LDS) check of the influence estimate (specs/vision.md §7.4), scaled for a CPU.

1. Train set D (n images) and held-out targets. A model trained on all of D provides checkpoints; per-sample loss
   gradients at those checkpoints are projected and summed by tarot-core's featurizer (φ).
2. Attribution scores τ(z) ∈ ℝⁿ per target z, from the same features:
   ``wfd`` whitened cosine (TAROT; whitening by ``tarot.whiten`` with its data-chosen default ridge), ``cosine`` (raw
   features), ``dot`` (raw inner product, TracIn-like) and ``trak`` (φ(z)ᵀ(ΦᵀΦ + λI)⁻¹φ(z_i), uncentred), plus
   ``wfd_ridge=<r>`` for every entry of ``whiten_ridges`` (fixed relative ridges or the rules ``ledoit_wolf`` /
   ``oas``).
3. m random subsets S_j of size ⌊α n⌋ (seeded, stored as a mask); a model is trained from scratch on each and the
   actual target margins f(z; θ(S_j)) are recorded.
4. LDS(τ, z) = Spearman over j of (mask @ τ(z))_j and f(z; θ(S_j)); reported as the mean over targets with a
   bootstrap 95 % interval.

Data: CIFAR-10 python batches (``cifar_root``) when given, otherwise real embedded images (digits/Fashion-MNIST).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .cls_data import load_demo_source, read_cifar10
from .cls_models import (
    ClassificationLoss,
    ImageClassDataset,
    build_classifier,
    margins,
    predict_logits,
    train_classifier,
)

log = logging.getLogger(__name__)

METHODS = ("wfd", "cosine", "dot", "trak")

QUICK = {
    "data": {"n_train": 200, "n_targets": 40},
    "subsets": {"m": 8},
    "train": {"epochs": 3},
    "featurize": {"proj_dim": 128},
}


def rank(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Average ranks along ``axis`` (ties share their mean rank)."""
    from scipy.stats import rankdata

    return rankdata(x, axis=axis)


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation between matching columns of a [m, T] and b [m, T] → [T] (NaN for constant columns)."""
    ra, rb = rank(a, 0), rank(b, 0)
    ra = ra - ra.mean(0)
    rb = rb - rb.mean(0)
    den = np.sqrt((ra**2).sum(0) * (rb**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(0) / np.where(den > 0, den, 1.0), np.nan)


def _ridge_label(r: float | str) -> str:
    return f"wfd_ridge={r}" if isinstance(r, str) else f"wfd_ridge={float(r):g}"


def attribution_scores(
    train_feats: np.ndarray,
    target_feats: np.ndarray,
    trak_ridge: float = 1e-3,
    whiten_ridges: Sequence[float | str] = (),
    whitening: dict | None = None,
) -> dict:
    """τ matrices [n_targets, n_train] for every method of :data:`METHODS` (whitening: ``tarot.whiten``).

    ``wfd`` uses tarot-core's default (data-chosen) ridge; every value in ``whiten_ridges`` adds a
    ``wfd_ridge=<r>`` row: a fixed relative ridge (a larger ridge whitens less: ridge → ∞ tends to centred cosine)
    or a rule name (``ledoit_wolf``, ``oas``). ``whitening``, if given, receives the ridge, shrinkage and effective
    dimension each whitening used (label → summary).
    """
    import tarot

    Zc, Zt, w = tarot.whiten(train_feats, target_feats)
    used = {"wfd": w.diagnostics}
    extra = {}
    for r in whiten_ridges:
        Zc_r, Zt_r, w_r = tarot.whiten(train_feats, target_feats, ridge=r if isinstance(r, str) else float(r))
        extra[_ridge_label(r)] = np.asarray(Zt_r, np.float64) @ np.asarray(Zc_r, np.float64).T
        used[_ridge_label(r)] = w_r.diagnostics
    if whitening is not None:
        whitening.update({k: {f: d.get(f) for f in ("ridge_rule", "ridge_used", "shrinkage_equivalent", "df")}
                          for k, d in used.items()})
    X = np.asarray(train_feats, dtype=np.float64)
    T = np.asarray(target_feats, dtype=np.float64)
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    Tn = T / np.maximum(np.linalg.norm(T, axis=1, keepdims=True), 1e-12)
    K = X.T @ X
    lam = trak_ridge * np.trace(K) / K.shape[0]
    trak = T @ np.linalg.solve(K + lam * np.eye(K.shape[0]), X.T)
    return {
        "wfd": np.asarray(Zt, np.float64) @ np.asarray(Zc, np.float64).T,
        "cosine": Tn @ Xn.T,
        "dot": T @ X.T,
        "trak": trak,
        **extra,
    }


def lds(scores: np.ndarray, masks: np.ndarray, actual: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """LDS of one method: scores [T, n], masks [m, n] (bool), actual margins [m, T]."""
    predicted = masks.astype(np.float64) @ scores.T  # [m, T]
    per_target = spearman_columns(predicted, actual)
    ok = per_target[np.isfinite(per_target)]
    rng = np.random.default_rng(seed)
    boots = [rng.choice(ok, size=len(ok)).mean() for _ in range(n_boot)] if len(ok) else [np.nan]
    return {
        "mean": float(ok.mean()) if len(ok) else float("nan"),
        "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
        "targets": int(len(ok)),
        "per_target": [None if not np.isfinite(v) else float(v) for v in per_target],
    }


def _data(cfg: dict[str, Any]) -> tuple[str, ImageClassDataset, ImageClassDataset]:
    d = cfg["data"]
    rng = np.random.default_rng(int(cfg["seed"]))
    if d["cifar_root"]:
        x, y = read_cifar10(d["cifar_root"], "train")
        xt, yt = read_cifar10(d["cifar_root"], "test")
        name = "cifar10"
    else:
        name, x_all, y_all, _ = load_demo_source(d["dataset"], d["fashion_mnist_root"])
        perm = rng.permutation(len(y_all))
        cut = len(y_all) - int(d["n_targets"])
        x, y, xt, yt = x_all[perm[:cut]], y_all[perm[:cut]], x_all[perm[cut:]], y_all[perm[cut:]]
    tr = rng.permutation(len(y))[: int(d["n_train"])]
    te = rng.permutation(len(yt))[: int(d["n_targets"])]
    if len(tr) < int(d["n_train"]) or len(te) < int(d["n_targets"]):
        log.warning(
            "LDS data: %d training images and %d targets available (asked %s/%s)",
            len(tr),
            len(te),
            d["n_train"],
            d["n_targets"],
        )
    return name, ImageClassDataset(x[np.sort(tr)], y[np.sort(tr)]), ImageClassDataset(xt[np.sort(te)], yt[np.sort(te)])


def run_lds(cfg: dict[str, Any], out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run the LDS check; writes masks, margins, scores and ``results.json`` under ``out``."""
    from tarot import Checkpoint, featurize_to_store, gradient_featurizer

    from .config import save_resolved

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").unlink(missing_ok=True)
    save_resolved(cfg, out, "lds")
    name, train_ds, target_ds = _data(cfg)
    n = len(train_ds)
    ncls = int(max(int(train_ds.y.max()), int(target_ds.y.max()))) + 1
    in_ch = int(train_ds.x.shape[1])
    mc, tc = cfg["model"], cfg["train"]
    seed = int(cfg["seed"])

    def fresh(s: int) -> torch.nn.Module:
        torch.manual_seed(s)
        return build_classifier(mc["arch"], ncls, in_ch, mc["width"])

    from tarot.app.device import pick_device

    device = pick_device(cfg["device"])
    # 1. features from checkpoints of a model trained on all of D
    model = fresh(seed)
    ck_epochs = [int(e) for e in cfg["featurize"]["checkpoint_epochs"]]
    states = train_classifier(
        model,
        train_ds,
        epochs=int(tc["epochs"]),
        batch_size=int(tc["batch_size"]),
        lr=float(tc["lr"]),
        seed=seed,
        checkpoint_epochs=ck_epochs,
        progress=progress,
        desc="LDS full model",
        device=device,
    )
    if not states:
        raise ValueError(f"featurize.checkpoint_epochs {ck_epochs} has no epoch within train.epochs={tc['epochs']}")
    fz = cfg["featurize"]
    feat = gradient_featurizer(model, ClassificationLoss(), proj_dim=int(fz["proj_dim"]), seed=seed,
                               params=fz["params"], projector=fz["projector"], factor_dim=int(fz["factor_dim"]),
                               device=device)
    t_feat = time.perf_counter()
    store = featurize_to_store(
        feat,
        {"candidate": train_ds, "target": target_ds},
        out / "features",
        checkpoints=[Checkpoint(f"epoch{e}", state_dict=states[e]) for e in sorted(states)],
        batch_size=int(fz["batch_size"]),
        progress=progress,
    )
    featurize_s = time.perf_counter() - t_feat
    whitening: dict = {}
    scores = attribution_scores(
        np.asarray(store.features("candidate")),
        np.asarray(store.features("target")),
        float(cfg["trak_ridge"]),
        cfg["whiten_ridges"],
        whitening=whitening,
    )
    # 2. subsets and actual margins
    sb = cfg["subsets"]
    m, size = int(sb["m"]), int(np.floor(float(sb["alpha"]) * n))
    rng = np.random.default_rng([seed, 99])
    masks = np.zeros((m, n), dtype=bool)
    for j in range(m):
        masks[j, rng.choice(n, size=size, replace=False)] = True
    actual = np.zeros((m, len(target_ds)), dtype=np.float64)
    for j in tqdm(range(m), desc="LDS subset models", disable=not progress):
        sub = fresh(seed + 1000 + j)
        train_classifier(
            sub,
            train_ds.subset(np.flatnonzero(masks[j])),
            epochs=int(tc["epochs"]),
            batch_size=int(tc["batch_size"]),
            lr=float(tc["lr"]),
            seed=seed + 1000 + j,
            device=device,
        )
        actual[j] = margins(predict_logits(sub, target_ds), target_ds.y).numpy()
    np.save(out / "masks.npy", masks)
    np.save(out / "margins.npy", actual)
    result = {m_: lds(scores[m_], masks, actual, seed=seed) for m_ in scores}
    doc = {
        "data": name,
        "n_train": n,
        "n_targets": len(target_ds),
        "subsets": m,
        "subset_size": size,
        "lds": result,
        "whitening": whitening,
        "feature_dim": int(store.features("candidate").shape[1]),
        "projector": fz["projector"],
        "featurize_s": featurize_s,  # a resumed run counts only the batches it computed
        "wall_time_s": time.perf_counter() - t0,
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out / "results.json")
    return doc
