r"""Per-sample gradient features: :math:`\phi(z) = \sum_c w_c\, P\, \Gamma_c(\nabla_\theta L(z; \theta_c))`.

The featurizer differentiates the loss of every sample of a batch separately with respect to a chosen set of
parameters (all ``requires_grad`` parameters by default, or those matching globs), optionally preconditions the
per-sample gradients (:math:`\Gamma_c`), and projects them with a seeded Johnson–Lindenstrauss projector :math:`P`
(:mod:`tarot.features.projection`). :func:`tarot.features.featurize.featurize_to_store` runs it over data sets and
checkpoints and writes a resumable :class:`tarot.features.store.FeatureStore`.

Parameter order
---------------
Differentiated parameters are taken in ``model.named_parameters()`` order (module registration order), after the
filter; each parameter tensor is one projector chunk (flattened row-major). This order is recorded in
:meth:`GradientFeaturizer.config` and is part of the projection's definition.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils._pytree import tree_map

from tarot.features.projection import Projector

__all__ = ["LossAdapter", "Checkpoint", "GradientFeaturizer", "Preconditioner"]

log = logging.getLogger(__name__)


@runtime_checkable
class LossAdapter(Protocol):
    """Per-sample loss of a domain model.

    ``loss(model, params, buffers, sample)`` returns the 0-d loss of ONE sample (``sample`` is a pytree of tensors
    without the batch dimension). Implementations re-add the batch dimension and call
    ``torch.func.functional_call(model, {**params, **buffers}, args)``; they must be vmap-safe (no ``.item()``,
    no data-dependent shapes, no in-place writes to captured tensors, no Python branching on tensor values).
    ``params`` holds the differentiated parameters, ``buffers`` every other parameter and buffer of the model.
    """

    def loss(
        self, model: torch.nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], sample: Any
    ) -> torch.Tensor: ...


@dataclass
class Checkpoint:
    """One model state :math:`\\theta_c` used for featurisation, with its weight :math:`w_c \\ge 0`.

    Parameters
    ----------
    name : str
        Unique label (recorded in the feature store manifest).
    path : str, optional
        A ``torch.save``'d state dict, loaded with ``torch.load(path, weights_only=True)``; a dict with a
        ``"state_dict"`` entry is unwrapped.
    state_dict : dict, optional
        The state dict itself (takes precedence over ``path``).
    weight : float
        :math:`w_c` in :math:`\\phi = \\sum_c w_c P \\Gamma_c`.
    extra : dict, optional
        Anything a preconditioner needs (e.g. Adam moments).
    strict : bool
        Passed to ``model.load_state_dict`` (False for partial states such as adapters only).
    """

    name: str
    path: str | None = None
    state_dict: dict[str, Any] | None = None
    weight: float = 1.0
    extra: dict[str, Any] | None = field(default=None, repr=False)
    strict: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Checkpoint: name must be a non-empty string, got {self.name!r}")
        w = float(self.weight)
        if not w >= 0.0 or w == float("inf"):
            raise ValueError(f"Checkpoint {self.name!r}: weight must be finite and >= 0, got {self.weight!r}")
        self.weight = w

    def load(self) -> dict[str, Any] | None:
        """The state dict to load (None when neither ``state_dict`` nor ``path`` is given: use current weights)."""
        if self.state_dict is not None:
            return self.state_dict
        if self.path is None:
            return None
        obj = torch.load(self.path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise ValueError(
                f"Checkpoint {self.name!r}: {self.path} holds a {type(obj).__name__}, expected a state dict"
            )
        return obj

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary for manifests."""
        return {"name": self.name, "weight": self.weight, "path": None if self.path is None else str(self.path)}


Preconditioner = Callable[[dict[str, torch.Tensor], Checkpoint | None], dict[str, torch.Tensor]]


def _select_params(model: torch.nn.Module, globs: Sequence[str] | None) -> list[str]:
    """Names of differentiated parameters: requires_grad ones, filtered by ``globs``, in named_parameters order."""
    names = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if globs is None or any(fnmatch.fnmatchcase(name, g) for g in globs):
            names.append(name)
    if not names:
        what = "requires_grad parameters" if globs is None else f"requires_grad parameters matching {list(globs)}"
        raise ValueError(f"GradientFeaturizer: the model has no {what}")
    return names


def resolve_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    """``device``, else the device of the model's first parameter, else the CPU."""
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else "cpu"
    return torch.device(device)


def split_state(model: torch.nn.Module, names: Sequence[str], leaves: bool = False
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the parameters ``names``, in that order; everything else: other parameters and buffers), all detached.
    ``leaves``: the chosen ones require grad (autograd leaves sharing the parameters' storage)."""
    chosen = set(names)
    params: dict[str, torch.Tensor] = {}
    frozen: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if name in chosen:
            params[name] = p.detach().requires_grad_(True) if leaves else p.detach()
        else:
            frozen[name] = p.detach()
    for name, b in model.named_buffers():
        frozen[name] = b.detach()
    return {n: params[n] for n in names}, frozen


def move_batch(batch: Any, device: torch.device) -> Any:
    """Every tensor leaf of the batch pytree on ``device``."""
    return tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, batch)


def leading_size(batch: Any, who: str) -> int:
    """The one leading (batch) size shared by the batch's tensor leaves, else a ValueError naming ``who``."""
    sizes: set[int] = set()
    tree_map(lambda t: sizes.add(t.shape[0]) if isinstance(t, torch.Tensor) and t.dim() > 0 else None, batch)
    if len(sizes) != 1:
        raise ValueError(f"{who}: batch leaves must share one leading batch size, got sizes {sizes}")
    return sizes.pop()


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Every module in ``eval()`` mode for the block, each module's own training flag restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, was_training in modes:
            m.training = was_training


class GradientFeaturizer:
    r"""Projected per-sample gradients of a model.

    For a batch :math:`z_1..z_B` returns :math:`P\,\Gamma(\nabla_\theta L(z_i;\theta)) \in \mathbb{R}^k` per sample,
    with :math:`\theta` the selected parameters, :math:`\Gamma` an optional preconditioner and :math:`P` the projector.

    Parameters
    ----------
    model : torch.nn.Module
        Moved to ``device`` when one is given; put in ``eval()`` mode during featurisation (training flags restored).
    adapter : LossAdapter
        Per-sample loss.
    proj_dim : int
        :math:`k`.
    seed : int
        Projection seed.
    projector : {"rademacher", "gaussian", "sjlt"} or Projector
        Entry distribution, or a ready projector whose chunk layout must match the selected parameters.
    params : list of str, optional
        Globs (``fnmatch``) over ``named_parameters()`` names; None = all. Parameters with
        ``requires_grad=False`` are always excluded.
    mode : {"auto", "vmap", "loop"}
        ``vmap``: ``torch.func.vmap(grad(loss), in_dims=(None, None, 0), randomness="different")``; ``loop``: one
        ``torch.autograd.grad`` per sample; ``auto``: vmap, falling back to loop (with a warning) if the first vmap
        batch raises.
    device : str or torch.device, optional
        Compute device; None = the device of the model's first parameter. Projection blocks are generated on the
        CPU and moved there.
    precondition : callable, optional
        ``precondition(grads: dict[name, Tensor[B, *shape]], checkpoint) -> dict`` applied before projection.
    scale : bool
        Scale :math:`P` by :math:`1/\sqrt{k}`.
    allow_half : bool
        Allow float16/bfloat16 parameters (gradients are cast to fp32 before projection either way).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        adapter: LossAdapter,
        proj_dim: int,
        seed: int = 0,
        projector: str | Projector = "rademacher",
        params: Sequence[str] | None = None,
        mode: str = "auto",
        device: str | torch.device | None = None,
        precondition: Preconditioner | None = None,
        scale: bool = False,
        allow_half: bool = False,
    ) -> None:
        if mode not in ("auto", "vmap", "loop"):
            raise ValueError(f"GradientFeaturizer: mode must be 'auto', 'vmap' or 'loop', got {mode!r}")
        if not callable(getattr(adapter, "loss", None)):
            raise TypeError(f"GradientFeaturizer: adapter {type(adapter).__name__} has no callable .loss()")
        if isinstance(params, str):
            params = [params]
        self.device = resolve_device(model, device)
        self.model = model.to(self.device)
        self.adapter = adapter
        self.mode = mode
        self.precondition = precondition
        self.param_names = _select_params(model, params)
        self.param_globs = None if params is None else list(params)
        named = dict(model.named_parameters())
        if not allow_half:
            bad = [n for n in self.param_names if named[n].dtype in (torch.float16, torch.bfloat16)]
            if bad:
                raise ValueError(
                    f"GradientFeaturizer: parameter {bad[0]!r} is {named[bad[0]].dtype}, expected float32 or float64 "
                    "(half-precision gradients lose precision, B4; pass allow_half=True to accept them)"
                )
        sizes = [named[n].numel() for n in self.param_names]
        if isinstance(projector, Projector):
            if projector.chunk_sizes != sizes:
                raise ValueError(
                    f"GradientFeaturizer: projector chunk sizes {projector.chunk_sizes[:4]}... do not match the "
                    f"selected parameters {sizes[:4]}... (one chunk per parameter, named_parameters order)"
                )
            if projector.proj_dim != int(proj_dim):
                raise ValueError(f"GradientFeaturizer: projector has k={projector.proj_dim}, proj_dim={proj_dim}")
            self.projector = projector
            if projector.device != self.device:
                projector.clear_cache()
                projector.device = self.device
        else:
            self.projector = Projector(
                sizes,
                proj_dim,
                seed=seed,
                kind=projector,
                scale=scale,
                chunk_names=self.param_names,
                device=self.device,
            )

    @property
    def proj_dim(self) -> int:
        """Feature dimension :math:`k`."""
        return self.projector.proj_dim

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description (parameter order, globs, mode, projector) for manifests."""
        return {
            "params": list(self.param_names),
            "param_globs": self.param_globs,
            "num_params": self.projector.input_dim,
            "mode": self.mode,
            "projector": self.projector.config(),
        }

    # ------------------------------------------------------------------ helpers
    def _split_state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return split_state(self.model, self.param_names)

    def _to_device(self, batch: Any) -> Any:
        return move_batch(batch, self.device)

    @staticmethod
    def _batch_size(batch: Any) -> int:
        return leading_size(batch, "GradientFeaturizer")

    def _grads_vmap(self, params: dict, frozen: dict, batch: Any) -> dict[str, torch.Tensor]:
        def one(p: dict, f: dict, sample: Any) -> torch.Tensor:
            return self.adapter.loss(self.model, p, f, sample)

        # tensor leaves are mapped over their leading (batch) dim; non-tensor leaves (e.g. strings) are passed whole
        dims = tree_map(lambda t: 0 if isinstance(t, torch.Tensor) and t.dim() > 0 else None, batch)
        fn = torch.func.vmap(torch.func.grad(one), in_dims=(None, None, dims), randomness="different")
        return fn(params, frozen, batch)

    def _grads_loop(self, params: dict, frozen: dict, batch: Any, n: int) -> dict[str, torch.Tensor]:
        out = {name: torch.empty((n, *t.shape), dtype=t.dtype, device=t.device) for name, t in params.items()}
        leaf = {name: t.detach().requires_grad_(True) for name, t in params.items()}  # shares storage, no copy
        for i in range(n):
            sample = tree_map(lambda t, i=i: t[i] if isinstance(t, torch.Tensor) and t.dim() > 0 else t, batch)
            with torch.enable_grad():
                loss = self.adapter.loss(self.model, leaf, frozen, sample)
                if loss.dim() != 0:
                    raise ValueError(f"LossAdapter.loss must return a 0-d tensor, got shape {tuple(loss.shape)}")
                grads = torch.autograd.grad(loss, list(leaf.values()), allow_unused=True)
            for name, g in zip(leaf, grads):
                out[name][i] = 0.0 if g is None else g
        return out

    # ------------------------------------------------------------------ public
    def per_sample_grads(self, batch: Any) -> dict[str, torch.Tensor]:
        """Per-sample gradients ``{name: Tensor[B, *shape]}`` of the selected parameters (model in eval mode)."""
        batch = self._to_device(batch)
        n = self._batch_size(batch)
        params, frozen = self._split_state()
        with eval_mode(self.model):
            if self.mode in ("vmap", "auto"):
                try:
                    grads = self._grads_vmap(params, frozen, batch)
                except Exception as exc:  # noqa: BLE001 - any vmap failure triggers the documented fallback
                    if self.mode == "vmap":
                        raise
                    msg = f"GradientFeaturizer: vmap failed ({type(exc).__name__}: {exc}); falling back to loop mode"
                    log.warning(msg)
                    warnings.warn(msg, RuntimeWarning, stacklevel=2)
                    self.mode = "loop"
                    grads = self._grads_loop(params, frozen, batch, n)
                else:
                    if self.mode == "auto":
                        self.mode = "vmap"
            else:
                grads = self._grads_loop(params, frozen, batch, n)
        return grads

    def project(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """Project per-sample gradients (chunk per parameter, names order) -> fp32 ``[B, k]``."""
        missing = [n for n in self.param_names if n not in grads]
        if missing:
            raise KeyError(f"GradientFeaturizer: gradients lack parameter {missing[0]!r}")
        chunks = [grads[n].reshape(grads[n].shape[0], -1).to(torch.float32) for n in self.param_names]
        return self.projector.project_chunks(chunks)

    def featurize_batch(
        self,
        batch: Any,
        checkpoint: Checkpoint | None = None,
        precondition: Preconditioner | None | bool = True,
    ) -> torch.Tensor:
        r"""Features :math:`P\,\Gamma(g(z_i))` of one batch, fp32 ``[B, k]``.

        Parameters
        ----------
        batch : pytree
            Tensors with a leading batch dimension; non-tensor leaves are handed to every sample's loss unchanged.
        checkpoint : Checkpoint, optional
            Handed to the preconditioner (the model's weights are NOT loaded here; see :func:`featurize_to_store`).
        precondition : callable, None or True
            True (default) uses the featurizer's preconditioner; None/False disables; a callable overrides.
        """
        grads = self.per_sample_grads(batch)
        fn = self.precondition if precondition is True else (precondition or None)
        if fn is not None:
            grads = fn(grads, checkpoint)
        with torch.no_grad():
            return self.project(grads)
