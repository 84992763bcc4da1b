"""The :class:`SelectionResult` returned by :func:`tarot.select`, with save/load.

A result directory holds

``result.json``
    method, ratio, OT distance, resolved config, diagnostics (JSON-serialisable), sizes and a format version;
``arrays.npz``
    ``indices`` (int64, sorted ascending, into the candidate set), optional ``weights`` (int64 repeat counts aligned
    with ``indices``), optional ``probabilities`` (float64 normalised weights), optional ``potentials`` (float64 f of
    the final selection measure) and optional per-candidate ``scores`` used by score-based selectors.

Arrays are stored read-only in memory (``writeable = False``) so that reporting or plotting can never change the
weights a training run will use (reference defect B7).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from tarot.fileio import naming_write_errors, plain

FORMAT_VERSION = 1
_ARRAY_FIELDS = ("indices", "weights", "probabilities", "potentials", "scores")


@overload
def _frozen(array: np.ndarray, dtype: Any) -> np.ndarray: ...
@overload
def _frozen(array: None, dtype: Any) -> None: ...
@overload
def _frozen(array: np.ndarray | None, dtype: Any) -> np.ndarray | None: ...
def _frozen(array: np.ndarray | None, dtype: Any) -> np.ndarray | None:
    """A read-only copy of ``array`` as ``dtype`` (None stays None)."""
    if array is None:
        return None
    out = np.array(array, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass
class SelectionResult:
    """Outcome of one selection run.

    Attributes
    ----------
    indices : numpy.ndarray
        Selected candidate rows, int64, sorted ascending, unique.
    method : str
        Selector name.
    n_candidates : int
        Size N of the candidate pool the indices refer to.
    ratio : float
        ``len(indices) / n_candidates``.
    ot_distance : float or None
        OT_ε(uniform on the selection, uniform on the targets) in whitened feature space, when computed.
    weights : numpy.ndarray or None
        Integer repeat counts r_i ≥ r_min aligned with ``indices`` (Σ r_i = R), or None when weighting is off.
    probabilities : numpy.ndarray or None
        Normalised weights a_i (Σ a_i = 1) before integer rounding.
    potentials : numpy.ndarray or None
        Dual potentials f of the final selection measure (section 7.2 convention of the spec).
    scores : numpy.ndarray or None
        Per-candidate scores (length N) for score-based selectors.
    config : dict
        The resolved configuration (every default made explicit).
    diagnostics : dict
        Selector-specific diagnostics (OTM curves, layer sizes, solver iterations, warnings, …).
    candidate_ids, candidate_sources : list or None
        Optional ids / source labels of the whole candidate pool (length N).
    merged_targets : int
        Number of target samples merged into training (each with ``target_repeats``); 0 when merging is off.
    """

    indices: np.ndarray
    method: str
    n_candidates: int
    ratio: float
    ot_distance: float | None = None
    weights: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    potentials: np.ndarray | None = None
    scores: np.ndarray | None = None
    config: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)
    candidate_ids: list | None = None
    candidate_sources: list | None = None
    merged_targets: int = 0
    target_repeats: int = 1

    def __post_init__(self) -> None:
        self.indices = _frozen(self.indices, np.int64)
        if self.indices.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {self.indices.shape}")
        if len(self.indices) and (np.any(np.diff(self.indices) <= 0)):
            raise ValueError("indices must be strictly increasing (sorted, unique)")
        if len(self.indices) and (self.indices[0] < 0 or self.indices[-1] >= self.n_candidates):
            raise ValueError(f"indices must lie in [0, {self.n_candidates})")
        self.weights = _frozen(self.weights, np.int64)
        self.probabilities = _frozen(self.probabilities, np.float64)
        self.potentials = _frozen(self.potentials, np.float64)
        self.scores = _frozen(self.scores, np.float64)
        for name in ("weights", "probabilities", "potentials"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != self.indices.shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {self.indices.shape} (aligned with indices)")
        if self.scores is not None and self.scores.shape != (self.n_candidates,):
            raise ValueError(f"scores has shape {self.scores.shape}, expected ({self.n_candidates},)")

    # ------------------------------------------------------------------ views
    @property
    def size(self) -> int:
        """Number of selected candidates."""
        return int(len(self.indices))

    def repeat_counts(self) -> np.ndarray:
        """Repeat count of every selected candidate (all ones without weighting)."""
        if self.weights is None:
            return np.ones(self.size, dtype=np.int64)
        return self.weights.copy()

    def composition(self, sources: list | None = None) -> dict[str, int]:
        """Count of selected candidates per source label.

        Parameters
        ----------
        sources : list, optional
            Per-candidate labels (length N). Defaults to ``candidate_sources``; without labels everything counts as
            ``"all"``.
        """
        labels = sources if sources is not None else self.candidate_sources
        if labels is None:
            return {"all": self.size}
        if len(labels) != self.n_candidates:
            raise ValueError(f"sources has {len(labels)} labels, expected {self.n_candidates}")
        counts = Counter(str(labels[i]) for i in self.indices)
        return dict(sorted(counts.items()))

    def summary(self) -> dict[str, Any]:
        """Small JSON-friendly summary (used by the CLI and reports)."""
        return {
            "method": self.method,
            "selected": self.size,
            "n_candidates": self.n_candidates,
            "ratio": self.ratio,
            "ot_distance": self.ot_distance,
            "weighted": self.weights is not None,
            "training_items": int(self.repeat_counts().sum()) + self.merged_targets * self.target_repeats,
            "merged_targets": self.merged_targets,
            "composition": self.composition(),
        }

    # ------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, extra_files: Mapping[str, str] | None = None) -> Path:
        """Write the result into directory ``path`` atomically (a crash never leaves a half-written result).

        ``extra_files`` (file name → text, e.g. the ``config.yaml`` of the run) are written with it and in place
        before the completeness marker, so that they always belong to the result beside them.

        The files are first written into a temporary directory next to ``path`` and then renamed into place. An
        existing result at ``path`` is replaced file by file (``result.json``, the completeness marker, is removed
        first and renamed in last, so a crash in between leaves no result that looks complete); anything else in the
        folder (a report, a config) is kept. A non-empty folder that is not a saved result is refused: nothing that
        :meth:`save` did not write is ever deleted.

        Raises
        ------
        FileExistsError
            If ``path`` is a file, or a non-empty directory without ``result.json``.
        """
        path = Path(path)
        ours = path.is_dir() and ((path / "result.json").is_file() or (path / "arrays.npz").is_file())
        if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not ours)):
            raise FileExistsError(f"{path}: exists and is not a saved SelectionResult (no result.json); "
                                  "choose another path")
        reserved = {"arrays.npz", "result.json"}
        for name in extra_files or {}:
            if name in reserved or Path(name).name != name:
                raise ValueError(f"extra file name {name!r}: must be a plain file name other than {sorted(reserved)}")
        with naming_write_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
            self._write(path, tmp, dict(extra_files or {}))
        return path

    def _write(self, path: Path, tmp: Path, extra: dict[str, str]) -> None:
        """Write the files into the fresh folder ``tmp``, then move them to ``path`` (see :meth:`save`)."""
        try:
            for name, text in extra.items():
                (tmp / name).write_text(text, encoding="utf-8")
            arrays = {name: getattr(self, name) for name in _ARRAY_FIELDS if getattr(self, name) is not None}
            np.savez(tmp / "arrays.npz", **arrays)
            meta = {
                "format_version": FORMAT_VERSION,
                "method": self.method,
                "n_candidates": int(self.n_candidates),
                "ratio": float(self.ratio),
                "ot_distance": None if self.ot_distance is None else float(self.ot_distance),
                "config": plain(self.config),
                "diagnostics": plain(self.diagnostics),
                "candidate_ids": plain(self.candidate_ids),
                "candidate_sources": plain(self.candidate_sources),
                "merged_targets": int(self.merged_targets),
                "target_repeats": int(self.target_repeats),
                "summary": plain(self.summary()),
            }
            (tmp / "result.json").write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")
            if path.exists():
                (path / "result.json").unlink(missing_ok=True)
                for name in ("arrays.npz", *extra):
                    os.replace(tmp / name, path / name)
                os.replace(tmp / "result.json", path / "result.json")
                tmp.rmdir()
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():  # a failed write leaves nothing behind
                shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SelectionResult:
        """Load a result written by :meth:`save`."""
        path = Path(path)
        meta_file, arr_file = path / "result.json", path / "arrays.npz"
        for required in (meta_file, arr_file):
            if not required.is_file():
                raise FileNotFoundError(f"{required}: missing; {path} is not a saved SelectionResult directory")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
        with np.load(arr_file) as npz:
            arrays = {name: npz[name] for name in _ARRAY_FIELDS if name in npz.files}
        return cls(
            indices=arrays["indices"],
            method=meta["method"],
            n_candidates=meta["n_candidates"],
            ratio=meta["ratio"],
            ot_distance=meta["ot_distance"],
            weights=arrays.get("weights"),
            probabilities=arrays.get("probabilities"),
            potentials=arrays.get("potentials"),
            scores=arrays.get("scores"),
            config=meta["config"],
            diagnostics=meta["diagnostics"],
            candidate_ids=meta["candidate_ids"],
            candidate_sources=meta["candidate_sources"],
            merged_targets=meta.get("merged_targets", 0),
            target_repeats=meta.get("target_repeats", 1),
        )
