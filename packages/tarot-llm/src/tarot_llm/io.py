"""JSON-lines reading and atomic writing with one-line, file-and-line error messages."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tarot.fileio import write_text_atomic


class DataError(ValueError):
    """Bad input data: the message is one line naming the file (and line) and what was expected."""


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for every non-blank line of a JSON-lines file.

    Parameters
    ----------
    path
        File to read (UTF-8).

    Raises
    ------
    DataError
        If a line is not valid JSON or not a JSON object; the message names ``file:line``.
    FileNotFoundError
        If the file does not exist.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg}); expected one object per line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            yield lineno, rec


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename; a crash never leaves a half-written
    file under the final name (:func:`tarot.fileio.write_text_atomic`)."""
    return write_text_atomic(path, text)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write records as JSON lines, atomically (see :func:`atomic_write_text`)."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def fingerprint(*parts: Any) -> str:
    """SHA-256 over the inputs of a finished step, so a rerun can reuse it only when nothing changed.

    Each part is a path (a file's bytes; a directory's files in sorted order, by relative name and bytes) or any
    JSON-serialisable value (hashed as sorted-key JSON).
    """
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, os.PathLike) and Path(part).is_dir():
            root = Path(part)
            for f in sorted(p for p in root.rglob("*") if p.is_file()):
                h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
        elif isinstance(part, os.PathLike):
            h.update(Path(part).read_bytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def reusable(path: str | os.PathLike, fp: str) -> dict[str, Any] | None:
    """The JSON record at ``path`` if it exists and carries ``"fingerprint": fp`` (a finished, unchanged step)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) and rec.get("fingerprint") == fp else None
