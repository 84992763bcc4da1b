"""Exception types of tarot-core that callers catch (kept here, importing nothing, so that command lines can name
them in their error handling without loading numpy or torch)."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A feature store is missing, incomplete, inconsistent or would be overwritten."""


class MissingSplitError(StoreError, KeyError):
    """The store has no split of that name (a ``KeyError`` too, for code that looks splits up like a mapping)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OutputLockedError(RuntimeError):
    """Another run is writing into the same output folder (see :func:`tarot.locking.output_lock`)."""


class SupportTooLargeError(MemoryError):
    """The sparse OT solver's support outgrew its memory budget: the costs are too flat at this ε for a sparse plan
    (see :func:`tarot.sparse_ot.sparse_entropic_ot`)."""
