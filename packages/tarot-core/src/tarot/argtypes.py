"""argparse value types shared by the ``tarot`` CLI and the sharding flags of :mod:`tarot.distributed`."""

from __future__ import annotations

import argparse


def non_negative_int(text: str) -> int:
    """An integer ≥ 0, else an argparse error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer ≥ 1, else an argparse error naming the value."""
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected an integer >= 1, got 0")
    return value
