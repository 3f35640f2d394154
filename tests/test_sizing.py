"""Defaults that fit the data: data.batch_size / trainer.max_epochs = auto follow the training-set size."""

from __future__ import annotations

import pytest

from conftest import ROOT
from losslab.training.build import auto_batch_size, auto_max_epochs, resolve_sizes


@pytest.mark.parametrize("n, batch, epochs", [
    (6913, 256, 10),   # MEX-A3T's training split: the lecture's 256 × 10 stays
    (144, 32, 40),     # a tiny set: 5 steps per epoch → 40 epochs for 200 steps
    (1000, 64, 13),    # 2^floor(log2(100)) = 64; 16 steps per epoch
    (3000, 256, 17),   # 2^8 = 256; 12 steps per epoch
    (700, 64, 19),     # 2^floor(log2(70)) = 64; 11 steps per epoch → ceil(200 / 11)
    (20, 32, 100),     # one step per epoch: capped at 100 epochs
    (5, 32, 100),
    (100_000, 256, 10),
])
def test_size_rule(n, batch, epochs):
    assert auto_batch_size(n) == batch
    assert auto_max_epochs(n, batch) == epochs
    assert epochs == 100 or epochs * -(-n // batch) >= 200  # at least ~200 optimiser steps unless capped


def test_auto_is_the_default_and_explicit_numbers_win(compose):
    cfg = compose(tiny=False)
    assert cfg.data.batch_size == "auto" and cfg.trainer.max_epochs == "auto"
    assert resolve_sizes(cfg, 144) == {"data.batch_size": 32, "trainer.max_epochs": 40}
    assert cfg.data.batch_size == 32 and cfg.trainer.max_epochs == 40
    cfg = compose("data.batch_size=100", "trainer.max_epochs=3", tiny=False)
    assert resolve_sizes(cfg, 144) == {} and cfg.data.batch_size == 100 and cfg.trainer.max_epochs == 3
    cfg = compose("data.batch_size=16", tiny=False)  # explicit batch, epochs from it: 9 steps → 23 epochs
    assert resolve_sizes(cfg, 144) == {"trainer.max_epochs": 23} and cfg.data.batch_size == 16


def test_mex_a3t_keeps_batch_256_and_10_epochs(compose):
    from losslab.data.dataset import load_dataset

    if not (ROOT / "data" / "mex-a3t" / "train.csv").is_file():
        pytest.skip("MEX-A3T not pulled (dvc pull)")
    cfg = compose(tiny=False)
    n_train = len(load_dataset(cfg.data, int(cfg.seed)).train.y)
    assert n_train == 6913
    assert resolve_sizes(cfg, n_train) == {"data.batch_size": 256, "trainer.max_epochs": 10}
