r"""Data sets → feature store: :func:`featurize_to_store` runs a :class:`~tarot.features.gradients.GradientFeaturizer`
over map-style data sets and checkpoints and writes a resumable :class:`~tarot.features.store.FeatureStore`,
batch by batch with completion masks, optionally one shard of the rows per process (:func:`shard_rows`).

The steps: :func:`_plan` (check the arguments, resolve labels and row ranges) → the store manifest
(:func:`_manifest`) → for every checkpoint, the batches still to do (:func:`_pending_batches`), the checkpoint
loaded (:func:`_load_checkpoint`) and the batches featurized, sharing per-sample gradients between splits that are
the same data set (:func:`_featurize_splits`) → the per-checkpoint arrays summed into the store
(:meth:`~tarot.features.store.FeatureStore.finalize`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from tarot.features.allocator import keep_freed_memory
from tarot.features.gradients import Checkpoint, Preconditioner
from tarot.features.store import FeatureStore, check_labels, check_split_name
from tarot.locking import output_lock

__all__ = ["Featurizer", "featurize_to_store", "shard_rows"]


class Featurizer(Protocol):
    """What :func:`featurize_to_store` uses of a featurizer: :class:`~tarot.features.gradients.GradientFeaturizer`
    (per-sample gradients) and :class:`~tarot.features.embeddings.EmbeddingFeaturizer` (embeddings) both are one."""

    model: torch.nn.Module
    projector: Any

    @property
    def precondition(self) -> Preconditioner | None: ...

    @property
    def proj_dim(self) -> int: ...

    def config(self) -> dict[str, Any]: ...

    def per_sample_grads(self, batch: Any) -> Any: ...

    def project(self, grads: Any) -> torch.Tensor: ...


def shard_rows(n: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous row range ``[start, stop)`` of shard ``rank`` of ``world`` for a split of ``n`` rows.

    Shards are made of whole batches of the global batch grid (batch ``b`` = rows ``[b·bs, (b+1)·bs)``), so every
    batch a shard computes is exactly a batch of the single-process run and merged shards are bitwise identical to it.
    """
    if not 0 <= rank < world:
        raise ValueError(f"shard: rank {rank} is not in [0, {world})")
    nb = -(-n // batch_size)
    b0, b1 = nb * rank // world, nb * (rank + 1) // world
    return min(b0 * batch_size, n), min(b1 * batch_size, n)


def _fn_name(fn: Callable[..., Any] | None) -> str | None:
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def _per_split(kind: str, value: Mapping[str, Any] | None, splits: Sequence[str]) -> dict[str, Any]:
    value = dict(value or {})
    unknown = sorted(set(value) - set(splits))
    if unknown:
        raise ValueError(f"featurize_to_store: {kind} given for unknown split(s) {unknown} (splits: {list(splits)})")
    return value


class _Batches(torch.utils.data.Sampler):
    """Batch sampler yielding the given global row lists (only the batches still to do)."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def featurize_to_store(
    featurizer: Featurizer,
    datasets: Mapping[str, Any],
    path: str | os.PathLike,
    checkpoints: Sequence[Checkpoint] | None,
    batch_size: int,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    ids: Mapping[str, Sequence[Any]] | None = None,
    sources: Mapping[str, Sequence[Any]] | None = None,
    groups: Mapping[str, Sequence[Any]] | None = None,
    precondition: Mapping[str, Preconditioner | None] | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    num_workers: int = 0,
    keep_partials: bool = False,
) -> FeatureStore:
    r"""Featurize map-style data sets into a resumable :class:`~tarot.features.store.FeatureStore`.

    For every split and sample :math:`z`, :math:`\phi(z) = \sum_c w_c\, P\, \Gamma_c(\nabla_\theta L(z;\theta_c))`.
    The outer loop runs over ``checkpoints`` (each state is loaded into the model once); per-(split, checkpoint)
    arrays are written batch by batch with a completion mask, then summed (float64, checkpoint-name order) into the
    split's array. The model's original weights and training flag are restored afterwards. While it runs, large
    freed arrays stay with the process for the next batch (:func:`tarot.features.allocator.keep_freed_memory`:
    vmap gradients of the bench's small CNN 2.1x faster) and are handed back at the end.

    Parameters
    ----------
    featurizer : GradientFeaturizer or EmbeddingFeaturizer (any :class:`Featurizer`)
    datasets : dict split -> map-style Dataset
        ``len(ds)`` and ``ds[i]`` returning one sample pytree; batched by a ``DataLoader`` in index order. Splits
        given the *same* data set object (e.g. targets featurized plain and Adam-preconditioned) share each batch's
        per-sample gradients: they are computed once and handed to every such split's preconditioner.
    path : str or PathLike
        Store directory (with ``shard``: the parent of ``shard-{rank:05d}-of-{world:05d}``).
    checkpoints : list of Checkpoint, optional
        Explicit, ordered; names unique. A checkpoint without ``state_dict``/``path`` means the model's weights as
        passed in; a ``strict=False`` one is loaded on top of them. None/empty = one checkpoint ``"current"``.
    batch_size : int
        Rows per batch (the batch grid is part of the store's identity: resume and shards use the same grid).
    collate_fn : callable, optional
        Passed to the ``DataLoader``.
    ids, sources, groups : dict split -> list, optional
        Per-row labels of the FULL split (sliced for a shard). ids default to the row numbers.
    precondition : dict split -> callable, optional
        Per-split preconditioners (a split absent from the dict is not preconditioned). None = the featurizer's
        ``precondition`` for every split.
    shard : (rank, world), optional
        Featurize only this rank's contiguous row range of each split into its own shard directory;
        combine shards with :meth:`FeatureStore.merge`.
    progress : bool
        Show tqdm progress bars.
    num_workers : int
        DataLoader workers.
    keep_partials : bool
        Keep the per-checkpoint arrays after completion.

    Returns
    -------
    FeatureStore
        The complete store (the shard's store with ``shard``). Rerunning the same call after a crash resumes.
    """

    plan = _plan(featurizer, datasets, path, checkpoints, batch_size, ids=ids, sources=sources, groups=groups,
                 precondition=precondition, shard=shard)
    with output_lock(plan.store_path), keep_freed_memory():  # a second process on the same store is refused
        return _featurize(featurizer, datasets, plan, collate_fn, progress, num_workers, keep_partials)


def _featurize(featurizer: Featurizer, datasets: Mapping[str, Any], plan: _Plan,
               collate_fn: Callable[[list[Any]], Any] | None, progress: bool, num_workers: int,
               keep_partials: bool) -> FeatureStore:
    from tqdm.auto import tqdm

    store = FeatureStore.create_or_resume(plan.store_path, _manifest(featurizer, plan))
    if store.complete:
        return store
    model = featurizer.model
    snapshot: dict[str, torch.Tensor] | None = None  # the weights passed in, restored at the end
    try:
        for ci, ck in enumerate(plan.checkpoints):
            todo = _pending_batches(store, plan, ci)
            if not todo:
                continue
            snapshot = _load_checkpoint(model, ck, snapshot)
            for group in _shared_gradient_groups(todo, datasets, plan.ranges):
                _featurize_splits(featurizer, store, datasets[group[0]], group, ci, ck, todo[group[0]],
                                  plan.ranges[group[0]][0], collate_fn, [plan.precondition[s] for s in group],
                                  num_workers, tqdm, progress)
    finally:
        if snapshot is not None:
            model.load_state_dict(snapshot)
    store.finalize(keep_partials=keep_partials)
    return store


@dataclass
class _Plan:
    """What one featurize_to_store call writes: splits, checkpoints, the full labels and this process's rows."""

    splits: list[str]
    checkpoints: list[Checkpoint]
    batch_size: int
    precondition: dict[str, Preconditioner | None]
    full: dict[str, dict[str, list[str] | None]]  # kind (ids/sources/groups) -> split -> labels of the FULL split
    ranges: dict[str, tuple[int, int, int]]  # split -> (start, stop, total) of this process's rows
    store_path: Path
    shard: dict[str, int] | None

    def local(self, kind: str, split: str) -> list[str] | None:
        v = self.full[kind][split]
        return None if v is None else v[self.ranges[split][0] : self.ranges[split][1]]


def _plan(featurizer: Featurizer, datasets: Mapping[str, Any], path: str | os.PathLike,
          checkpoints: Sequence[Checkpoint] | None, batch_size: int, *, ids: Mapping[str, Sequence[Any]] | None,
          sources: Mapping[str, Sequence[Any]] | None, groups: Mapping[str, Sequence[Any]] | None,
          precondition: Mapping[str, Preconditioner | None] | None, shard: tuple[int, int] | None) -> _Plan:
    """Check the arguments of :func:`featurize_to_store` and resolve labels, preconditioners and row ranges."""
    if not datasets:
        raise ValueError("featurize_to_store: no data sets given")
    if int(batch_size) <= 0:
        raise ValueError(f"featurize_to_store: batch_size must be positive, got {batch_size}")
    batch_size = int(batch_size)
    splits = [check_split_name(s) for s in datasets]
    ckpts = list(checkpoints) if checkpoints else [Checkpoint("current")]
    names = [c.name for c in ckpts]
    if len(set(names)) != len(names):
        raise ValueError(f"featurize_to_store: checkpoint names must be unique, got {names}")
    labels = {k: _per_split(k, v, splits) for k, v in (("ids", ids), ("sources", sources), ("groups", groups))}
    if precondition is None:
        precond = {s: featurizer.precondition for s in splits}
    else:
        precond = {s: _per_split("precondition", precondition, splits).get(s) for s in splits}
    if not getattr(featurizer, "accepts_precondition", True) and any(v is not None for v in precond.values()):
        raise ValueError(f"featurize_to_store: {type(featurizer).__name__} takes no preconditioner (it does not "
                         "factorise); use the dense or sjlt projector for preconditioned gradients")
    totals = {s: len(datasets[s]) for s in splits}
    full = {kind: {s: check_labels(kind, s, labels[kind].get(s), totals[s]) for s in splits} for kind in labels}
    full["ids"] = {s: full["ids"][s] or [str(i) for i in range(totals[s])] for s in splits}
    if shard is not None:
        rank, world = (int(v) for v in shard)
        ranges = {s: (*shard_rows(totals[s], batch_size, rank, world), totals[s]) for s in splits}
        return _Plan(splits, ckpts, batch_size, precond, full, ranges,
                     Path(path) / f"shard-{rank:05d}-of-{world:05d}", {"rank": rank, "world": world})
    return _Plan(splits, ckpts, batch_size, precond, full, {s: (0, totals[s], totals[s]) for s in splits}, Path(path),
                 None)


def _manifest(featurizer: Featurizer, plan: _Plan) -> dict[str, Any]:
    """The store manifest of a plan: its identity (resume and merge compare it) and its labels."""
    splits = plan.splits
    return FeatureStore.build_manifest(
        featurizer.proj_dim,
        {s: plan.ranges[s][1] - plan.ranges[s][0] for s in splits},
        ids={s: plan.local("ids", s) for s in splits},
        sources={s: plan.local("sources", s) for s in splits},
        groups={s: plan.local("groups", s) for s in splits},
        projector=featurizer.projector.config(),
        checkpoints=[c.describe() for c in plan.checkpoints],
        row_ranges=plan.ranges,
        shard=plan.shard,
        batch_size=plan.batch_size,
        precondition={s: _fn_name(plan.precondition[s]) for s in splits},
        full_labels=plan.full,
        extra={"featurizer": {k: v for k, v in featurizer.config().items() if k != "projector"}},
    )


def _pending_batches(store: FeatureStore, plan: _Plan, ci: int) -> dict[str, list[list[int]]]:
    """Per split, the batches of the global grid (row lists) that checkpoint ``ci`` has not finished."""
    todo: dict[str, list[list[int]]] = {}
    bs = plan.batch_size
    for s in plan.splits:
        feats, mask = store.open_partial(s, ci)
        start, stop, _ = plan.ranges[s]
        batches = [list(range(lo, min(lo + bs, stop))) for lo in range(start, stop, bs)
                   if not mask[lo - start : min(lo + bs, stop) - start].all()]
        if batches:
            todo[s] = batches
        del feats, mask
    return todo


def _load_checkpoint(model: torch.nn.Module, ck: Checkpoint, snapshot: dict[str, torch.Tensor] | None
                     ) -> dict[str, torch.Tensor] | None:
    """Load ``ck`` into ``model``; returns the snapshot of the original weights (taken before the first load).

    A state-less checkpoint means the original weights; a partial (``strict=False``) one applies on top of them.
    """
    state = ck.load()
    if state is not None and snapshot is None:
        snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if snapshot is not None and (state is None or not ck.strict):
        model.load_state_dict(snapshot)
    if state is not None:
        model.load_state_dict(state, strict=ck.strict)
    return snapshot


def _shared_gradient_groups(
    todo: Mapping[str, list[list[int]]], datasets: Mapping[str, Any], ranges: Mapping[str, tuple[int, int, int]]
) -> list[list[str]]:
    """Group pending splits that are the SAME data set object over the same rows with the same pending batches.

    Such splits differ only in their preconditioner (e.g. LESS-style targets featurized both plain and
    Adam-preconditioned), so each batch's per-sample gradients are computed once and reused for all of them.
    """
    groups: list[list[str]] = []
    for s in todo:
        for g in groups:
            t = g[0]
            if datasets[t] is datasets[s] and ranges[t] == ranges[s] and todo[t] == todo[s]:
                g.append(s)
                break
        else:
            groups.append([s])
    return groups


def _featurize_splits(
    featurizer: Featurizer,
    store: FeatureStore,
    dataset: Any,
    splits: list[str],
    ci: int,
    ck: Checkpoint,
    batches: list[list[int]],
    start: int,
    collate_fn: Callable[[list[Any]], Any] | None,
    preconds: list[Preconditioner | None],
    num_workers: int,
    tqdm: Any,
    progress: bool,
) -> None:
    """Compute and write the pending ``batches`` (global row lists) of one checkpoint for ``splits`` that share
    ``dataset``: per-sample gradients once per batch, then each split's preconditioner and the projection.
    Preconditioners must return new tensors (they are handed the same gradients in turn)."""
    opened = [store.open_partial(s, ci) for s in splits]
    n = store.count(splits[0])
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_Batches(batches), collate_fn=collate_fn, num_workers=num_workers
    )
    bar = tqdm(total=n, initial=int(opened[0][1].sum()), desc=f"{ck.name}/{'+'.join(splits)}", unit="row",
               disable=not progress)
    try:
        for rows, batch in zip(batches, loader):
            grads = featurizer.per_sample_grads(batch)
            for split, (feats, mask), fn in zip(splits, opened, preconds):
                g = fn(grads, ck) if fn is not None else grads
                with torch.no_grad():
                    out = featurizer.project(g).cpu().numpy()
                _check_rows(out, split, rows, ck, store.dim)
                lo = rows[0] - start
                FeatureStore.write_rows(feats, mask, slice(lo, lo + len(rows)), out)
            bar.update(len(rows))
    finally:
        bar.close()
        del opened


def _check_rows(out: np.ndarray, split: str, rows: list[int], ck: Checkpoint, dim: int) -> None:
    """Refuse a batch of features with the wrong shape or a non-finite row (naming split, row and checkpoint)."""
    if out.shape != (len(rows), dim):
        raise ValueError(
            f"split {split!r} rows {rows[0]}..{rows[-1]}: features of shape {out.shape}, expected ({len(rows)}, {dim})"
        )
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise FloatingPointError(
            f"split {split!r} row {rows[int(np.argmax(bad))]} (checkpoint {ck.name!r}): non-finite gradient "
            "feature; check the loss adapter"
        )
