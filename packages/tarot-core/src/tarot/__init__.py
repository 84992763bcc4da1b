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
    "PairedDifference": "tarot.app.compare",
    "method_verdict": "tarot.app.compare",
    "paired_difference": "tarot.app.compare",
    "paired_difference_seeds": "tarot.app.compare",
    "featurize_distributed": "tarot.features.distributed",
    "merge_shards": "tarot.features.distributed",
    "EmbeddingFeaturizer": "tarot.features.embeddings",
    "Checkpoint": "tarot.features.gradients",
    "GradientFeaturizer": "tarot.features.gradients",
    "FactorizedGradientFeaturizer": "tarot.features.factorized",
    "gradient_featurizer": "tarot.features.factorized",
    "LossAdapter": "tarot.features.gradients",
    "featurize_to_store": "tarot.features.featurize",
    "OTResult": "tarot.ot",
    "entropic_ot": "tarot.ot",
    "exact_ot": "tarot.ot",
    "Projector": "tarot.features.projection",
    "html_table": "tarot.app.report",
    "write_report": "tarot.app.report",
    "SelectionResult": "tarot.result",
    "FeatureStore": "tarot.features.store",
    "ShardedStore": "tarot.features.sharded",
    "open_store": "tarot.features.sharded",
    "StoreError": "tarot.errors",
    "MissingSplitError": "tarot.errors",
    "make_mixture": "tarot.app.synthetic",
    "RepeatSampler": "tarot.weighting",
    "WeightedSubset": "tarot.weighting",
    "repeat_indices": "tarot.weighting",
    "Whitener": "tarot.geometry.whitening",
    "whiten": "tarot.geometry.whitening",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value
    try:  # a submodule used as an attribute (tarot.features.store, tarot.selectors, ...)
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysis and IDEs see the eager imports
    from tarot.api import select  # noqa: F401
    from tarot.app.compare import PairedDifference, method_verdict, paired_difference, paired_difference_seeds  # noqa: F401
    from tarot.app.report import html_table, write_report  # noqa: F401
    from tarot.app.synthetic import make_mixture  # noqa: F401
    from tarot.errors import MissingSplitError, StoreError  # noqa: F401
    from tarot.features.distributed import featurize_distributed, merge_shards  # noqa: F401
    from tarot.features.embeddings import EmbeddingFeaturizer  # noqa: F401
    from tarot.features.factorized import FactorizedGradientFeaturizer, gradient_featurizer  # noqa: F401
    from tarot.features.featurize import featurize_to_store  # noqa: F401
    from tarot.features.gradients import Checkpoint, GradientFeaturizer, LossAdapter  # noqa: F401
    from tarot.features.projection import Projector  # noqa: F401
    from tarot.features.store import FeatureStore  # noqa: F401
    from tarot.geometry.whitening import Whitener, whiten  # noqa: F401
    from tarot.ot import OTResult, entropic_ot, exact_ot  # noqa: F401
    from tarot.result import SelectionResult  # noqa: F401
    from tarot.weighting import RepeatSampler, WeightedSubset, repeat_indices  # noqa: F401
