r"""Model embeddings as a feature source for the same selectors (the "embeddings + selector" baselines).

Selection works on any ``[N, k]`` features. The literature reports strong *embedding* baselines for targeted
selection (e.g. representation-based selection in RDS+ and CRDS): a sample is represented by a hidden layer of the
model instead of its loss gradient. :class:`EmbeddingFeaturizer` plugs such a representation into
:func:`tarot.featurize_to_store`, so the embedding store has the same layout, resumability, sharding and checkpoint
sum as a gradient store, and every selector (and the whole report) runs on it unchanged:

.. math:: \phi(z) = \sum_c w_c\, P\, e(z; \theta_c), \qquad e(z;\theta) \in \mathbb{R}^d,

with P the identity (``proj_dim=None``, k = d) or a seeded JL projection to ``proj_dim`` (:class:`tarot.Projector`).
The domain packages provide ``embed`` for their models (the CNN's penultimate layer, the LLM's mean last hidden
state, the motion encoder's output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tarot.features.gradients import eval_mode, move_batch, resolve_device
from tarot.features.projection import Projector

EmbedFn = Callable[[torch.nn.Module, Any], torch.Tensor]


class EmbeddingFeaturizer:
    """Per-sample embeddings ``embed(model, batch) -> [B, d]`` as store features (duck-types the two calls
    :func:`tarot.featurize_to_store` makes: :meth:`per_sample_grads` then :meth:`project`).

    Parameters
    ----------
    model : torch.nn.Module
        Evaluated in ``eval()`` mode under ``torch.no_grad()``; checkpoints passed to the store are loaded into it.
    embed : callable
        ``embed(model, batch)`` → float tensor ``[B, d]`` for a collated batch.
    dim : int
        Embedding size d.
    proj_dim : int, optional
        Project to k = ``proj_dim`` with a seeded Rademacher JL matrix; None keeps the embedding (k = d).
    seed : int
        Seed of the projection.
    """

    precondition = None  # embeddings are not preconditioned

    def __init__(self, model: torch.nn.Module, embed: EmbedFn, dim: int, proj_dim: int | None = None,
                 seed: int = 0, device: str | torch.device | None = None) -> None:
        if not callable(embed):
            raise TypeError("EmbeddingFeaturizer: embed must be callable(model, batch) -> [B, d] tensor")
        if int(dim) <= 0:
            raise ValueError(f"EmbeddingFeaturizer: dim must be positive, got {dim}")
        self.device = resolve_device(model, device)
        self.model = model.to(self.device)
        self.embed = embed
        self.dim = int(dim)
        self.projector: Projector | IdentityProjection = (
            IdentityProjection(self.dim) if proj_dim is None else
            Projector(self.dim, int(proj_dim), seed=seed, device=self.device))

    @property
    def proj_dim(self) -> int:
        """Feature dimension k (d without a projection)."""
        return self.projector.proj_dim

    def config(self) -> dict[str, Any]:
        """Description recorded in the store manifest."""
        return {"kind": "embedding", "embed": getattr(self.embed, "__name__", type(self.embed).__name__),
                "dim": self.dim, "projector": self.projector.config()}

    def per_sample_grads(self, batch: Any) -> torch.Tensor:
        """The batch's embeddings ``[B, d]`` (float32); the name is the store's protocol, no gradient is taken."""
        with eval_mode(self.model), torch.no_grad():
            out = self.embed(self.model, move_batch(batch, self.device))
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != self.dim:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"EmbeddingFeaturizer: embed returned {shape}, expected [batch, {self.dim}]")
        return out.to(torch.float32)

    def project(self, emb: torch.Tensor) -> torch.Tensor:
        """Identity, or the seeded JL projection to ``proj_dim``."""
        return self.projector.project_chunks([emb])


class IdentityProjection:
    """k = d: features are the embeddings themselves (same interface as :class:`tarot.Projector`)."""

    def __init__(self, dim: int) -> None:
        self.proj_dim = self.input_dim = int(dim)

    def config(self) -> dict[str, Any]:
        return {"type": "identity", "input_dim": self.input_dim, "proj_dim": self.proj_dim}

    def project_chunks(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        return chunks[0].to(torch.float32)
