"""TAROT: targeted data selection via optimal transport."""

__version__ = "0.1.0"

from tarot.api import select  # noqa: E402, F401
from tarot.compare import PairedDifference, method_verdict, paired_difference, paired_difference_seeds  # noqa: E402, F401
from tarot.distributed import featurize_distributed, merge_shards  # noqa: E402, F401
from tarot.embeddings import EmbeddingFeaturizer  # noqa: E402, F401
from tarot.gradients import Checkpoint, GradientFeaturizer, LossAdapter, featurize_to_store  # noqa: E402, F401
from tarot.ot import OTResult, entropic_ot, exact_ot  # noqa: E402, F401
from tarot.projection import Projector  # noqa: E402, F401
from tarot.report import html_table, write_report  # noqa: E402, F401
from tarot.result import SelectionResult  # noqa: E402, F401
from tarot.store import FeatureStore, StoreError  # noqa: E402, F401
from tarot.synthetic import make_mixture  # noqa: E402, F401
from tarot.weighting import RepeatSampler, WeightedSubset, repeat_indices  # noqa: E402, F401
from tarot.whitening import Whitener, whiten  # noqa: E402, F401
