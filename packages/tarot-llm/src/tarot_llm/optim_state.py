"""Loading Adam moments from training checkpoints, and LESS's Adam preconditioner (``llm.md`` §3-4).

Two on-disk layouts are supported:

``optimizer.pt`` (plain HF Trainer, ``adamw_torch``)
    a torch optimizer ``state_dict``: ``state`` keyed by **integer** ids, ``param_groups[g]["params"]`` listing them.
    Ids enumerate the Trainer's group 0 (trainable parameters with weight decay: everything except biases and norm
    weights) then group 1 (the rest), each in ``model.named_parameters()`` order.
``optimizer.bin`` (accelerate / FSDP, what LESS reads)
    ``state`` keyed by **parameter name**.

Both are returned as ``{parameter name: (exp_avg, exp_avg_sq)}`` keyed by the names of the model in memory, with
shape checks, so a checkpoint written by either tool works (the failure LESS users hit: LESS issues #4, #10, #13, #44).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

_WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
_NO_DECAY = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


class OptimizerStateError(ValueError):
    """The optimizer state does not match the model (one line naming the file and the mismatch)."""


@dataclass
class AdamMoments:
    """First and second Adam moments per trainable parameter name, plus where they came from."""

    moments: dict[str, tuple[torch.Tensor, torch.Tensor]]
    source: str
    key_style: str  # "index" (optimizer.pt) or "name" (optimizer.bin)
    step: int | None = None
    hyper: dict = field(default_factory=dict)


def normalize_name(name: str) -> str:
    """Strip FSDP / activation-checkpoint / compile wrapper parts and a DDP ``module.`` prefix."""
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return name[len("module."):] if name.startswith("module.") else name


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` of every parameter with ``requires_grad``, in ``named_parameters()`` order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def trainer_decay_names(model: torch.nn.Module) -> set[str]:
    """Names the HF Trainer puts in its weight-decay group.

    Same rule as ``Trainer.get_decay_parameter_names`` (transformers 4.4x-4.57): parameters inside ``nn.LayerNorm``
    modules and names matching bias / layernorm / rmsnorm / norm patterns are excluded.
    """
    ln_params = {f"{mn}.{pn}" if mn else pn for mn, mod in model.named_modules()
                 if isinstance(mod, torch.nn.LayerNorm) for pn, _ in mod.named_parameters()}
    return {n for n, _ in model.named_parameters()
            if n not in ln_params and not any(re.search(pat, n.lower()) for pat in _NO_DECAY)}


def trainer_index_order(model: torch.nn.Module) -> list[list[str]]:
    """Parameter names of the HF Trainer's two optimizer groups (decay, no decay), trainable only, in order."""
    decay = trainer_decay_names(model)
    params = trainable_parameters(model)
    return [[n for n, _ in params if n in decay], [n for n, _ in params if n not in decay]]


def _match_names(keys: list[str], model_names: list[str], source: str) -> dict[str, str]:
    """Map file keys to model names: exact after normalisation, else a unique suffix match."""
    norm_model = {normalize_name(n): n for n in model_names}
    out: dict[str, str] = {}
    for k in keys:
        nk = normalize_name(k)
        if nk in norm_model:
            out[k] = norm_model[nk]
            continue
        cands = [n for m, n in norm_model.items() if m.endswith("." + nk) or nk.endswith("." + m)]
        if len(cands) != 1:
            raise OptimizerStateError(f"{source}: optimizer key {k!r} matches {len(cands)} trainable parameters "
                                      "of the model (expected exactly one)")
        out[k] = cands[0]
    return out


def _check(moments: dict[str, tuple[torch.Tensor, torch.Tensor]], params: dict[str, torch.Tensor], source: str) -> None:
    missing = [n for n in params if n not in moments]
    if missing:
        raise OptimizerStateError(f"{source}: no optimizer state for {len(missing)} trainable parameter(s), "
                                  f"e.g. {missing[0]!r}")
    for n, (m, v) in moments.items():
        if tuple(m.shape) != tuple(params[n].shape) or tuple(v.shape) != tuple(params[n].shape):
            raise OptimizerStateError(f"{source}: exp_avg of {n!r} has shape {tuple(m.shape)}, the parameter has "
                                      f"{tuple(params[n].shape)} (optimizer state does not belong to this model)")


def _entry(state: dict, key, source: str) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    st = state[key]
    if "exp_avg" not in st or "exp_avg_sq" not in st:
        raise OptimizerStateError(f"{source}: state entry {key!r} has no exp_avg/exp_avg_sq (not an Adam optimizer)")
    step = st.get("step")
    step = int(step.item() if torch.is_tensor(step) else step) if step is not None else None
    return st["exp_avg"].detach().float().cpu(), st["exp_avg_sq"].detach().float().cpu(), step


def load_adam_moments(checkpoint_dir: str | os.PathLike, model: torch.nn.Module) -> AdamMoments:
    """Read Adam moments from ``optimizer.bin`` (name-keyed) or ``optimizer.pt`` (index-keyed).

    Parameters
    ----------
    checkpoint_dir
        A checkpoint directory (``checkpoint-<step>/``) or the optimizer file itself.
    model
        The model whose trainable parameters (``requires_grad``) the optimizer was built on (e.g. the peft model).

    Returns
    -------
    AdamMoments
        ``moments[name] = (exp_avg, exp_avg_sq)`` in fp32 on the CPU, keyed by ``model``'s parameter names.
    """
    p = Path(checkpoint_dir)
    if p.is_dir():
        cand = [p / "optimizer.bin", p / "optimizer.pt"]
        found = [c for c in cand if c.exists()]
        if not found:
            raise FileNotFoundError(f"{p}: neither optimizer.bin (accelerate/FSDP) nor optimizer.pt (HF Trainer) found")
        p = found[0]
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or "state" not in sd or "param_groups" not in sd:
        raise OptimizerStateError(f"{p}: not an optimizer state_dict (expected 'state' and 'param_groups')")
    state, groups = sd["state"], sd["param_groups"]
    params = dict(trainable_parameters(model))
    if not params:
        raise OptimizerStateError(f"{p}: the model has no trainable parameters")
    keys = list(state)
    hyper = {k: v for k, v in groups[0].items() if k != "params"} if groups else {}
    steps = []
    moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if keys and all(isinstance(k, str) for k in keys):
        style = "name"
        mapping = _match_names(keys, list(params), str(p))
        for k in keys:
            m, v, s = _entry(state, k, str(p))
            moments[mapping[k]] = (m, v)
            steps.append(s)
    elif all(isinstance(k, int) for k in keys):
        style = "index"
        order = trainer_index_order(model)
        file_groups = [list(g["params"]) for g in groups]
        names = [n for grp in order for n in grp]
        ids = [i for g in file_groups for i in g]
        if len(ids) != len(names):
            raise OptimizerStateError(f"{p}: {len(ids)} parameter ids in param_groups but the model has {len(names)} "
                                      "trainable parameters (optimizer state does not belong to this model)")
        nonempty_order = [g for g in order if g]
        nonempty_file = [g for g in file_groups if g]
        if [len(g) for g in nonempty_order] != [len(g) for g in nonempty_file]:
            raise OptimizerStateError(f"{p}: parameter group sizes {[len(g) for g in file_groups]} do not match the "
                                      f"Trainer's decay/no-decay split {[len(g) for g in order]}")
        for i, n in zip(ids, names):
            if i not in state:
                raise OptimizerStateError(f"{p}: no state for parameter id {i} ({n!r})")
            m, v, s = _entry(state, i, str(p))
            moments[n] = (m, v)
            steps.append(s)
    else:
        raise OptimizerStateError(f"{p}: state keys mix integers and names")
    _check(moments, {n: t for n, t in params.items()}, str(p))
    step = max((s for s in steps if s is not None), default=None)
    return AdamMoments(moments=moments, source=str(p), key_style=style, step=step, hyper=hyper)


# ------------------------------------------------------------------------------------------ Adam preconditioner
def adam_precondition(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, beta1: float = 0.9, beta2: float = 0.999,
                      eps: float = 1e-8) -> torch.Tensor:
    """LESS's Adam direction ``m' / sqrt(v' + eps)``, ``m' = b1 m + (1-b1) g``, ``v' = b2 v + (1-b2) g^2``.

    ``eps`` is inside the square root and there is no bias correction (LESS's ``obtain_gradients_with_adam``).
    ``m`` and ``v`` broadcast against a leading batch dimension of ``g``.
    """
    m2 = beta1 * m + (1.0 - beta1) * g
    v2 = beta2 * v + (1.0 - beta2) * g * g
    return m2 / torch.sqrt(v2 + eps)


class AdamPreconditioner:
    """tarot-core preconditioner hook: per-sample gradients -> Adam-preconditioned gradients.

    Called as ``precond(grads, checkpoint)`` with ``grads[name]`` of shape ``[B, *param_shape]``; the moments are
    read from ``checkpoint.extra["optimizer_state"]`` (an :class:`AdamMoments` or a ``{name: (m, v)}`` dict).
    """

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def __call__(self, grads: dict[str, torch.Tensor], checkpoint) -> dict[str, torch.Tensor]:
        extra = getattr(checkpoint, "extra", None) or {}
        st = extra.get("optimizer_state")
        if st is None:
            raise OptimizerStateError(f"checkpoint {getattr(checkpoint, 'name', '?')!r}: no 'optimizer_state' in "
                                      "extra (Adam preconditioning needs the checkpoint's optimizer moments)")
        moments = st.moments if isinstance(st, AdamMoments) else st
        norm = {normalize_name(k): k for k in moments}
        out = {}
        for name, g in grads.items():
            key = name if name in moments else norm.get(normalize_name(name))
            if key is None:
                hits = [k for nk, k in norm.items() if nk.endswith("." + normalize_name(name))
                        or normalize_name(name).endswith("." + nk)]
                if len(hits) != 1:
                    raise OptimizerStateError(f"checkpoint {getattr(checkpoint, 'name', '?')!r}: no optimizer moments "
                                              f"for parameter {name!r}")
                key = hits[0]
            m, v = moments[key]
            out[name] = adam_precondition(g, m.to(g.device, g.dtype), v.to(g.device, g.dtype),
                                          self.beta1, self.beta2, self.eps)
        return out

    def describe(self) -> dict:
        """Settings recorded in artifacts."""
        return {"type": "adam", "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "formula": "m'/sqrt(v'+eps), m'=b1*m+(1-b1)*g, v'=b2*v+(1-b2)*g^2, no bias correction"}
