import json

import numpy as np
import pytest
import torch
from fixtures import av2_scenario, nuscenes_scenario, waymo_scenario
from tarot_motion.data import MotionDataset
from tarot_motion.preprocess import process_scenario, resolve_config, stack_samples
from tarot_motion.train import build_model, evaluate, train_model

TINY = {"hidden_size": 16, "tx_hidden_size": 32, "tx_num_heads": 2, "map_heads": 2}


@pytest.fixture(scope="module")
def ds():
    cfg = resolve_config({"object_type": ["VEHICLE", "CYCLIST"], "max_num_roads": 8})
    samples = []
    for sc in (waymo_scenario(), av2_scenario(), nuscenes_scenario(T=66)):
        samples += process_scenario(sc, cfg)[0]
    return MotionDataset(stack_samples(samples))


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_scratch_init_is_fresh_seeded_and_differs_from_checkpoint(ds, tmp_path):
    m1 = build_model(TINY, "scratch", seed=3)
    m2 = build_model(TINY, "scratch", seed=3)
    torch.testing.assert_close(_flat(m1), _flat(m2))
    train_model(m1, ds, {"batch_size": 4, "max_steps": 3, "lr": 1e-2}, tmp_path / "a", progress=False)
    ckpt = tmp_path / "a" / "last.pt"
    m3 = build_model(TINY, "scratch", seed=3)
    assert not torch.allclose(_flat(m3), _flat(m1))  # scratch never inherits the trained (featurisation) weights
    m4 = build_model(TINY, f"checkpoint:{ckpt}")
    torch.testing.assert_close(_flat(m4), _flat(m1))
    with pytest.raises(ValueError, match="train.init"):
        build_model(TINY, "pretrained")


def test_training_reduces_loss_and_writes_checkpoints(ds, tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY, "scratch", seed=0)
    model.eval()
    from tarot_motion.data import collate

    with torch.no_grad():
        before = model(collate([ds[i] for i in range(len(ds))]))[1].item()
    info = train_model(model, ds, {"batch_size": 4, "epochs": 15, "lr": 5e-3, "milestones": [10]}, tmp_path / "r",
                       val_ds=ds, progress=False)
    model.eval()
    with torch.no_grad():
        after = model(collate([ds[i] for i in range(len(ds))]))[1].item()
    assert after < before
    assert info["epochs"] == 15 and info["steps"] == 15
    assert (tmp_path / "r" / "epoch15.pt").exists() and (tmp_path / "r" / "best.pt").exists()
    hist = json.loads((tmp_path / "r" / "history.json").read_text())
    assert len(hist) == 15 and "val/brier_fde" in hist[0] and "val/waymo/minADE6" in hist[0]
    ev = evaluate(model, ds, batch_size=2)
    assert set(ev["per_sample"]) == {"minADE6", "minFDE6", "miss_rate", "brier_fde"}
    assert ev["metrics"]["val/count"] == len(ds)
    assert np.isfinite(ev["metrics"]["val/brier_fde"])


def test_resume_continues_to_the_same_weights(ds, tmp_path):
    cfg = {"batch_size": 2, "epochs": 4, "lr": 1e-2, "seed": 5}
    full = build_model(TINY, "scratch", seed=1)
    train_model(full, ds, cfg, tmp_path / "full", progress=False)
    part = build_model(TINY, "scratch", seed=1)
    train_model(part, ds, {**cfg, "epochs": 2}, tmp_path / "part", progress=False)
    resumed = build_model(TINY, "scratch", seed=1)
    info = train_model(resumed, ds, cfg, tmp_path / "part", progress=False)  # picks up last.pt at epoch 2
    assert info["epochs"] == 4 and len(info["history"]) == 4
    torch.testing.assert_close(_flat(resumed), _flat(full), rtol=1e-5, atol=1e-6)


def test_max_steps_budget(ds, tmp_path):
    m = build_model(TINY, "scratch", seed=0)
    info = train_model(m, ds, {"batch_size": 3, "max_steps": 5}, tmp_path / "s", progress=False)
    assert info["steps"] == 5


_TRAIN_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[2])
from fixtures import av2_scenario, nuscenes_scenario, waymo_scenario
from tarot_motion.data import MotionDataset
from tarot_motion.preprocess import process_scenario, resolve_config, stack_samples
from tarot_motion.train import build_model, train_model
cfg = resolve_config({"object_type": ["VEHICLE", "CYCLIST"], "max_num_roads": 8})
samples = []
for sc in (waymo_scenario(), av2_scenario(), nuscenes_scenario(T=66)):
    samples += process_scenario(sc, cfg)[0]
model = build_model({"hidden_size": 16, "tx_hidden_size": 32, "tx_num_heads": 2, "map_heads": 2}, "scratch", seed=1)
train_model(model, MotionDataset(stack_samples(samples)), {"batch_size": 1, "epochs": 12, "lr": 1e-2, "seed": 5},
            sys.argv[1], progress=False)
torch.save(model.state_dict(), sys.argv[1] + "/final.pt")
"""


def test_kill_9_during_training_then_rerun_gives_the_uninterrupted_weights(tmp_path):
    """A real crash (SIGKILL after the first epochs were saved): the rerun resumes from last.pt and ends with the
    weights of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    here = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-c", _TRAIN_SCRIPT]
    subprocess.run([*run, str(tmp_path / "clean"), here], check=True, env=env)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*run, str(killed), here], env=env)
    deadline = time.time() + 120
    while not (killed / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (killed / "final.pt").exists(), "the run finished before it could be killed"
    subprocess.run([*run, str(killed), here], check=True, env=env)  # the rerun resumes
    a = torch.load(tmp_path / "clean" / "final.pt")
    b = torch.load(killed / "final.pt")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
