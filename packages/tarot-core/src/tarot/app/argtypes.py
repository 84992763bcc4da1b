"""argparse value types and flags shared by the ``tarot`` CLI and the domain CLIs (imports nothing heavy, so that
``--help`` is instant)."""

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


def add_shard_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the sharding flags every domain ``featurize`` command shares.

    ``--rank R`` (default ``$RANK`` set by torchrun, else 0), ``--world-size W`` (default ``$WORLD_SIZE``, else 1)
    and ``--merge/--no-merge`` (default on: rank 0 merges the shards into the store once all are complete). Resolve
    them with :func:`shard_from_args`; the environment is read then, not when the parser is built.

    Returns
    -------
    argparse._ArgumentGroup
        The group holding the flags.
    """
    group = parser.add_argument_group(
        "sharding",
        "Featurize one shard of the data per process; under torchrun the rank and world size come from the "
        "environment. Each shard resumes on its own when rerun.",
    )
    group.add_argument("--rank", type=non_negative_int, default=None, metavar="R",
                       help="index of this process's shard (default: $RANK from torchrun, else 0)")
    group.add_argument("--world-size", type=positive_int, default=None, metavar="W",
                       help="number of shards (default: $WORLD_SIZE from torchrun, else 1)")
    group.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True,
                       help="rank 0 merges all shards into the store once they are complete (default: on)")
    return group
