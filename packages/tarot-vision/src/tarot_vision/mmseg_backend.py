"""mmsegmentation 1.2.2 integration: DeepLabV3 R50-D8 from mmseg's config system, per-sample loss, runner training.

Needs the ``[mmseg]`` extra. Everything here imports mmseg lazily, so the rest of the package works without it.

- :func:`load_config` composes ``configs/deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py`` shipped inside
  the mmseg wheel and adapts it for one CPU process (SyncBN → BN, ``pretrained=None``, smaller crops).
- :class:`MMSegHeads` exposes backbone + decode head + auxiliary head of a built ``EncoderDecoder`` under mmseg's own
  parameter names, and :class:`MMSegLoss` is the vmap-safe per-sample loss of specs/vision.md §4.5.
- :func:`train_mmseg` trains on an ann_file (a TAROT selection with repeat lines) with mmseg's own ``Runner``;
  :func:`evaluate_mmseg` computes mIoU on Cityscapes val with mmseg's ``IoUMetric``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tarot.fileio import save_torch_atomic
from torch import nn

from .mmcv_shim import ensure_mmcv_ext
from .seg_models import TorchSegLoss

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py"
#: set on every config tarot-vision runs, so that the config mmengine dumps reloads in mmseg's own tools
CUSTOM_IMPORTS = {"imports": ["tarot_vision.mmseg_registry"], "allow_failed_imports": False}
_BN = {"type": "BN", "requires_grad": True}


def mmseg_available() -> bool:
    """True when mmsegmentation and mmcv (or mmcv-lite) are installed (nothing is imported)."""
    return all(importlib.util.find_spec(m) is not None for m in ("mmseg", "mmcv", "mmengine"))


def import_mmseg():
    """Import mmseg (installing the ``mmcv._ext`` stand-in if needed), register its modules and our GTA5 dataset."""
    if not mmseg_available():
        raise ImportError("mmsegmentation is not installed: pip install 'tarot-vision[mmseg]'")
    ensure_mmcv_ext()
    import mmseg
    import mmseg.models  # noqa: F401  (fails without mmcv._ext)
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    _register_gta5()
    return mmseg


def _register_gta5() -> None:
    from mmseg.datasets import BaseSegDataset, CityscapesDataset
    from mmseg.registry import DATASETS

    if DATASETS.get("GTA5Dataset") is not None:
        return

    class GTA5Dataset(BaseSegDataset):
        """GTA5 (``images/NNNNN.png``, ``labels/NNNNN_labelTrainIds.png``) with Cityscapes' 19 classes."""

        METAINFO = CityscapesDataset.METAINFO

        def __init__(self, img_suffix: str = ".png", seg_map_suffix: str = "_labelTrainIds.png", **kwargs) -> None:
            kwargs.setdefault("data_prefix", {"img_path": "images", "seg_map_path": "labels"})
            super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

    DATASETS.register_module(name="GTA5Dataset", module=GTA5Dataset)


def config_path(name: str = DEFAULT_CONFIG) -> Path:
    """Path of a config file shipped in the mmseg wheel (``mmseg/.mim/configs/<name>``) or a file path."""
    p = Path(name)
    if p.is_file():
        return p
    spec = importlib.util.find_spec("mmseg")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("mmsegmentation is not installed: pip install 'tarot-vision[mmseg]'")
    path = Path(list(spec.submodule_search_locations)[0]) / ".mim" / "configs" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mmseg config not found (expected e.g. {DEFAULT_CONFIG})")
    return path


def load_config(
    name: str = DEFAULT_CONFIG,
    crop_size: Sequence[int] = (512, 1024),
    tiny: bool = False,
    num_classes: int = 19,
):
    """Compose an mmseg config and adapt it to one CPU process.

    Parameters
    ----------
    name : str
        Config under ``mmseg/.mim/configs`` or a path (default: DeepLabV3 R50-D8, Cityscapes 512×1024, 40k).
    crop_size : (int, int)
        Training crop (H, W); also the data preprocessor's pad size.
    tiny : bool
        Shrink the model for tests: ResNetV1c depth 18 with 8 base channels, 16/8-channel heads (same structure).
    """
    import_mmseg()
    from mmengine.config import Config

    cfg = Config.fromfile(str(config_path(name)))
    crop = tuple(int(c) for c in crop_size)
    cfg.crop_size = crop
    cfg.norm_cfg = copy.deepcopy(_BN)
    m = cfg.model
    m.pretrained = None  # 'open-mmlab://resnet50_v1c' would be downloaded
    m.data_preprocessor.size = crop
    for part in ("backbone", "decode_head", "auxiliary_head"):
        if part in m and m[part] is not None and "norm_cfg" in m[part]:
            m[part].norm_cfg = copy.deepcopy(_BN)
    for part in ("decode_head", "auxiliary_head"):
        if part in m and m[part] is not None:
            m[part].num_classes = num_classes
    if tiny:
        m.backbone.depth = 18
        m.backbone.base_channels = 8
        m.backbone.stem_channels = 8
        m.decode_head.in_channels = 64
        m.decode_head.channels = 16
        m.auxiliary_head.in_channels = 32
        m.auxiliary_head.channels = 8
    return cfg


def build_segmentor(cfg) -> nn.Module:
    """Build the ``EncoderDecoder`` of a config (random init, SyncBN reverted), in eval mode."""
    import_mmseg()
    from mmengine.model import revert_sync_batchnorm
    from mmseg.registry import MODELS

    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    model = revert_sync_batchnorm(model)
    return model.eval()


class MMSegHeads(nn.Module):
    """Backbone (+ neck), decode head and auxiliary head of an mmseg ``EncoderDecoder`` as one module.

    The submodules keep the segmentor's attribute names, so parameter names (``decode_head.conv_seg.weight`` …) and
    state-dict keys equal mmseg's; mmseg checkpoints load with ``strict=False`` (the segmentor's data preprocessor
    buffers are not part of this module). ``forward(x)`` returns decode and auxiliary logits at input resolution.
    """

    def __init__(self, segmentor: Any) -> None:  # an mmseg EncoderDecoder (mmseg ships no type information)
        super().__init__()
        self.backbone = segmentor.backbone
        if getattr(segmentor, "with_neck", False):
            self.neck = segmentor.neck
        self.decode_head = segmentor.decode_head
        self.auxiliary_head = getattr(segmentor, "auxiliary_head", None)
        self.align_corners = bool(getattr(segmentor, "align_corners", False))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(x)
        if hasattr(self, "neck"):
            feats = self.neck(feats)
        size = x.shape[-2:]

        def up(z: torch.Tensor) -> torch.Tensor:
            return nn.functional.interpolate(z, size=size, mode="bilinear", align_corners=self.align_corners)

        out = {"out": up(self.decode_head.forward(feats))}
        if self.auxiliary_head is not None:
            aux = self.auxiliary_head.forward(feats)
            out["aux"] = up(aux[0] if isinstance(aux, (list, tuple)) else aux)
        return out


class MMSegLoss(TorchSegLoss):
    """vmap-safe per-sample loss of an mmseg segmentor wrapped in :class:`MMSegHeads` (specs/vision.md §4.5).

    ``loss = CE(decode) + 0.4 · CE(aux)``; CE sums over non-ignored pixels and divides by all label pixels, exactly as
    mmseg's ``CrossEntropyLoss`` with ``avg_non_ignore=False``. It does not call ``loss_by_feat`` (whose accuracy
    uses data-dependent boolean indexing); :class:`MMSegHeads` returns the same ``{"out", "aux"}`` dict as
    torchvision's DeepLabV3, so the computation is :class:`~tarot_vision.seg_models.TorchSegLoss`'s.
    """


def load_mmseg_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Model state dict from an mmengine checkpoint or a plain state-dict file (trusted files only).

    mmengine's own checkpoints hold numpy values and ``HistoryBuffer`` objects that ``weights_only`` loading rejects;
    files written by this package are loaded with ``weights_only=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint missing")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - mmengine checkpoints need the full unpickler
        log.info("%s: not loadable with weights_only=True (mmengine checkpoint); loading as a trusted file", path)
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return obj


def _pipelines(crop: Sequence[int], scale: Sequence[int]) -> tuple[list, list]:
    scale_wh = (int(scale[1]), int(scale[0]))  # mmseg scales are (W, H)
    train = [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations"},
        {"type": "RandomResize", "scale": scale_wh, "ratio_range": (0.5, 2.0), "keep_ratio": True},
        {"type": "RandomCrop", "crop_size": tuple(int(c) for c in crop), "cat_max_ratio": 0.75},
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "PhotoMetricDistortion"},
        {"type": "PackSegInputs"},
    ]
    test = [
        {"type": "LoadImageFromFile"},
        {"type": "Resize", "scale": scale_wh, "keep_ratio": True},
        {"type": "LoadAnnotations"},
        {"type": "PackSegInputs"},
    ]
    return train, test


def _require_train_ids(records: Sequence[Any], what: str) -> None:
    """mmseg reads the converted ``*_labelTrainIds.png`` files itself: refuse a missing one or one older than its
    source label (stale), naming the file."""
    from .segdata import is_stale

    for rec in records:
        if not rec.label_train.is_file():
            raise FileNotFoundError(f"{rec.label_train}: {what} trainId label missing; run `tarot-vision convert` "
                                    "first")
        if is_stale(rec):
            raise ValueError(f"{rec.label_train}: {what} trainId label is older than its source {rec.label_ids.name} "
                             "(stale); rerun `tarot-vision convert`")


def train_mmseg(
    cfg,
    ann_file: str | Path,
    data_root: str | Path,
    work_dir: str | Path,
    dataset: str = "gta5",
    max_iters: int = 40000,
    batch_size: int = 2,
    lr: float = 0.01,
    scale: Sequence[int] = (1024, 2048),
    seed: int = 0,
    init: str = "scratch",
    log_interval: int = 50,
    checkpoint_every: int = 500,
    val_root: str | Path | None = None,
    val_split: str = "val",
    val_interval: int = 0,
    val_scale: Sequence[int] | None = None,
    device: Any = "auto",
) -> Path:
    """Train with mmseg's ``Runner`` on the stems of an ann_file; returns a plain state-dict file.

    Resumable: mmengine's checkpoint (weights, optimizer, scheduler, iteration) is written to ``work_dir`` every
    ``checkpoint_every`` iterations (the last two kept), and a run that finds one there (a crashed run, restarted)
    continues from it with mmengine's own resume. The resumed run is not bit-identical to an uninterrupted one:
    mmengine 0.10's iteration loop does not replay the sampler's order or the random streams.

    Parameters
    ----------
    ann_file : path
        One stem per line; repeated lines are repeat weights (``InfiniteSampler`` samples them proportionally).
    dataset : {"gta5", "cityscapes"}
        Layout of ``data_root`` (GTA5 frames or Cityscapes train).
    scale : (H, W)
        Base scale of ``RandomResize`` (ratio 0.5–2.0); the crop is ``cfg.crop_size``.
    init : str
        ``scratch`` (seeded random initialisation) or the path of a checkpoint to start from (recorded; never the
        featurisation model object, see algorithm.md B8).
    val_root, val_split, val_interval, val_scale
        With ``val_interval`` > 0, mmseg's ``ValLoop`` runs ``IoUMetric`` on the Cityscapes ``val_split`` of
        ``val_root`` every ``val_interval`` iterations (test pipeline at ``val_scale``, default ``scale``), and
        mmengine's ``CheckpointHook`` keeps the best one by mIoU (``best_mIoU_iter_<i>.pth``, exported as
        ``best_state_dict.pth`` too). The validation metrics land in mmengine's usual files: the text log
        ``<work_dir>/<timestamp>/<timestamp>.log`` and ``<timestamp>/vis_data/scalars.json``.
    device : str
        ``auto`` or ``cuda``: mmengine's ``Runner`` trains on the GPU when one is visible, else the CPU. ``cpu``
        where a GPU is visible, or ``cuda:<i>`` with i > 0, is refused (mmengine picks the device itself): hide the
        GPUs with ``CUDA_VISIBLE_DEVICES``.

    Returns
    -------
    Path
        ``<work_dir>/final_state_dict.pth`` (``{"state_dict": ...}``, tensors only).
    """
    import_mmseg()
    from mmengine.runner import Runner

    from .segdata import resolve_ann_file, scan_cityscapes

    _check_runner_device(device)
    ann_file = Path(ann_file).resolve()
    data_root = Path(data_root).resolve()
    split = "train"
    recs = resolve_ann_file(ann_file, dataset, data_root, split)
    if not recs:
        raise ValueError(f"{ann_file}: empty ann_file, nothing to train on")
    _require_train_ids(recs, dataset)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    train_pipe, _ = _pipelines(cfg.crop_size, scale)
    if dataset == "gta5":
        ds = {"type": "GTA5Dataset", "data_prefix": {"img_path": "images", "seg_map_path": "labels"}}
    else:
        ds = {
            "type": "CityscapesDataset",
            "data_prefix": {"img_path": f"leftImg8bit/{split}", "seg_map_path": f"gtFine/{split}"},
        }
    ds.update(data_root=str(data_root), ann_file=str(ann_file), pipeline=train_pipe)
    cfg.train_dataloader = {
        "batch_size": batch_size,
        "num_workers": 0,
        "persistent_workers": False,
        "sampler": {"type": "InfiniteSampler", "shuffle": True},
        "dataset": ds,
    }
    validate = int(val_interval) > 0
    cfg.train_cfg = {"type": "IterBasedTrainLoop", "max_iters": int(max_iters),
                     "val_interval": int(val_interval) if validate else int(max_iters) + 1}
    for key in ("val_dataloader", "val_cfg", "val_evaluator", "test_dataloader", "test_cfg", "test_evaluator"):
        cfg[key] = None
    if validate:
        if not val_root:
            raise ValueError("train.val_interval > 0 validates on Cityscapes: set target.root (or val_interval=0)")
        vroot = Path(val_root).resolve()
        _require_train_ids(scan_cityscapes(vroot, val_split), "Cityscapes")
        _, val_pipe = _pipelines(cfg.crop_size, val_scale or scale)
        cfg.val_dataloader = _cityscapes_loader(vroot, val_split, val_pipe)
        cfg.val_evaluator = {"type": "IoUMetric", "iou_metrics": ["mIoU"]}
        cfg.val_cfg = {"type": "ValLoop"}
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.param_scheduler = [
        {"type": "PolyLR", "eta_min": 1e-4, "power": 0.9, "begin": 0, "end": int(max_iters), "by_epoch": False}
    ]
    cfg.default_hooks.checkpoint = {"type": "CheckpointHook", "by_epoch": False, "max_keep_ckpts": 2,
                                    "interval": max(1, min(int(checkpoint_every), int(max_iters)))}
    if validate:
        cfg.default_hooks.checkpoint.update(save_best="mIoU", rule="greater")
    cfg.default_hooks.logger = {"type": "LoggerHook", "interval": int(log_interval), "log_metric_by_epoch": False}
    cfg.default_hooks.visualization = {"type": "SegVisualizationHook", "draw": False}
    cfg.work_dir = str(work_dir)
    cfg.custom_imports = dict(CUSTOM_IMPORTS)
    cfg.randomness = {"seed": int(seed)}
    latest = work_dir / "last_checkpoint"  # mmengine names its newest checkpoint here
    resume_from = latest.read_text(encoding="utf-8").strip() if latest.is_file() else ""
    if resume_from and Path(resume_from).is_file():
        log.info("%s: resuming the interrupted training from %s", work_dir, resume_from)
        cfg.resume, cfg.load_from = True, resume_from
    else:
        cfg.resume = False
        cfg.load_from = None if init == "scratch" else str(_plain_state_dict_file(init, work_dir))
    runner = Runner.from_cfg(cfg)
    with _trusted_torch_load(cfg.resume):  # mmengine's own checkpoint, written into work_dir by this function
        runner.train()
    state = {k: v.detach().cpu() for k, v in runner.model.state_dict().items()}
    final = save_torch_atomic({"state_dict": state}, work_dir / "final_state_dict.pth")
    best = sorted(work_dir.glob("best_mIoU_iter_*.pth"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if validate and best:  # mmengine keeps one best file; export it as tensors only, like the final weights
        save_torch_atomic({"state_dict": load_mmseg_checkpoint(best[-1])}, work_dir / "best_state_dict.pth")
    return final


def _check_runner_device(device: Any) -> None:
    """mmengine's ``Runner`` chooses the device itself (the GPU when one is visible): refuse a ``device`` setting
    it would not honour, in one line."""
    from tarot.app.device import pick_device

    dev = pick_device(device)
    if torch.cuda.is_available() and (dev.type == "cpu" or (dev.index or 0) != 0):
        raise ValueError(f"device: {device!r} with the mmseg backend: mmengine's Runner uses cuda:0 whenever a GPU is "
                         "visible; choose with CUDA_VISIBLE_DEVICES (empty for the CPU) and device=auto")


def _cityscapes_loader(root: Path, split: str, pipeline: list) -> dict[str, Any]:
    """An mmseg dataloader over Cityscapes ``split`` (batch 1, in order), for validation and testing."""
    return {
        "batch_size": 1,
        "num_workers": 0,
        "persistent_workers": False,
        "sampler": {"type": "DefaultSampler", "shuffle": False},
        "dataset": {
            "type": "CityscapesDataset",
            "data_root": str(root),
            "data_prefix": {"img_path": f"leftImg8bit/{split}", "seg_map_path": f"gtFine/{split}"},
            "pipeline": pipeline,
        },
    }


@contextlib.contextmanager
def _trusted_torch_load(on: bool) -> Iterator[None]:
    """mmengine 0.10 calls ``torch.load`` without ``weights_only``; since torch 2.6 that rejects its own checkpoints
    (numpy values, ``HistoryBuffer``). For a checkpoint this package wrote itself, allow full loading while the block
    runs."""
    if not on:
        yield
        return
    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = before


def _plain_state_dict_file(path: str | Path, work_dir: Path) -> Path:
    """Re-save any checkpoint as tensors-only ``{"state_dict": ...}`` (loadable by mmengine with weights_only)."""
    sd = load_mmseg_checkpoint(path)
    out = work_dir / "init_state_dict.pth"
    torch.save({"state_dict": sd}, out)
    return out


def evaluate_mmseg(
    cfg,
    checkpoint: str | Path,
    cityscapes_root: str | Path,
    work_dir: str | Path,
    split: str = "val",
    scale: Sequence[int] = (1024, 2048),
    device: Any = "auto",
) -> dict[str, Any]:
    """mIoU (%) on Cityscapes ``split`` with mmseg's ``TestLoop`` and ``IoUMetric`` (``mode='whole'``).

    Returns mmseg's metrics dict (``aAcc``, ``mIoU``, ``mAcc``, percentages).
    """
    import_mmseg()
    from mmengine.runner import Runner

    from .segdata import scan_cityscapes

    _check_runner_device(device)
    root = Path(cityscapes_root).resolve()
    _require_train_ids(scan_cityscapes(root, split), "Cityscapes")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    _, test_pipe = _pipelines(cfg.crop_size, scale)
    cfg.test_dataloader = _cityscapes_loader(root, split, test_pipe)
    cfg.test_evaluator = {"type": "IoUMetric", "iou_metrics": ["mIoU"]}
    cfg.test_cfg = {"type": "TestLoop"}
    for key in (
        "train_dataloader",
        "train_cfg",
        "optim_wrapper",
        "param_scheduler",
        "val_dataloader",
        "val_cfg",
        "val_evaluator",
    ):
        cfg[key] = None
    cfg.default_hooks.visualization = {"type": "SegVisualizationHook", "draw": False}
    cfg.work_dir = str(work_dir)
    cfg.custom_imports = dict(CUSTOM_IMPORTS)
    cfg.load_from = str(_plain_state_dict_file(checkpoint, work_dir))
    runner = Runner.from_cfg(cfg)
    return dict(runner.test())
