"""YAML configs with dotted ``key=value`` overrides; the resolved config is saved beside every output.

Resolution order: packaged defaults (``tarot_vision/configs/<name>.yaml``) ← a user YAML file ← command-line
overrides (``train.steps=200``, ``seeds=[0,1,2]``; values are parsed as YAML), resolved by :mod:`tarot.app.config`.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from tarot.app.config import ConfigError, load_config, save_config


def packaged_config(name: str) -> dict[str, Any]:
    """Defaults shipped with the package (``configs/<name>.yaml``)."""
    res = importlib.resources.files("tarot_vision") / "configs" / f"{name}.yaml"
    if not res.is_file():
        raise ConfigError(f"no packaged config {name!r}")
    return yaml.safe_load(res.read_text()) or {}


def resolve_config(name: str, path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                   preset: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The packaged ``name`` defaults (``demo``, ``seg``, ``lds``) ← ``preset`` (e.g. ``--quick``) ← the YAML file at
    ``path`` ← ``overrides`` (``key.sub=value``); see :func:`tarot.app.config.load_config`."""
    return load_config(packaged_config(name), path, overrides, preset)


def save_resolved(cfg: Mapping[str, Any], out_dir: str | os.PathLike, command: str) -> Path:
    """Write ``<out_dir>/config.resolved.yaml`` (atomically) with the command line and environment facts."""
    doc = {
        "command": command,
        "argv": sys.argv,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "versions": _versions(),
        "config": json.loads(json.dumps(cfg, default=str)),
    }
    return save_config(doc, out_dir, "config.resolved.yaml")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tarot-core", "tarot-vision", "torch", "torchvision", "numpy", "mmsegmentation", "mmcv-lite", "mmcv"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
