r"""Distinct round-robin rounds (the layers of ``fixed_size`` and ``round_robin``), computed at scale.

In every round each target, in target order, takes its nearest candidate that nobody has taken yet. Targets that
share a region (a *crowd*: many targets around few candidates) push each other deep into their rankings, so the
depth a target reaches is not known in advance: it can be thousands of ranks when the budget exceeds what the
targets' own region holds. Computing every target's list to a fixed depth and doubling it when it runs out costs
one pass over all candidates per doubling (measured: 9 passes on a 50k × 5k clustered problem).

Instead the depth is *planned*:

1. **Simulation on a thinned problem.** Candidates and targets are both thinned by the same factor ρ (so the
   supply/demand balance of every region is kept) and the rounds are run exactly on that small problem (the same
   number of rounds). The score of each sampled target's last pick is the level its region's crowd reaches.
2. **Levels to thresholds.** Every target takes the deepest level among its ``neighbours`` most similar sampled
   targets (where a target falls in the round order decides how deep it goes, so the crowd's deepest level is the
   safe one); its scores against
   the thinned candidates tell how many candidates lie above that level, and its threshold θ_j is set to the score
   at ``slack`` times that rank (plus a few), so that its list is long enough with room to spare. Measured on a
   50k × 5k clustered problem (targets from 3 of 32 modes, the budget beyond those modes' size): slack 2 over the
   32 nearest sampled targets left no list short (no refill pass); the nearest one alone with slack 1.5 needed 13.
   The default slack is 1.5 over the 32 nearest: on the bench's problems (d = 1,024) it gave the same refills as 2
   (none at 200k × 1k and 50k × 5k) in 4–8 % less time, because the deepest neighbour's level already overshoots
   (at 200k × 5k the lists held 3.5 times the depth the rounds reached with slack 2).
3. **One pass per few thousand targets** over the candidates keeps, for every target, all candidates with
   :math:`s_{ij} \ge \theta_j` (a comparison, no per-block top-k sort), sorted by score (ties: lower index): each
   list is an exact prefix of the target's full ranking (:func:`collect_above`).
4. **Walk.** Each target walks its list past taken candidates; a list that still runs dry is refilled, together with
   every list that will run dry if its crowd keeps using it up at the rate it did so far, by a pass that excludes
   the taken candidates (:meth:`RankingLists.refill`; measured on the bench's 200,000 × 5,000 problem: 1,185
   targets refilled in 4 passes, 3.9 s, where taking every list with fewer untaken entries than a quarter of its
   length took 1,959 targets in 2 passes, 5.9 s; every refill pass costs a read of the candidates, every refilled
   target its products with them). A refill asks
   for a depth grown by the rate the crowd used the list up (R/(r+1) after r + 1 of R rounds, at least twofold),
   so a crowd needs few passes. Its threshold lies that many ranks *below the depth the old threshold reached* in
   the whole pool: the candidates above the old threshold are taken or still in the new list, so a threshold at
   the asked depth counted from the top would, for a crowd that took most of its list, sit above the old one and
   bring back less than asked. Before each refill every list drops its walked-past and taken entries (a crowd's
   lists are mostly taken entries by then), so their memory serves the refill pass.
   When the planned lists would exceed :data:`MAX_LIST_ENTRIES`, the deepest targets
   start without a list and their first refill asks for their planned depth; a refill of a large batch goes at most
   ``MAX_LIST_ENTRIES / (2·batch)`` ranks deeper than before, so memory stays bounded and the depth still grows.
   (Measured on the bench's 200,000 × 5,000 problem with the list budget cut to 20M entries: 3 refill passes and
   37–41 s, where doubling from a depth of 4 took 40 passes and 81 s; with a capped depth that stayed the same, a
   crowd whose neighbours had taken everything above it refilled without end.)

The picks are exactly those of walking every target's full ranking (tested against that brute force).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from tarot.features.allocator import release_freed_memory
from tarot.geometry.scoring import topk_neighbors
from tarot.geometry.whitening import as_tensor, check_float_features
from tarot.selectors.base import NeighbourLayers

#: Problems with at most this many candidate–target pairs use plain neighbour lists (no planning).
PLAN_MIN_PAIRS = 4_000_000
#: Pairs of the thinned problem the simulation runs on.
SIMULATION_PAIRS = 4_000_000
#: Entries kept over all lists by the planned pass, at most (the deepest targets start empty and refill instead);
#: 4 bytes each in the lists (a group of at most 20M entries is sorted at a time, ~40 bytes each meanwhile).
MAX_LIST_ENTRIES = 200_000_000


class RankingLists:
    """Per-target prefixes of their rankings (candidate indices, best first), refilled on demand.

    Attributes
    ----------
    lists : list of numpy.ndarray
        ``lists[j]``: candidates in target j's order (score descending, ties by lower index), a prefix of its full
        ranking among the candidates untaken when the list was made.
    complete : numpy.ndarray of bool
        The list holds every candidate that was untaken when it was made.
    """

    def __init__(self, candidates, targets, lists: list[np.ndarray], complete: np.ndarray,
                 progress: bool = False, nearest: np.ndarray | None = None, scale: DepthScale | None = None,
                 hint: np.ndarray | None = None, reach: np.ndarray | None = None) -> None:
        self.candidates, self.targets = candidates, targets
        self.lists, self.complete = lists, complete
        self.nearest = nearest  # every target's best score (NaN where its first list was empty)
        self.scale = scale  # score thresholds for a wanted depth (planned lists), else refills use top-k
        self.hint = hint  # planned depths of targets whose lists were left empty (0 elsewhere): their first refill
        # with a scale: the depth in the whole pool (taken candidates included) that each list's threshold reaches
        self.reach = None if scale is None else (np.zeros(len(lists), np.int64) if reach is None
                                                 else np.asarray(reach, dtype=np.int64).copy())
        self.n = candidates.shape[0]
        self.progress = progress
        self.refill_passes = 0
        self.targets_refilled = 0

    @classmethod
    def from_layers(cls, layers: NeighbourLayers) -> RankingLists:
        m = layers.index.shape[0]
        return cls(layers.candidates, layers.targets, [layers.index[j] for j in range(m)],
                   np.full(m, layers.exhausted), layers.progress, nearest=layers.scores[:, 0].astype(np.float64))

    def refill(self, batch: np.ndarray, lengths: np.ndarray, taken: np.ndarray,
               left: np.ndarray | None = None) -> None:
        """New lists of about ``lengths`` untaken candidates for the targets in ``batch`` (one pass): with a
        :class:`DepthScale`, every untaken candidate above the score expected ``lengths − left`` ranks below the
        depth the old list's threshold reached in the whole pool (``left``: the old lists' untaken entries, which
        the new lists hold again; what lies above the old threshold is taken or among them); else the top
        ``max(lengths)``."""
        available = self.n - int(np.count_nonzero(taken))
        for t in batch.tolist():  # the lists being replaced are not read again: their memory is free for the pass
            self.lists[t] = np.zeros(0, dtype=self.lists[t].dtype)
        if self.scale is not None:
            assert self.reach is not None, "a scale comes with the depths its thresholds reach"
            # a threshold at only `lengths` pool ranks would sit above the old one for a target whose crowd took
            # most of its list: the new list would hold less than the old one's untaken rest (measured at 1M × 10k:
            # 222M entries asked, 56M collected, and a second refill pass at once)
            more = np.asarray(lengths, dtype=np.int64) - (0 if left is None else np.asarray(left, dtype=np.int64))
            depth = self.reach[batch] + np.maximum(more, 4)
            theta = self.scale.threshold(batch, depth)
            self.reach[batch] = depth
            new, best = collect_above(self.candidates, self.targets, batch, theta, exclude=taken, planned=lengths,
                                      progress=self.progress)  # groups of bounded size: memory stays bounded
            full = np.isneginf(theta)
            self._learn_nearest(batch, best, taken)
        else:
            _, idx = topk_neighbors(self.candidates, self.targets[batch], int(lengths.max()), exclude=taken,
                                    progress=self.progress)
            new, full = list(idx), np.zeros(len(batch), dtype=bool)
        for row, t in enumerate(batch.tolist()):
            self.lists[t] = new[row]
            self.complete[t] = bool(full[row]) or len(new[row]) >= available
        self.refill_passes += 1
        self.targets_refilled += int(len(batch))

    def _learn_nearest(self, batch: np.ndarray, best: np.ndarray, taken: np.ndarray) -> None:
        """Best scores of targets that had none (their first list was left empty) from their refill: the refill's
        best is that of the untaken candidates, so only the taken rows are scored (a product with a tenth of the
        pool at most, instead of the whole pool that the diagnostics would otherwise sweep for them). Targets whose
        refill came back empty stay unknown."""
        if self.nearest is None:
            return
        learn = np.isnan(self.nearest[batch]) & ~np.isnan(best)
        if not learn.any():
            return
        todo, score = batch[learn], best[learn].astype(np.float64)
        if taken.any():  # the untaken rows are excluded: only the taken ones enter the products
            top, _ = topk_neighbors(self.candidates, np.asarray(self.targets)[todo], 1, exclude=~taken)
            score = np.maximum(score, top[:, 0])
        self.nearest[todo] = score


def unique_rounds(source: NeighbourLayers | RankingLists, n: int, stats: dict | None = None,
                  last_picks: np.ndarray | None = None) -> list[np.ndarray]:
    """Round-robin rounds of *distinct* picks until at least ``n`` candidates are taken (or the pool is exhausted).

    In every round each target, in target order, takes its nearest candidate that nobody has taken yet, so a round
    adds one new candidate per target (until the pool runs out). Rank layers (:meth:`NeighbourLayers.layer`)
    instead collapse duplicates: targets in a dense mode share neighbours, their layers hold fewer distinct
    candidates than they have targets, and the selection under-represents dense modes.

    Each target walks its list past taken candidates. A target whose list runs out is refilled, together with every
    target whose list has fewer untaken entries left than it still needs plus what its crowd will use up at the
    rate it did so far (``(len − left) · rounds to come / rounds done``), by one
    pass that excludes the taken candidates and asks those lists to go deeper: by the rate their crowd used them up
    (at least twofold; see the module docstring, step 4).

    Parameters
    ----------
    source : NeighbourLayers or RankingLists
        The targets' initial lists.
    stats : dict, optional
        Filled with ``refill_passes``, ``targets_refilled`` and ``max_list_length``.
    last_picks : numpy.ndarray, optional
        Filled with every target's last pick (-1 for none).

    Returns
    -------
    list of numpy.ndarray
        The picks of every round, in pick order.
    """
    src = RankingLists.from_layers(source) if isinstance(source, NeighbourLayers) else source
    N, M = src.n, len(src.lists)
    lists, complete = src.lists, src.complete
    ptr = np.zeros(M, dtype=np.int64)
    taken = np.zeros(N, dtype=bool)
    per_round = -(-min(n, N) // M)  # rounds needed when no target runs dry
    longest = max((len(x) for x in lists), default=0)
    asked = np.array([len(x) for x in lists], dtype=np.int64)
    made = asked.copy()  # every list's length when it was made (compaction shortens the lists themselves)
    hint = np.zeros(M, dtype=np.int64) if src.hint is None else np.asarray(src.hint, dtype=np.int64).copy()

    def next_untaken(j: int) -> int | None:
        # look at a short stretch first, then longer ones: a long list need not be scanned to its end at every pick
        lst, p, step = lists[j], int(ptr[j]), 64
        while p < len(lst):
            free = np.flatnonzero(~taken[lst[p : p + step]])
            if len(free):
                ptr[j] = p + int(free[0])
                return int(lst[ptr[j]])
            p, step = p + step, 4 * step
        ptr[j] = len(lst)
        return None

    def compact() -> np.ndarray:
        """Drop the walked-past and taken entries of every list (its walk is unchanged: it skips exactly those);
        returns how many entries each list has left. Measured at 1M × 10k: 180M of the 311M list entries were taken
        at the second refill, 249M of 361M at the fourth."""
        left = np.empty(M, dtype=np.int64)
        for t in range(M):
            rest = lists[t][ptr[t]:]
            alive = rest[~taken[rest]]
            if len(alive) < len(lists[t]):
                lists[t], ptr[t] = alive, 0
            left[t] = len(alive)
        return left

    def refill(j: int, rnd: int) -> None:
        nonlocal longest
        left = compact()
        lengths = made
        need = per_round - rnd - (np.arange(M) < j)  # picks still to come, this round included from j on
        elapsed = rnd + j / M  # rounds done so far; a list is used up at its rate so far for the rounds to come
        ahead = (lengths - left) * (per_round - elapsed) / max(elapsed, 1.0 / M)
        batch = np.flatnonzero(~complete & ((left < need + ahead) | (np.arange(M) == j)))
        # the depth asked for grows with every refill of a target, whatever came back (a threshold list can be
        # shorter than asked, even empty): by the rate its crowd used the list up, at least twofold (a list emptied
        # in the first of R rounds is asked R times as deep), and at least to the planned depth of a target whose
        # list was left empty to save memory
        before = np.maximum(lengths[batch], asked[batch])
        growth = max(2.0, per_round / (rnd + 1))
        want = np.maximum(np.maximum(np.ceil(growth * before).astype(np.int64), 4), hint[batch])
        # bounded memory for a large batch: at most this much deeper than before (the entries above the earlier depth
        # are taken by now), so the depth still grows with every refill
        want = np.minimum(want, before + max(4, MAX_LIST_ENTRIES // (2 * len(batch))))
        asked[batch] = want
        hint[batch] = 0
        src.refill(batch, want, taken, left[batch])
        ptr[batch] = 0
        made[batch] = [len(lists[t]) for t in batch.tolist()]
        longest = max(longest, max(len(lists[t]) for t in batch.tolist()))

    rounds: list[np.ndarray] = []
    count = 0
    rnd = 0
    while count < n and count < N:
        picks = []
        for j in range(M):
            c = next_untaken(j)
            while c is None and not complete[j]:
                refill(j, rnd)
                c = next_untaken(j)
            if c is None:
                continue  # this target has no untaken candidate left
            taken[c] = True
            ptr[j] += 1
            picks.append(c)
            if last_picks is not None:
                last_picks[j] = c
        if not picks:
            break
        rounds.append(np.asarray(picks, dtype=np.int64))
        count += len(picks)
        rnd += 1
    if stats is not None:
        stats.update({"refill_passes": src.refill_passes, "targets_refilled": src.targets_refilled,
                      "max_list_length": int(longest)})
    return rounds


def _t(x) -> torch.Tensor:
    return as_tensor(x, np.float32)


@dataclass
class DepthScale:
    """Every target's scores against the thinned candidates, summarised at geometric ranks: the score above which
    about ``depth`` candidates of the whole pool lie, for any depth."""

    ranks: np.ndarray  # [L] ranks in the thinned pool (0-based, increasing)
    values: np.ndarray  # [M, L] the target's score at those ranks (descending along L)
    rho: float  # thinning factor of the pool
    deferred: np.ndarray | None = None  # [M] planned depth of the targets left without a first list (else 0)

    def threshold(self, targets: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Score at (at least) ``depth`` pool ranks for each of ``targets``; -inf beyond the thinned pool."""
        want = np.ceil(np.asarray(depth, dtype=np.float64) * self.rho).astype(np.int64)
        pos = np.searchsorted(self.ranks, want)
        inside = pos < len(self.ranks)
        out = np.full(len(targets), -np.inf, dtype=np.float32)
        out[inside] = self.values[np.asarray(targets)[inside], pos[inside]]
        return out


def _sample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if size >= n else np.sort(rng.choice(n, size=size, replace=False))


def _top_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` largest scores of every row, descending: a top-k, or (all of them) a full sort when k is a large
    part of the row (measured on 2,048 × 12,649 scores: sort 0.75 s, top-2,600 0.22 s)."""
    if 4 * k >= scores.shape[1]:
        return torch.sort(scores, dim=1, descending=True).values
    return torch.topk(scores, k, dim=1).values


def _rank_summary(scores: torch.Tensor, top: torch.Tensor, ranks: np.ndarray, stride: int = 8) -> np.ndarray:
    """Every row's score at ``ranks`` (0-based): exact where ``top`` reaches; deeper ranks (only refills that go
    past the planned depth read them) from the ranking of every ``stride``-th score, at rank ⌈(r + 1)/stride⌉ − 1."""
    out = np.empty((scores.shape[0], len(ranks)), dtype=np.float32)
    inside = ranks < top.shape[1]
    out[:, inside] = top[:, torch.from_numpy(ranks[inside])].numpy()
    if not inside.all():
        thin = torch.sort(scores[:, ::stride], dim=1, descending=True).values
        deep = np.minimum(-(-(ranks[~inside] + 1) // stride) - 1, thin.shape[1] - 1)
        out[:, ~inside] = thin[:, torch.from_numpy(deep)].numpy()
    return out


def plan_thresholds(candidates, targets, n: int, *, slack: float = 1.5, neighbours: int = 32,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, DepthScale, dict]:
    """Score thresholds θ_j such that every target's list {i : s_ij ≥ θ_j} likely covers the depth it will reach
    (steps 1–2 of the module docstring). Returns θ [M] float32 (-inf: all candidates, +inf: none, the list is
    made when it is first needed), the planned list lengths [M], the :class:`DepthScale` that later refills use,
    and the plan record."""
    N, M = candidates.shape[0], targets.shape[0]
    rng = np.random.default_rng(seed)
    rho = min(1.0, math.sqrt(SIMULATION_PAIRS / (N * M)))
    cs = _sample(N, max(1, round(rho * N)), rng)
    ts = _sample(M, max(1, round(rho * M)), rng)
    C = np.asarray(candidates[cs], dtype=np.float32)
    T = np.asarray(targets[ts], dtype=np.float32)
    rounds = -(-min(n, N) // M)
    last = np.full(len(ts), -1, dtype=np.int64)
    sub_n = min(len(cs), rounds * len(ts))
    layers = NeighbourLayers(C, T, depth=max(4, 2 * rounds))
    unique_rounds(layers, sub_n, last_picks=last)
    level = np.where(last >= 0, np.einsum("ij,ij->i", T, C[np.maximum(last, 0)]), -np.inf)  # last-pick scores
    # every target takes the level of its most similar sampled target, read on its scores vs the thinned pool
    theta = np.empty(M, dtype=np.float32)
    depth = np.empty(M, dtype=np.int64)
    Ct, Tt = _t(C), _t(T)
    ranks = np.unique(np.round(1.25 ** np.arange(0, math.log(len(cs), 1.25) + 1)).astype(np.int64) - 1)
    ranks = ranks[ranks < len(cs)]
    summary = np.empty((M, len(ranks)), dtype=np.float32)
    for s in range(0, M, 2048):
        Tb = _t(targets[s : s + 2048])
        near = torch.topk(Tb @ Tt.T, min(neighbours, len(ts)), dim=1).indices.numpy()
        scores = Tb @ Ct.T  # [b, |cs|]
        lv = torch.from_numpy(level[near].min(axis=1).astype(np.float32))
        above = (scores >= lv[:, None]).sum(1).numpy()  # rank of the level among the thinned candidates
        pos = np.ceil(slack * above + 2).astype(np.int64)
        depth[s : s + len(pos)] = np.round(pos / rho)
        full = pos >= scores.shape[1]
        pick = np.minimum(pos, scores.shape[1]) - 1
        top = _top_sorted(scores, int(pick.max()) + 1)  # the ranking down to the deepest threshold, exact
        th = top.gather(1, torch.from_numpy(pick)[:, None])[:, 0].numpy()
        theta[s : s + len(pos)] = np.where(full, -np.inf, th)
        summary[s : s + len(scores)] = _rank_summary(scores, top, ranks)
    summary = np.minimum.accumulate(summary, axis=1)  # descending along the ranks, also where two sources meet
    # keep the planned lists within memory: the deepest targets start with empty lists instead (and refill later)
    planned = np.minimum(depth, N)
    deferred = np.zeros(M, dtype=np.int64)
    if planned.sum() > MAX_LIST_ENTRIES:
        order = np.argsort(-planned, kind="stable")
        drop = order[: int(np.searchsorted(np.cumsum(planned[order]), planned.sum() - MAX_LIST_ENTRIES)) + 1]
        theta[drop] = np.inf
        deferred[drop] = planned[drop]
        planned[drop] = 0
    plan = {"thinning": rho, "simulated_candidates": int(len(cs)), "simulated_targets": int(len(ts)),
            "planned_entries": int(planned.sum())}
    return theta, planned, DepthScale(ranks=ranks, values=summary, rho=rho, deferred=deferred), plan


def collect_above(candidates, targets, which: np.ndarray, theta: np.ndarray, *, exclude: np.ndarray | None = None,
                  planned: np.ndarray | None = None, block_rows: int = 8192, target_block: int = 4096,
                  pass_entries: int = 24_000_000, group_entries: int = 4_000_000,
                  progress: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """For every target ``which[r]`` all candidates with s ≥ ``theta[r]`` (except the excluded ones), in its
    ranking order (score descending, ties by lower index); returns those int32 lists and each list's best score
    (NaN for an empty list).

    Targets go in *passes* whose ``planned`` list lengths sum to at most ``pass_entries`` (and at most
    ``target_block`` targets): each pass is one streamed sweep over the candidates, scoring a tile of
    ``targets × block_rows`` at a time (at most 128 MB) and keeping the entries above the thresholds, 12 bytes each
    (target, candidate, score). A pass's entries are then sorted in groups of targets holding at most
    ``group_entries`` (about 80 bytes per entry while sorted: 4 million entries, 0.3 GB). Every target is scored
    once; larger passes mean fewer sweeps and larger, faster products (measured at 200,000 × 5,000, d = 1,024: the
    products alone took 13.4 s in blocks of 263 targets, 11.6 s in blocks of 1,024 and 10.7 s in one block).
    """
    check_float_features(candidates, "candidate features")
    N, K = candidates.shape[0], len(which)
    planned = np.zeros(K, dtype=np.int64) if planned is None else np.minimum(planned, N)
    passes = _consecutive_groups(planned, pass_entries, target_block)
    lists: list[np.ndarray] = []
    best = np.full(K, np.nan)
    bar = tqdm(total=len(passes) * -(-N // block_rows), desc="ranking lists", disable=not progress)
    for ps, pe in passes:
        T = _t(np.asarray(targets)[which[ps:pe]])
        th = torch.from_numpy(theta[ps:pe].astype(np.float32))[:, None]
        # per candidate block: rows (sorted), candidates, scores (an empty one first: every pass has a tile)
        tiles = [(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))]
        counts = np.zeros(pe - ps, dtype=np.int64)
        for cs in range(0, N, block_rows):
            block = candidates[cs : cs + block_rows]
            keep = None
            if exclude is not None and exclude[cs : cs + block_rows].any():
                keep = np.flatnonzero(~exclude[cs : cs + block_rows])
                block = np.asarray(block)[keep]
            if len(block):
                S = T @ _t(block).T
                rows, cols = torch.nonzero(S >= th, as_tuple=True)  # row-major: grouped by target, columns ascending
                c = cols.numpy() if keep is None else keep[cols.numpy()]
                r = rows.numpy().astype(np.int32)
                tiles.append((r, (c + cs).astype(np.int32), S[rows, cols].numpy()))
                counts += np.bincount(r, minlength=pe - ps)
                del S, rows, cols
            bar.update()
        for gs, ge in _consecutive_groups(counts, group_entries, pe - ps):
            part = [(r[a:b], c[a:b], v[a:b]) for r, c, v in tiles
                    for a, b in [np.searchsorted(r, [gs, ge])]]
            t_all = np.concatenate([p[0] for p in part]).astype(np.int64) - gs
            c_all = np.concatenate([p[1] for p in part])
            s_all = np.concatenate([p[2] for p in part])
            del part
            # one stable sort by (target, score descending): within a target the entries arrive in candidate
            # order, so equal scores stay ordered by the lower index
            bits = (s_all + np.float32(0.0)).view(np.int32).astype(np.int64)  # + 0.0 turns -0.0 into 0.0
            ascending = np.where(bits < 0, ~bits & 0x7FFFFFFF, bits | 0x80000000)  # float order as unsigned 32-bit
            # torch's stable sort gives the same order as numpy's, 2.3x faster on 4M keys (one thread)
            keys = torch.from_numpy((t_all << 32) | (0xFFFFFFFF - ascending))
            order = torch.sort(keys, stable=True).indices.numpy()
            del bits, ascending, keys
            c_all, s_all = c_all[order], s_all[order]
            bounds = np.concatenate([[0], np.cumsum(counts[gs:ge])])
            # copies, not views of c_all: a refill replaces some targets' lists, and views would keep the whole
            # group's array alive while any of its targets still uses its first list
            lists.extend(c_all[bounds[r] : bounds[r + 1]].copy() for r in range(ge - gs))
            has = bounds[1:] > bounds[:-1]
            best[ps + gs : ps + ge][has] = s_all[bounds[:-1][has]]
        del tiles
    bar.close()
    release_freed_memory()  # the lists just copied out pin the pages of the pass's freed temporaries
    return lists, best


def _consecutive_groups(sizes: np.ndarray, limit: int, max_count: int) -> list[tuple[int, int]]:
    """Split positions 0..len(sizes) into consecutive (start, stop) groups whose sizes sum to at most ``limit``
    (a single larger size makes a group of its own) and that hold at most ``max_count`` positions each."""
    groups, start, acc = [], 0, 0
    for r in range(len(sizes)):
        if r > start and (acc + sizes[r] > limit or r - start >= max_count):
            groups.append((start, r))
            start, acc = r, 0
        acc += int(sizes[r])
    groups.append((start, len(sizes)))
    return groups


def threshold_lists(candidates, targets, theta: np.ndarray, planned: np.ndarray | None = None,
                    scale: DepthScale | None = None, *, progress: bool = False) -> RankingLists:
    """For every target j all candidates with s_ij ≥ θ_j, in ranking order (step 3); see :func:`collect_above`."""
    M = targets.shape[0]
    lists, nearest = collect_above(candidates, targets, np.arange(M), theta, planned=planned, progress=progress)
    complete = np.isneginf(theta) | np.array([len(x) >= candidates.shape[0] for x in lists])
    reach = np.where(np.isneginf(theta), candidates.shape[0], 0 if planned is None else planned)
    return RankingLists(candidates, targets, lists, complete, progress, nearest=nearest, scale=scale,
                        hint=None if scale is None else scale.deferred, reach=reach)


@dataclass
class Rounds:
    """What :func:`distinct_rounds` returns: the picks of every round, every target's best score (NaN where not
    computed) and how the lists were made (``plan``, refills)."""

    picks: list[np.ndarray]
    nearest: np.ndarray
    stats: dict = field(default_factory=dict)


def distinct_rounds(candidates, targets, n: int, *, progress: bool = False) -> Rounds:
    """The rounds of :func:`unique_rounds` for ``n`` picks: plain neighbour lists on small problems, planned
    threshold lists (module docstring) on large ones."""
    N, M = candidates.shape[0], targets.shape[0]
    info: dict = {}
    if N * M <= PLAN_MIN_PAIRS:
        source = RankingLists.from_layers(NeighbourLayers(candidates, targets, depth=max(4, 2 * -(-n // M)),
                                                          progress=progress))
    else:
        theta, planned, scale, info["plan"] = plan_thresholds(candidates, targets, n)
        source = threshold_lists(candidates, targets, theta, planned, scale, progress=progress)
    assert source.nearest is not None, "ranking lists always record every target's best score"
    picks = unique_rounds(source, n, stats=info)  # (refills complete the best scores of targets without a list)
    nearest = source.nearest.copy()
    return Rounds(picks=picks, nearest=nearest, stats=info)
