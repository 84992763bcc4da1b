"""tarot-motion: TAROT targeted data selection for motion prediction.

ScenarioNet databases (read without metadrive/scenarionet, restricted unpickling), a converter for the legacy
MetaDrive pickles, UniTraj-style preprocessing with a durable cache, AutoBot-Ego and Wayformer-Ego (vmap-safe
losses), training, UniTraj's metrics, and the TAROT pipeline on top of tarot-core.

Names are imported lazily so that preprocessing workers do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "AutoBotEgo": "model",
    "WayformerEgo": "wayformer",
    "autobot_loss": "model",
    "AutoBotLossAdapter": "featurize",
    "MotionDataError": "errors",
    "MotionDataset": "data",
    "collate": "data",
    "ScenarioNetDatabase": "scenarionet",
    "read_scenario": "scenarionet",
    "validate_scenario": "scenarionet",
    "aggregate": "metrics",
    "per_sample_metrics": "metrics",
    "convert_metadrive": "convert",
    "legacy_waymo_files": "convert",
    "load_cache": "preprocess",
    "preprocess_database": "preprocess",
    "process_scenario": "preprocess",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'tarot_motion' has no attribute {name!r}")
