"""Batches made from torch tensors (``SparseBatches.to``: the GPU path) are the host path's batches, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from losslab.data.batches import SparseBatches, reorder_csr


def matrix(rows: int = 300, cols: int = 500, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    x = sp.random(rows, cols, density=0.02, format="lil", random_state=seed, dtype=np.float32)
    x[5] = 0  # an empty row (a text with no known token) must slice too
    x = sp.csr_matrix(x)
    x.eliminate_zeros()
    return x, np.random.default_rng(seed).integers(0, 3, rows)


@pytest.mark.parametrize("shuffle, world, rank", [(True, 1, 0), (False, 1, 0), (True, 2, 1), (False, 3, 2)])
def test_tensor_batches_equal_host_batches(shuffle, world, rank):
    x, y = matrix()
    host = SparseBatches(x, y, 32, shuffle=shuffle, seed=4)
    tensors = SparseBatches(x, y, 32, shuffle=shuffle, seed=4).to("cpu")
    for batches in (host, tensors):
        batches.shard(rank, world)
    for epoch in (0, 1):  # a new order each pass, the same one both ways
        host.set_epoch(epoch)
        tensors.set_epoch(epoch)
        left, right = list(host), list(tensors)
        assert len(left) == len(right) == len(host)
        for a, b in zip(left, right):
            for u, v in zip(a, b):
                assert u.dtype == v.dtype and torch.equal(u, v)


def test_reorder_csr_selects_the_rows_in_order():
    x, y = matrix(40, 30, seed=1)
    order = np.random.default_rng(2).permutation(40)[:25]
    t = {k: torch.from_numpy(getattr(x, k).astype(np.int64 if k != "data" else np.float32))
         for k in ("indptr", "indices", "data")}
    indptr, indices, data, labels = reorder_csr(t["indptr"], t["indices"], t["data"], torch.from_numpy(y),
                                                torch.from_numpy(order))
    picked = x[order]
    assert np.array_equal(indptr.numpy(), picked.indptr) and np.array_equal(indices.numpy(), picked.indices)
    assert np.array_equal(data.numpy(), picked.data) and np.array_equal(labels.numpy(), y[order])
