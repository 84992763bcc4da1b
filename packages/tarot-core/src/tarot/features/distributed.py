r"""Multi-process / multi-node featurization with ``torchrun`` (or any launcher that sets the ``torch.distributed``
environment).

Every rank featurizes its own deterministic, contiguous shard of every split (whole batches of the single-process
batch grid, :func:`tarot.features.featurize.shard_rows`) into ``<path>/shard-{rank:05d}-of-{world:05d}``. The
projector is a pure function of its seed and the parameter layout, so every rank builds the same one without
communication. Each shard store is resumable on its own (completion masks), so a killed rank is simply started again
with the same arguments. Once every rank is done, rank 0 checks the shards against the request and merges them with
:meth:`tarot.features.store.FeatureStore.merge` into ``<path>`` itself: after a distributed run
``FeatureStore.open(path)`` is the same store a single process would have written, byte for byte.

The ranks coordinate through the job's rendezvous key-value store (``torch.distributed.TCPStore`` at
``$MASTER_ADDR:$MASTER_PORT``, the one ``torchrun`` hosts), not through a process group: featurization needs no
collective on tensors, only a handful of small messages (a fingerprint of each rank's request, "my shard is done",
rank 0's merge outcome), so no ``gloo``/``nccl`` communicator is created and none has to be torn down. A rank that
fails says so in the store and the others stop waiting at once. When the caller has already initialised a process
group, its object collectives carry the same messages. ``torchrun --max-restarts`` restarts are supported (the keys of
each attempt are kept apart). Without any of this (ranks started independently, e.g. a SLURM job array), each process
writes its shard, rank 0 merges only when it finds every shard complete, and ``tarot merge`` or :func:`merge_shards`
merges later.

Domain CLIs add the same flags with :func:`tarot.app.argtypes.add_shard_arguments` and pass :func:`shard_from_args` to
:func:`featurize_distributed`::

    add_shard_arguments(featurize_parser)                 # --rank, --world-size, --merge/--no-merge
    ...
    store = featurize_distributed(featurizer, datasets, args.out, checkpoints, batch_size=args.batch_size,
                                  shard=shard_from_args(args), merge=args.merge)
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import hashlib
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tarot.features.featurize import featurize_to_store
from tarot.features.gradients import Checkpoint, GradientFeaturizer
from tarot.features.store import MANIFEST, FeatureStore, StoreError, labels_hash

__all__ = [
    "shard_from_env",
    "local_rank_from_env",
    "default_device",
    "resolve_backend",
    "init_process_group_if_needed",
    "rendezvous_store",
    "featurize_distributed",
    "merge_shards",
    "shard_dir",
    "shard_from_args",
    "RankFailed",
]

log = logging.getLogger(__name__)

AUTO = "auto"
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ---------------------------------------------------------------------------------------------- environment
def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not an integer") from None


def check_shard(shard: Sequence[int]) -> tuple[int, int]:
    """Validate ``(rank, world)``: integers with ``world >= 1`` and ``0 <= rank < world``."""
    try:
        rank, world = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be a pair (rank, world_size) of integers, got {shard!r}") from None
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world}) for world size {world}")
    return rank, world


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` as set by ``torchrun`` (or by hand), or None when neither is set.

    Raises :class:`ValueError` when only one of the two is set or they are inconsistent.
    """
    env = os.environ if environ is None else environ
    rank, world = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
    if rank is None and world is None:
        return None
    if rank is None or world is None:
        missing = "RANK" if rank is None else "WORLD_SIZE"
        raise ValueError(f"${missing} is not set but {'WORLD_SIZE' if rank is None else 'RANK'} is; set both")
    return check_shard((rank, world))


def local_rank_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``LOCAL_RANK`` (the process index on its node, set by ``torchrun``), 0 when unset."""
    env = os.environ if environ is None else environ
    value = _env_int(env, "LOCAL_RANK")
    if value is not None and value < 0:
        raise ValueError(f"$LOCAL_RANK must be >= 0, got {value}")
    return 0 if value is None else value


def default_device(environ: Mapping[str, str] | None = None) -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else the CPU: the device a featurizer of this rank should use."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank_from_env(environ) % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def resolve_backend(backend: str = AUTO) -> str:
    """``"auto"`` -> ``"nccl"`` when CUDA and NCCL are available, else ``"gloo"``; other names pass through."""
    if backend != AUTO:
        return backend
    import torch.distributed as dist

    if torch.cuda.is_available() and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def _dist() -> Any:
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    return dist


def _pg_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _timedelta(timeout: float | _dt.timedelta | None) -> _dt.timedelta:
    if timeout is None:
        return _dt.timedelta(minutes=30)
    return timeout if isinstance(timeout, _dt.timedelta) else _dt.timedelta(seconds=float(timeout))


#: one client (or, on rank 0 without a torchrun agent, the server) per job environment and process: a second
#: TCPStore server on the same port while the first is still up would fail, and a client made for a later call could
#: reach a server that is about to go away
_STORES: dict[tuple[str, int, int, int, str], Any] = {}
atexit.register(_STORES.clear)  # close them while the interpreter is whole, not during its teardown


def rendezvous_store(
    environ: Mapping[str, str] | None = None, timeout: float | _dt.timedelta | None = None
) -> Any:
    """The job's key-value store at ``$MASTER_ADDR:$MASTER_PORT``, its keys kept apart per ``torchrun`` attempt.

    Under ``torchrun`` the agent hosts the store and every rank is a client; with the variables set by hand (``srun``,
    a custom launcher), rank 0 hosts it. The store is made once per process and environment and reused. Keys live
    under ``tarot/attempt_{$TORCHELASTIC_RESTART_COUNT}``: torchrun keeps one agent-hosted store across worker-group
    restarts, and without the prefix restarted ranks would read what their dead predecessors wrote.

    Parameters
    ----------
    environ : mapping, optional
        Environment to read (default ``os.environ``): ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` and,
        when set, ``TORCHELASTIC_USE_AGENT_STORE`` and ``TORCHELASTIC_RESTART_COUNT``.
    timeout : float (seconds) or timedelta, optional
        Connection and wait timeout of the store (30 minutes when None).

    Raises
    ------
    ValueError
        When the rank variables are missing or inconsistent, or ``MASTER_ADDR``/``MASTER_PORT`` are not set.
    """
    dist = _dist()
    env = os.environ if environ is None else environ
    shard = shard_from_env(env)
    if shard is None:
        raise ValueError("cannot reach the job's rendezvous store: $RANK and $WORLD_SIZE are not set (launch with "
                         "torchrun)")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not env.get(v)]
    if missing:
        raise ValueError(
            f"cannot reach the job's rendezvous store: ${', $'.join(missing)} not set (launch with torchrun, or pass "
            "--rank/--world-size without coordination)"
        )
    addr, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
    attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    key = (addr, port, shard[0], shard[1], attempt)
    if key not in _STORES:
        agent_store = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        _STORES[key] = dist.TCPStore(addr, port, shard[1], is_master=(not agent_store and shard[0] == 0),
                                     timeout=_timedelta(timeout))
    return dist.PrefixStore(f"tarot/attempt_{attempt}", _STORES[key])


def init_process_group_if_needed(
    backend: str = AUTO,
    timeout: float | _dt.timedelta | None = None,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Initialise the default process group from the ``torchrun`` environment when there is something to do.

    Featurization does not need this (its ranks coordinate through :func:`rendezvous_store`); it is for callers that
    run collectives of their own, e.g. :mod:`tarot.geometry.collective`. Nothing happens (returns False) when a group
    is already initialised or the world size is 1 / unset. Otherwise the group is initialised on
    :func:`rendezvous_store` (``backend="auto"``: ``nccl`` on CUDA, ``gloo`` on CPU; with ``nccl`` the CUDA device is
    set to ``LOCAL_RANK`` first) and True is returned. The caller destroys it
    (``torch.distributed.destroy_process_group()``).

    Parameters
    ----------
    backend : str
        ``"auto"``, ``"gloo"``, ``"nccl"`` or any backend torch accepts.
    timeout : float (seconds) or timedelta, optional
        Collective timeout (30 minutes when None).
    environ : mapping, optional
        Environment to read (default ``os.environ``).
    """
    dist = _dist()
    if dist.is_initialized():
        return False
    env = os.environ if environ is None else environ
    shard = shard_from_env(env)
    if shard is None or shard[1] == 1:
        return False
    store = rendezvous_store(env, timeout)
    name = resolve_backend(backend)
    if name == "nccl":
        torch.cuda.set_device(local_rank_from_env(env))
    dist.init_process_group(backend=name, store=dist.PrefixStore("process_group", store), rank=shard[0],
                            world_size=shard[1], timeout=_timedelta(timeout))
    log.info("initialised torch.distributed (%s): rank %d of %d", name, shard[0], shard[1])
    return True


_CALLS = itertools.count()  # coordinated featurize_distributed calls of this process


class RankFailed(RuntimeError):
    """Another rank of the same featurization reported a failure."""


class _StoreCoordinator:
    """The few messages of one :func:`featurize_distributed` call, exchanged through the rendezvous store.

    Keys are ``{call}/{topic}/{rank}``. Every rank makes the same sequence of calls, so :func:`featurize_distributed`
    names its calls ``call_0``, ``call_1``, ... counted per process. Waits poll :meth:`Store.check` and a failure
    counter (``{call}/failures``, one read per poll whatever the world size), so that a failure reported by any rank
    (``{call}/failed/{rank}``) ends them at once instead of after the timeout.
    """

    def __init__(self, store: Any, rank: int, world: int, timeout: _dt.timedelta, call: str, poll: float = 0.05):
        self.store, self.rank, self.world, self.poll, self.prefix = store, rank, world, poll, call
        self.timeout = timeout.total_seconds()

    def _key(self, topic: str, rank: int) -> str:
        return f"{self.prefix}/{topic}/{rank}"

    def _failed(self) -> tuple[int, str] | None:
        """(rank, message) of another rank that reported a failure, or None: one counter read while none has."""
        if int(self.store.add(f"{self.prefix}/failures", 0)) == 0:
            return None
        for r in range(self.world):
            key = self._key("failed", r)
            if r != self.rank and self.store.check([key]):
                return r, self.store.get(key).decode()
        return None

    def _wait(self, topic: str, ranks: Sequence[int]) -> None:
        keys = [self._key(topic, r) for r in ranks]
        deadline = time.monotonic() + self.timeout
        delay = self.poll
        while not self.store.check(keys):
            failed = self._failed()
            if failed is not None:
                raise RankFailed(f"rank {failed[0]} failed: {failed[1]}")
            if time.monotonic() > deadline:
                late = [r for r, k in zip(ranks, keys, strict=True) if not self.store.check([k])]
                raise TimeoutError(f"rank(s) {late} did not reach {topic!r} within {self.timeout:.0f} s")
            time.sleep(delay)
            delay = min(1.0, delay * 1.5)

    def gather(self, topic: str, value: str) -> list[str]:
        """Every rank's ``value`` for ``topic``, in rank order (waits for all)."""
        self.store.set(self._key(topic, self.rank), value)
        self._wait(topic, range(self.world))
        return [self.store.get(self._key(topic, r)).decode() for r in range(self.world)]

    def broadcast(self, topic: str, value: str | None) -> str:
        """Rank 0's ``value`` for ``topic`` on every rank."""
        if self.rank == 0:
            self.store.set(self._key(topic, 0), "" if value is None else value)
        else:
            self._wait(topic, [0])
        return self.store.get(self._key(topic, 0)).decode()

    def fail(self, exc: BaseException) -> None:
        """Tell the other ranks that this one stopped (best effort: the store may be gone)."""
        try:
            self.store.set(self._key("failed", self.rank), f"{type(exc).__name__}: {exc}")
            self.store.add(f"{self.prefix}/failures", 1)  # after the message: a reader of the count finds it
        except Exception:  # noqa: BLE001 - the store is unreachable: nobody is left to tell
            log.debug("could not report the failure of rank %d", self.rank, exc_info=True)

    def leave(self, patience: float | None = None) -> None:
        """Say this rank is done with the store; rank 0 (which may host it) then waits until every rank has left or
        failed, at most ``patience`` seconds (the timeout when None), and never raises: the work is done by now."""
        try:
            self.store.set(self._key("left", self.rank), "1")
            if self.rank != 0:
                return
            deadline = time.monotonic() + (self.timeout if patience is None else patience)
            waiting = set(range(1, self.world))
            while waiting and time.monotonic() < deadline:
                waiting = {r for r in waiting if not self.store.check([self._key("left", r)])
                           and not self.store.check([self._key("failed", r)])}
                if waiting:
                    time.sleep(self.poll)
            if waiting:
                log.warning("rank 0: rank(s) %s did not confirm the end of featurization; leaving anyway",
                            sorted(waiting))
        except Exception:  # noqa: BLE001 - the store is unreachable: nobody is left to wait for
            log.debug("rank %d could not leave the rendezvous store cleanly", self.rank, exc_info=True)


class _GroupCoordinator:
    """The same messages as :class:`_StoreCoordinator`, over a process group the caller initialised."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world, self.dist = rank, world, _dist()

    def gather(self, topic: str, value: str) -> list[str]:
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, value)
        return [str(v) for v in out]

    def broadcast(self, topic: str, value: str | None) -> str:
        box = [value]
        self.dist.broadcast_object_list(box, src=0)
        return "" if box[0] is None else str(box[0])

    def fail(self, exc: BaseException) -> None:
        """Nothing to send: a collective has no way to learn that a peer is gone before its timeout."""

    def leave(self, patience: float | None = None) -> None:
        """The caller owns the group and its teardown."""


# ---------------------------------------------------------------------------------------------- expected spec
def shard_dir(path: str | os.PathLike, rank: int, world: int) -> Path:
    """Directory of shard ``rank`` of ``world`` under ``path`` (as written by ``featurize_to_store(shard=...)``)."""
    rank, world = check_shard((rank, world))
    return Path(path) / f"shard-{rank:05d}-of-{world:05d}"


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def _spec(
    featurizer: GradientFeaturizer,
    datasets: Mapping[str, Any],
    checkpoints: Sequence[Checkpoint] | None,
    batch_size: int,
    labels: Mapping[str, Mapping[str, Sequence[Any]] | None],
) -> dict[str, Any]:
    """What the merged store must record for this request: compared field by field against shard manifests."""
    ckpts = list(checkpoints) if checkpoints else [Checkpoint("current")]
    totals = {s: len(ds) for s, ds in datasets.items()}
    hashes: dict[str, dict[str, str | None]] = {}
    for kind in ("ids", "sources", "groups"):
        given = dict(labels.get(kind) or {})
        hashes[kind] = {}
        for s, n in totals.items():
            values = given.get(s)
            if values is None and kind == "ids":
                values = [str(i) for i in range(n)]
            hashes[kind][s] = labels_hash(None if values is None else [str(v) for v in values])
    return _jsonable({
        "dim": featurizer.proj_dim,
        "projector": featurizer.projector.config(),
        "checkpoints": [c.describe() for c in ckpts],
        "batch_size": int(batch_size),
        "split totals": totals,
        "labels_sha256": hashes,
    })


def _manifest_spec(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return _jsonable({
        "dim": manifest.get("dim"),
        "projector": manifest.get("projector"),
        "checkpoints": manifest.get("checkpoints"),
        "batch_size": manifest.get("batch_size"),
        "split totals": {s: v.get("total", v.get("count")) for s, v in manifest.get("splits", {}).items()},
        "labels_sha256": manifest.get("labels_sha256"),
    })


def _check_against(spec: Mapping[str, Any] | None, manifest: Mapping[str, Any], where: Path) -> None:
    if spec is None:
        return
    got = _manifest_spec(manifest)
    for key, want in spec.items():
        if got.get(key) != want:
            raise StoreError(
                f"{where} was written with a different {key!r} than this run requests; use the same arguments or a "
                "new path"
            )


def _fingerprint(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- merge
def shard_status(path: str | os.PathLike, world: int) -> dict[int, str]:
    """``{rank: "complete" | "incomplete" | "missing"}`` of the ``world`` shards under ``path``."""
    out: dict[int, str] = {}
    for rank in range(int(world)):
        d = shard_dir(path, rank, world)
        if not (d / MANIFEST).is_file():
            out[rank] = "missing"
        else:
            out[rank] = "complete" if FeatureStore.open(d).complete else "incomplete"
    return out


def merge_shards(
    path: str | os.PathLike,
    world: int,
    out: str | os.PathLike | None = None,
    *,
    expected: Mapping[str, Any] | None = None,
    keep_shards: bool = True,
) -> FeatureStore:
    """Check the ``world`` shards under ``path`` and merge them into ``out`` (default: ``path`` itself).

    Every shard ``shard-{r:05d}-of-{world:05d}``, r < ``world``, must exist and be complete (else a one-line
    :class:`~tarot.features.store.StoreError`
    names the missing / incomplete ranks and their progress). With ``expected`` (the
    request's spec, as built by :func:`featurize_distributed`) every shard manifest must match it: dim, projector,
    checkpoints, batch size, split sizes and label hashes. :meth:`FeatureStore.merge` then checks that the shards
    agree with each other, cover every row exactly once and that the concatenated ids match the recorded full lists.
    An already merged, complete store at ``out`` that matches is returned as is. ``keep_shards=False`` deletes the
    shard directories after a successful merge.
    """
    path = Path(path)
    dest = path if out is None else Path(out)
    if (dest / MANIFEST).is_file():
        existing = FeatureStore.open(dest)
        if existing.complete and existing.manifest.get("shard") is None:
            _check_against(expected, existing.manifest, dest)
            return existing
        raise StoreError(f"merge: {dest} already holds a feature store that is not a merged result; choose a new path")
    status = shard_status(path, world)
    bad = {r: s for r, s in status.items() if s != "complete"}
    if bad:
        details = []
        for r, s in bad.items():
            if s == "incomplete":
                prog = FeatureStore.open(shard_dir(path, r, world)).progress()
                done = "; ".join(f"{sp}: {v}" for sp, v in prog.items())
                details.append(f"rank {r} incomplete ({done})")
            else:
                details.append(f"rank {r} missing")
        raise StoreError(f"merge: shards under {path} are not all complete: {', '.join(details)}; rerun those ranks")
    dirs = [shard_dir(path, r, world) for r in range(world)]
    for d in dirs:
        _check_against(expected, FeatureStore.open(d).manifest, d)
    store = FeatureStore.merge(dirs, dest)
    _check_against(expected, store.manifest, dest)
    if not keep_shards:
        for d in dirs:
            shutil.rmtree(d)
    log.info("merged %d shards into %s", world, dest)
    return store


# ---------------------------------------------------------------------------------------------- featurization
def _resolve_shard(
    shard: tuple[int, int] | str | None, coordinate: bool | None, timeout: float | _dt.timedelta | None,
) -> tuple[tuple[int, int] | None, _StoreCoordinator | _GroupCoordinator | None]:
    """(shard or None, how the ranks coordinate: through an existing process group, the rendezvous store, or not)."""
    env_shard = shard_from_env()
    if shard == AUTO:
        if _pg_active():
            dist = _dist()
            shard = (dist.get_rank(), dist.get_world_size())
        else:
            shard = env_shard
    elif isinstance(shard, str):
        raise ValueError(f"shard must be (rank, world_size), None or 'auto', got {shard!r}")
    rank, world = (0, 1) if shard is None else check_shard(shard)
    if world == 1:
        if env_shard is not None and env_shard[1] > 1:
            raise ValueError(
                f"a single-process store was requested but $WORLD_SIZE={env_shard[1]}: every rank would write the same "
                "store; pass shard='auto' (or drop --world-size) under torchrun"
            )
        return None, None
    if coordinate is False:
        return (rank, world), None
    if _pg_active():
        dist = _dist()
        if (dist.get_rank(), dist.get_world_size()) != (rank, world):
            raise ValueError(
                f"shard ({rank}, {world}) disagrees with the process group (rank {dist.get_rank()} of "
                f"{dist.get_world_size()})"
            )
        return (rank, world), _GroupCoordinator(rank, world)
    under_torchrun = all(os.environ.get(v) for v in _TORCHRUN_VARS)
    if coordinate or (under_torchrun and env_shard == (rank, world)):
        if env_shard != (rank, world):
            raise ValueError(
                f"shard ({rank}, {world}) disagrees with $RANK/$WORLD_SIZE {env_shard}; drop --rank/--world-size "
                "under torchrun"
            )
        store = rendezvous_store(timeout=timeout)
        return (rank, world), _StoreCoordinator(store, rank, world, _timedelta(timeout), f"call_{next(_CALLS)}")
    return (rank, world), None


def featurize_distributed(
    featurizer: GradientFeaturizer,
    datasets: Mapping[str, Any],
    path: str | os.PathLike,
    checkpoints: Sequence[Checkpoint] | None = None,
    batch_size: int = 32,
    *,
    shard: tuple[int, int] | str | None = AUTO,
    merge: bool = True,
    keep_shards: bool = True,
    coordinate: bool | None = None,
    timeout: float | _dt.timedelta | None = None,
    progress: bool | None = None,
    **kwargs: Any,
) -> FeatureStore:
    r"""Featurize this rank's shard of every split, then (rank 0) verify and merge all shards into ``path``.

    A drop-in for :func:`tarot.features.featurize.featurize_to_store` (same data sets, checkpoints, batch size and
    keyword arguments: ``collate_fn``, ``ids``, ``sources``, ``groups``, ``precondition``, ``num_workers``, ...).

    Parameters
    ----------
    featurizer : GradientFeaturizer
        Built identically on every rank (same seed, parameters and projector); use :func:`default_device` for its
        device. Ranks that disagree (projector, checkpoints, batch size, split sizes or labels) are refused before
        any work when the ranks coordinate, and at merge time otherwise.
    datasets, checkpoints, batch_size
        As for :func:`featurize_to_store`: every rank passes the FULL data sets; the shard picks its rows.
    path : str or PathLike
        The store: shards go to ``path/shard-{rank:05d}-of-{world:05d}``, the merged store to ``path`` itself.
    shard : (rank, world), None or "auto"
        ``"auto"``: the process group's rank and size if one is initialised, else ``$RANK``/``$WORLD_SIZE``, else a
        single process. None: a single process (an unsharded store at ``path``). A world size of 1 is unsharded.
    merge : bool
        Merge once every shard is complete. Coordinated ranks: every rank reports its shard done, rank 0 merges and
        every rank returns the merged store. Independent ranks: rank 0 merges if every shard is already complete,
        else it logs which are not and returns its shard (merge later with :func:`merge_shards` or ``tarot merge``).
    keep_shards : bool
        Keep the shard directories after a successful merge (default; ``False`` deletes them).
    coordinate : bool, optional
        Whether the ranks exchange messages (a fingerprint of the request before any work, "done" after it, the merge
        outcome). None: when a process group is initialised (its object collectives), or when the ``torchrun``
        variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) are set and agree with ``shard`` (the
        rendezvous store, :func:`rendezvous_store`); False: never (independent processes); True: require it.
    timeout : float (seconds) or timedelta, optional
        How long a rank waits for the others (at the fingerprint check and for the slowest shard; 30 minutes when
        None). A rank that fails tells the others through the store, and they stop waiting at once.
    progress : bool, optional
        Progress bars; None = rank 0 only.

    Returns
    -------
    FeatureStore
        The merged (or unsharded) store at ``path``; the rank's shard store when ``merge=False`` or, for independent
        ranks, when other shards are not complete yet.

    Raises
    ------
    RankFailed
        Another coordinated rank failed (its error is in the message).
    TimeoutError
        A coordinated rank did not report within ``timeout``.

    Notes
    -----
    Restarting: run the same command again (all ranks, or only the failed one for independent ranks). Complete
    shards return at once, incomplete ones resume at their first unfinished batch; an already merged store at
    ``path`` that matches the request is returned without any work.
    """
    spec_kwargs = {k: kwargs.get(k) for k in ("ids", "sources", "groups")}
    if "shard" in kwargs:
        raise TypeError("featurize_distributed: pass shard= as its own argument")
    resolved, coord = _resolve_shard(shard, coordinate, timeout)
    if resolved is None:
        return featurize_to_store(featurizer, datasets, path, checkpoints, batch_size,
                                  progress=True if progress is None else progress, **kwargs)
    if coord is None:
        return _featurize_shard(featurizer, datasets, path, checkpoints, batch_size, resolved, None, merge,
                                keep_shards, progress, spec_kwargs, kwargs)
    return _coordinated(coord, lambda: _featurize_shard(
        featurizer, datasets, path, checkpoints, batch_size, resolved, coord, merge, keep_shards, progress,
        spec_kwargs, kwargs))


def _coordinated(coord: _StoreCoordinator | _GroupCoordinator, work: Callable[[], FeatureStore]) -> FeatureStore:
    """Run ``work``; a failure is reported to the other ranks; every rank leaves the store (rank 0 last)."""
    try:
        store = work()
    except BaseException as exc:
        if not isinstance(exc, RankFailed):
            coord.fail(exc)
        coord.leave(patience=10.0)
        raise
    coord.leave()
    return store


def _featurize_shard(
    featurizer: GradientFeaturizer, datasets: Mapping[str, Any], path: str | os.PathLike,
    checkpoints: Sequence[Checkpoint] | None, batch_size: int, shard: tuple[int, int],
    coord: _StoreCoordinator | _GroupCoordinator | None, merge: bool, keep_shards: bool, progress: bool | None,
    spec_kwargs: Mapping[str, Any], kwargs: Mapping[str, Any],
) -> FeatureStore:
    """This rank's shard, then the merge: after every rank reports done (``coord``), or for independent ranks
    (``coord`` None) by rank 0 when it finds every shard complete."""
    rank, world = shard
    spec = _spec(featurizer, datasets, checkpoints, batch_size, spec_kwargs)
    merged_manifest = Path(path) / MANIFEST
    already = merged_manifest.is_file()
    if coord is not None:
        views = [json.loads(v) for v in coord.gather("request", json.dumps([_fingerprint(spec), already]))]
        odd = [r for r, (fp, _) in enumerate(views) if fp != views[0][0]]
        if odd:
            raise ValueError(
                f"featurize_distributed: rank(s) {odd} request a different featurization than rank 0 (projector, "
                "checkpoints, batch size, split sizes or labels differ); every rank must run the same command"
            )
        if len({a for _, a in views}) != 1:
            raise StoreError(
                f"featurize_distributed: ranks disagree on whether {merged_manifest} exists; {path} must be on a "
                "file system shared by all ranks"
            )
    if already:
        store = FeatureStore.open(path)
        if store.manifest.get("shard") is not None or not store.complete:
            raise StoreError(f"{path} holds a feature store that is not a merged result; use a new path")
        _check_against(spec, store.manifest, Path(path))
        return store
    show = (rank == 0) if progress is None else progress
    own = featurize_to_store(featurizer, datasets, path, checkpoints, batch_size, shard=(rank, world),
                             progress=show, **kwargs)
    if not merge:
        return own
    if coord is None:
        if rank != 0:
            return own
        pending = {r: s for r, s in shard_status(path, world).items() if s != "complete"}
        if pending:
            log.warning(
                "rank 0: shard(s) %s under %s are not complete yet; merge them later (tarot merge, merge_shards, or "
                "rerun rank 0)", sorted(pending), path,
            )
            return own
        return merge_shards(path, world, expected=spec, keep_shards=keep_shards)
    coord.gather("shard done", "1")
    message = "ok"
    if rank == 0:
        try:
            merge_shards(path, world, expected=spec, keep_shards=keep_shards)
        except Exception as exc:
            coord.broadcast("merged", f"{type(exc).__name__}: {exc}")
            raise
    message = coord.broadcast("merged", message)
    if message != "ok":
        raise StoreError(f"rank 0 could not merge the shards under {path}: {message}")
    return FeatureStore.open(path)


# ---------------------------------------------------------------------------------------------- argparse
def shard_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``(rank, world)`` from :func:`add_shard_arguments` flags, falling back to ``$RANK``/``$WORLD_SIZE``.

    Returns None for a single process (world size 1), so the result can be passed as ``shard=`` to both
    :func:`featurize_distributed` and :func:`tarot.features.featurize.featurize_to_store`. Raises :class:`ValueError`
    when the rank is not below the world size.
    """
    env = os.environ if environ is None else environ
    env_shard = shard_from_env(env)
    rank = getattr(args, "rank", None)
    world = getattr(args, "world_size", None)
    if world is None:
        world = env_shard[1] if env_shard is not None else 1
    if rank is None:
        rank = env_shard[0] if env_shard is not None else 0
    rank, world = check_shard((rank, world))
    return None if world == 1 else (rank, world)
