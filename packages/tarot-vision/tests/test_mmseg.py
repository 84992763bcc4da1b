"""mmsegmentation 1.2.2 integration with a tiny DeepLabV3 (ResNetV1c-18, 8 base channels) built from mmseg's configs."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch
from tarot_vision import mmseg_backend as MB
from tarot_vision import segdata as S

pytestmark = [
    pytest.mark.mmseg,
    pytest.mark.skipif(not MB.mmseg_available(), reason="needs the [mmseg] extra (mmsegmentation + mmcv-lite)"),
]


@pytest.fixture(scope="module")
def tiny_cfg():
    return MB.load_config(crop_size=(32, 64), tiny=True)


def test_shim_only_when_ext_missing(caplog, tiny_cfg):
    from tarot_vision import mmcv_shim

    ext = sys.modules["mmcv._ext"]
    if mmcv_shim.is_shimmed():
        with pytest.raises(RuntimeError, match="needs the compiled mmcv._ext extension"):
            ext.nms(None)
        # a second call keeps the stand-in and logs nothing new
        with caplog.at_level(logging.WARNING):
            assert mmcv_shim.ensure_mmcv_ext() is True
        assert not caplog.records
        from mmengine.utils.dl_utils import mmcv_full_available

        assert mmcv_full_available() is False
    else:
        assert mmcv_shim.ensure_mmcv_ext() is False


def test_stock_config_is_deeplabv3_r50_adapted_for_cpu():
    cfg = MB.load_config()
    m = cfg.model
    assert m.type == "EncoderDecoder" and m.pretrained is None
    assert m.backbone.type == "ResNetV1c" and m.backbone.depth == 50 and m.backbone.dilations == (1, 1, 2, 4)
    assert m.decode_head.type == "ASPPHead" and m.decode_head.dilations == (1, 12, 24, 36)
    assert m.auxiliary_head.loss_decode.loss_weight == 0.4
    assert m.backbone.norm_cfg["type"] == "BN" and m.decode_head.norm_cfg["type"] == "BN"
    assert tuple(m.data_preprocessor.size) == (512, 1024)


def _sample_batch(n: int = 2, h: int = 32, w: int = 48):
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 19, (n, h, w), generator=g)
    label[:, -3:] = 255
    return {"image": torch.randn(n, 3, h, w, generator=g), "label": label}


def test_mmseg_vmap_loss_matches_model_loss_loop(tiny_cfg):
    """vmapped MMSegLoss gradients (decode head) == per-image ``segmentor.loss`` + autograd.grad, to 1e-5."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from tarot import GradientFeaturizer

    torch.manual_seed(0)
    seg = MB.build_segmentor(tiny_cfg)
    # random (non-zero) BN statistics so eval-mode BN is exercised
    for mod in seg.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    heads = MB.MMSegHeads(seg).eval()
    batch = _sample_batch()
    fv = GradientFeaturizer(heads, MB.MMSegLoss(), proj_dim=32, params=["decode_head.*"], mode="vmap")
    grads = fv.per_sample_grads(batch)
    assert all(n.startswith("decode_head.") for n in grads) and "decode_head.conv_seg.weight" in grads
    params = dict(seg.named_parameters())
    for i in range(2):
        ds = SegDataSample()
        ds.gt_sem_seg = PixelData(data=batch["label"][i][None])
        ds.set_metainfo({"img_shape": (32, 48), "pad_shape": (32, 48), "ori_shape": (32, 48)})
        losses = seg.loss(batch["image"][i][None], [ds])
        total = sum(v for k, v in losses.items() if "loss" in k)
        names = list(grads)
        ref = torch.autograd.grad(total, [params[n] for n in names])
        for n, r in zip(names, ref):
            rel = float((grads[n][i] - r).norm() / r.norm().clamp_min(1e-12))
            assert rel < 1e-5, (n, rel)
    fl = GradientFeaturizer(heads, MB.MMSegLoss(), proj_dim=32, params=["decode_head.*"], mode="loop")
    a, b = fv.featurize_batch(batch), fl.featurize_batch(batch)
    assert float((a - b).norm() / b.norm()) < 1e-5


def test_ann_file_round_trip_through_mmseg_dataset(gta_root, tmp_path):
    MB.import_mmseg()
    from mmseg.registry import DATASETS

    S.convert("gta5", gta_root, progress=False)
    ann = S.write_ann_file(["00004", "00002"], tmp_path / "ann.txt", repeats=[1, 3])
    ds = DATASETS.build(
        {"type": "GTA5Dataset", "data_root": str(gta_root), "ann_file": str(ann), "pipeline": [], "lazy_init": False}
    )
    infos = [ds.get_data_info(i) for i in range(len(ds))]  # data_list itself is serialised away
    got = [(info["img_path"], info["seg_map_path"]) for info in infos]
    ours = [(str(r.image), str(r.label_train)) for r in S.resolve_ann_file(ann, "gta5", gta_root)]
    assert got == ours and len(got) == 4


def test_train_with_runner_on_ann_file_then_miou(gta_root, cityscapes_root, tmp_path, tiny_cfg):
    S.convert("gta5", gta_root, progress=False)
    S.convert("cityscapes", cityscapes_root, progress=False)
    ann = S.write_ann_file(["00001", "00003"], tmp_path / "ann.txt", repeats=[2, 1])
    sd_path = MB.train_mmseg(
        tiny_cfg, ann, gta_root, tmp_path / "work", max_iters=2, batch_size=2, scale=(24, 48), seed=0, log_interval=1
    )
    sd = MB.load_mmseg_checkpoint(sd_path)
    assert "decode_head.conv_seg.weight" in sd
    # the trained state differs from a fresh seeded init (training happened) and loads into the heads wrapper
    fresh = MB.build_segmentor(tiny_cfg).state_dict()
    assert not torch.equal(sd["decode_head.conv_seg.weight"], fresh["decode_head.conv_seg.weight"])
    missing, unexpected = MB.MMSegHeads(MB.build_segmentor(tiny_cfg)).load_state_dict(sd, strict=False)
    assert not missing and all(k.startswith("data_preprocessor") for k in unexpected)
    # featurise with mmengine's own checkpoint file (numpy/HistoryBuffer inside: not weights_only-loadable)
    from tarot_vision import segpipe
    from tarot_vision.config import resolve_config

    mmengine_ckpt = tmp_path / "work" / "iter_2.pth"
    assert mmengine_ckpt.is_file()
    cfg = resolve_config(
        "seg",
        overrides=[
            "backend=mmseg",
            "model.tiny=true",
            f"candidate.root={gta_root}",
            f"target.root={cityscapes_root}",
            "data.size=[32, 64]",
            "featurize.proj_dim=16",
            f"featurize.checkpoints=[{{name: it2, path: {mmengine_ckpt}}}]",
        ],
    )
    store = segpipe.featurize(cfg, tmp_path / "feat", progress=False)
    assert store.features("candidate").shape == (4, 16) and store.features("target").shape == (4, 16)
    assert store.manifest["checkpoints"][0]["path"] == str(mmengine_ckpt)  # where the features came from
    # the config mmengine dumped reloads in mmseg's own tools: it imports the module that registers GTA5Dataset
    from mmengine.config import Config

    dumped = sorted((tmp_path / "work").rglob("*.py"))
    assert dumped, "mmengine dumped no config"
    reloaded = Config.fromfile(str(dumped[-1]))
    assert reloaded.custom_imports["imports"] == ["tarot_vision.mmseg_registry"]
    assert reloaded.train_dataloader.dataset.type == "GTA5Dataset"
    import importlib

    from mmseg.registry import DATASETS

    importlib.import_module(reloaded.custom_imports["imports"][0])
    assert DATASETS.get("GTA5Dataset") is not None
    assert store.ids("candidate") == ["00001", "00002", "00003", "00004"]
    metrics = MB.evaluate_mmseg(tiny_cfg, sd_path, cityscapes_root, tmp_path / "eval", scale=(32, 64))
    assert set(metrics) >= {"mIoU", "aAcc"} and 0.0 <= float(metrics["mIoU"]) <= 100.0
    assert np.isfinite(float(metrics["mIoU"]))


def test_train_refuses_unconverted_labels(gta_root, tmp_path, tiny_cfg):
    ann = S.write_ann_file(["00001"], tmp_path / "ann.txt")
    with pytest.raises(FileNotFoundError, match="00001_labelTrainIds.png: gta5 trainId label missing"):
        MB.train_mmseg(tiny_cfg, ann, gta_root, tmp_path / "w", max_iters=1)


_MMSEG_TRAIN = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from tarot_vision import mmseg_backend as MB
cfg = MB.load_config(crop_size=(32, 64), tiny=True)
MB.train_mmseg(cfg, sys.argv[1], sys.argv[2], sys.argv[3], max_iters=8, batch_size=2, scale=(24, 48), seed=0,
               log_interval=1, checkpoint_every=2)
"""


def test_mmseg_training_killed_with_sigkill_resumes_from_its_checkpoint(gta_root, tmp_path):
    """A crash after the first checkpoint: the same call continues from it (mmengine's resume) to max_iters instead
    of starting over."""
    import os
    import signal
    import subprocess
    import time

    S.convert("gta5", gta_root, progress=False)
    ann = S.write_ann_file(["00001", "00003"], tmp_path / "ann.txt")
    work = tmp_path / "work"
    argv = [sys.executable, "-c", _MMSEG_TRAIN, str(ann), str(gta_root), str(work)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (work / "last_checkpoint").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (work / "final_state_dict.pth").exists(), "the run finished before it could be killed"
    crashed_at = (work / "last_checkpoint").read_text().strip()
    rerun = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert f"resuming the interrupted training from {crashed_at}" in rerun.stdout
    done = int(crashed_at.rsplit("iter_", 1)[1].split(".")[0])
    assert f"resumed epoch: 0, iter: {done}" in rerun.stdout, rerun.stdout[-3000:]
    assert (work / "iter_8.pth").is_file() and (work / "final_state_dict.pth").is_file()
