"""One writer per output folder: :func:`output_lock` refuses a second run that would write into the same folder
while the first is still running, instead of letting the two interleave their files.

The lock is an advisory ``flock`` on a hidden file beside the folder (``<parent>/.<name>.lock``, so the folder
itself is not created early); the kernel releases it when the holding process ends, also on ``kill -9``, so a crashed
run never blocks the rerun that resumes it. Standard library only (no numpy), so command lines can use it cheaply.
On a system without ``fcntl`` (Windows) the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from tarot.errors import OutputLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of output folder ``path``."""
    p = Path(path).absolute()
    return p.parent / f".{p.name}.lock"


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of output folder ``path`` for the duration of the block.

    Raises
    ------
    OutputLockedError
        When another process holds it; the message names the folder and the holder (pid and host).
    """
    if fcntl is None:  # pragma: no cover
        yield Path(path)
        return
    lock = lock_path(path)
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 - held until the block ends
        except OSError as exc:  # e.g. a read-only parent: say which output folder cannot be written
            raise type(exc)(exc.errno, f"{exc.strerror}; cannot write output folder {Path(path)} (its lock file)",
                            exc.filename) from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise OutputLockedError(f"{Path(path)}: {holder} is writing here right now; wait for it to finish or "
                                    "choose another output folder") from None
        try:  # the file may have been unlinked by a holder that just finished: lock the current one
            if os.fstat(fh.fileno()).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        yield Path(path)
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        fh.close()  # releases the flock
