"""DDP splits the data: each rank its own share of every epoch, gradients averaged, metrics synced, one run.

The equivalence: with mean-reduced loss and equal shares, DDP's averaged gradient over 2 ranks × batch B is
the gradient of one process over batch 2B (the union of the ranks' i-th batches is the single process's i-th
batch). Dropout 0, training rows a multiple of 2B: everything must agree up to float summation order.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from mlflow.tracking import MlflowClient

from losslab.data.batches import SparseBatches, interleave
from losslab.training.train import train
from sweep_fixture import tiny_data

TOLERANCE = 1e-5  # observed: ~3e-8 on metrics, ~1e-7 on weights (2 gloo ranks on CPU vs one process)


def rows(batches: SparseBatches) -> list[np.ndarray]:
    """The row ids (stored as labels) of each batch."""
    return [batch[3].numpy() for batch in batches]


def test_shards_are_disjoint_equal_and_together_the_single_process_batches():
    n, world, batch = 96, 2, 8
    x, ids = sp.identity(n, format="csr"), np.arange(n)
    single = SparseBatches(x, ids, world * batch, shuffle=True, seed=5)
    ranks = [SparseBatches(x, ids, batch, shuffle=True, seed=5) for _ in range(world)]
    for rank, batches in enumerate(ranks):
        batches.shard(rank, world)
    for epoch in (0, 1):
        for batches in (single, *ranks):
            batches.set_epoch(epoch)
        shares = [rows(b) for b in ranks]
        assert [b.samples_per_epoch for b in ranks] == [n // world] * world and len(ranks[0]) == len(single)
        for i, whole in enumerate(rows(single)):
            assert sorted(np.concatenate([s[i] for s in shares])) == sorted(whole)
        assert set(np.concatenate(shares[0])).isdisjoint(np.concatenate(shares[1]))
    single.set_epoch(0)
    epoch0 = np.concatenate(rows(single))
    single.set_epoch(1)
    assert not np.array_equal(epoch0, np.concatenate(rows(single))), "each epoch reshuffles (seed + epoch)"


def test_uneven_training_shards_pad_and_evaluation_shards_interleave_back():
    x, ids = sp.identity(7, format="csr"), np.arange(7)
    train_shards = [SparseBatches(x, ids, 2, shuffle=True) for _ in range(2)]
    for rank, batches in enumerate(train_shards):
        batches.shard(rank, 2)
    assert [len(b) for b in train_shards] == [2, 2] and [b.samples_per_epoch for b in train_shards] == [4, 4]
    evals = [SparseBatches(x, ids, 2) for _ in range(3)]
    for rank, batches in enumerate(evals):
        batches.shard(rank, 3)
    assert [b.samples_per_epoch for b in evals] == [3, 2, 2]
    outputs = [torch.cat([batch[3] for batch in b]) for b in evals]
    assert interleave(outputs).tolist() == list(range(7))


@pytest.mark.slow
def test_two_ddp_ranks_with_batch_b_match_one_process_with_batch_2b(compose, tmp_path):
    data = tiny_data(tmp_path)
    common = [*data, "model.dropout=0", "loss=ce", "trainer.max_epochs=3", "seed=3"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSLAB_DEBUG")}
    command = [sys.executable, "-m", "losslab.training.train", "trainer=ddp", "trainer.accelerator=cpu",
               "trainer.devices=2", *common, "data.batch_size=8", f"tracking.uri={uri}", "tracking.experiment=ddp",
               f"hydra.run.dir={tmp_path / 'ddp'}"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    single = train(compose(*common, "data.batch_size=16", "tracking.experiment=single"), tmp_path / "single")

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", "rank 1 must not record a second run"
    ddp = runs[0]
    assert result.stdout.count("MLflow run id:") == 1 and ddp.info.run_id in result.stdout
    train_rows = int(ddp.data.params["dataset.train"])
    assert train_rows % 16 == 0, "the equivalence below needs no padding: training rows a multiple of 2B"
    assert ddp.data.params["ddp.world_size"] == "2" and int(ddp.data.params["ddp.samples_per_rank"]) == train_rows // 2

    for key in ("train/loss", "val/loss", "val/f1_macro", "val/nll"):  # every epoch, i.e. every epoch's weights
        ours = [m.value for m in client.get_metric_history(ddp.info.run_id, key)]
        theirs = [m.value for m in client.get_metric_history(single.run_id, key)]
        assert len(ours) == 3 and np.allclose(ours, theirs, rtol=0, atol=TOLERANCE), (key, ours, theirs)
    assert single.test_metrics.keys() <= ddp.data.metrics.keys()
    worst = max(abs(ddp.data.metrics[k] - v) for k, v in single.test_metrics.items())
    assert worst <= TOLERANCE, f"test metrics differ by {worst}"

    (ours,), (theirs,) = ((tmp_path / name / "checkpoints").glob("best-*.ckpt") for name in ("ddp", "single"))
    assert ours.name == theirs.name, "the same best epoch"
    a, b = (torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in (ours, theirs))
    weight_gap = max((a[k] - b[k]).abs().max().item() for k in b)
    assert weight_gap <= TOLERANCE, f"best-checkpoint weights differ by {weight_gap}"
    # the test predictions artifact covers the whole test set, in row order, gathered from both ranks
    predictions = [(tmp_path / name / "artifacts" / "evaluation" / "test_predictions.csv").read_text().splitlines()
                   for name in ("ddp", "single")]
    assert len(predictions[0]) == len(predictions[1]) > 1
    assert [r.split(",")[:2] for r in predictions[0]] == [r.split(",")[:2] for r in predictions[1]]
