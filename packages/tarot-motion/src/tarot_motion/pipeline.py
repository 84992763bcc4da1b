"""The TAROT pipeline for motion prediction: data sets from databases, featurisation and selection through tarot-core,
training on a selection and evaluation on the target's validation split.

Selection, whitening, OT and projection all come from ``tarot`` (tarot-core); nothing here re-implements them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tarot.app.device import pick_device
from torch.utils.data import Dataset

from .data import MotionDataset, concat_data
from .errors import MotionDataError, write_json
from .featurize import loss_adapter
from .preprocess import load_cache, preprocess_database, summarize_skips
from .train import build_model, evaluate, train_model

SPEC_KEYS = ("path", "label", "starting_frame", "max_data_num")  # keys of one data.candidates/target/val entry


def _specs(value: Any, key: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for i, it in enumerate(items):
        if isinstance(it, str):
            it = {"path": it}
        if not isinstance(it, Mapping) or "path" not in it:
            raise MotionDataError(None, f"data.{key}[{i}]", "expected a path or a mapping with 'path' (and 'label')")
        unknown = sorted(set(it) - set(SPEC_KEYS))
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], SPEC_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise MotionDataError(None, f"data.{key}[{i}]", f"unknown key(s) {', '.join(map(repr, unknown))}{hint}; "
                                  f"an entry takes {', '.join(SPEC_KEYS)}")
        out.append(dict(it))
    return out


def load_split(cfg: Mapping[str, Any], key: str, progress: bool = True, log: Any = print) -> MotionDataset | None:
    """Preprocess (cached) every database of ``cfg['data'][key]`` and return one dataset (None if not configured).

    Each entry may carry ``label`` (source label), ``starting_frame`` and ``max_data_num``. Skipped scenarios are
    reported through ``log`` for every database.
    """
    specs = _specs(cfg["data"].get(key), key)
    if not specs:
        return None
    parts = []
    for spec in specs:
        pcfg = dict(cfg["preprocess"])
        for k in ("starting_frame", "max_data_num"):
            if k in spec:
                pcfg[k] = spec[k]
        cache = preprocess_database(spec["path"], cfg["data"]["cache_dir"], pcfg, label=spec.get("label"),
                                    workers=int(cfg["data"]["workers"]), skip_invalid=bool(cfg["data"]["skip_invalid"]),
                                    progress=progress)
        data = load_cache(cache)
        log(f"[{key}] {summarize_skips(data['index'])}; {len(data['dataset_name'])} samples")
        parts.append(data)
    return MotionDataset(concat_data(parts) if len(parts) > 1 else parts[0])


def featurize(model_cfg: Mapping[str, Any], fcfg: Mapping[str, Any], checkpoints: Sequence[str | Path],
              datasets: Mapping[str, MotionDataset], out: str | Path,
              sources: Mapping[str, Sequence[str]] | None = None, progress: bool = True,
              shard: tuple[int, int] | None = None, merge: bool = True, device: Any = "cpu") -> Any:
    """Per-sample projected gradients of every split at every checkpoint, summed over checkpoints (tarot-core), computed
    on ``device`` (:func:`tarot.app.device.pick_device`).

    Returns the ``tarot.FeatureStore``. Rerunning the same call resumes. ``shard=(rank, world)`` featurizes one shard
    (several processes or torchrun, see ``tarot.features.distributed``); rank 0 merges when ``merge`` and all are
    complete.
    """
    import tarot
    from tarot.features.distributed import featurize_distributed

    if not checkpoints:
        raise MotionDataError(None, "featurize.checkpoints", "at least one checkpoint file is required")
    model = build_model(model_cfg, init="scratch", seed=0)
    ckpts = []
    for i, p in enumerate(checkpoints):
        p = Path(p)
        if not p.is_file():
            raise MotionDataError(p, None, "checkpoint file not found")
        state = torch.load(p, map_location="cpu", weights_only=True)
        ckpts.append(tarot.Checkpoint(name=f"c{i}_{p.stem}", state_dict=state.get("model", state)))
    adapter = loss_adapter(model, float(fcfg["loss_scale"]))
    feat = tarot.gradient_featurizer(model, adapter, proj_dim=int(fcfg["proj_dim"]), seed=int(fcfg["seed"]),
                                     projector=fcfg["projector"], params=fcfg["params"], mode=fcfg["mode"],
                                     factor_dim=int(fcfg["factor_dim"]), device=pick_device(device))
    srcs = sources or {k: ds.sources for k, ds in datasets.items()}
    return featurize_distributed(feat, dict(datasets), str(out), checkpoints=ckpts, batch_size=int(fcfg["batch_size"]),
                                 ids={k: ds.ids for k, ds in datasets.items()},
                                 sources={k: list(v) for k, v in srcs.items()}, progress=progress, shard=shard,
                                 merge=merge)


def embed(model_cfg: Mapping[str, Any], checkpoint: str | Path, datasets: Mapping[str, MotionDataset],
          out: str | Path, sources: Mapping[str, Sequence[str]] | None = None, batch_size: int = 64,
          progress: bool = True, device: Any = "cpu") -> Any:
    """Encoder embeddings (:func:`tarot_motion.featurize.encoder_embedding`) of every split at one checkpoint in a
    ``tarot.FeatureStore`` — the feature source of the "embeddings + selector" baselines. Resumable."""
    import tarot

    from .featurize import encoder_embedding

    p = Path(checkpoint)
    if not p.is_file():
        raise MotionDataError(p, None, "checkpoint file not found")
    model = build_model(model_cfg, init=f"checkpoint:{p}")
    feat = tarot.EmbeddingFeaturizer(model, encoder_embedding, dim=int(model.d_k), device=pick_device(device))
    srcs = sources or {k: ds.sources for k, ds in datasets.items()}
    return tarot.featurize_to_store(feat, dict(datasets), str(out), checkpoints=[tarot.Checkpoint(p.stem)],
                                    batch_size=batch_size, ids={k: ds.ids for k, ds in datasets.items()},
                                    sources={k: list(v) for k, v in srcs.items()}, progress=progress)


def select_kwargs(scfg: Mapping[str, Any]) -> dict[str, Any]:
    """``tarot.select`` keyword arguments of the motion config's ``select`` section (``options`` flattened in, OTM
    with ``ratio="auto"``)."""
    kw = dict(scfg)
    kw.update(kw.pop("options", None) or {})
    if kw.get("method") == "otm":
        kw["ratio"] = "auto"
    return kw


def select(store: Any, scfg: Mapping[str, Any], out: str | Path | None = None, progress: bool = True) -> Any:
    """Run ``tarot.select`` with the motion config's ``select`` section; save the result if ``out`` is given."""
    import tarot

    res = tarot.select(store, progress=progress, **select_kwargs(scfg))
    if out is not None:
        res.save(str(out))
    return res


def training_set(candidates: MotionDataset, result: Any, targets: MotionDataset | None = None) -> Dataset:
    """The selected candidates repeated by their weights (tarot-core ``WeightedSubset``), plus merged targets."""
    import tarot

    try:
        return tarot.WeightedSubset(candidates, result, targets=targets if result.merged_targets else None)
    except ValueError as exc:  # size mismatch between the selection and the configured candidate data
        raise MotionDataError(None, "selection", f"does not fit data.candidates/data.target: {exc}") from None


def train_and_evaluate(model_cfg: Mapping[str, Any], tcfg: Mapping[str, Any], train_ds: Dataset, val_ds: MotionDataset,
                       out: str | Path, progress: bool = True, device: Any = "cpu") -> dict[str, Any]:
    """Train from the configured ``init`` (never the featurisation model object) and evaluate on ``val_ds``, both on
    ``device``."""
    out = Path(out)
    model = build_model(model_cfg, init=str(tcfg["init"]), seed=int(tcfg["seed"]))
    info = train_model(model, train_ds, tcfg, out, val_ds=None, progress=progress, device=device)
    ev = evaluate(model, val_ds, batch_size=int(tcfg["eval_batch_size"]), device=device)
    result = {"init": tcfg["init"], "seed": tcfg["seed"], "train_items": len(cast(Sized, train_ds)),
              "steps": info["steps"], "metrics": ev["metrics"],
              "per_sample": {k: np.asarray(v).tolist() for k, v in ev["per_sample"].items()}}
    write_json(out / "metrics.json", result)
    return result


def composition(result: Any, sources: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-source counts and fractions of a selection, weighted (repeat counts) and unweighted."""
    labels = np.asarray(list(sources))
    sel = labels[result.indices]
    w = result.repeat_counts()
    pool = {s: int((labels == s).sum()) for s in sorted(set(labels.tolist()))}
    out = {}
    for s in pool:
        n = int((sel == s).sum())
        out[s] = {"selected": n, "pool": pool[s], "fraction_of_selection": n / max(len(sel), 1),
                  "fraction_of_pool_taken": n / max(pool[s], 1),
                  "weighted_share": float(w[sel == s].sum() / max(w.sum(), 1))}
    return out


