"""On a CUDA GPU: the real training runs there (device tag, every batch and weight on the GPU) and
agrees with the CPU; features and the network give the CPU's numbers. Skipped, with the reason, without
a GPU (`RunIf`); `make gpu-check` runs this file where there is one and fails if anything is skipped."""

import copy

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from conftest import data_overrides, synthetic_rows
from helpers.run_if import RunIf, visible_gpus
from losslab.data.batches import SparseBatches
from losslab.data.features import Featurizer
from losslab.model.network import PReLUMLP
from losslab.training.fused_check import compare_with_separate
from losslab.training.train import train

# CPU and GPU sum floats in another order, so a few of the 60 test predictions may flip (one flip moves
# macro-F1 by about 0.017): the same seed must agree within this, not bitwise (README: Reproducibility).
F1_TOLERANCE = 0.05

SEEN: list[tuple[str, str, str]] = []  # (stage, what, device type), filled by RecordDevices during a training


class RecordDevices(pl.Callback):
    """Where each batch's tensors and the module's weights are when a step starts (+callbacks.devices)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._record("train", pl_module, batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._record("test", pl_module, batch)

    @staticmethod
    def _record(stage, pl_module, batch):
        SEEN.extend((stage, "batch", t.device.type) for t in batch)
        SEEN.extend((stage, "weights", p.device.type) for p in pl_module.parameters())


def test_run_if_skips_with_the_reason_only_when_gpus_are_missing():
    have = visible_gpus()
    assert have == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    missing = RunIf(min_gpus=have + 1)
    assert missing.args == (True,)
    assert f"needs {have + 1} CUDA GPU(s)" in missing.kwargs["reason"] and f"sees {have}" in missing.kwargs["reason"]
    assert RunIf(min_gpus=have).args == (False,) and RunIf().args == (False,)


@RunIf(min_gpus=1)
@pytest.mark.slow
def test_short_gpu_training_is_tagged_cuda_runs_on_the_gpu_and_matches_the_cpu(compose, tiny_binary, tmp_path):
    base = [*data_overrides(tiny_binary), "trainer.max_epochs=2", "seed=0"]
    SEEN.clear()
    gpu = train(compose(*base, "trainer.accelerator=gpu", "+callbacks.devices._target_=test_gpu.RecordDevices"),
                tmp_path / "gpu")
    client = MlflowClient(gpu.tracking_uri)
    run = client.get_run(gpu.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["device"] == "cuda" and run.data.tags["device_name"] == torch.cuda.get_device_name(0)
    assert run.data.params["trainer.accelerator"] == "gpu"
    assert {stage for stage, _, _ in SEEN} == {"train", "test"}
    assert {device for _, _, device in SEEN} == {"cuda"}, sorted(set(SEEN))
    assert run.data.metrics["test/f1_macro"] == pytest.approx(gpu.test_metrics["test/f1_macro"])
    assert gpu.test_metrics["test/f1_macro"] > 0.75  # learnt on the GPU, not just run there

    cpu = train(compose(*base, "trainer.accelerator=cpu"), tmp_path / "cpu")
    assert client.get_run(cpu.run_id).data.tags["device"] == "cpu"
    assert abs(gpu.test_metrics["test/f1_macro"] - cpu.test_metrics["test/f1_macro"]) <= F1_TOLERANCE, \
        (gpu.test_metrics, cpu.test_metrics)


@RunIf(min_gpus=1)
def test_features_and_batches_on_cuda_give_the_cpu_logits_and_gradients():
    texts, labels = zip(*synthetic_rows(64, ["aggressive", "calm"], seed=3))
    featurizer = Featurizer.from_config({"weighting": "tfidf", "word": {"min_df": 1, "sublinear_tf": True}})
    x = featurizer.fit(texts).transform(texts)
    y = np.array([label == "aggressive" for label in labels], dtype=np.int64)
    torch.manual_seed(0)
    cpu_net = PReLUMLP(featurizer.vocabulary_size, 2, hidden=16, depth=2, dropout=0.0)
    gpu_net = copy.deepcopy(cpu_net).cuda()
    for batch in SparseBatches(x, y, 16):
        on_gpu = [t.cuda() for t in batch]
        assert all(t.is_cuda for t in on_gpu) and all(p.is_cuda for p in gpu_net.parameters())
        cpu_logits, gpu_logits = cpu_net(*batch[:3]), gpu_net(*on_gpu[:3])
        assert gpu_logits.is_cuda
        assert torch.allclose(gpu_logits.cpu(), cpu_logits, atol=1e-5)
        cpu_net.zero_grad()
        gpu_net.zero_grad()
        torch.nn.functional.cross_entropy(cpu_logits, batch[3]).backward()
        torch.nn.functional.cross_entropy(gpu_logits, on_gpu[3]).backward()  # embedding_bag's backward on CUDA
        for (name, p_cpu), p_gpu in zip(cpu_net.named_parameters(), gpu_net.parameters()):
            assert torch.allclose(p_gpu.grad.cpu(), p_cpu.grad, atol=1e-5), name


@RunIf(min_gpus=1)
def test_batches_on_the_gpu_are_the_host_batches():
    """SparseBatches.to('cuda') (BatchesOnDevice does it in every GPU training): slices made on the device."""
    x = np.random.default_rng(0).random((200, 50)).astype(np.float32)
    x[x < 0.9] = 0
    import scipy.sparse as sp

    csr, y = sp.csr_matrix(x), np.arange(200) % 2
    host = SparseBatches(csr, y, 16, shuffle=True, seed=1)
    device = SparseBatches(csr, y, 16, shuffle=True, seed=1).to("cuda")
    for a, b in zip(host, device):
        assert all(t.device.type == "cuda" for t in b)
        assert all(torch.equal(u, v.cpu()) for u, v in zip(a, b))


def fused_against_separate(compose, tiny_binary, tmp_path, accelerator):
    """The sweeps' fused path (``sweep.fused: auto`` turns it on with CUDA) against separate trainings, early stopping
    on: the members' runs, and the largest |difference| over weights and test metrics (``compare_with_separate``)."""
    losses = ["mse", "bce", "ce"]
    cfg = compose(*data_overrides(tiny_binary), "model.dropout=0", f"fused.losses=[{','.join(losses)}]",
                  f"trainer.accelerator={accelerator}", "callbacks=early_stopping",
                  "callbacks.early_stopping.patience=2", "trainer.max_epochs=8")
    fused, separate, worst = compare_with_separate(cfg, tmp_path / "out")
    client = MlflowClient(fused.members[losses[0]].tracking_uri)
    runs = {loss: (client.get_run(fused.members[loss].run_id), client.get_run(separate[loss].run_id))
            for loss in losses}
    return runs, worst


@RunIf(min_gpus=1)
@pytest.mark.slow
def test_fused_members_on_cuda_match_their_separate_trainings(compose, tiny_binary, tmp_path):
    """On CUDA the members' kernels differ from a lone model's (batched matmuls, atomics in embedding_bag's backward),
    so agreement is to a tolerance, not bitwise as on the CPU (tests/test_fused.py)."""
    runs, worst = fused_against_separate(compose, tiny_binary, tmp_path, "gpu")
    for loss, (mine, theirs) in runs.items():
        assert mine.info.status == theirs.info.status == "FINISHED", loss
        assert mine.data.tags["fused"] == "true" and mine.data.tags["device"] == theirs.data.tags["device"] == "cuda"
        assert mine.data.metrics["test/f1_macro"] > 0.75, loss  # learnt, on the GPU
    assert worst <= F1_TOLERANCE
