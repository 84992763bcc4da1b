r"""Seeded Johnson–Lindenstrauss random projection, generated block by block.

A projector maps a flattened gradient :math:`x \in \mathbb{R}^p` to :math:`Px \in \mathbb{R}^k` with
:math:`P \in \mathbb{R}^{k \times p}` whose entries are i.i.d. Rademacher (:math:`\pm 1`, the default) or standard
normal. With the optional scaling :math:`P \leftarrow P/\sqrt{k}` one has :math:`\mathbb{E}\|Px\|^2 = \|x\|^2`;
without it :math:`\mathbb{E}\|Px\|^2 / k = \|x\|^2`.

``kind="sjlt"`` is a sparse JL transform (Kane–Nelson's block construction): the k outputs are cut into ``s`` groups
of k/s, and every input coordinate i lands in one output of each group, :math:`h_j(i) = j\,k/s + u_j(i)`, with a
random sign :math:`\sigma_j(i)`; the entries are :math:`\sigma_j(i)\sqrt{k/s}` (or :math:`\sigma_j(i)/\sqrt{s}`
scaled), so the same norm identities hold, and a batch costs :math:`O(B\,p\,s)` instead of :math:`O(B\,p\,k)`.
Its blocks hold the ``[rows, s]`` indices and signs, drawn from the same per-block generators.

Layout and determinism
----------------------
The input coordinates are split into *chunks* (``chunk_sizes``, e.g. one per parameter tensor) and every chunk into
row *blocks* of at most ``block_rows`` coordinates. Block ``b`` of chunk ``c`` is the slice
:math:`B_{c,b} = P^\top[\text{rows of the block}] \in \mathbb{R}^{r \times k}`, drawn on the CPU from a
``torch.Generator`` seeded with a 63-bit BLAKE2b hash of ``(seed, c, b)`` (a counter-based scheme). Hence :math:`P` is a
pure function of ``(kind, seed, chunk_sizes, block_rows, k)`` — never of batch size, shard, process or device — and the
full :math:`p \times k` matrix is never held (only blocks, optionally cached under a byte budget). The projection is

.. math:: Px = \sum_c \sum_b x_{c,b}^\top B_{c,b},

accumulated in fp32 in the fixed order (c, b). Rows are multiplied in zero-padded tiles of ``ROW_TILE`` rows so that
the BLAS kernel and its reduction order do not depend on how many rows a call gets: on one device the output for a
sample is bitwise identical whether it is projected alone, in a batch, or in a shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

__all__ = ["Projector", "ROW_TILE", "SCHEME"]

SCHEME = "tarot-jl-blake2b-v1"
ROW_TILE = 16
_KINDS = ("rademacher", "gaussian", "sjlt")
SJLT_NNZ = 4  # default nonzeros per input coordinate of the sparse JL transform


def _block_seed(seed: int, chunk: int, block: int) -> int:
    """63-bit generator seed for block ``block`` of chunk ``chunk`` (a hash of the triple, stable everywhere)."""
    digest = hashlib.blake2b(f"{SCHEME}:{int(seed)}:{int(chunk)}:{int(block)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Projector:
    r"""Johnson–Lindenstrauss projector :math:`x \mapsto Px`, :math:`P \in \mathbb{R}^{k\times p}`.

    Parameters
    ----------
    chunk_sizes : int or sequence of int
        Sizes :math:`p_c` of the input chunks (their sum is :math:`p`); an int means one chunk.
    proj_dim : int
        Output dimension :math:`k`.
    seed : int
        Seed of the counter-based block generator.
    kind : {"rademacher", "gaussian", "sjlt"}
        Entry distribution: :math:`\pm 1` with probability 1/2 each, :math:`\mathcal{N}(0, 1)`, or the sparse JL
        transform (``nnz`` signed entries per input coordinate, one in each of ``nnz`` output groups).
    nnz : int, optional
        Nonzeros per input coordinate of ``kind="sjlt"`` (default 4; must divide ``proj_dim``).
    scale : bool
        If true, multiply :math:`P` by :math:`1/\sqrt{k}` so that :math:`\mathbb{E}\|Px\|^2 = \|x\|^2`.
    block_rows : int, optional
        Input coordinates per generated block; default ``max(1, 2**22 // k)`` (16 MiB fp32 blocks). Part of the
        definition of :math:`P`.
    chunk_names : sequence of str, optional
        Labels of the chunks (recorded in :meth:`config`, not used for generation).
    device : str or torch.device
        Where blocks are moved after CPU generation and where the product is computed.
    cache_bytes : int
        Generated blocks are kept on ``device`` while their total size stays within this budget.
    """

    def __init__(
        self,
        chunk_sizes: int | Sequence[int],
        proj_dim: int,
        seed: int = 0,
        kind: str = "rademacher",
        scale: bool = False,
        block_rows: int | None = None,
        chunk_names: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        cache_bytes: int = 512 * 2**20,
        nnz: int | None = None,
    ) -> None:
        sizes = [int(chunk_sizes)] if isinstance(chunk_sizes, int) else [int(s) for s in chunk_sizes]
        if not sizes or any(s <= 0 for s in sizes):
            raise ValueError(f"Projector: chunk sizes must be positive integers, got {sizes}")
        if int(proj_dim) <= 0:
            raise ValueError(f"Projector: proj_dim must be a positive integer, got {proj_dim}")
        if kind not in _KINDS:
            raise ValueError(f"Projector: kind must be one of {_KINDS}, got {kind!r}")
        if kind != "sjlt" and nnz is not None:
            raise ValueError(f"Projector: nnz is an option of kind 'sjlt', not {kind!r}")
        self.nnz = (SJLT_NNZ if nnz is None else int(nnz)) if kind == "sjlt" else None
        if self.nnz is not None and (self.nnz <= 0 or int(proj_dim) % self.nnz):
            raise ValueError(f"Projector: sjlt needs nnz >= 1 dividing proj_dim={proj_dim}, got nnz={nnz}")
        if chunk_names is not None and len(chunk_names) != len(sizes):
            raise ValueError(f"Projector: {len(chunk_names)} chunk names for {len(sizes)} chunks")
        self.chunk_sizes: list[int] = sizes
        self.chunk_names: list[str] | None = list(chunk_names) if chunk_names is not None else None
        self.proj_dim = int(proj_dim)
        self.seed = int(seed)
        self.kind = kind
        self.scale = bool(scale)
        width = self.nnz * 2 if self.nnz is not None else self.proj_dim  # values per input row of a block
        self.block_rows = int(block_rows) if block_rows is not None else max(1, 2**22 // width)
        if self.block_rows <= 0:
            raise ValueError(f"Projector: block_rows must be positive, got {block_rows}")
        self.device = torch.device(device)
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[tuple[int, int], torch.Tensor] = {}
        self._cached_bytes = 0
        self.chunk_offsets: list[int] = [0]
        for s in sizes:
            self.chunk_offsets.append(self.chunk_offsets[-1] + s)

    # ------------------------------------------------------------------ layout
    @property
    def input_dim(self) -> int:
        """Total input dimension :math:`p = \\sum_c p_c`."""
        return self.chunk_offsets[-1]

    def num_blocks(self, chunk: int) -> int:
        """Number of row blocks of chunk ``chunk``."""
        return -(-self.chunk_sizes[chunk] // self.block_rows)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description; :meth:`from_config` rebuilds an identical projector."""
        return {
            "type": self.kind,
            "scheme": SCHEME,
            "seed": self.seed,
            "input_dim": self.input_dim,
            "proj_dim": self.proj_dim,
            "scale": self.scale,
            "block_rows": self.block_rows,
            "chunk_sizes": list(self.chunk_sizes),
            "chunk_names": list(self.chunk_names) if self.chunk_names is not None else None,
            **({"nnz": self.nnz} if self.nnz is not None else {}),
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any], device: str | torch.device = "cpu", **kwargs: Any) -> Projector:
        """Rebuild a projector from :meth:`config` output."""
        if cfg.get("scheme", SCHEME) != SCHEME:
            raise ValueError(f"Projector.from_config: unknown scheme {cfg.get('scheme')!r}, expected {SCHEME!r}")
        return cls(
            cfg["chunk_sizes"],
            cfg["proj_dim"],
            seed=cfg["seed"],
            kind=cfg["type"],
            scale=cfg["scale"],
            block_rows=cfg["block_rows"],
            chunk_names=cfg.get("chunk_names"),
            device=device,
            nnz=cfg.get("nnz"),
            **kwargs,
        )

    # ------------------------------------------------------------------ blocks
    def _block_on_device(self, chunk: int, block: int) -> torch.Tensor:
        return self.generate_block(chunk, block).to(self.device)

    def generate_block(self, chunk: int, block: int) -> torch.Tensor:
        r"""Block :math:`B_{c,b}` (shape ``[rows, k]``, fp32, on the CPU), freshly generated.

        For ``kind="sjlt"`` the block is sparse: a ``[rows, 2 * nnz]`` fp32 tensor holding the output indices
        :math:`h_j(i)` (as floats, exact below 2**24) then the signed values; :meth:`dense_block` expands it."""
        if not 0 <= chunk < len(self.chunk_sizes) or not 0 <= block < self.num_blocks(chunk):
            raise IndexError(f"Projector: no block ({chunk}, {block}) in layout {self.chunk_sizes} / {self.block_rows}")
        rows = min(self.block_rows, self.chunk_sizes[chunk] - block * self.block_rows)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(_block_seed(self.seed, chunk, block))
        shape = (rows, self.proj_dim)
        if self.kind == "sjlt":
            return self._sparse_block(rows, gen)
        if self.kind == "rademacher":
            out = torch.randint(0, 2, shape, generator=gen, dtype=torch.float32).mul_(2.0).sub_(1.0)
        else:
            out = torch.randn(shape, generator=gen, dtype=torch.float32)
        if self.scale:
            out.mul_(1.0 / float(self.proj_dim) ** 0.5)
        return out

    def _sparse_block(self, rows: int, gen: torch.Generator) -> torch.Tensor:
        assert self.nnz is not None, "sjlt projectors always carry nnz"
        s, k = int(self.nnz), self.proj_dim
        group = k // s
        offsets = torch.randint(0, group, (rows, s), generator=gen, dtype=torch.int64)
        index = offsets + torch.arange(s, dtype=torch.int64) * group
        signs = torch.randint(0, 2, (rows, s), generator=gen, dtype=torch.float32).mul_(2.0).sub_(1.0)
        value = (1.0 / s**0.5) if self.scale else (k / s) ** 0.5
        return torch.cat([index.to(torch.float32), signs.mul_(value)], dim=1)

    def dense_block(self, chunk: int, block: int) -> torch.Tensor:
        r"""Block :math:`B_{c,b}` as a dense ``[rows, k]`` matrix, whatever the kind (for tests and :meth:`matrix`)."""
        blk = self.generate_block(chunk, block)
        if self.kind != "sjlt":
            return blk
        assert self.nnz is not None, "sjlt projectors always carry nnz"
        s = int(self.nnz)
        dense = torch.zeros((blk.shape[0], self.proj_dim), dtype=torch.float32)
        dense.scatter_(1, blk[:, :s].to(torch.int64), blk[:, s:])
        return dense

    def block(self, chunk: int, block: int) -> torch.Tensor:
        """Block ``(chunk, block)`` on ``self.device``, served from the cache when possible."""
        hit = self._cache.get((chunk, block))
        if hit is not None:
            return hit
        return self._remember((chunk, block), self.generate_block(chunk, block).to(self.device))

    def _remember(self, key: tuple[int, int], blk: torch.Tensor) -> torch.Tensor:
        """Cache ``blk`` under ``key`` if the byte budget allows; return it."""
        nbytes = blk.numel() * blk.element_size()
        if key not in self._cache and self._cached_bytes + nbytes <= self.cache_bytes:
            self._cache[key] = blk
            self._cached_bytes += nbytes
        return blk

    def clear_cache(self) -> None:
        """Drop all cached blocks."""
        self._cache.clear()
        self._cached_bytes = 0

    def matrix(self) -> torch.Tensor:
        r"""The full :math:`P^\top \in \mathbb{R}^{p \times k}` (for tests and small problems only)."""
        return torch.cat(
            [self.dense_block(c, b) for c in range(len(self.chunk_sizes)) for b in range(self.num_blocks(c))]
        )

    # ------------------------------------------------------------------ projection
    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad the rows of a 2-D tensor up to a multiple of ``ROW_TILE``."""
        pad = (-x.shape[0]) % ROW_TILE
        if pad == 0:
            return x
        return torch.cat([x, x.new_zeros((pad, x.shape[1]))])

    def _blocks(self, keys: list[tuple[int, int]]) -> Iterator[torch.Tensor]:
        """Yield the blocks ``keys`` in order; an uncached next block is generated in a background thread while the
        current one is used (each block has its own generator, so the values do not depend on this overlap)."""
        pending: tuple[tuple[int, int], Future[torch.Tensor]] | None = None
        with ThreadPoolExecutor(max_workers=1) as pool:
            for i, key in enumerate(keys):
                if pending is not None and pending[0] == key:
                    blk = self._remember(key, pending[1].result())
                else:
                    blk = self.block(*key)
                pending = None
                if i + 1 < len(keys) and keys[i + 1] not in self._cache:
                    nxt = keys[i + 1]
                    pending = (nxt, pool.submit(self._block_on_device, *nxt))
                yield blk

    def _check(self, chunk: int, x: torch.Tensor, n: int | None) -> torch.Tensor:
        """Validate chunk input ``x`` (``[n, p_c]``) and return it on the device, fp32, row-padded."""
        if x.dim() != 2 or x.shape[1] != self.chunk_sizes[chunk] or (n is not None and x.shape[0] != n):
            raise ValueError(
                f"Projector: chunk {chunk} expects input of shape [{'B' if n is None else n}, "
                f"{self.chunk_sizes[chunk]}], got {tuple(x.shape)}"
            )
        return self._padded(x.to(device=self.device, dtype=torch.float32))

    def _accumulate(self, inputs: dict[int, torch.Tensor], n: int) -> torch.Tensor:
        """Sum of ``inputs[c]`` (padded) times the blocks of chunk c, in the fixed (c, b) order; ``[n, k]``."""
        rows = next(iter(inputs.values())).shape[0]
        acc = torch.zeros((rows, self.proj_dim), dtype=torch.float32, device=self.device)
        keys = [(c, b) for c in sorted(inputs) for b in range(self.num_blocks(c))]
        for (c, b), blk in zip(keys, self._blocks(keys)):
            lo = b * self.block_rows
            x = inputs[c][:, lo : lo + blk.shape[0]]
            if self.nnz is None:
                acc.addmm_(x, blk)
            else:  # sparse: every input column adds sign * value into its nnz outputs (one per output group)
                s = self.nnz
                index = blk[:, :s].to(torch.int64)
                for j in range(s):
                    acc.index_add_(1, index[:, j], x * blk[:, s + j])
        return acc[:n]

    def project_chunks(self, chunks: Sequence[torch.Tensor]) -> torch.Tensor:
        r"""Project a chunked input (``chunks[c]``: ``[B, p_c]``): :math:`\sum_c \sum_b x_{c,b}^\top B_{c,b}`, fp32
        ``[B, k]``."""
        if len(chunks) != len(self.chunk_sizes):
            raise ValueError(f"Projector: expected {len(self.chunk_sizes)} chunks, got {len(chunks)}")
        n = chunks[0].shape[0] if chunks[0].dim() == 2 else None
        return self._accumulate({c: self._check(c, x, n) for c, x in enumerate(chunks)}, int(n or 0))

    def project_chunk(self, chunk: int, x: torch.Tensor) -> torch.Tensor:
        """Contribution of chunk ``chunk`` alone (``x``: ``[B, p_c]``) to :meth:`project_chunks`, fp32 ``[B, k]``."""
        return self._accumulate({chunk: self._check(chunk, x, None)}, x.shape[0])

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Project a flat input ``[B, p]`` (or ``[p]``), chunks laid out in order; fp32 ``[B, k]`` (or ``[k]``)."""
        squeeze = x.dim() == 1
        x2 = x.unsqueeze(0) if squeeze else x
        if x2.dim() != 2 or x2.shape[1] != self.input_dim:
            raise ValueError(f"Projector: expected input of shape [B, {self.input_dim}], got {tuple(x.shape)}")
        parts = [x2[:, self.chunk_offsets[c] : self.chunk_offsets[c + 1]] for c in range(len(self.chunk_sizes))]
        out = self.project_chunks(parts)
        return out[0] if squeeze else out

    __call__ = project

    def __repr__(self) -> str:
        return (
            f"Projector(kind={self.kind!r}{'' if self.nnz is None else f', nnz={self.nnz}'}, seed={self.seed}, "
            f"p={self.input_dim}, k={self.proj_dim}, "
            f"chunks={len(self.chunk_sizes)}, block_rows={self.block_rows}, scale={self.scale})"
        )
