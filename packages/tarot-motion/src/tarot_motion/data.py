"""Map-style torch datasets over preprocessed samples and UniTraj-style batching."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

# keys the model, the loss and the metrics need; every value is a tensor (vmap-safe sample pytree)
MODEL_KEYS = (
    "obj_trajs",
    "obj_trajs_mask",
    "track_index_to_predict",
    "map_polylines",
    "map_polylines_mask",
    "center_gt_trajs",
    "center_gt_trajs_mask",
    "center_gt_final_valid_idx",
    "center_objects_type",
)


class MotionDataset(Dataset):
    """Samples of a preprocessed cache (see :func:`tarot_motion.preprocess.load_cache`), optionally a subset.

    ``__getitem__`` returns a dict of tensors (no strings, no batch dimension) with the keys in :data:`MODEL_KEYS`,
    which is what tarot-core's featurizer and :func:`collate` expect. Per-sample string metadata stays available via
    :attr:`sources`, :attr:`ids`, :attr:`folders`.
    """

    def __init__(self, data: dict[str, Any], indices: Sequence[int] | np.ndarray | None = None) -> None:
        n = len(data["dataset_name"])
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        self._t = {k: torch.from_numpy(np.ascontiguousarray(data[k])) for k in MODEL_KEYS}
        self._data = data
        self.sources = [data["dataset_name"][i] for i in self.indices]
        self.folders = [data["source_folder"][i] for i in self.indices]
        self.ids = [f"{data['scenario_id'][i]}/{data['center_objects_id'][i]}" for i in self.indices]

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.indices[i])
        return {k: v[j] for k, v in self._t.items()}

    def subset(self, indices: Sequence[int] | np.ndarray) -> MotionDataset:
        """A dataset over ``self[indices]`` (indices relative to this dataset)."""
        return MotionDataset(self._data, self.indices[np.asarray(indices, dtype=np.int64)])

    def array(self, key: str) -> np.ndarray:
        """Any stored array key, for this dataset's rows."""
        return np.asarray(self._data[key])[self.indices]


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Stack samples into a UniTraj batch ``{"batch_size", "input_dict", "batch_sample_count"}``."""
    inp = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    return {"batch_size": len(samples), "input_dict": inp, "batch_sample_count": len(samples)}


def concat_data(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate several loaded caches (arrays along axis 0, string lists joined)."""
    out: dict[str, Any] = {}
    for k, v in parts[0].items():
        if k == "index":
            out[k] = [p["index"] for p in parts]
        elif isinstance(v, np.ndarray):
            out[k] = np.concatenate([p[k] for p in parts])
        else:
            out[k] = [x for p in parts for x in p[k]]
    return out
