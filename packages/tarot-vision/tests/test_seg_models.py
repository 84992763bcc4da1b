from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tarot import GradientFeaturizer
from tarot_vision import seg_models as SM
from tarot_vision import segdata as S


def _batch(n: int = 3, h: int = 16, w: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 19, (n, h, w), generator=g)
    label[:, :2] = 255  # ignored rows (padding)
    label[0, 5, 5:9] = 255
    return {"image": torch.randn(n, 3, h, w, generator=g), "label": label}


def test_pixel_ce_counts_ignored_pixels_in_denominator():
    b = _batch(1)
    logits = torch.randn(1, 19, 16, 24)
    want = F.cross_entropy(logits, b["label"], ignore_index=255, reduction="sum") / b["label"].numel()
    assert torch.allclose(SM.pixel_ce(logits, b["label"]), want, rtol=1e-6)


def _rel_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return float((a - b).norm() / b.norm().clamp_min(1e-12)) < tol


def test_tiny_segmenter_vmap_equals_loop_through_featurizer():
    torch.manual_seed(0)
    model = SM.TinySegmenter(width=8).eval()
    batch = _batch(3)
    kw = {"proj_dim": 64, "seed": 3, "params": ["classifier.*", "aux_classifier.*"]}
    fv = GradientFeaturizer(model, SM.TorchSegLoss(), mode="vmap", **kw)
    fl = GradientFeaturizer(model, SM.TorchSegLoss(), mode="loop", **kw)
    gv, gl = fv.per_sample_grads(batch), fl.per_sample_grads(batch)
    assert set(gv) == {n for n, _ in model.named_parameters() if n.startswith(("classifier.", "aux_classifier."))}
    for name in gv:
        assert _rel_close(gv[name], gl[name]), name
    assert _rel_close(fv.featurize_batch(batch), fl.featurize_batch(batch))
    # independent reference: plain autograd on the batch-of-one forward
    x, y = batch["image"][1:2], batch["label"][1:2]
    out = model(x)
    loss = SM.pixel_ce(out["out"], y) + 0.4 * SM.pixel_ce(out["aux"], y)
    ref = torch.autograd.grad(loss, [dict(model.named_parameters())["classifier.1.weight"]])[0]
    assert _rel_close(gv["classifier.1.weight"][1], ref)


def test_factorised_segmentation_head_features_batch_equals_loop():
    """TorchSegLoss.losses (per-image losses, ignored pixels in each image's own denominator) gives the factorised
    featurizer its batch mode on the tiny segmenter's heads; it equals the one-image runs, and each block equals the
    Kronecker projection of the loop gradients."""
    from tarot.features.factorized import FactorizedGradientFeaturizer

    torch.manual_seed(0)
    model = SM.TinySegmenter(width=8).eval()
    batch = _batch(3)
    per = SM.TorchSegLoss().losses(model, dict(model.named_parameters()), dict(model.named_buffers()), batch)
    one = [SM.TorchSegLoss().loss(model, dict(model.named_parameters()), dict(model.named_buffers()),
                                  {k: v[i] for k, v in batch.items()}) for i in range(3)]
    torch.testing.assert_close(per, torch.stack(one))
    with pytest.warns(RuntimeWarning, match="left out"):  # the BatchNorm weights
        FactorizedGradientFeaturizer(model, SM.TorchSegLoss(), proj_dim=64)
    globs = ["classifier.0.0.weight", "classifier.1.*", "aux_classifier.*"]
    fb = FactorizedGradientFeaturizer(model, SM.TorchSegLoss(), proj_dim=64, mode="batch", factor_dim=8, params=globs)
    fl = FactorizedGradientFeaturizer(model, SM.TorchSegLoss(), proj_dim=64, mode="loop", factor_dim=8, params=globs)
    assert [ly.name for ly in fb.layers] == ["classifier.0.0", "classifier.1", "aux_classifier.0"]
    assert _rel_close(fb.featurize_batch(batch), fl.featurize_batch(batch))
    grads = GradientFeaturizer(model, SM.TorchSegLoss(), proj_dim=8, mode="loop", params=globs).per_sample_grads(batch)
    blocks = fb.per_sample_grads(batch)
    for ly in fb.layers:
        parts = [grads[ly.weight].reshape(3, ly.d_out, -1)] + ([grads[ly.bias][..., None]] if ly.bias else [])
        g = torch.cat(parts, -1)
        p_in = torch.eye(ly.d_in) if ly.p_in is None else ly.p_in
        p_out = torch.eye(ly.d_out) if ly.p_out is None else ly.p_out
        assert _rel_close(blocks[ly.name], p_out @ g @ p_in.T), ly.name


def test_torchvision_deeplabv3_builds_offline_and_featurizes():
    torch.manual_seed(0)
    model = SM.build_torch_segmenter("deeplabv3_resnet50").eval()
    assert model.aux_classifier is not None
    batch = _batch(2, 32, 32)
    feat = GradientFeaturizer(model, SM.TorchSegLoss(), proj_dim=32, params=["classifier.4.*"], mode="vmap")
    feats = feat.featurize_batch(batch)
    assert feats.shape == (2, 32) and torch.isfinite(feats).all()
    loop = GradientFeaturizer(model, SM.TorchSegLoss(), proj_dim=32, params=["classifier.4.*"], mode="loop")
    assert _rel_close(feats, loop.featurize_batch(batch))


def test_iou_accumulator_matches_hand_counts():
    acc = SM.IoUAccumulator(num_classes=3)
    gt = np.array([[0, 0, 1, 255], [2, 2, 1, 1]])
    pred = np.array([[0, 1, 1, 2], [2, 0, 1, 0]])
    acc.update(pred, gt)
    # class 0: inter 1, pred 3 (valid pixels), gt 2 -> 1/4; class 1: inter 2, pred 3, gt 3 -> 2/4; class 2: 1/(1+2-1)
    np.testing.assert_allclose(acc.per_class_iou(), [0.25, 0.5, 0.5])
    acc2 = SM.IoUAccumulator(num_classes=3)
    acc2.update(np.zeros((2, 2), int), np.array([[0, 0], [1, 255]]))
    iou = acc2.per_class_iou()
    assert np.isnan(iou[2]) and acc2.miou() == pytest.approx((2 / 3 + 0.0) / 2)


def test_train_and_evaluate_torch_segmenter(gta_root, cityscapes_root):
    torch.manual_seed(0)
    model = SM.TinySegmenter(width=4)
    ds = S.SegmentationDataset(S.scan_gta5(gta_root), size=(16, 32), train=True)
    losses = SM.train_torch_segmenter(model, ds, iters=3, batch_size=2, seed=0, progress=False)
    assert len(losses) == 3 and all(np.isfinite(losses))
    res = SM.evaluate_torch_segmenter(model, S.scan_cityscapes(cityscapes_root, "val"), scale=(16, 32), progress=False)
    assert res["images"] == 4 and 0.0 <= res["mIoU"] <= 1.0 and len(res["per_class_iou"]) == 19
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        SM.train_torch_segmenter(model, ds, iters=1, batch_size=1, progress=False)


_TRAIN_SCRIPT = """
import sys, time, torch
from pathlib import Path
from tarot_vision import seg_models as SM, segdata as S

class Slow(torch.utils.data.Dataset):  # a few ms per image, so that the run can be killed midway
    def __init__(self, ds):
        self.ds = ds
    def __len__(self):
        return len(self.ds)
    def __getitem__(self, i):
        time.sleep(0.004)
        return self.ds[i]
    @property
    def epoch(self):  # the augmentation epoch of the wrapped data set
        return self.ds.epoch
    @epoch.setter
    def epoch(self, value):
        self.ds.epoch = value

out, gta = Path(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
model = SM.TinySegmenter(width=4)
ds = S.SegmentationDataset(S.scan_gta5(gta), size=(16, 32), train=True, seed=1)
slow = Slow(ds)
losses = SM.train_torch_segmenter(model, slow, iters=60, batch_size=2, seed=0, progress=False,
                                  state_file=out / "state.pt", checkpoint_every=3)
torch.save({"model": model.state_dict(), "losses": losses}, out / "final.pt")
"""


def test_training_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tmp_path, gta_root):
    """A real crash (SIGKILL after a training state was written, mid-pass): rerunning the same command resumes from
    the state and ends with the uninterrupted run's weights and losses."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-c", _TRAIN_SCRIPT]
    for name in ("clean", "killed"):
        (tmp_path / name).mkdir()
    subprocess.run([*run, str(tmp_path / "clean"), str(gta_root)], check=True, env=env)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*run, str(killed), str(gta_root)], env=env)
    deadline = time.time() + 120
    while not (killed / "state.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (killed / "final.pt").exists(), "the run finished before it could be killed"
    subprocess.run([*run, str(killed), str(gta_root)], check=True, env=env)  # the rerun resumes
    a, b = torch.load(tmp_path / "clean" / "final.pt"), torch.load(killed / "final.pt")
    assert b["losses"] == a["losses"] and len(a["losses"]) == 60
    for k, v in a["model"].items():
        assert torch.equal(b["model"][k], v), k


def test_a_training_state_of_another_run_is_refused(tmp_path, gta_root):
    torch.manual_seed(0)
    ds = S.SegmentationDataset(S.scan_gta5(gta_root), size=(16, 32), train=True)
    state = tmp_path / "state.pt"
    SM.train_torch_segmenter(SM.TinySegmenter(width=4), ds, iters=5, batch_size=2, progress=False, state_file=state,
                             checkpoint_every=2)
    assert state.exists()
    with pytest.raises(ValueError, match="training state of another run"):
        SM.train_torch_segmenter(SM.TinySegmenter(width=4), ds, iters=9, batch_size=2, progress=False,
                                 state_file=state)
