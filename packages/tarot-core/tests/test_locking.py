"""One writer per output folder (tarot.locking.output_lock), released by the kernel on kill -9; tarot select killed
mid-run leaves no result that looks complete, and its rerun equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tarot import FeatureStore, SelectionResult
from tarot.app.cli import main
from tarot.errors import OutputLockedError
from tarot.locking import lock_path, output_lock

HOLD = ("import sys, time; from tarot.locking import output_lock\n"
        "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")


def test_a_second_writer_is_refused_and_the_lock_goes_with_the_first(tmp_path):
    out = tmp_path / "run"
    with output_lock(out):
        assert lock_path(out).is_file() and not out.exists()  # the folder itself is not created early
        with pytest.raises(OutputLockedError, match=rf"run: pid {os.getpid()} on .* is writing here right now"):
            with output_lock(out):
                pass
    assert not lock_path(out).exists()
    with output_lock(out):  # free again
        pass


def test_kill_9_of_the_holder_frees_the_lock(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match=rf"pid {proc.pid} on "):
            with output_lock(out):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert lock_path(out).exists()  # the file stays behind, but nobody holds it
        with output_lock(out):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_tarot_select_into_a_folder_being_written_is_one_line_exit_2(tmp_path, capsys):
    rng = np.random.default_rng(0)
    store = FeatureStore.from_arrays(tmp_path / "store", {"candidate": rng.normal(size=(50, 8)).astype(np.float32),
                                                          "target": rng.normal(size=(10, 8)).astype(np.float32)})
    out = tmp_path / "sel"
    with output_lock(out):
        rc = main(["select", "--store", str(store.path), "--method", "random", "--n", "5", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "tarot select: error:" in err and "is writing here" in err
    assert not out.exists()


def test_kill_9_during_select_leaves_no_complete_looking_result_and_the_rerun_matches(tmp_path):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 64))
    cand = (centres[rng.integers(0, 6, 1500)] + 0.3 * rng.normal(size=(1500, 64))).astype(np.float32)
    tgt = (centres[rng.integers(0, 2, 150)] + 0.3 * rng.normal(size=(150, 64))).astype(np.float32)
    store = FeatureStore.from_arrays(tmp_path / "store", {"candidate": cand, "target": tgt})
    argv = ["select", "--store", str(store.path), "--method", "otm", "--ratio", "auto", "--weighting", "--no-progress"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "tarot.app.cli", *argv, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # imports and whitening done, the OTM folds running
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    if out.exists():  # only a finished run renames its result into place
        assert (out / "result.json").is_file() and (out / "arrays.npz").is_file()
    assert main([*argv, "--out", str(out)]) == 0  # the rerun (no lock left held)
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0
    a, b = SelectionResult.load(out), SelectionResult.load(tmp_path / "clean")
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.weights, b.weights)
    assert a.ot_distance == pytest.approx(b.ot_distance)
