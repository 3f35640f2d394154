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
    """

    def __init__(self, x: sp.csr_matrix, y: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False) -> None:
        if x.shape[0] != len(y):
            raise ValueError(f"{x.shape[0]} rows but {len(y)} labels")
        self.x = sp.csr_matrix(x, dtype=np.float32)
        self.x.sort_indices()
        self.y = np.asarray(y, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.y)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n)
            x, y = self.x[order], self.y[order]
        else:
            x, y = self.x, self.y
        for i in range(len(self)):
            block = slice(i * self.batch_size, min((i + 1) * self.batch_size, n))
            yield csr_to_batch(x[block], y[block])
