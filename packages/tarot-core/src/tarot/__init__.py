"""TAROT: targeted data selection via optimal transport.

The public names below are imported on first use (PEP 562), so ``import tarot`` and the ``tarot --help`` /
``--version`` of every command line return at once; torch and POT load only when a name that needs them is
used. ``from tarot import select`` and ``tarot.select`` work as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tarot._version import __version__

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "select": "tarot.api",
    "PairedDifference": "tarot.compare",
    "method_verdict": "tarot.compare",
    "paired_difference": "tarot.compare",
    "paired_difference_seeds": "tarot.compare",
    "featurize_distributed": "tarot.distributed",
    "merge_shards": "tarot.distributed",
    "EmbeddingFeaturizer": "tarot.embeddings",
    "Checkpoint": "tarot.gradients",
    "GradientFeaturizer": "tarot.gradients",
    "LossAdapter": "tarot.gradients",
    "featurize_to_store": "tarot.gradients",
    "OTResult": "tarot.ot",
    "entropic_ot": "tarot.ot",
    "exact_ot": "tarot.ot",
    "Projector": "tarot.projection",
    "html_table": "tarot.report",
    "write_report": "tarot.report",
    "SelectionResult": "tarot.result",
    "FeatureStore": "tarot.store",
    "StoreError": "tarot.store",
    "make_mixture": "tarot.synthetic",
    "RepeatSampler": "tarot.weighting",
    "WeightedSubset": "tarot.weighting",
    "repeat_indices": "tarot.weighting",
    "Whitener": "tarot.whitening",
    "whiten": "tarot.whitening",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value
    try:  # a submodule used as an attribute (tarot.store, tarot.selectors, ...)
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysis and IDEs see the eager imports
    from tarot.api import select  # noqa: F401
    from tarot.compare import PairedDifference, method_verdict, paired_difference, paired_difference_seeds  # noqa: F401
    from tarot.distributed import featurize_distributed, merge_shards  # noqa: F401
    from tarot.embeddings import EmbeddingFeaturizer  # noqa: F401
    from tarot.gradients import Checkpoint, GradientFeaturizer, LossAdapter, featurize_to_store  # noqa: F401
    from tarot.ot import OTResult, entropic_ot, exact_ot  # noqa: F401
    from tarot.projection import Projector  # noqa: F401
    from tarot.report import html_table, write_report  # noqa: F401
    from tarot.result import SelectionResult  # noqa: F401
    from tarot.store import FeatureStore, StoreError  # noqa: F401
    from tarot.synthetic import make_mixture  # noqa: F401
    from tarot.weighting import RepeatSampler, WeightedSubset, repeat_indices  # noqa: F401
    from tarot.whitening import Whitener, whiten  # noqa: F401
