"""Nested YAML configs with dotted ``key=value`` overrides, shared by the domain packages' command lines.

Resolution order: defaults ← preset (e.g. a ``--quick`` mode) ← a user YAML file ← command-line overrides
(``train.lr=0.001``, ``seeds=[0,1,2]``; values are parsed as YAML). Every key must already exist in the defaults, so
a typo is an error naming the key instead of a silent fall-back to the default. A section whose default is an empty
mapping is free-form (e.g. options handed through to a selector). The resolved config is written beside every
artifact with :func:`save_config`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tarot.fileio import plain, write_text_atomic  # noqa: F401  (plain re-exported)


class ConfigError(ValueError):
    """A bad config file, key or override (one line, naming the file or key)."""


def merge_config(base: Mapping[str, Any], update: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """A deep copy of ``base`` with ``update`` merged in; keys of ``update`` must exist in ``base``.

    Parameters
    ----------
    base, update
        Nested mappings. A mapping in ``update`` merges into the mapping of ``base`` at the same key; any other
        value replaces it. An empty mapping in ``base`` accepts any keys.
    where
        Prefix of error messages (a file name, ``override 'a=b'``).

    Raises
    ------
    ConfigError
        ``<where>: unknown config key 'a.b' (known here: ...)``.
    """
    out = copy.deepcopy(dict(base))
    _merge_into(out, update, where, "")
    return out


def _merge_into(base: dict, update: Mapping, where: str, prefix: str) -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(map(str, base)))
            raise ConfigError(f"{where + ': ' if where else ''}unknown config key {dotted!r} (known here: {known})")
        if isinstance(base[key], Mapping) and isinstance(value, Mapping):
            if base[key]:
                base[key] = dict(base[key])
                _merge_into(base[key], value, where, f"{dotted}.")
            else:  # free-form section
                base[key] = copy.deepcopy(dict(value))
        else:
            base[key] = copy.deepcopy(value)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` → (``["a", "b"]``, 3); the value is parsed as YAML (``[0,1]``, ``null``, ``true``, ``0.5``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. train.lr=0.001)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({str(exc).splitlines()[0]})") from None
    return key.split("."), value


def apply_overrides(cfg: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``cfg`` with every ``key.sub=value`` override applied in order (unknown keys are errors)."""
    out = dict(cfg)
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        out = merge_config(out, nested, f"override {text!r}")
    return out


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is ``{}``); errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{line}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(loaded).__name__}")
    return dict(loaded)


def load_config(
    defaults: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    preset: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Defaults ← ``preset`` ← YAML file at ``path`` ← ``overrides``; returns a new nested dict.

    Parameters
    ----------
    defaults
        Every allowed key with its default value.
    path
        Optional user YAML file holding a subset of the keys.
    overrides
        ``key.sub=value`` strings, applied last.
    preset
        Nested values applied right after the defaults (so files and overrides still win).
    """
    cfg = merge_config(defaults, preset or {}, "preset")
    if path is not None:
        cfg = merge_config(cfg, read_yaml_mapping(path), str(path))
    return apply_overrides(cfg, overrides)


def save_config(cfg: Mapping[str, Any], directory: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write ``cfg`` as YAML to ``directory/name`` atomically (:func:`tarot.fileio.write_text_atomic`)."""
    return write_text_atomic(Path(directory) / name, yaml.safe_dump(plain(cfg), sort_keys=False))
