"""Atomic file writes and plain-type serialisation shared by the feature store, results, configs and the domain
packages."""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def naming_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Give an ``OSError`` raised inside the block without a file name (a full disk, ``File too large`` under a
    file-size limit, an exceeded quota: ``write`` reports none) the name of ``path``, the artifact being written, so
    that the one-line error of a command says where it could not write. Errors that name a file pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise type(exc)(exc.errno, f"{exc.strerror or exc} while writing", str(path)) from exc


def _temporary_name(path: Path) -> Path:
    """A name beside ``path`` that no concurrent writer (another process or rank) shares."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through a temporary file beside it and a rename, so that a crash never leaves
    a half-written checkpoint under that name (the domain packages' training states and final weights)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` so that a crash never leaves a half-written file under that name.

    The text goes to a uniquely named temporary file in the same directory (concurrent writers, e.g. the ranks of a
    sharded run, never share it), is flushed and fsynced, then renamed over ``path`` with ``os.replace``; the
    directory is fsynced where the OS allows it. Missing parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name opened exclusively (not mkstemp, whose 0600 mode would make every artifact private to its owner)
    tmp = _temporary_name(path)
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def plain(x: Any) -> Any:
    """Plain YAML/JSON types inside nested containers: mappings → dicts with string keys, tuples → lists, numpy
    arrays and scalars → lists and Python numbers, paths → strings, non-finite floats → their string (JSON has none).
    """
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return plain(x.item())
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x
