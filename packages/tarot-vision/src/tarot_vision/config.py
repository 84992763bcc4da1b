"""YAML configs with dotted ``key=value`` overrides; the resolved config is saved beside every output.

Resolution order: packaged defaults (``tarot_vision/configs/<name>.yaml``) ← a user YAML file ← command-line
overrides (``train.steps=200``, ``seeds=[0,1,2]``; values are parsed as YAML). Unknown keys are errors, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import copy
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


class ConfigError(ValueError):
    """Bad config file or override."""


def packaged_config(name: str) -> dict[str, Any]:
    """Defaults shipped with the package (``configs/<name>.yaml``)."""
    res = importlib.resources.files("tarot_vision") / "configs" / f"{name}.yaml"
    if not res.is_file():
        raise ConfigError(f"no packaged config {name!r}")
    return yaml.safe_load(res.read_text()) or {}


def _merge(base: dict, update: Mapping, where: str, prefix: str = "") -> dict:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(map(str, base)))
            raise ConfigError(f"{where}: unknown config key {dotted!r} (known here: {known})")
        if isinstance(base[key], dict) and isinstance(value, Mapping):
            _merge(base[key], value, where, f"{dotted}.")
        else:
            base[key] = copy.deepcopy(value)
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` → (["a", "b"], 3); the value is parsed as YAML (``[0,1]``, ``null``, ``true``, ``0.5``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. train.steps=200)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({str(exc).splitlines()[0]})") from None
    return key.split("."), value


def resolve_config(
    name: str,
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    preset: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Defaults ← preset (e.g. ``--quick``) ← YAML file ← overrides.

    Parameters
    ----------
    name : str
        Packaged defaults to start from (``demo``, ``seg``, ``lds``).
    path : path-like, optional
        User YAML file (a mapping with a subset of the default keys).
    overrides : sequence of str
        ``key.sub=value`` strings.
    preset : mapping, optional
        Nested values applied right after the defaults (so files and overrides still win).
    """
    cfg = packaged_config(name)
    if preset:
        _merge(cfg, preset, "preset")
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file missing")
        try:
            user = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(user, Mapping):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(user).__name__}")
        _merge(cfg, user, str(p))
    for text in overrides:
        keys, value = parse_override(text)
        nested: dict = value
        for k in reversed(keys):
            nested = {k: nested}
        _merge(cfg, nested, f"override {text!r}")
    return cfg


def save_resolved(cfg: Mapping[str, Any], out_dir: str | os.PathLike, command: str) -> Path:
    """Write ``<out_dir>/config.resolved.yaml`` (atomically) with the command line and environment facts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": command,
        "argv": sys.argv,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "versions": _versions(),
        "config": json.loads(json.dumps(cfg, default=str)),
    }
    path = out / "config.resolved.yaml"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.replace(path)
    return path


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tarot-core", "tarot-vision", "torch", "torchvision", "numpy", "mmsegmentation", "mmcv-lite", "mmcv"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
