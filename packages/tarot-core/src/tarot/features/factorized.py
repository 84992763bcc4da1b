r"""Per-layer factorised gradient features (LoGra-style): project a layer's input and output gradient, never its
gradient.

For a linear layer :math:`y_t = W a_t + b` applied at positions :math:`t` (tokens, pixels, agents) of one sample,
the sample's gradient is a sum of outer products,

.. math:: G = \frac{\partial L}{\partial [W\,|\,b]} = \sum_t \delta_t\, \tilde a_t^\top,
          \qquad \delta_t = \frac{\partial L}{\partial y_t} \in \mathbb{R}^{d_{out}},
          \quad \tilde a_t = (a_t, 1) \in \mathbb{R}^{d_{in}+1}.

With seeded JL matrices :math:`P_{in} \in \mathbb{R}^{k_{in} \times (d_{in}+1)}` and
:math:`P_{out} \in \mathbb{R}^{k_{out} \times d_{out}}` the Kronecker-structured projection of :math:`G` is

.. math:: (P_{out} \otimes P_{in}) \operatorname{vec}(G) = \operatorname{vec}(P_{out}\, G\, P_{in}^\top)
          = \operatorname{vec}\Big(\sum_t (P_{out}\delta_t)(P_{in}\tilde a_t)^\top\Big),

computed from the projected inputs and output gradients at :math:`O(T (d_{in} k_{in} + d_{out} k_{out} +
k_{in} k_{out}))` per sample, without the :math:`d_{out} \times d_{in}` gradient. This is **exact** for any number of
positions: what differs from :class:`~tarot.features.gradients.GradientFeaturizer` is the projection, a Kronecker
product of two small JL matrices instead of one i.i.d. :math:`k \times p` matrix. It preserves inner products in
expectation like any JL map, with a larger variance (the entries of :math:`P_{out} \otimes P_{in}` are not
independent). A side with :math:`d \le` ``factor_dim`` is not projected (:math:`P = I`, exact). Convolutions
(``groups=1``) are linear layers over their unfolded patches; the patches are projected by the layer's own
convolution with :math:`P_{in}` as the kernel.

Every layer's :math:`k_{out} k_{in}` block is then mixed to the store's dimension :math:`k` by a second seeded
projector :math:`Q` (:class:`~tarot.features.projection.Projector`, one chunk per layer), so the feature is

.. math:: \phi(z) = Q \big[(P^{(l)}_{out} \otimes P^{(l)}_{in}) \operatorname{vec} G^{(l)}(z)\big]_{l},

linear in the per-sample gradient like every other featurizer here. ``scale=False`` (as for the dense projector)
leaves :math:`Q`'s entries at :math:`\pm 1`, so feature norms match the dense projector's; the per-layer factors are
always scaled by :math:`1/\sqrt{k}`.

What is covered
---------------
``nn.Linear`` (and subclasses: peft's LoRA ``lora_A``/``lora_B`` are plain ``nn.Linear`` modules called as modules)
and ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` with ``groups=1``. Other parameters (norms, embeddings, attention
in-projections used through ``F.multi_head_attention_forward``, ``nn.MultiheadAttention.out_proj``, whose weight is
read without calling the module) are not: with ``params=None`` they are left out and listed in :meth:`config` under
``"left_out"`` (with a warning); naming one in ``params`` is an error. A covered layer whose forward never runs in
the first batch is an error (its weight is used some other way).

Gradient modes
--------------
``batch``: one forward and one backward for the whole batch through the adapter's
``losses(model, params, buffers, batch) -> Tensor[B]`` (per-sample losses); every covered layer must see the batch
as its leading dimension. The first batch is checked against ``loop`` on its first two samples, and a model that
mixes samples or is not batch-first (e.g. sequence-first transformers) is refused (``mode="batch"``) or handled by
falling back to ``loop`` with a warning (``mode="auto"``). ``loop``: one forward and backward per sample through the
adapter's ``loss`` (any layout: all positions belong to the one sample). Preconditioners (e.g. Adam's elementwise
:math:`m/\sqrt{v}`) do not factorise and are refused.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from tarot.features.gradients import (
    Checkpoint,
    LossAdapter,
    eval_mode,
    leading_size,
    move_batch,
    resolve_device,
    split_state,
)
from tarot.features.projection import Projector

__all__ = ["FactorizedGradientFeaturizer", "FactorizedProjection", "FACTOR_DIM", "PROJECTORS", "coverable_parameters",
           "gradient_featurizer"]

log = logging.getLogger(__name__)

FACTOR_DIM = 32  # default k_in = k_out per layer (a layer's block holds at most 32 x 32 = 1,024 values)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _factor_seed(seed: int, layer: str, side: str) -> int:
    """Seed of one layer's input or output factor: a hash of (seed, layer name, side), independent of other layers."""
    digest = hashlib.blake2b(f"tarot-factor-v1:{int(seed)}:{layer}:{side}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _factor(seed: int, layer: str, side: str, d: int, k: int) -> torch.Tensor | None:
    """The ``[k, d]`` scaled Rademacher factor of one side of a layer, or None (identity) when ``d <= k``."""
    if d <= k:
        return None
    return Projector(d, k, seed=_factor_seed(seed, layer, side), scale=True).matrix().T.contiguous()


@dataclass
class _Layer:
    """One covered module: which of its parameters are featurized, its sizes and its two factors."""

    name: str
    module: nn.Module
    weight: str | None  # full parameter names, None when not featurized
    bias: str | None
    d_in: int  # augmented input size: patch size (if weight) + 1 (if bias)
    d_out: int
    p_in: torch.Tensor | None = None  # [k_in, d_in] or None = identity
    p_out: torch.Tensor | None = None  # [k_out, d_out] or None = identity
    calls: list[tuple[torch.Tensor, torch.Tensor, int]] = field(default_factory=list)  # (input, output, channel axis)

    @property
    def k_in(self) -> int:
        return self.d_in if self.p_in is None else self.p_in.shape[0]

    @property
    def k_out(self) -> int:
        return self.d_out if self.p_out is None else self.p_out.shape[0]


class FactorizedProjection:
    """The projection of a :class:`FactorizedGradientFeaturizer`: per-layer factors, then the mixing projector.

    ``config()`` is what the feature store records as its projector (``type: factorized``)."""

    def __init__(self, layers: list[_Layer], mix: Projector, factor_dim: int, seed: int) -> None:
        self.layers = layers
        self.mix = mix
        self.factor_dim = int(factor_dim)
        self.seed = int(seed)

    @property
    def proj_dim(self) -> int:
        return self.mix.proj_dim

    @property
    def device(self) -> torch.device:
        return self.mix.device

    def config(self) -> dict[str, Any]:
        return {
            "type": "factorized",
            "scheme": "tarot-factor-v1",
            "seed": self.seed,
            "factor_dim": self.factor_dim,
            "proj_dim": self.proj_dim,
            "layers": [{"name": ly.name, "weight": ly.weight, "bias": ly.bias, "d_in": ly.d_in, "d_out": ly.d_out,
                        "k_in": ly.k_in, "k_out": ly.k_out} for ly in self.layers],
            "mix": self.mix.config(),
        }


def _coverable(model: nn.Module) -> dict[str, nn.Module]:
    """Modules whose weight gradient is an outer product of their input and output gradient, by name."""
    skip: set[int] = set()
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):  # out_proj's weight is read by F.multi_head_attention_forward
            skip.add(id(m.out_proj))
    out: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if id(m) in skip:
            continue
        if isinstance(m, nn.Linear) or (isinstance(m, _CONV) and m.groups == 1):
            out[name] = m
    return out


def coverable_parameters(model: nn.Module) -> set[str]:
    """Names of the parameters the factorised featurizer can cover: weights and biases of the Linear and
    ``groups=1`` Conv layers called as modules."""
    out: set[str] = set()
    for name, m in _coverable(model).items():
        prefix = f"{name}." if name else ""
        out.update(f"{prefix}{p}" for p, _ in m.named_parameters(recurse=False) if p in ("weight", "bias"))
    return out


class FactorizedGradientFeaturizer:
    r"""Per-sample gradient features from per-layer factorised projections (see the module docstring).

    Duck-types what :func:`tarot.featurize_to_store` uses of a featurizer (``per_sample_grads`` returns the
    per-layer ``[B, k_out, k_in]`` blocks, ``project`` mixes them to ``[B, k]``).

    Parameters
    ----------
    model : torch.nn.Module
        In ``eval()`` mode during featurization (training flags restored).
    adapter : LossAdapter
        ``loss(model, params, buffers, sample)`` (0-d, one sample); for ``mode="batch"`` also
        ``losses(model, params, buffers, batch)`` (``[B]``, one forward for the batch).
    proj_dim : int
        Store dimension :math:`k`.
    seed : int
        Seed of the factors and of the mixing projector.
    factor_dim : int
        :math:`k_{in}` and :math:`k_{out}` per layer (a side no larger is kept whole).
    mix : {"rademacher", "gaussian", "sjlt"}
        Kind of the mixing projector :math:`Q`.
    params : list of str, optional
        Globs over parameter names; None = every ``requires_grad`` weight and bias of the covered layers.
    mode : {"auto", "batch", "loop"}
        See the module docstring; ``auto`` uses ``batch`` when the adapter has ``losses``.
    device : str or torch.device, optional
        Compute device; None = the device of the model's first parameter.
    scale : bool
        Scale :math:`Q` by :math:`1/\sqrt{k}`.
    allow_half : bool
        Accept float16/bfloat16 parameters.
    """

    precondition = None  # preconditioners do not factorise
    accepts_precondition = False

    def __init__(
        self,
        model: nn.Module,
        adapter: LossAdapter,
        proj_dim: int,
        seed: int = 0,
        factor_dim: int = FACTOR_DIM,
        mix: str = "rademacher",
        params: Sequence[str] | None = None,
        mode: str = "auto",
        device: str | torch.device | None = None,
        scale: bool = False,
        allow_half: bool = False,
    ) -> None:
        if mode not in ("auto", "batch", "loop"):
            raise ValueError(f"FactorizedGradientFeaturizer: mode must be 'auto', 'batch' or 'loop', got {mode!r}")
        if not callable(getattr(adapter, "loss", None)):
            raise TypeError(f"FactorizedGradientFeaturizer: adapter {type(adapter).__name__} has no callable .loss()")
        has_losses = callable(getattr(adapter, "losses", None))
        if mode == "batch" and not has_losses:
            raise TypeError(f"FactorizedGradientFeaturizer: mode 'batch' needs adapter.losses(model, params, buffers, "
                            f"batch) -> [B]; {type(adapter).__name__} has none (use mode 'loop')")
        if int(factor_dim) <= 0:
            raise ValueError(f"FactorizedGradientFeaturizer: factor_dim must be positive, got {factor_dim}")
        if isinstance(params, str):
            params = [params]
        self.device = resolve_device(model, device)
        self.model = model.to(self.device)
        self.adapter = adapter
        self.mode = "batch" if mode == "auto" and has_losses else ("loop" if mode == "auto" else mode)
        self._auto = mode == "auto"
        self._verified = False
        self._fired: set[str] = set()
        self.param_globs = None if params is None else list(params)
        self.factor_dim = int(factor_dim)
        self._seed = int(seed)
        self.layers, self.left_out = self._plan_layers(params, allow_half)
        self.param_names = [n for ly in self.layers for n in (ly.weight, ly.bias) if n is not None]
        self._module_layer = {id(ly.module): ly for ly in self.layers}
        mixer = Projector([ly.k_out * ly.k_in for ly in self.layers], proj_dim, seed=seed, kind=mix, scale=scale,
                          chunk_names=[ly.name for ly in self.layers], device=self.device)
        self.projector = FactorizedProjection(self.layers, mixer, self.factor_dim, seed)

    def _plan_layers(self, params: Sequence[str] | None, allow_half: bool) -> tuple[list[_Layer], list[str]]:
        named = dict(self.model.named_parameters())
        wanted = [n for n, p in named.items() if p.requires_grad
                  and (params is None or any(fnmatch.fnmatchcase(n, g) for g in params))]
        layers: list[_Layer] = []
        covered: set[str] = set()
        for name, m in _coverable(self.model).items():
            prefix = f"{name}." if name else ""
            w = f"{prefix}weight" if f"{prefix}weight" in wanted else None
            b = f"{prefix}bias" if getattr(m, "bias", None) is not None and f"{prefix}bias" in wanted else None
            if w is None and b is None:
                continue
            for n in (w, b):
                if n is not None and named[n].dtype in (torch.float16, torch.bfloat16) and not allow_half:
                    raise ValueError(f"FactorizedGradientFeaturizer: parameter {n!r} is {named[n].dtype}, expected "
                                     "float32 or float64 (pass allow_half=True to accept half precision)")
            weight = m.weight
            assert isinstance(weight, torch.Tensor), "Linear and Conv layers hold a weight tensor"
            d_out = int(weight.shape[0])
            d_in = (int(weight[0].numel()) if w is not None else 0) + (1 if b is not None else 0)
            label = name or "<model>"
            layers.append(_Layer(label, m, w, b, d_in, d_out,
                                 _factor(self._seed, label, "in", d_in, self.factor_dim),
                                 _factor(self._seed, label, "out", d_out, self.factor_dim)))
            covered.update(n for n in (w, b) if n is not None)
        left_out = [n for n in wanted if n not in covered]
        if params is not None and left_out:
            raise ValueError(
                f"FactorizedGradientFeaturizer: parameter {left_out[0]!r} (and {len(left_out) - 1} more) is not the "
                "weight or bias of a Linear or groups=1 Conv layer called as a module; factorised gradients cannot "
                "cover it (use the dense or sjlt projector, or leave it out of params)")
        if not layers:
            raise ValueError("FactorizedGradientFeaturizer: the model has no requires_grad Linear/Conv parameters"
                             + ("" if params is None else f" matching {list(params)}"))
        if left_out:
            msg = (f"FactorizedGradientFeaturizer: {len(left_out)} parameter tensor(s) are not Linear/Conv weights and "
                   f"are left out of the features (e.g. {left_out[:3]}); they are listed in config()['left_out']")
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
        for ly in layers:
            for attr in ("p_in", "p_out"):
                t = getattr(ly, attr)
                if t is not None:
                    setattr(ly, attr, t.to(self.device))
        return layers, left_out

    @property
    def proj_dim(self) -> int:
        """Feature dimension :math:`k`."""
        return self.projector.proj_dim

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description (layers, left-out parameters, mode) for manifests."""
        named = dict(self.model.named_parameters())
        return {"params": list(self.param_names), "param_globs": self.param_globs,
                "num_params": sum(named[n].numel() for n in self.param_names),
                "left_out": list(self.left_out), "mode": self.mode, "projector": self.projector.config()}

    # ------------------------------------------------------------------ hooks
    def _forward_hook(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        """Record the layer's projected (augmented) input, positions last-but-one, and its output."""
        ly = self._module_layer[id(module)]
        x = inputs[0].detach()
        n_w = ly.d_in - (1 if ly.bias is not None else 0)  # input size of the weight (0 when only the bias counts)
        if isinstance(module, _CONV):
            cax = output.dim() - (module.weight.dim() - 2) - 1  # channel axis (0 for unbatched input)
            if n_w:
                kernel = torch.eye(n_w, device=x.device) if ly.p_in is None else ly.p_in[:, :n_w]
                shaped = kernel.to(x.dtype).reshape(kernel.shape[0], *module.weight.shape[1:])
                a = module._conv_forward(x, shaped, None).movedim(cax, -1).float()  # projected patches
        else:
            cax = -1
            if n_w:
                a = x.float() if ly.p_in is None else x.float() @ ly.p_in[:, :n_w].T
        if ly.bias is not None:
            if not n_w:  # bias only: the input is the constant 1 (d_in = 1, never projected)
                a = torch.ones((*output.movedim(cax, -1).shape[:-1], 1), device=x.device)
            elif ly.p_in is None:
                a = torch.cat([a, a.new_ones((*a.shape[:-1], 1))], dim=-1)
            else:
                a = a + ly.p_in[:, n_w]
        ly.calls.append((a, output, cax))
        # in-place ops after the layer (ReLU(inplace=True)) must not change the tensor we differentiate
        return output.clone()

    def _run(self, fn: Any) -> tuple[torch.Tensor, list[tuple[_Layer, torch.Tensor, torch.Tensor, int]]]:
        """Run ``fn()`` (returns the summed loss) with hooks on the covered layers; returns the loss and the calls."""
        for ly in self.layers:
            ly.calls.clear()
        handles = [ly.module.register_forward_hook(self._forward_hook) for ly in self.layers]
        try:
            with torch.enable_grad():
                total = fn()
        finally:
            for h in handles:
                h.remove()
        self._fired.update(ly.name for ly in self.layers if ly.calls)
        calls = [(ly, a, out, cax) for ly in self.layers for a, out, cax in ly.calls]
        for ly in self.layers:
            ly.calls.clear()
        return total, calls

    def _blocks(self, total: torch.Tensor, calls: list[tuple[_Layer, torch.Tensor, torch.Tensor, int]], n: int,
                one_sample: bool) -> dict[str, torch.Tensor]:
        """Per layer ``[n, k_out, k_in]``: the sum over calls and positions of (P_out δ_t)(P_in ã_t)^T.

        ``one_sample``: every position of every call belongs to the single sample (loop mode, any layout)."""
        deltas = torch.autograd.grad(total, [out for _, _, out, _ in calls], allow_unused=True) if calls else ()
        blocks = {ly.name: torch.zeros((n, ly.k_out, ly.k_in), device=self.device) for ly in self.layers}
        for (ly, a, _, cax), delta in zip(calls, deltas):
            if delta is None:
                continue
            d = delta.detach().movedim(cax, -1).float()
            if not one_sample and (a.dim() < 2 or a.shape[0] != n or d.shape[0] != n):
                raise ValueError(
                    f"layer {ly.name!r} sees inputs of leading size {a.shape[0]}, not the batch size {n}; the model "
                    "is not batch-first there (use mode 'loop')")
            d = d.reshape(n, -1, ly.d_out)
            if ly.p_out is not None:
                d = d @ ly.p_out.T
            blocks[ly.name] += torch.einsum("btk,btj->bkj", d, a.reshape(n, -1, ly.k_in))
        return blocks

    def _blocks_batch(self, batch: Any, n: int) -> dict[str, torch.Tensor]:
        params, frozen = split_state(self.model, self.param_names, leaves=True)

        def fn() -> torch.Tensor:
            losses = self.adapter.losses(self.model, params, frozen, batch)  # type: ignore[attr-defined]
            if losses.shape != (n,):
                raise ValueError(f"adapter.losses must return one loss per sample, shape ({n},), got "
                                 f"{tuple(losses.shape)}")
            return losses.sum()

        return self._blocks(*self._run(fn), n, one_sample=False)

    def _blocks_loop(self, batch: Any, n: int) -> dict[str, torch.Tensor]:
        params, frozen = split_state(self.model, self.param_names, leaves=True)
        rows = []
        for i in range(n):
            sample = tree_map(lambda t, i=i: t[i] if isinstance(t, torch.Tensor) and t.dim() > 0 else t, batch)

            def fn(sample: Any = sample) -> torch.Tensor:
                loss = self.adapter.loss(self.model, params, frozen, sample)
                if loss.dim() != 0:
                    raise ValueError(f"LossAdapter.loss must return a 0-d tensor, got shape {tuple(loss.shape)}")
                return loss

            rows.append(self._blocks(*self._run(fn), 1, one_sample=True))
        return {ly.name: torch.cat([r[ly.name] for r in rows]) for ly in self.layers}

    # ------------------------------------------------------------------ public
    def per_sample_grads(self, batch: Any) -> dict[str, torch.Tensor]:
        """Per-layer projected gradient blocks ``{layer: Tensor[B, k_out, k_in]}`` (model in eval mode)."""
        batch = move_batch(batch, self.device)
        n = leading_size(batch, "FactorizedGradientFeaturizer")
        with eval_mode(self.model):
            if self.mode == "loop":
                blocks = self._blocks_loop(batch, n)
            else:
                try:
                    blocks = self._blocks_batch(batch, n)
                    if not self._verified:
                        self._verify(batch, blocks, n)
                except ValueError as exc:
                    if not self._auto:
                        raise
                    msg = f"FactorizedGradientFeaturizer: batch mode failed ({exc}); falling back to loop mode"
                    log.warning(msg)
                    warnings.warn(msg, RuntimeWarning, stacklevel=2)
                    self.mode = "loop"
                    blocks = self._blocks_loop(batch, n)
        if not self._verified:
            self._check_fired(blocks)
            self._verified = True
        return blocks

    def _verify(self, batch: Any, blocks: dict[str, torch.Tensor], n: int) -> None:
        """First batch: the batched blocks of the first two samples must equal one-sample runs (batch-first model,
        samples not mixed, ``losses`` consistent with ``loss``).

        The comparison is per layer, relative to the block's norm, at 1 %: batched and one-sample float sums differ
        by about 1e-5 relative in deep models, a sample mix-up by order 1."""
        m = min(n, 2)
        head = tree_map(lambda t: t[:m] if isinstance(t, torch.Tensor) and t.dim() > 0 else t, batch)
        ref = self._blocks_loop(head, m)
        scale = max(float(r.norm()) for r in ref.values())
        for name, r in ref.items():
            err = float((blocks[name][:m] - r).norm())
            if err > 1e-2 * float(r.norm()) and err > 1e-6 * scale:
                raise ValueError(
                    f"layer {name!r}: the batched gradient differs from the one-sample gradient (relative error "
                    f"{err / max(float(r.norm()), 1e-30):.3g}); the model mixes samples of a batch or is not "
                    "batch-first there, or adapter.losses disagrees with adapter.loss")

    def _check_fired(self, blocks: dict[str, torch.Tensor]) -> None:
        """First batch: every covered layer's forward must have run (else its weight is used some other way)."""
        silent = [ly.name for ly in self.layers if ly.name not in self._fired]
        if silent:
            raise ValueError(
                f"FactorizedGradientFeaturizer: the forward of layer {silent[0]!r} (and {len(silent) - 1} more) never "
                "ran in the first batch, so its weight is used without calling the module (e.g. F.linear on "
                "module.weight); leave it out with params globs or use the dense or sjlt projector")

    def project(self, blocks: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mix the per-layer blocks (layer order) into fp32 ``[B, k]``."""
        missing = [ly.name for ly in self.layers if ly.name not in blocks]
        if missing:
            raise KeyError(f"FactorizedGradientFeaturizer: blocks lack layer {missing[0]!r}")
        chunks = [blocks[ly.name].reshape(blocks[ly.name].shape[0], -1) for ly in self.layers]
        return self.projector.mix.project_chunks(chunks)

    def featurize_batch(self, batch: Any, checkpoint: Checkpoint | None = None,
                        precondition: Any = True) -> torch.Tensor:
        """Features of one batch, fp32 ``[B, k]`` (``checkpoint`` is unused; a preconditioner is refused)."""
        if precondition not in (True, None, False):
            raise ValueError("FactorizedGradientFeaturizer: preconditioners do not factorise; use the dense or "
                             "sjlt projector for preconditioned gradients")
        blocks = self.per_sample_grads(batch)
        with torch.no_grad():
            return self.project(blocks)


PROJECTORS = ("rademacher", "dense", "gaussian", "sjlt", "factorized")


def gradient_featurizer(
    model: nn.Module,
    adapter: LossAdapter,
    proj_dim: int,
    projector: str = "rademacher",
    seed: int = 0,
    params: Sequence[str] | None = None,
    mode: str = "auto",
    device: str | torch.device | None = None,
    factor_dim: int = FACTOR_DIM,
    **kwargs: Any,
) -> Any:
    """The gradient featurizer a config names: ``projector`` is the ``features.projector`` setting of the domain
    packages.

    ``rademacher`` (alias ``dense``), ``gaussian`` and ``sjlt`` build a
    :class:`~tarot.features.gradients.GradientFeaturizer` (full per-sample gradients, then that projector);
    ``factorized`` builds a :class:`FactorizedGradientFeaturizer` with ``factor_dim``. ``mode`` is ``auto``,
    ``loop``, or ``batch``/``vmap`` (the batched mode of each: ``vmap`` for full gradients, one batched backward
    for factorised ones). Other keyword arguments go to the featurizer.
    """
    if projector not in PROJECTORS:
        raise ValueError(f"projector must be one of {', '.join(PROJECTORS)}, got {projector!r}")
    if mode not in ("auto", "loop", "batch", "vmap"):
        raise ValueError(f"mode must be auto, loop, batch or vmap, got {mode!r}")
    if projector == "factorized":
        return FactorizedGradientFeaturizer(model, adapter, proj_dim, seed=seed, factor_dim=factor_dim,
                                            params=params, mode="batch" if mode == "vmap" else mode, device=device,
                                            **kwargs)
    from tarot.features.gradients import GradientFeaturizer

    kind = "rademacher" if projector == "dense" else projector
    return GradientFeaturizer(model, adapter, proj_dim, seed=seed, projector=kind, params=params,
                              mode="vmap" if mode == "batch" else mode, device=device, **kwargs)
