"""GTA5 → Cityscapes pipeline steps behind the CLI: featurize, select (+ ann_file), train, evaluate.

Each step reads the resolved ``seg.yaml`` config (see ``configs/seg.yaml``) and writes into its own output folder,
with ``config.resolved.yaml`` beside the outputs. Selection, whitening, OT and projection are tarot-core's.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from tarot.app.device import pick_device
from tarot.fileio import save_torch_atomic, write_text_atomic

from . import segdata as S

log = logging.getLogger(__name__)

DEFAULT_PARAMS = {"torch": ["classifier.*"], "mmseg": ["decode_head.*"]}


def _records(part: dict[str, Any], what: str) -> list[S.SegRecord]:
    if not part.get("root"):
        raise ValueError(f"{what}.root is not set (give {what}.root=<folder>)")
    if part.get("ann_file"):
        recs = S.resolve_ann_file(part["ann_file"], part["dataset"], part["root"], part.get("split", "train"))
    else:
        recs = S.scan(part["dataset"], part["root"], part.get("split", "train"))
    return S.check_records(recs, on_missing="error")


def build_model(cfg: dict[str, Any]) -> tuple[torch.nn.Module, Any, list[str]]:
    """(featurisation module, loss adapter, parameter globs) for the configured backend."""
    backend = cfg["backend"]
    globs = cfg["featurize"]["params"] or DEFAULT_PARAMS.get(backend) or []
    if backend == "torch":
        from .seg_models import TorchSegLoss, build_torch_segmenter

        return build_torch_segmenter(cfg["model"]["arch"]).eval(), TorchSegLoss(), list(globs)
    if backend == "mmseg":
        from . import mmseg_backend as MB

        mcfg = MB.load_config(cfg["model"]["mmseg_config"], crop_size=cfg["data"]["size"], tiny=cfg["model"]["tiny"])
        return MB.MMSegHeads(MB.build_segmentor(mcfg)).eval(), MB.MMSegLoss(), list(globs)
    raise ValueError(f"backend must be 'torch' or 'mmseg', got {backend!r}")


def _checkpoints(cfg: dict[str, Any]) -> list:
    from tarot import Checkpoint

    specs = cfg["featurize"]["checkpoints"] or []
    if not specs:
        log.warning(
            "featurize.checkpoints is empty: featurising the model as initialised (random weights carry "
            "little signal; list trained checkpoints for real runs)"
        )
        return [Checkpoint(name="init")]
    out = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or "path" not in spec:
            raise ValueError(f"featurize.checkpoints[{i}]: expected a mapping with name, path and optional weight")
        if cfg["backend"] == "mmseg":
            from .mmseg_backend import load_mmseg_checkpoint

            sd = load_mmseg_checkpoint(spec["path"])
            sd = {k: v for k, v in sd.items() if not k.startswith("data_preprocessor.")}
            out.append(  # the path too: the store's manifest records where the features came from
                Checkpoint(name=str(spec.get("name", f"ckpt{i}")), path=str(spec["path"]), state_dict=sd,
                           weight=float(spec.get("weight", 1.0)))
            )
        else:
            out.append(
                Checkpoint(
                    name=str(spec.get("name", f"ckpt{i}")),
                    path=str(spec["path"]),
                    weight=float(spec.get("weight", 1.0)),
                )
            )
    return out


def featurize(cfg: dict[str, Any], out: str | Path, progress: bool = True, shard: tuple[int, int] | None = None,
              merge: bool = True):
    """Projected per-sample gradient features of the candidate pool and the target set → a FeatureStore.

    ``shard=(rank, world)`` featurizes one shard (several processes or torchrun; see tarot.features.distributed); rank 0
    merges the shards into ``OUT/features`` when ``merge`` and all shards are complete.
    """
    from tarot import gradient_featurizer
    from tarot.features.distributed import featurize_distributed

    d = cfg["data"]
    cand = _records(cfg["candidate"], "candidate")
    tgt = _records(cfg["target"], "target")
    ds = {
        "candidate": S.SegmentationDataset(cand, size=d["size"], fit=d["fit"], on_size_mismatch=d["on_size_mismatch"]),
        "target": S.SegmentationDataset(tgt, size=d["size"], fit=d["fit"], on_size_mismatch=d["on_size_mismatch"]),
    }
    fz = cfg["featurize"]
    # every process (and every rank of a sharded run) must featurize the same weights: seed the initialisation
    torch.manual_seed(int(fz["seed"]))
    model, adapter, globs = build_model(cfg)
    if fz["projector"] == "factorized" and not fz["params"]:  # the default head globs hold norm layers too
        from tarot.features.factorized import coverable_parameters

        covered = coverable_parameters(model)
        globs = [n for n, _ in model.named_parameters()
                 if n in covered and any(fnmatch.fnmatchcase(n, g) for g in globs)]
        log.info("factorized projector: featurizing the %d Linear/Conv parameter tensors of the default globs",
                 len(globs))
    feat = gradient_featurizer(
        model, adapter, proj_dim=int(fz["proj_dim"]), seed=int(fz["seed"]), params=globs, mode=fz["mode"],
        projector=fz["projector"], factor_dim=int(fz["factor_dim"]), device=pick_device(cfg["device"]),
    )
    return featurize_distributed(
        feat,
        ds,
        Path(out) / "features",
        shard=shard,
        merge=merge,
        checkpoints=_checkpoints(cfg),
        batch_size=int(fz["batch_size"]),
        ids={"candidate": [r.stem for r in cand], "target": [r.stem for r in tgt]},
        sources={"candidate": [r.dataset for r in cand], "target": [r.dataset for r in tgt]},
        progress=progress,
    )


def open_store(features: str | Path) -> Any:
    """The feature store of a ``featurize`` output folder (``OUT/features``) or the store folder itself; the shards
    of a sharded featurization are read as one store without merging them."""
    from tarot import open_store as open_any

    store_dir = Path(features)
    if (store_dir / "features").is_dir() and not (store_dir / "manifest.json").is_file():
        store_dir = store_dir / "features"
    return open_any(store_dir)


def select_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """``tarot.select`` keyword arguments of the config's ``select`` section."""
    sc = cfg["select"]
    return {"method": sc["method"], "ratio": sc["ratio"] if sc["ratio"] == "auto" else float(sc["ratio"]),
            "seed": int(sc["seed"]), "weighting": bool(sc["weighting"]), "ridge": sc["ridge"]}


def select(cfg: dict[str, Any], store: Any, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run tarot.select on a store opened by :func:`open_store`, save the result, write the mmseg ann_file and the
    HTML report."""
    import tarot

    sc = cfg["select"]
    res = tarot.select(store, progress=progress, **select_kwargs(cfg))
    out = Path(out)
    res.save(out / "selection")
    stems = [str(s) for s in store.ids("candidate")]
    ann = S.write_selection_ann_file(res, stems, out / "ann_file.txt")
    with tempfile.TemporaryDirectory() as tmp:
        section, files = _examples_section(cfg, store, res, Path(tmp))
        report = tarot.write_report(res, out / "report", store=store, lead_sections=[section], attachments=files,
                                    title=f"TAROT segmentation selection: {sc['method']}")
    summary = {
        "method": sc["method"],
        "selected": int(res.size),
        "candidates": len(stems),
        "ratio": float(res.ratio),
        "ann_file_lines": len(S.read_ann_file(ann)),
        "ot_distance": res.ot_distance,
        "ann_file": str(ann),
        "report": str(report),
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")  # written last
    return summary


def _examples_section(cfg: dict[str, Any], store: Any, res: Any, tmp: Path, per_row: int = 4
                      ) -> tuple[tuple[str, str], dict[str, Path]]:
    """The select report's "What was selected": thumbnails of the selected candidates of every source, closest to the
    target first (tarot's topk_mean score), beside a random selection of the same size and the first target images.
    Returns ((heading, html), attachments)."""
    import html

    import numpy as np
    import tarot
    from PIL import Image
    from tarot.app.report import examples_by_source

    from .figures import selection_examples_figure
    from .labels import read_rgb

    heading = "What was selected"
    if not cfg["candidate"].get("root"):
        return (heading, "<p>candidate.root is not set, so no images are shown.</p>"), {}
    by_stem = {r.stem: r for r in _records(cfg["candidate"], "candidate")}
    stems = [str(x) for x in store.ids("candidate")]
    missing = [x for x in stems if x not in by_stem]
    if missing:
        return (heading, f"<p>{len(missing)} selected stems (e.g. {html.escape(missing[0])}) are not under "
                         "candidate.root, so no images are shown.</p>"), {}

    def thumb(path: Path) -> np.ndarray:
        im = Image.fromarray(read_rgb(path))
        im.thumbnail((160, 80), Image.Resampling.BILINEAR)
        return np.asarray(im)

    labels = [str(x) for x in store.sources("candidate")]
    sim = np.asarray(tarot.select(store, method="topk_mean", ratio=1.0, progress=False).scores)
    rnd = tarot.select(store, method="random", n=res.size, seed=int(cfg["select"]["seed"]), progress=False)
    pool_n = {src: labels.count(src) for src in set(labels)}
    columns: dict[str, dict[str, tuple[list[np.ndarray], str]]] = {}
    for name, sel in ((f"{res.method} ({res.size})", res), (f"random ({rnd.size})", rnd)):
        taken = sel.composition(labels)
        columns[name] = {src: ([thumb(by_stem[stems[i]].image) for i in idx], f"{taken[src]} of {pool_n[src]}")
                         for src, idx in examples_by_source(sel, sim, per_source=per_row, sources=labels).items()}
    if cfg["target"].get("root"):
        tgt = _records(cfg["target"], "target")[:per_row]
        columns["target set"] = {src: ([thumb(r.image) for r in tgt if r.dataset == src], "first target images")
                                 for src in sorted({r.dataset for r in tgt})}
    png = selection_examples_figure(columns, tmp / "examples.png", per_row=per_row)
    text = (f"<p>Up to {per_row} selected images of every candidate source, closest to the target first (tarot's "
            "topk_mean score: mean cosine of the whitened gradient feature to the target features), beside a random "
            f"selection of the same size (seed {int(cfg['select']['seed'])}) and the first target images.</p>"
            '<img src="examples.png" alt="example images per source">')
    return (heading, text), {"examples.png": png}


def train(cfg: dict[str, Any], out: str | Path, ann_file: str | Path | None = None, progress: bool = True) -> Path:
    """Train on the stems of an ann_file (repeats = weights) from the configured init; returns the state-dict file."""
    tr = cfg["train"]
    ann = ann_file or tr["ann_file"]
    if not ann:
        raise ValueError("no ann_file: pass --selection <select output> or train.ann_file=<file>")
    cand = cfg["candidate"]
    if not cand.get("root"):
        raise ValueError("candidate.root is not set (the folder the ann_file stems refer to)")
    out = Path(out)
    val_interval = int(tr["val_interval"])
    val_root = cfg["target"]["root"]
    if val_interval > 0 and not val_root:
        raise ValueError(f"train.val_interval={val_interval} validates on Cityscapes {cfg['evaluate']['split']}: set "
                         "target.root (or train.val_interval=0 to train without validation)")
    if cfg["backend"] == "mmseg":
        from . import mmseg_backend as MB

        mcfg = MB.load_config(cfg["model"]["mmseg_config"], crop_size=tr["crop"], tiny=cfg["model"]["tiny"])
        return MB.train_mmseg(
            mcfg,
            ann,
            cand["root"],
            out / "work",
            dataset=cand["dataset"],
            max_iters=int(tr["iters"]),
            batch_size=int(tr["batch_size"]),
            lr=float(tr["lr"]),
            scale=tr["scale"],
            seed=int(tr["seed"]),
            init=str(tr["init"]),
            checkpoint_every=int(tr["checkpoint_every"]),
            val_root=val_root,
            val_split=cfg["evaluate"]["split"],
            val_interval=val_interval,
            val_scale=cfg["evaluate"]["scale"],
            device=cfg["device"],
        )
    from .seg_models import build_torch_segmenter, evaluate_torch_segmenter, train_torch_segmenter

    recs = S.resolve_ann_file(ann, cand["dataset"], cand["root"], cand.get("split", "train"))
    torch.manual_seed(int(tr["seed"]))
    model = build_torch_segmenter(cfg["model"]["arch"])
    if tr["init"] != "scratch":
        model.load_state_dict(_load_state(tr["init"]))
    ds = S.SegmentationDataset(
        recs,
        size=tr["crop"],
        fit="center_crop",
        train=True,
        seed=int(tr["seed"]),
        on_size_mismatch=cfg["data"]["on_size_mismatch"],
    )
    state = out / "training_state.pt"  # resumable: a killed run restarted with the same command continues here
    val_log: list[dict[str, Any]] = []
    validate = None
    if val_interval > 0:
        val_recs = S.scan_cityscapes(val_root, cfg["evaluate"]["split"])

        def validate(m: torch.nn.Module) -> float:
            return evaluate_torch_segmenter(m, val_recs, scale=cfg["evaluate"]["scale"], progress=False)["mIoU"]

    losses = train_torch_segmenter(
        model,
        ds,
        iters=int(tr["iters"]),
        batch_size=int(tr["batch_size"]),
        lr=float(tr["lr"]),
        seed=int(tr["seed"]),
        progress=progress,
        state_file=state,
        checkpoint_every=int(tr["checkpoint_every"]),
        device=pick_device(cfg["device"]),
        validate=validate,
        val_interval=val_interval,
        val_log=val_log,
        best_file=out / "best_state_dict.pth",
    )
    path = save_torch_atomic({"state_dict": model.state_dict()}, out / "final_state_dict.pth")
    val = [{"iter": r["iter"], "mIoU": 100.0 * r["score"]} for r in val_log]  # percent, as mmseg logs it
    write_text_atomic(out / "train_log.json", json.dumps({"losses": losses, "init": tr["init"], "val": val}) + "\n")
    state.unlink(missing_ok=True)
    return path


def _load_state(path: str | Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["state_dict"] if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj


def evaluate(cfg: dict[str, Any], checkpoint: str | Path, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """mIoU on Cityscapes ``evaluate.split`` (target root) for a trained checkpoint; with ``evaluate.overlays`` > 0,
    also ``overlays.png`` (image, ground truth and prediction of the split's first images)."""
    ev = cfg["evaluate"]
    root = cfg["target"]["root"]
    if not root:
        raise ValueError("target.root is not set (the Cityscapes folder)")
    out = Path(out)
    if cfg["backend"] == "mmseg":
        from . import mmseg_backend as MB

    from .seg_models import evaluate_torch_segmenter

    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
    keep = int(ev["overlays"])
    records = S.scan_cityscapes(root, ev["split"])
    if cfg["backend"] == "mmseg":
        from . import mmseg_backend as MB

        mcfg = MB.load_config(cfg["model"]["mmseg_config"], crop_size=cfg["train"]["crop"], tiny=cfg["model"]["tiny"])
        m = MB.evaluate_mmseg(mcfg, checkpoint, root, out / "work", split=ev["split"], scale=ev["scale"],
                              device=cfg["device"])
        result: dict[str, Any] = {k: float(v) for k, v in m.items()}
        examples = []
        if keep > 0:  # the same weights through the heads wrapper (mmseg's test pipeline scored the metrics)
            heads = MB.MMSegHeads(MB.build_segmentor(mcfg))
            heads.load_state_dict(MB.load_mmseg_checkpoint(checkpoint), strict=False)
            heads.to(pick_device(cfg["device"]))
            examples = evaluate_torch_segmenter(heads, records[:keep], scale=ev["scale"], progress=False,
                                                keep=keep)["examples"]
    else:
        from .seg_models import build_torch_segmenter

        model = build_torch_segmenter(cfg["model"]["arch"])
        model.load_state_dict(_load_state(checkpoint))
        model.to(pick_device(cfg["device"]))
        r = evaluate_torch_segmenter(model, records, scale=ev["scale"], progress=progress, keep=keep)
        result = {"mIoU": 100.0 * r["mIoU"], "per_class_iou": r["per_class_iou"], "images": r["images"]}
        examples = r["examples"]
    if examples:
        from .figures import overlay_figure

        overlay_figure([(img, gt, pred, stem) for img, gt, pred, stem in examples], out / "overlays.png")
        result["overlays"] = "overlays.png"
    write_text_atomic(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    return result
