"""The ``device`` setting of every domain config and command line: ``auto | cpu | cuda | cuda:<i>``.

``auto`` means the first CUDA device when torch sees one and the CPU otherwise, so the same config runs on a laptop
and on a GPU machine. Asking for CUDA where there is none is an error in one line, never a silent fall-back to the
CPU. Mixed precision is never switched on by the device: the domain packages compute in float32 unless a setting of
their own says otherwise.
"""

from __future__ import annotations

import re
from typing import Any

#: what the ``device`` setting accepts, for help texts and error messages
DEVICE_CHOICES = "auto | cpu | cuda | cuda:<index>"
DEVICE_HELP = (f"where models run: {DEVICE_CHOICES} (auto = the first CUDA GPU when torch sees one, else the CPU; "
               "asking for CUDA where there is none is an error)")
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def pick_device(spec: Any = "auto", *, where: str = "device") -> Any:
    """The ``torch.device`` that the setting ``spec`` names.

    Parameters
    ----------
    spec
        ``"auto"`` (or None), ``"cpu"``, ``"cuda"`` or ``"cuda:<i>"``; a ``torch.device`` is returned as it is.
    where
        The setting's name in error messages (e.g. ``"device"`` or ``"--device"``).

    Raises
    ------
    ValueError
        An unknown spelling, CUDA asked for where torch sees no CUDA device, or an index past the last device.
    """
    import torch

    if isinstance(spec, torch.device):
        return spec
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = _CUDA.match(text)
    if m is None:
        raise ValueError(f"{where}: expected {DEVICE_CHOICES}, got {spec!r}")
    if not torch.cuda.is_available():
        build = "this torch is built without CUDA" if torch.version.cuda is None else "torch sees no CUDA device"
        raise ValueError(f"{where}: {spec!r} asked for, but {build}; use cpu or auto")
    index = int(m.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"{where}: {spec!r} asked for, but torch sees {count} CUDA device(s) (cuda:0 … "
                         f"cuda:{count - 1})")
    return torch.device(f"cuda:{index}")


def device_for(model: Any, spec: Any = None) -> Any:
    """Where to run ``model``: the device ``spec`` names (:func:`pick_device`), or, without one, where the model's
    first parameter is (the CPU for a model without parameters)."""
    from tarot.features.gradients import resolve_device

    return resolve_device(model, None if spec is None else pick_device(spec))


def device_name(device: Any) -> str:
    """A short description for logs and results: ``"cpu"`` or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
