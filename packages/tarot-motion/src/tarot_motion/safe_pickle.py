"""Restricted unpicklers for ScenarioNet databases and legacy MetaDrive scenario files.

Pickles are untrusted input. The unpicklers here resolve only the handful of globals that real files reference (numpy
array reconstruction, ``builtins.int``, ``collections.defaultdict`` and, for the legacy MetaDrive files, three enum
classes that we define ourselves). Anything else is rejected with a one-line :class:`MotionDataError` naming the file
and the global.
"""

from __future__ import annotations

import collections
import enum
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MotionDataError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY_GLOBALS[(_mod, "_reconstruct")] = _multiarray._reconstruct
    _NUMPY_GLOBALS[(_mod, "scalar")] = _multiarray.scalar

SCENARIONET_GLOBALS: dict[tuple[str, str], Any] = {
    **_NUMPY_GLOBALS,
    ("builtins", "int"): int,
    ("collections", "defaultdict"): collections.defaultdict,
}


class AgentType(enum.Enum):
    """Legacy MetaDrive agent type (values as stored in metadrive-simulator 0.3.0.1 pickles)."""

    UNSET = 0
    VEHICLE = 1
    PEDESTRIAN = 2
    CYCLIST = 3
    OTHER = 4


class RoadLineType(enum.Enum):
    """Legacy MetaDrive road-line type."""

    UNKNOWN = 0
    BROKEN_SINGLE_WHITE = 1
    SOLID_SINGLE_WHITE = 2
    SOLID_DOUBLE_WHITE = 3
    BROKEN_SINGLE_YELLOW = 4
    BROKEN_DOUBLE_YELLOW = 5
    SOLID_SINGLE_YELLOW = 6
    SOLID_DOUBLE_YELLOW = 7
    PASSING_DOUBLE_YELLOW = 8


class RoadEdgeType(enum.Enum):
    """Legacy MetaDrive road-edge type."""

    UNKNOWN = 0
    BOUNDARY = 1
    MEDIAN = 2


LEGACY_GLOBALS: dict[tuple[str, str], Any] = {
    **_NUMPY_GLOBALS,
    **{("__main__", c.__name__): c for c in (AgentType, RoadLineType, RoadEdgeType)},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fh: Any, allowed: dict[tuple[str, str], Any], path: Path) -> None:
        super().__init__(fh)
        self._allowed = allowed
        self._path = path

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise MotionDataError(
                self._path, None, f"pickle references disallowed global {module}.{name} (refusing to load)"
            ) from None


def _load(path: str | Path, allowed: dict[tuple[str, str], Any]) -> Any:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, allowed, path).load()
    except MotionDataError:
        raise
    except FileNotFoundError:
        raise MotionDataError(path, None, "file not found") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError) as exc:
        raise MotionDataError(path, None, f"not a readable pickle ({type(exc).__name__}: {exc})") from None


def load_scenarionet_pickle(path: str | Path) -> Any:
    """Load a ScenarioNet pickle (scenario, summary or mapping) with the restricted allow-list."""
    return _load(path, SCENARIONET_GLOBALS)


def load_legacy_pickle(path: str | Path) -> Any:
    """Load a legacy MetaDrive scenario pickle (enum members under ``__main__``) with the restricted allow-list."""
    return _load(path, LEGACY_GLOBALS)
