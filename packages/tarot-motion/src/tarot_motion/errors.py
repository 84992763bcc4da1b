"""Error type used for every bad-input condition in tarot-motion."""

from __future__ import annotations

from pathlib import Path


class MotionDataError(ValueError):
    """Bad input data: the message is one line naming the file, the key and what was expected."""

    def __init__(self, path: str | Path | None, key: str | None, problem: str) -> None:
        where = str(path) if path is not None else "<input>"
        if key:
            where = f"{where}: {key}"
        msg = f"{where}: {problem}".replace("\n", " ")
        super().__init__(msg)
        self.path = path
        self.key = key
        self.problem = problem


def write_json(path: str | Path, obj: object) -> Path:
    """Write JSON atomically (temporary file + rename): a crash never leaves a truncated file that looks complete."""
    import json

    from tarot.fileio import write_text_atomic

    return write_text_atomic(path, json.dumps(obj, indent=1, default=float))
