"""Output that cannot be written: a read-only parent folder and a full disk (a file-size limit stands in for it: the
write fails the same way, with an error that names no file). Each case runs ``tarot`` in a subprocess and asserts
exit status 2, one stderr line naming the output folder, no traceback, and that nothing complete-looking was left
(a previous result in the folder stays intact).

The read-only cases go through :func:`tarot.app.conventions.check_read_only_output`, as in the domain packages (root
runs drop the capabilities that let root ignore permissions, or skip where setpriv is missing)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tarot import FeatureStore, SelectionResult
from tarot.app.conventions import check_read_only_output

CLI = [sys.executable, "-m", "tarot.app.cli"]
LIMIT_BYTES = 20_000  # larger than the interpreter needs to start, smaller than the result's arrays


def _file_size_limit() -> None:  # preexec_fn: writes past LIMIT_BYTES fail with EFBIG instead of a signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


def _run(argv: list, limited: bool = False) -> tuple[int, str]:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*CLI, *map(str, argv)], capture_output=True, text=True, env=env,
                          preexec_fn=_file_size_limit if limited else None, timeout=300)
    return proc.returncode, proc.stderr


def _one_line(rc: int, err: str, command: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"tarot {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    feats = {"candidate": rng.normal(size=(3000, 64)).astype(np.float32),
             "target": rng.normal(size=(40, 64)).astype(np.float32)}
    return FeatureStore.from_arrays(tmp_path / "store", feats)


def _select(store: FeatureStore, n: int = 2000) -> list:
    return ["select", "--store", store.path, "--method", "topk_mean", "--n", n, "--no-progress"]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


def test_select_into_a_read_only_folder(tmp_path, store):
    line = check_read_only_output("tarot.app.cli", "tarot", _select(store), tmp_path / "ro")
    assert line.startswith("tarot select: error: ") and "Permission denied" in line


def test_report_into_a_read_only_folder(tmp_path, store):
    assert _run([*_select(store, n=30), "--out", tmp_path / "sel"])[0] == 0
    line = check_read_only_output("tarot.app.cli", "tarot", ["report", tmp_path / "sel"], tmp_path / "ro")
    assert line.startswith("tarot report: error: ") and "Permission denied" in line


def test_select_on_a_full_disk_names_the_output_and_leaves_nothing(tmp_path, store):
    out = tmp_path / "sel"
    line = _one_line(*_run([*_select(store), "--out", out], limited=True), "select")
    assert "File too large while writing" in line and f"'{out}'" in line
    assert not out.exists() and _leftovers(tmp_path) == []  # no staging or temporary folder left behind


def test_a_failed_rewrite_keeps_the_previous_result(tmp_path, store):
    out = tmp_path / "sel"
    first = ["select", "--store", store.path, "--method", "random", "--n", 5, "--no-progress", "--out", out]
    assert _run(first)[0] == 0
    before = SelectionResult.load(out)
    line = _one_line(*_run([*_select(store), "--out", out], limited=True), "select")
    assert str(out) in line
    after = SelectionResult.load(out)  # still the complete earlier result
    assert after.method == "random" and np.array_equal(after.indices, before.indices)
    assert _leftovers(tmp_path) == []


def test_result_save_names_its_folder_on_a_full_disk(tmp_path):
    code = ("import numpy as np, sys\nfrom tarot import SelectionResult\n"
            "r = SelectionResult(indices=np.arange(5000), method='random', n_candidates=10000, ratio=0.5)\n"
            "try:\n    r.save(sys.argv[1])\nexcept OSError as exc:\n    print(exc)\n")
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                          preexec_fn=_file_size_limit, timeout=120)
    assert proc.stdout.strip() == f"[Errno 27] File too large while writing: '{out}'", proc.stdout + proc.stderr
    assert not out.exists() and _leftovers(tmp_path) == []
