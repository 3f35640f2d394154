"""Mini-batches sliced straight from an in-memory CSR matrix: no per-sample Dataset or collate.

A batch is ``(indices, offsets, weights, y)``: the CSR rows of the batch in the layout
``torch.nn.functional.embedding_bag`` takes, so the first layer is a sparse product and no
V-wide dense matrix is ever built. Lightning moves the tuple to the device as it is.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def csr_to_batch(x: sp.csr_matrix, y: np.ndarray | None = None) -> Batch:
    """One CSR block → ``(indices, offsets, weights, y)`` tensors (y is empty when not given)."""
    indices = torch.from_numpy(x.indices.astype(np.int64, copy=False))
    offsets = torch.from_numpy(x.indptr[:-1].astype(np.int64, copy=False))
    weights = torch.from_numpy(x.data.astype(np.float32, copy=False))
    labels = torch.from_numpy(y.astype(np.int64, copy=False)) if y is not None else torch.empty(0, dtype=torch.long)
    return indices, offsets, weights, labels


class SparseBatches:
    """Iterable of batches over ``(x, y)``; reshuffled each pass with ``seed + epoch`` when ``shuffle``.

    The trainer calls ``set_epoch`` at each epoch start, so a resumed run sees the same order.
    Under DDP, ``shard(rank, world)`` keeps this process's share, as ``DistributedSampler`` does:
    rows ``rank, rank + world, …`` of the epoch's order (the same permutation on every rank, so the
    shares never overlap). With ``even`` (training) the order is first padded by wrapping around
    to a multiple of ``world``, so every rank runs the same number of steps; the union of the
    ranks' i-th batches of size B is then the single-process i-th batch of size ``world × B``.
    Evaluation batches are not padded (no sample counted twice); ``interleave`` puts the ranks'
    outputs back in row order.
    """

    def __init__(self, x: sp.csr_matrix, y: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, even: bool | None = None) -> None:
        if x.shape[0] != len(y):
            raise ValueError(f"{x.shape[0]} rows but {len(y)} labels")
        self.x = sp.csr_matrix(x, dtype=np.float32)
        self.x.sort_indices()
        self.y = np.asarray(y, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.even = shuffle if even is None else even
        self.epoch = 0
        self.rank, self.world = 0, 1
        self._tensors: dict[str, torch.Tensor] | None = None  # set by ``to(device)``

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def shard(self, rank: int, world: int) -> None:
        """Iterate over this process's share only: rank ``rank`` of ``world`` (see the class docstring)."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        self.rank, self.world = int(rank), int(world)

    @property
    def samples_per_epoch(self) -> int:
        """Rows this process sees per pass (its share under DDP)."""
        n = len(self.y)
        if self.world == 1:
            return n
        return -(-n // self.world) if self.even else len(range(self.rank, n, self.world))

    def __len__(self) -> int:
        n = self.samples_per_epoch
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> np.ndarray | None:
        """Row order of this pass for this process; ``None`` = all rows in file order."""
        n = len(self.y)
        if not self.shuffle and self.world == 1:
            return None
        order = np.random.default_rng(self.seed + self.epoch).permutation(n) if self.shuffle else np.arange(n)
        if self.world > 1:
            if self.even:
                order = np.resize(order, -(-n // self.world) * self.world)  # pads by wrapping around
            order = order[self.rank::self.world]
        return order

    def to(self, device: "torch.device | str") -> "SparseBatches":
        """Keep the matrix as torch tensors on ``device`` (the GPU: copied once, not per batch): each pass reorders
        it there (one host sync per pass, for the row pointers) and every batch is a slice of it, with no host
        sync per step. The batches are the same rows, in the same order, as from the host matrix."""
        self._tensors = {"indptr": torch.from_numpy(self.x.indptr.astype(np.int64)).to(device),
                         "indices": torch.from_numpy(self.x.indices.astype(np.int64)).to(device),
                         "data": torch.from_numpy(self.x.data.astype(np.float32, copy=False)).to(device),
                         "y": torch.from_numpy(self.y).to(device)}
        return self

    @property
    def device(self) -> torch.device:
        return self._tensors["y"].device if self._tensors else torch.device("cpu")

    def __iter__(self) -> Iterator[Batch]:
        if self._tensors:
            yield from self._iter_tensors()
            return
        order = self._order()
        x, y = (self.x, self.y) if order is None else (self.x[order], self.y[order])
        # the pass's arrays once, every batch a slice of them (as x[a:b] would give, without scipy's ~0.1 ms per slice)
        indices, _, data, labels = csr_to_batch(x, y)
        yield from self._slices(torch.from_numpy(x.indptr.astype(np.int64)), indices, data, labels)

    def _iter_tensors(self) -> Iterator[Batch]:
        t = self._tensors
        assert t is not None
        order = self._order()
        if order is None:
            indptr, indices, data, y = t["indptr"], t["indices"], t["data"], t["y"]
        else:
            nnz = int(t["indices"].numel()) if self.world == 1 else None  # a permutation of every row
            indptr, indices, data, y = reorder_csr(t["indptr"], t["indices"], t["data"], t["y"],
                                                   torch.from_numpy(order).to(t["y"].device), nnz)
        yield from self._slices(indptr, indices, data, y)

    def _slices(self, indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor,
                y: torch.Tensor) -> Iterator[Batch]:
        """The pass's batches: consecutive row blocks of a CSR matrix given as tensors (on any device)."""
        bounds = indptr.cpu().numpy()  # on a GPU the pass's one host sync: where each batch's non-zeros start and end
        n = len(y)
        for i in range(len(self)):
            a, b = i * self.batch_size, min((i + 1) * self.batch_size, n)
            start, end = int(bounds[a]), int(bounds[b])
            yield indices[start:end], indptr[a:b] - start, data[start:end], y[a:b]


def reorder_csr(indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor, y: torch.Tensor,
                order: torch.Tensor, nnz: int | None = None) -> Batch:
    """Rows ``order`` of a CSR matrix (``indptr``, ``indices``, ``data``) and of ``y``, on their device. ``nnz``:
    the selected rows' non-zero count when the caller knows it (a permutation of every row: the matrix's), which
    spares ``repeat_interleave`` its host sync. Returns ``(indptr, indices, data, y)``."""
    lengths = (indptr[1:] - indptr[:-1])[order]
    new_indptr = torch.zeros(len(order) + 1, dtype=indptr.dtype, device=indptr.device)
    torch.cumsum(lengths, 0, out=new_indptr[1:])
    row = torch.repeat_interleave(torch.arange(len(order), device=indptr.device), lengths, output_size=nnz)
    source = indptr[:-1][order][row] + (torch.arange(row.numel(), device=indptr.device) - new_indptr[:-1][row])
    return new_indptr, indices[source], data[source], y[order]


def interleave(shares: list[torch.Tensor]) -> torch.Tensor:
    """The ranks' outputs over unpadded shards (rank r had rows r, r + world, …) back in row order."""
    world, total = len(shares), sum(len(s) for s in shares)
    out = shares[0].new_empty((total, *shares[0].shape[1:]))
    for rank, share in enumerate(shares):
        out[rank::world] = share
    return out
