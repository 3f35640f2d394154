"""Fused multi-loss training (``fused.losses``): each member trains exactly as its separate training and is
recorded as the same complete MLflow run, plus the tag ``fused=true``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import data_overrides
from losslab.errors import ConfigError
from losslab.model.fused import FusedMLP, member_key, split_member_key
from losslab.model.losses import BinaryCrossEntropy, CrossEntropy, MeanSquaredError
from losslab.model.network import PReLUMLP
from losslab.serving.bundle import Predictor
from losslab.training.fused import fused_losses, train_fused
from losslab.training.fused_check import compare_with_separate

LOSSES = ["ce_weighted", "mse", "bce"]  # a partial loss (class counts), a softmax one, a sigmoid one


def _steps(batched: bool, depth: int, classes: int = 2, fused_adam: bool = True) -> float:
    """30 Adam steps of a FusedMLP and of its 3 members alone on the same batches: the largest weight gap."""
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(PReLUMLP(200, classes, hidden=8, depth=depth, dropout=0.0))
    fused = FusedMLP(nets, batched=batched)
    for k, net in enumerate(nets):  # slice k starts as member k
        assert all(torch.equal(fused.member_state(k)[key], value) for key, value in net.state_dict().items())
    losses = [CrossEntropy(), MeanSquaredError(), BinaryCrossEntropy()]
    fused_opt = torch.optim.Adam(fused.parameters(), lr=0.01, fused=fused_adam)
    opts = [torch.optim.Adam(net.parameters(), lr=0.01, fused=fused_adam) for net in nets]
    rng = torch.Generator().manual_seed(1)
    for _ in range(30):
        indices, offsets = torch.randint(0, 200, (96,), generator=rng), torch.arange(0, 96, 6)
        weights, y = torch.rand(96, generator=rng), torch.randint(0, classes, (16,), generator=rng)
        logits = fused(indices, offsets, weights)
        fused_opt.zero_grad()
        sum(loss(logits[k], y) for k, loss in enumerate(losses)).backward()
        fused_opt.step()
        for net, opt, loss in zip(nets, opts, losses):
            opt.zero_grad()
            loss(net(indices, offsets, weights), y).backward()
            opt.step()
    return max((fused.member_state(k)[key] - value).abs().max().item()
               for k, net in enumerate(nets) for key, value in net.state_dict().items())


@pytest.mark.parametrize("depth", [1, 2])
def test_fused_network_steps_like_its_members(depth):
    assert _steps(batched=False, depth=depth) == 0.0  # the default: bitwise (binary, as MEX-A3T)
    assert _steps(batched=False, depth=depth, classes=3, fused_adam=False) == 0.0  # per-element Adam: bitwise
    # torch's fused CPU Adam rounds a tensor's vector tail differently: only then is it not bitwise
    assert _steps(batched=False, depth=depth, classes=3) < 1e-6
    assert _steps(batched=True, depth=depth) < 1e-5  # one baddbmm per layer: float rounding only


def test_member_keys_and_config_checks(compose):
    assert split_member_key(member_key(3, "val/f1_macro")) == (3, "val/f1_macro")
    assert split_member_key("val/f1_macro") is None and split_member_key("memberx:val/loss") is None
    assert fused_losses(compose("fused.losses=[ce,mse]")) == ["ce", "mse"]
    assert fused_losses(compose()) == []
    with pytest.raises(ConfigError, match="gradient_clip_val"):
        train_fused(compose("fused.losses=[ce,mse]", "trainer.gradient_clip_val=1.0"), "unused")
    with pytest.raises(ConfigError, match="unknown loss 'nope'"):
        train_fused(compose("fused.losses=[ce,nope]"), "unused")
    with pytest.raises(ConfigError, match="named twice"):
        train_fused(compose("fused.losses=[ce,ce]"), "unused")


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.slow
def test_fused_members_equal_separate_trainings(compose, tiny_binary, tmp_path):
    cfg = compose(*data_overrides(tiny_binary), "model.dropout=0", f"fused.losses=[{','.join(LOSSES)}]")
    fused, separate, worst = compare_with_separate(cfg, tmp_path / "out")
    assert worst == 0.0  # bitwise: best-checkpoint weights, test/* and test_tuned/* of every member
    client = MlflowClient(fused.members[LOSSES[0]].tracking_uri)
    for loss in LOSSES:
        mine, theirs = client.get_run(fused.members[loss].run_id), client.get_run(separate[loss].run_id)
        assert mine.info.status == theirs.info.status == "FINISHED"
        assert mine.info.run_name == theirs.info.run_name == f"{loss}-s0"
        assert mine.data.tags["fused"] == "true" and "fused" not in theirs.data.tags
        assert mine.data.tags["fused_losses"] == ",".join(LOSSES)
        assert mine.data.tags["loss"] == loss and mine.data.tags["best_epoch"] == theirs.data.tags["best_epoch"]
        assert set(mine.data.params) == set(theirs.data.params)
        same = {k for k in mine.data.params if k != "fused.losses"}
        assert {k: mine.data.params[k] for k in same} == {k: theirs.data.params[k] for k in same}
        assert set(mine.data.metrics) == set(theirs.data.metrics)
        assert _artifacts(client, mine.info.run_id) == _artifacts(client, theirs.info.run_id)
        curves = [k for k in theirs.data.metrics if "/" in k and client.get_metric_history(theirs.info.run_id, k)
                  and len(client.get_metric_history(theirs.info.run_id, k)) > 1]
        assert {"train/loss", "val/loss", "val/f1_macro", "diag/grad_norm_input"} <= set(curves)
        for key in curves:
            if key == "diag/seconds":
                continue
            history = [[(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                       for run in (mine, theirs)]
            np.testing.assert_array_equal(np.array(history[0]), np.array(history[1]), err_msg=f"{loss} {key}")
        for key, value in theirs.data.metrics.items():
            if key.startswith(("test/", "test_tuned/", "val_tuned/", "val/threshold", "best_val/")):
                assert mine.data.metrics[key] == value, (loss, key)
    bundle = tmp_path / "out" / "fused" / "bce" / "artifacts" / "model"
    texts = ["eres un idiota maldito @pepe", "gracias amigos feliz"]
    assert Predictor.load(bundle).predict(texts) == ["1", "0"] or Predictor.load(bundle).predict(texts) == [1, 0]


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_fused_members_stop_early_as_their_separate_trainings(compose, tiny_binary, tmp_path):
    """callbacks=early_stopping (the sweeps' default): each member stops at the epoch its separate training stops,
    with the same best epoch, curves and test metrics, though the members stop at different epochs."""
    cfg = compose(*data_overrides(tiny_binary), "model.dropout=0", f"fused.losses=[{','.join(LOSSES)}]",
                  "callbacks=early_stopping", "callbacks.early_stopping.patience=2", "trainer.max_epochs=12",
                  "optimizer.lr=0.003")  # slow enough that the members stop at different epochs
    fused, separate, worst = compare_with_separate(cfg, tmp_path / "out")
    assert worst == 0.0
    client = MlflowClient(fused.members[LOSSES[0]].tracking_uri)
    epochs = {}
    for loss in LOSSES:
        mine, theirs = fused.members[loss].run_id, separate[loss].run_id
        assert client.get_run(mine).data.tags["best_epoch"] == client.get_run(theirs).data.tags["best_epoch"]
        for key in ("val/f1_macro", "train/loss", "diag/grad_norm_input"):
            assert _history(client, mine, key) == _history(client, theirs, key), (loss, key)
        epochs[loss] = len(_history(client, theirs, "val/f1_macro"))
    assert max(epochs.values()) < 12 and len(set(epochs.values())) > 1, epochs  # early, and not all at once


def test_member_stopping_follows_lightnings_rule():
    import math

    from losslab.model.member_stopping import MemberStopping

    def last_epoch(values, **kwargs):
        rule = MemberStopping(1, **kwargs)
        for epoch, value in enumerate(values):
            rule.update(0, torch.tensor(value), epoch)
            if rule.done(0, epoch + 1):
                return epoch
        return None

    rising_then_flat = [0.5, 0.6, 0.7, 0.7, 0.65, 0.7, 0.8]
    assert last_epoch(rising_then_flat, mode="max", patience=3) == 5  # epochs 3-5 do not beat 0.7
    assert last_epoch(rising_then_flat, mode="max", patience=4) is None
    assert last_epoch([0.5, 0.6, 0.62, 0.64], mode="max", patience=2, min_delta=0.05) == 3  # +0.04: no gain
    assert last_epoch([1.0, 0.9, 0.95, 0.97, 0.8], mode="min", patience=2) == 3
    assert last_epoch([0.5, 0.4, 0.4, 0.4, 0.4, 0.9], mode="max", patience=1, min_epochs=5) == 4  # not before 5
    assert last_epoch([0.5, math.nan, 0.9], mode="max", patience=5) == 1  # not finite: stop
    assert last_epoch([0.5, math.nan, 0.9], mode="max", patience=5, check_finite=False) is None


def test_sweep_knob_turns_the_loss_sweep_into_fused_jobs():
    from losslab.sweeps.cli import fused_overrides

    fused = fused_overrides("quick", ["sweep.fused=true", "seed=0"])
    assert "fused.losses=[mse,bce,ce,kl]" in fused and "~hydra.sweeper.params.loss" in fused and "seed=0" in fused
    assert fused_overrides("quick", ["sweep.fused=false"]) == ["sweep.fused=false"]
    assert "fused.losses=[ce,mse]" in fused_overrides("noise", ["sweep.fused=true", "loss=ce,mse"])
    assert fused_overrides("quick", ["sweep.fused=true", "loss=ce"]) == ["sweep.fused=true", "loss=ce"]  # one loss
    auto = fused_overrides("quick", [])
    assert (auto != []) == torch.cuda.is_available()  # auto: fused only where CUDA is
    with pytest.raises(ConfigError, match="sweep.fused=maybe"):
        fused_overrides("quick", ["sweep.fused=maybe"])


@pytest.mark.slow
def test_fused_sweep_records_every_loss_as_a_child_run(tmp_path):
    from sweep_fixture import EXPERIMENT, run_sweep

    result = run_sweep(tmp_path, "quick", 1, "sweep.fused=true", "hydra.sweeper.params.seed=0",
                       "sweep.report.enabled=false", "sweep.register=false", "sweep.baseline.enabled=false")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["loss"] for r in children) == ["bce", "ce", "kl", "mse"]
    assert all(r.data.tags["fused"] == "true" and r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["sweep_id"] for r in children} == {parent.data.tags["sweep_id"]}
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and lines[-1].startswith("[4/4]"), result.stdout[-2000:]
