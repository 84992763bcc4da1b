"""Stand-in for ``mmcv._ext`` so that mmsegmentation 1.2.2 imports with ``mmcv-lite``.

mmseg 1.2.2 imports ``mmcv.ops`` unconditionally in four modules (focal loss, point-sample utility, SAN head, …), and
``mmcv.ops`` loads the compiled ``mmcv._ext`` extension, which ``mmcv-lite`` does not ship. The stand-in registered here
answers every attribute lookup with a function that raises a clear error *when called*, so ``import mmseg.models``
works and every model that does not use compiled ops (DeepLabV3, FCN, ASPP, ResNetV1c) builds and runs. Ops that would
raise: nms, roi_align, deformable convolutions, PSAMask, sigmoid focal loss, point sampling.

The shim is installed only when the real extension cannot be imported, and a log line says so.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import sys
import types

log = logging.getLogger(__name__)

_SHIM_NAME = "mmcv._ext"


class _MissingExtModule(types.ModuleType):
    """Module whose every public attribute is a function raising a one-line error."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def _unavailable(*args, **kwargs):
            raise RuntimeError(
                f"mmcv op {name!r} needs the compiled mmcv._ext extension, which mmcv-lite lacks; "
                "install a full mmcv 2.1.0 build to use it"
            )

        _unavailable.__name__ = name
        return _unavailable


def is_shimmed() -> bool:
    """Whether the stand-in (rather than a compiled extension) is active."""
    return isinstance(sys.modules.get(_SHIM_NAME), _MissingExtModule)


def ensure_mmcv_ext() -> bool:
    """Make ``mmcv._ext`` importable; install the stand-in only when the compiled extension is missing.

    Returns
    -------
    bool
        True if the stand-in is active, False if a real compiled extension is present.

    Raises
    ------
    ImportError
        If neither ``mmcv`` nor ``mmcv-lite`` is installed (install ``tarot-vision[mmseg]``).
    """
    if is_shimmed():
        return True
    try:
        importlib.import_module("mmcv")
    except ImportError as exc:
        raise ImportError(
            f"mmcv is not installed ({exc}); install the extra: pip install 'tarot-vision[mmseg]'"
        ) from None
    try:
        importlib.import_module(_SHIM_NAME)
        return False
    except ImportError:
        pass
    module = _MissingExtModule(_SHIM_NAME, "stand-in for the compiled mmcv extension (tarot_vision.mmcv_shim)")
    # A spec without a loader: ``pkgutil.find_loader('mmcv._ext')`` (mmengine's ``mmcv_full_available``) then
    # reports "no compiled mmcv" instead of raising on a missing ``__spec__``.
    module.__spec__ = importlib.machinery.ModuleSpec(_SHIM_NAME, None)
    sys.modules[_SHIM_NAME] = module
    import mmcv

    mmcv._ext = module
    log.warning(
        "mmcv._ext (compiled mmcv ops) is missing, as with mmcv-lite: installed tarot_vision's stand-in; "
        "DeepLabV3/FCN work, compiled ops (nms, roi_align, deform conv, focal loss) raise if called"
    )
    return True
