"""YAML configuration with dotted command-line overrides; the resolved config is saved beside every output."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .model import MODEL_DEFAULTS
from .preprocess import DEFAULT_CONFIG as PREPROCESS_DEFAULTS
from .train import TRAIN_DEFAULTS

FEATURIZE_DEFAULTS: dict[str, Any] = {
    "proj_dim": 512,
    "seed": 0,
    "projector": "rademacher",
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
}


class ConfigError(ValueError):
    """A bad configuration key or value (one line, naming the key)."""


def _merge(base: dict[str, Any], over: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        key = f"{where}.{k}" if where else k
        if k not in out:
            raise ConfigError(f"{key}: unknown config key (known here: {', '.join(sorted(out))})")
        if isinstance(out[k], dict) and not out[k] and isinstance(v, Mapping):
            out[k] = copy.deepcopy(dict(v))  # free-form section (e.g. select.options)
        elif isinstance(out[k], dict) and isinstance(v, Mapping):
            out[k] = _merge(out[k], v, key)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=0.001")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- ``base`` <- YAML file <- ``overrides`` (``section.key=value``); unknown keys are errors."""
    cfg = _merge(DEFAULTS, base or {}, "")
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{p}: expected a YAML mapping at the top level")
        try:
            cfg = _merge(cfg, loaded, "")
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
    for item in overrides or []:
        keys, value = parse_override(item)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        cfg = _merge(cfg, nested, "")
    return cfg


def save_config(cfg: Mapping[str, Any], out_dir: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config as YAML into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    tmp = out / (name + ".tmp")
    tmp.write_text(yaml.safe_dump(_plain(cfg), sort_keys=False))
    os.replace(tmp, path)
    return path


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x
