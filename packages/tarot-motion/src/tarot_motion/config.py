"""YAML configuration with dotted command-line overrides; the resolved config is saved beside every output."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tarot.app.config import ConfigError, save_config  # noqa: F401  (re-exported for the package)
from tarot.app.config import load_config as _load

from .defaults import MODEL_DEFAULTS, TRAIN_DEFAULTS
from .preprocess import DEFAULT_CONFIG as PREPROCESS_DEFAULTS

FEATURIZE_DEFAULTS: dict[str, Any] = {
    "proj_dim": 512,
    "seed": 0,
    "projector": "rademacher",  # rademacher | gaussian | sjlt | factorized
    "factor_dim": 32,  # factorized: k_in = k_out per layer
    "params": None,
    "mode": "auto",
    "batch_size": 16,
    "loss_scale": 1e-3,
}
SELECT_DEFAULTS: dict[str, Any] = {
    "method": "fixed_size",
    "ratio": 0.2,
    "seed": 0,
    "weighting": False,
    "merge_targets": False,
    "options": {},  # selector options passed through to tarot.select, e.g. {folds: 5} for otm
}
DATA_DEFAULTS: dict[str, Any] = {
    "candidates": [],  # list of {path, label}
    "target": None,  # {path, label}: featurised target split
    "val": None,  # {path, label}: evaluation split of the target domain
    "cache_dir": "runs/cache",
    "workers": 1,
    "skip_invalid": False,
}
DEFAULTS: dict[str, Any] = {
    "data": DATA_DEFAULTS,
    "preprocess": PREPROCESS_DEFAULTS,
    "model": MODEL_DEFAULTS,
    "train": TRAIN_DEFAULTS,
    "featurize": FEATURIZE_DEFAULTS,
    "select": SELECT_DEFAULTS,
    "device": "auto",  # auto | cpu | cuda | cuda:<i> (tarot.app.device): training, evaluation and featurisation
}


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- ``base`` <- YAML file <- ``overrides`` (``section.key=value``); unknown keys are errors
    (:func:`tarot.app.config.load_config`)."""
    return _load(DEFAULTS, path, overrides or [], preset=base)
