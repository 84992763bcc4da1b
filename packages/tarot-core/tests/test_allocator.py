"""The C allocator settings: freed arrays kept for the next batch during featurization, handed back in selection."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest
import torch
from tarot.features import allocator
from tarot.features.allocator import keep_freed_memory, release_freed_memory

GLIBC = allocator._libc_function("mallopt") is not None and allocator._libc_function("malloc_trim") is not None
needs_glibc = pytest.mark.skipif(not GLIBC, reason="no mallopt/malloc_trim (not glibc)")


def _anon_mb() -> float:
    with open("/proc/self/statm") as fh:
        _, resident, shared = (int(v) for v in fh.read().split()[:3])
    return (resident - shared) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mapped_mb() -> float:
    """Bytes glibc holds in separately mmap-ed blocks (``mallinfo2().hblkhd``), in MiB."""
    fn = allocator._libc_function("mallinfo2")
    if fn is None:
        pytest.skip("no mallinfo2 (glibc < 2.33)")
    fn.restype = _Mallinfo2
    return fn().hblkhd / 2**20


def _mapped_while_alive(mib: int = 64) -> float:
    """MiB of mmap-ed blocks that a live tensor of ``mib`` MiB adds (the featurizers' tensors come from malloc)."""
    before = _mapped_mb()
    t = torch.ones(mib * 2**18)
    mapped = _mapped_mb() - before
    assert float(t[-1]) == 1.0
    return mapped


_SCENARIO = """
import json, torch
from tarot.features.allocator import keep_freed_memory
import test_allocator as t

out = {"before": t._mapped_while_alive()}
with keep_freed_memory() as active:
    out["active"] = active
    out["inside"] = t._mapped_while_alive()
    with keep_freed_memory():
        pass
    out["after_inner"] = t._mapped_while_alive()
out["restored"] = t._mapped_while_alive(512)  # larger than any chunk the block freed: a heap chunk cannot serve it
base = t._mapped_mb()
small = torch.ones(4 * 2**20)  # 16 MiB
out["small_restored"] = t._mapped_mb() - base
print(json.dumps(out))
"""


@needs_glibc
def test_large_tensors_come_from_the_kept_heap_inside_the_block_only():
    # in a fresh interpreter: a heap that other tests left with large free chunks serves a large tensor from them
    # whatever the thresholds say
    import json
    import subprocess
    import sys

    _mapped_mb()  # skips without mallinfo2
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", _SCENARIO], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["before"] >= 64  # glibc maps a 64 MiB block afresh (and unmaps it on free)
    assert out["active"] is True
    assert out["inside"] == 0  # from the heap, which keeps it after the free
    assert out["after_inner"] == 0  # a nested block leaves the setting to the outer one
    assert out["restored"] >= 512  # mapped afresh again, as mmap is allowed once more
    assert out["small_restored"] < 1  # 16 MiB: below it, from the heap as after glibc's own threshold growth


@needs_glibc
def test_leaving_the_block_hands_the_kept_memory_back():
    base = _anon_mb()
    with keep_freed_memory():
        arrays = [torch.ones(8 * 2**20) for _ in range(8)]  # 256 MiB, from the heap
        del arrays
        kept = _anon_mb() - base
    handed_back = _anon_mb() - base
    assert kept > 192, kept
    assert handed_back < 64, handed_back


@needs_glibc
def test_release_freed_memory_returns_pinned_heap_pages():
    # 256 MB of 32 KB arrays (below any mmap threshold: heap memory); every 64th stays alive and pins the heap, so
    # freeing the others alone leaves their pages resident
    arrays = [np.ones(4096) for _ in range(8192)]
    kept = arrays[::64]
    del arrays
    before = _anon_mb()
    release_freed_memory()
    assert before - _anon_mb() > 128, (before, _anon_mb())
    assert all(float(a.sum()) == 4096 for a in kept)  # the live arrays are untouched


def test_without_glibc_both_are_no_ops(monkeypatch):
    monkeypatch.setattr(allocator, "_libc_function", lambda name: None)
    release_freed_memory()  # nothing to call, no error
    with keep_freed_memory() as active:
        assert active is False
    assert allocator._depth == 0


def test_libc_functions_are_looked_up_on_linux_only(monkeypatch):
    allocator._libc_function.cache_clear()
    monkeypatch.setattr(allocator.sys, "platform", "win32")
    try:
        assert allocator._libc_function("malloc_trim") is None
    finally:
        allocator._libc_function.cache_clear()
