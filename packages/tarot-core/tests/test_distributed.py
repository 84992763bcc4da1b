"""Tests for tarot.features.distributed: torchrun + gloo featurization with a killed and restarted rank, independent
restarts, merge verification, and the shared CLI flags.

This file is also the worker script that ``torchrun`` launches (see ``_worker_main``): every rank builds the same
tiny model, check-pointed states and data sets, and calls :func:`tarot.features.distributed.featurize_distributed`.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import faulthandler
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from _tiny_models import CELoss, Samples, TinyNet, perturbed_state
from tarot import Checkpoint, FeatureStore, GradientFeaturizer, StoreError, featurize_to_store
from tarot.app.argtypes import add_shard_arguments
from tarot.features.distributed import (
    RankFailed,
    _coordinated,
    _featurize_shard,
    _GroupCoordinator,
    _StoreCoordinator,
    featurize_distributed,
    init_process_group_if_needed,
    merge_shards,
    resolve_backend,
    shard_from_args,
    shard_from_env,
)
from tarot.features.featurize import shard_rows

K, BATCH, N_CAND, N_TGT = 16, 3, 22, 9
CRASH_CODE = 17
CRASH_AFTER = 2  # rank 1 dies when it starts its 3rd candidate batch (2 batches written and flushed)
HERE = Path(__file__).resolve()


# ---------------------------------------------------------------------------------------------- shared setup
class LoggedSamples(Samples):
    """Samples that append every row read to a log file and can kill the process (os._exit) at one row."""

    def __init__(self, n: int, seed: int, split: str, log_file: Path | None = None, crash_row: int | None = None):
        super().__init__(n, seed)
        self.split, self.log_file, self.crash_row = split, log_file, crash_row

    def __getitem__(self, i: int):
        if self.crash_row is not None and i == self.crash_row:
            os._exit(CRASH_CODE)  # simulated hard failure: no cleanup, no exception handling
        if self.log_file is not None:
            with open(self.log_file, "a", encoding="ascii") as fh:
                fh.write(f"{self.split} {i}\n")
        return super().__getitem__(i)


def _setup(log_file: Path | None = None, crash_row: int | None = None, seed: int = 0):
    model = TinyNet()
    ckpts = [
        Checkpoint("ep1", state_dict=perturbed_state(model, 1), weight=1.0),
        Checkpoint("ep2", state_dict=perturbed_state(model, 2), weight=0.5),
    ]
    feat = GradientFeaturizer(model, CELoss(), proj_dim=K, seed=seed)
    data = {
        "candidate": LoggedSamples(N_CAND, 10, "candidate", log_file, crash_row),
        "target": LoggedSamples(N_TGT, 11, "target", log_file),
    }
    labels = {
        "ids": {"candidate": [f"c{i:03d}" for i in range(N_CAND)]},
        "sources": {"candidate": ["a" if i % 3 else "b" for i in range(N_CAND)]},
    }
    return feat, data, ckpts, labels


def _worker_main(argv: list[str]) -> int:
    """Entry point of one rank (run by torchrun, or by hand with --rank/--world-size)."""
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--log-dir", required=True)
    p.add_argument("--crash-rank", type=int, default=None)
    add_shard_arguments(p)
    args = p.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps the stacks of a stuck worker
    torch.set_num_threads(1)
    shard = shard_from_args(args)
    rank = 0 if shard is None else shard[0]
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    log_file = Path(args.log_dir) / f"reads-rank{rank}-attempt{attempt}-{os.getpid()}.txt"
    crash_row = None
    if args.crash_rank == rank and attempt == 0:
        crash_row = shard_rows(N_CAND, BATCH, *shard)[0] + CRASH_AFTER * BATCH
    feat, data, ckpts, labels = _setup(log_file, crash_row)
    store = featurize_distributed(feat, data, args.out, ckpts, batch_size=BATCH, shard=shard, merge=args.merge,
                                  timeout=120, progress=False, **labels)
    (Path(args.log_dir) / f"done-rank{rank}-attempt{attempt}.txt").write_text(str(store.path))
    return 0


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers use one thread too: identical kernels, identical bytes
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> FeatureStore:
    """The single-process store every distributed run must reproduce byte for byte."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        feat, data, ckpts, labels = _setup()
        path = tmp_path_factory.mktemp("ref") / "store"
        return featurize_to_store(feat, data, path, ckpts, batch_size=BATCH, progress=False, **labels)
    finally:
        torch.set_num_threads(before)


def _assert_same_store(got: FeatureStore, ref: FeatureStore) -> None:
    assert got.complete and got.splits == ref.splits
    for split in ref.splits:
        assert (got.path / f"{split}.npy").read_bytes() == (ref.path / f"{split}.npy").read_bytes(), split
        assert got.ids(split) == ref.ids(split)
        assert got.sources(split) == ref.sources(split)
    for key in ("dim", "projector", "checkpoints", "batch_size", "labels_sha256"):
        assert got.manifest[key] == ref.manifest[key], key


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, log_dir: Path, max_restarts: int, crash_rank: int | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1",
               PYTHONFAULTHANDLER="1")  # a fatal signal in a rank prints its Python stacks
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", str(max_restarts), "--monitor-interval", "0.2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
        str(HERE), "--out", str(out), "--log-dir", str(log_dir),
    ]
    if crash_rank is not None:
        cmd += ["--crash-rank", str(crash_rank)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _reads(log_dir: Path, rank: int, attempt: int) -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for f in log_dir.glob(f"reads-rank{rank}-attempt{attempt}-*.txt"):
        out.update(f.read_text().split("\n")[:-1])
    return out


def _rank_rows(rank: int, world: int = 2, n_ckpts: int = 2) -> collections.Counter:
    """Every row read by a fresh run of ``rank``: each row of its ranges once per checkpoint."""
    out: collections.Counter = collections.Counter()
    for split, n in (("candidate", N_CAND), ("target", N_TGT)):
        lo, hi = shard_rows(n, BATCH, rank, world)
        out.update({f"{split} {i}": n_ckpts for i in range(lo, hi)})
    return out


# ---------------------------------------------------------------------------------------------- torchrun tests
def test_torchrun_gloo_rank_killed_restarted_resumes_and_merge_equals_single_process(tmp_path, reference):
    """2 gloo ranks under torchrun; rank 1 dies (os._exit) after 2 batches; torchrun restarts the group; rank 1
    resumes from its completion masks (rows done before the crash are not recomputed); rank 0 merges; the merged
    store is byte-identical to a single-process run."""
    out, logs = tmp_path / "features", tmp_path / "logs"
    logs.mkdir()
    proc = _torchrun(out, logs, max_restarts=1, crash_rank=1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # attempt 0 of rank 1: exactly its first CRASH_AFTER candidate batches (checkpoint ep1), then the crash
    lo1 = shard_rows(N_CAND, BATCH, 1, 2)[0]
    first = _reads(logs, 1, 0)
    assert first == collections.Counter({f"candidate {i}": 1 for i in range(lo1, lo1 + CRASH_AFTER * BATCH)})
    assert not (logs / "done-rank1-attempt0.txt").exists()
    # attempt 1 of rank 1 read exactly the rest: resumed, nothing recomputed
    assert _reads(logs, 1, 1) == _rank_rows(1) - first
    # rank 0 may have been stopped by torchrun mid-way; over both attempts it covered its rows
    both0 = _reads(logs, 0, 0) + _reads(logs, 0, 1)
    assert not _rank_rows(0) - both0
    for rank in (0, 1):
        assert (logs / f"done-rank{rank}-attempt1.txt").read_text() == str(out)
    merged = FeatureStore.open(out)
    assert merged.manifest["shard"] is None and len(merged.manifest["merged_from"]) == 2
    _assert_same_store(merged, reference)
    for rank in (0, 1):
        shard = FeatureStore.open(out / f"shard-{rank:05d}-of-00002")
        assert shard.complete and shard.manifest["shard"] == {"rank": rank, "world": 2}


def test_killed_rank_restarted_alone_then_merged(tmp_path, reference, monkeypatch):
    """Ranks run as independent processes (no process group, --rank/--world-size): rank 1 dies mid-way (os._exit);
    merging refuses the incomplete shard and says how far it got; rank 1 rerun on its own resumes; rank 0 then finds
    every shard complete and merges; the result is byte-identical to a single-process run."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)
    out, logs = tmp_path / "features", tmp_path / "logs"
    logs.mkdir()
    cmd = [sys.executable, str(HERE), "--out", str(out), "--log-dir", str(logs), "--rank", "1", "--world-size", "2",
           "--crash-rank", "1"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == CRASH_CODE, proc.stderr[-3000:]
    shard1 = FeatureStore.open(out / "shard-00001-of-00002")
    assert not shard1.complete
    assert shard1.progress()["candidate"] == {"ep1": CRASH_AFTER * BATCH, "ep2": 0}
    with pytest.raises(StoreError, match=r"rank 0 missing, rank 1 incomplete \(candidate: \{'ep1': 6, 'ep2': 0\}"):
        merge_shards(out, 2)

    feat, data, ckpts, labels = _setup(logs / "reads-rank1-attempt1-restart.txt")
    own = featurize_distributed(feat, data, out, ckpts, batch_size=BATCH, shard=(1, 2), merge=True,
                                progress=False, **labels)
    assert own.path == out / "shard-00001-of-00002" and own.complete  # only rank 0 merges
    assert _reads(logs, 1, 1) == _rank_rows(1) - _reads(logs, 1, 0)  # resumed: the 6 rows done are not redone
    assert not (out / "manifest.json").exists()
    feat, data, ckpts, labels = _setup()
    merged = featurize_distributed(feat, data, out, ckpts, batch_size=BATCH, shard=(0, 2), progress=False, **labels)
    assert merged.path == out
    _assert_same_store(merged, reference)


def test_process_group_from_hand_set_env_without_torchrun(tmp_path, reference):
    """Two processes launched with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set by hand (as srun or a custom launcher
    would): rank 0 hosts the rendezvous store, both meet in a gloo group, rank 0 merges, every rank returns it."""
    out, logs = tmp_path / "features", tmp_path / "logs"
    logs.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC_")}
    base.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                WORLD_SIZE="2", PYTHONFAULTHANDLER="1")
    procs = [
        subprocess.Popen([sys.executable, str(HERE), "--out", str(out), "--log-dir", str(logs)],
                         env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for r in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    for rank in (0, 1):
        assert (logs / f"done-rank{rank}-attempt0.txt").read_text() == str(out)
        assert _reads(logs, rank, 0) == _rank_rows(rank)
    _assert_same_store(FeatureStore.open(out), reference)


# ---------------------------------------------------------------------------------------------- coordination
def _coordinators(world: int = 2, timeout: float = 30.0, call: str = "call_0") -> list[_StoreCoordinator]:
    store = torch.distributed.HashStore()
    return [_StoreCoordinator(store, r, world, dt.timedelta(seconds=timeout), call, poll=0.01) for r in range(world)]


def _in_threads(*fns) -> list[tuple[str, object]]:
    """Run each function in its own thread (one per rank): ("ok", result) or ("error", exception) per function."""
    results: list[tuple[str, object]] = [("not run", None)] * len(fns)

    def run(i: int) -> None:
        try:
            results[i] = ("ok", fns[i]())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            results[i] = ("error", exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a rank is still waiting"
    return results


def test_store_coordinator_gathers_broadcasts_and_stops_waiting_when_a_rank_fails():
    c0, c1 = _coordinators()
    assert _in_threads(lambda: c0.gather("request", "a"), lambda: c1.gather("request", "b")) == [
        ("ok", ["a", "b"]), ("ok", ["a", "b"])]
    assert _in_threads(lambda: c1.broadcast("merged", None), lambda: c0.broadcast("merged", "ok")) == [
        ("ok", "ok"), ("ok", "ok")]
    # rank 1 reports a failure: rank 0 stops waiting at once, far within its 30 s timeout
    c1.fail(ValueError("disk full"))
    start = time.monotonic()
    with pytest.raises(RankFailed, match="rank 1 failed: ValueError: disk full"):
        c0.gather("shard done", "1")
    assert time.monotonic() - start < 15
    # ranks that never report: a timeout that names them
    c0, _, _ = _coordinators(world=3, timeout=0.3, call="call_1")
    with pytest.raises(TimeoutError, match=r"rank\(s\) \[1, 2\] did not reach 'request' within 0 s"):
        c0.gather("request", "x")


def test_a_process_group_the_caller_owns_carries_the_same_messages():
    dist = torch.distributed
    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        coord = _GroupCoordinator(0, 1)
        assert coord.gather("request", '["abc", false]') == ['["abc", false]']
        assert coord.broadcast("merged", "ok") == "ok"
        coord.fail(RuntimeError("x"))  # nothing to send, nothing raised
        coord.leave()  # the caller keeps its group
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_rank_zero_leaves_the_store_last(caplog):
    c0, c1, c2 = _coordinators(world=3)
    gone = threading.Event()
    t = threading.Thread(target=lambda: (c0.leave(), gone.set()))
    t.start()
    c1.leave()
    assert not gone.wait(0.5)  # rank 2 has neither left nor failed: rank 0 (which may host the store) stays
    c2.fail(RuntimeError("out of memory"))
    assert gone.wait(30)
    t.join()
    # a rank that never confirms: rank 0 leaves after its patience, with a warning and no exception
    c0, _ = _coordinators(call="call_1")
    with caplog.at_level(logging.WARNING, logger="tarot.features.distributed"):
        c0.leave(patience=0.2)
    assert "rank(s) [1] did not confirm the end of featurization" in caplog.text


class _FailingSamples(LoggedSamples):
    def __getitem__(self, i: int):
        if i == self.crash_row:
            raise RuntimeError(f"cannot decode row {i}")
        return super().__getitem__(i)


def _coordinated_rank(coord: _StoreCoordinator, path: Path, seed: int = 0, fail_row: int | None = None):
    feat, data, ckpts, labels = _setup(seed=seed)
    if fail_row is not None:
        data["candidate"] = _FailingSamples(N_CAND, 10, "candidate", None, fail_row)
    shard = (coord.rank, coord.world)
    return lambda: _coordinated(coord, lambda: _featurize_shard(
        feat, data, path, ckpts, BATCH, shard, coord, True, True, False,
        {k: labels.get(k) for k in ("ids", "sources", "groups")}, labels))


def test_coordinated_ranks_merge_refuse_different_requests_and_share_a_failure(tmp_path, reference):
    # two ranks (threads) through one store: every rank returns the merged store, identical to one process
    results = _in_threads(*(_coordinated_rank(c, tmp_path / "ok") for c in _coordinators()))
    assert [r[0] for r in results] == ["ok", "ok"]
    for _, store in results:
        assert store.path == tmp_path / "ok"
        _assert_same_store(store, reference)
    # rank 1 built its projector with another seed: both ranks refuse before any work
    c0, c1 = _coordinators(call="call_1")
    results = _in_threads(_coordinated_rank(c0, tmp_path / "odd"), _coordinated_rank(c1, tmp_path / "odd", seed=1))
    for kind, exc in results:
        assert kind == "error" and isinstance(exc, ValueError)
        assert "rank(s) [1] request a different featurization than rank 0" in str(exc)
    assert not (tmp_path / "odd").exists()
    # rank 1 fails in its data set: it raises its own error, rank 0 is told instead of waiting out the timeout
    c0, c1 = _coordinators(call="call_2")
    lo1 = shard_rows(N_CAND, BATCH, 1, 2)[0]
    results = _in_threads(_coordinated_rank(c0, tmp_path / "bad"), _coordinated_rank(c1, tmp_path / "bad",
                                                                                     fail_row=lo1 + BATCH))
    assert results[1][0] == "error" and str(results[1][1]) == f"cannot decode row {lo1 + BATCH}"
    assert results[0][0] == "error" and isinstance(results[0][1], RankFailed)
    assert f"rank 1 failed: RuntimeError: cannot decode row {lo1 + BATCH}" in str(results[0][1])
    assert FeatureStore.open(tmp_path / "bad" / "shard-00000-of-00002").complete
    assert not (tmp_path / "bad" / "manifest.json").exists()


# ---------------------------------------------------------------------------------------------- in-process tests
def test_independent_ranks_in_process_merge_verify_and_keep_shards(tmp_path, reference):
    feat, data, ckpts, labels = _setup()
    s0 = featurize_distributed(feat, data, tmp_path / "f", ckpts, batch_size=BATCH, shard=(0, 2), progress=False,
                               **labels)
    assert s0.manifest["shard"] == {"rank": 0, "world": 2}  # rank 1 not done: nothing merged yet
    assert not (tmp_path / "f" / "manifest.json").exists()
    featurize_distributed(feat, data, tmp_path / "f", ckpts, batch_size=BATCH, shard=(1, 2), progress=False, **labels)
    # another run with a different projector seed is refused against the finished shards, with a clear message
    other, _, _, _ = _setup(seed=1)
    with pytest.raises(StoreError, match="different 'projector'"):
        featurize_distributed(other, data, tmp_path / "f", ckpts, batch_size=BATCH, shard=(0, 2),
                              coordinate=False, progress=False, **labels)
    assert not (tmp_path / "f" / "manifest.json").exists()
    merged = featurize_distributed(feat, data, tmp_path / "f", ckpts, batch_size=BATCH, shard=(0, 2),
                                   keep_shards=False, progress=False, **labels)
    _assert_same_store(merged, reference)
    assert not list((tmp_path / "f").glob("shard-*"))
    # rerun after the merge: no featurization at all (shards are gone), the merged store comes back
    feat, data, ckpts, labels = _setup(tmp_path / "rerun.txt")
    again = featurize_distributed(feat, data, tmp_path / "f", ckpts, batch_size=BATCH, shard=(1, 2), progress=False,
                                  **labels)
    assert again.path == tmp_path / "f" and not (tmp_path / "rerun.txt").exists()
    with pytest.raises(StoreError, match="different 'labels_sha256'"):
        featurize_distributed(feat, data, tmp_path / "f", ckpts, batch_size=BATCH, shard=(1, 2), progress=False)
    with pytest.raises(StoreError, match="different 'batch_size'"):
        featurize_distributed(feat, data, tmp_path / "f", ckpts, batch_size=BATCH + 1, shard=(1, 2),
                              progress=False, **labels)


def test_world_of_one_is_a_plain_store(tmp_path, reference):
    feat, data, ckpts, labels = _setup()
    store = featurize_distributed(feat, data, tmp_path / "one", ckpts, batch_size=BATCH, shard=(0, 1),
                                  progress=False, **labels)
    assert store.manifest["shard"] is None and not list((tmp_path / "one").glob("shard-*"))
    _assert_same_store(store, reference)


def test_merge_shards_reports_missing_ranks(tmp_path):
    feat, data, ckpts, labels = _setup()
    featurize_to_store(feat, data, tmp_path / "p", ckpts, batch_size=BATCH, shard=(2, 3), progress=False)
    with pytest.raises(StoreError, match=r"rank 0 missing, rank 1 missing"):
        merge_shards(tmp_path / "p", 3)


# ---------------------------------------------------------------------------------------------- env and flags
def test_shard_from_env():
    assert shard_from_env({}) is None
    assert shard_from_env({"RANK": "3", "WORLD_SIZE": "4"}) == (3, 4)
    with pytest.raises(ValueError, match=r"\$WORLD_SIZE is not set but RANK is"):
        shard_from_env({"RANK": "0"})
    with pytest.raises(ValueError, match=r"rank 4 is not in \[0, 4\)"):
        shard_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match="is not an integer"):
        shard_from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_process_group_helpers_without_torchrun(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert resolve_backend("auto") == ("nccl" if torch.cuda.is_available() else "gloo")
    assert resolve_backend("gloo") == "gloo"
    assert init_process_group_if_needed() is False  # no torchrun environment: single process
    assert init_process_group_if_needed(environ={"RANK": "0", "WORLD_SIZE": "1"}) is False
    with pytest.raises(ValueError, match=r"\$MASTER_ADDR, \$MASTER_PORT not set"):
        init_process_group_if_needed(environ={"RANK": "0", "WORLD_SIZE": "2"})
    assert not torch.distributed.is_initialized()


def test_shard_arguments():
    p = argparse.ArgumentParser()
    add_shard_arguments(p)
    args = p.parse_args([])
    assert args.merge is True and args.rank is None and args.world_size is None
    assert shard_from_args(args, environ={}) is None
    assert shard_from_args(args, environ={"RANK": "1", "WORLD_SIZE": "4"}) == (1, 4)
    args = p.parse_args(["--rank", "2", "--world-size", "3", "--no-merge"])
    assert args.merge is False and shard_from_args(args, environ={"RANK": "0", "WORLD_SIZE": "8"}) == (2, 3)
    with pytest.raises(ValueError, match=r"rank 3 is not in \[0, 3\)"):
        shard_from_args(p.parse_args(["--rank", "3", "--world-size", "3"]), environ={})
    with pytest.raises(SystemExit):
        p.parse_args(["--world-size", "0"])


def test_featurize_distributed_refuses_a_shard_that_disagrees_with_torchrun(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    feat, data, ckpts, _ = _setup()
    with pytest.raises(ValueError, match=r"disagrees with \$RANK/\$WORLD_SIZE \(0, 2\)"):
        featurize_distributed(feat, data, tmp_path / "x", ckpts, batch_size=BATCH, shard=(1, 2),
                              coordinate=True)
    with pytest.raises(ValueError, match=r"every rank would write the same store"):
        featurize_distributed(feat, data, tmp_path / "x", ckpts, batch_size=BATCH, shard=None)
    assert not (tmp_path / "x").exists()


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
