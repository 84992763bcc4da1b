"""TAROT: targeted data selection via optimal transport."""

__version__ = "0.1.0"

from tarot.gradients import Checkpoint, GradientFeaturizer, LossAdapter, featurize_to_store  # noqa: E402, F401
from tarot.projection import Projector  # noqa: E402, F401
from tarot.store import FeatureStore, StoreError  # noqa: E402, F401
