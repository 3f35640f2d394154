"""Loss-health diagnostics: each ``diag/*`` value against a computation written out here, then on real trainings."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import CONF, data_overrides
from losslab.data.batches import SparseBatches, csr_to_batch
from losslab.model.losses import build_loss
from losslab.model.network import PReLUMLP
from losslab.training import diagnostics
from losslab.training.diagnostics import fixed_sample, measure, weight_layers

VOCAB, ROWS = 12, 40


def make_loss(name: str):
    return build_loss(OmegaConf.load(CONF / "loss" / f"{name}.yaml"), class_counts=[20, 20])


def sample_batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = sp.random(ROWS, VOCAB, density=0.3, format="csr", random_state=seed, dtype=np.float32)
    x.data[:] = 1.0
    return csr_to_batch(x, rng.integers(0, 2, ROWS))


def network(depth: int = 1, seed: int = 0) -> PReLUMLP:
    torch.manual_seed(seed)
    return PReLUMLP(VOCAB, 2, hidden=8, depth=depth, dropout=0.5)


def test_layers_are_named_input_hidden_output():
    assert [name for name, _ in weight_layers(network(depth=3))] == ["input", "hidden1", "hidden2", "output"]
    assert [len(params) for _, params in weight_layers(network(depth=1))] == [2, 2]  # weight + bias each


@pytest.mark.parametrize("loss_name", ["ce", "mse", "bce", "gce"])
def test_every_value_matches_a_direct_computation(loss_name):
    net, loss_fn, batch = network(depth=2), make_loss(loss_name), sample_batch()
    net.train()
    values = measure(net, loss_fn, batch)
    assert net.training and all(p.grad is None for p in net.parameters())  # mode restored, .grad untouched

    net.eval()
    y = batch[3]
    logits = net(*batch[:3])
    grads = torch.autograd.grad(loss_fn(logits, y), [p for _, ps in weight_layers(net) for p in ps])
    norms = [float(torch.sqrt(sum(g.pow(2).sum() for g in grads[i:i + 2]))) for i in (0, 2, 4)]
    for name, norm in zip(["input", "hidden1", "output"], norms):
        assert values[f"diag/grad_norm_{name}"] == pytest.approx(norm, rel=1e-5), name

    probs = loss_fn.probabilities(logits.detach())
    p_true = probs[torch.arange(ROWS), y]
    per_row = []  # each row's own loss, differentiated on its own true logit
    for i in range(ROWS):
        z = logits.detach()[i:i + 1].clone().requires_grad_()
        (g,) = torch.autograd.grad(loss_fn(z, y[i:i + 1]), [z])
        per_row.append(abs(float(g[0, y[i]])))
    per_row = torch.tensor(per_row)
    correct = probs.argmax(1) == y
    z = logits.detach()
    margin = z[torch.arange(ROWS), y] - z[torch.arange(ROWS), 1 - y]
    assert values["diag/grad_logit_correct"] == pytest.approx(float(per_row[correct].mean()), rel=1e-4)
    assert values["diag/p_true_correct"] == pytest.approx(float(p_true[correct].mean()), rel=1e-5)
    assert values["diag/margin_mean"] == pytest.approx(float(margin.mean()), rel=1e-5)
    assert values["diag/max_abs_logit"] == pytest.approx(float(z.abs().max()), rel=1e-6)
    assert values["diag/confident_wrong"] == float((p_true < 0.05).float().mean())
    assert values["diag/saturated_right"] == float((p_true > 0.99).float().mean())
    slopes = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, torch.nn.PReLU)])
    assert values["diag/prelu_slope_mean"] == pytest.approx(float(slopes.mean()))


def confidently_wrong_net(bias: float) -> PReLUMLP:
    """Every row gets logits (bias, -bias): rows of class 1 are confidently wrong, rows of class 0 right."""
    net = network()
    with torch.no_grad():
        net.output.weight.zero_()
        net.output.bias.copy_(torch.tensor([bias, -bias]))
    return net


def test_ce_pushes_confident_mistakes_hardest_mse_and_kl_probs_barely():
    batch = sample_batch()
    got = {name: measure(confidently_wrong_net(5.0), make_loss(name), batch) for name in ("ce", "mse", "kl_probs")}
    p = 1 / (1 + np.exp(10.0))  # p(true) of a wrong row: softmax of a margin of -10
    assert got["ce"]["diag/p_true_wrong"] == pytest.approx(p, rel=1e-3)
    assert got["ce"]["diag/confident_wrong"] == pytest.approx(float((batch[3] == 1).float().mean()))
    assert got["ce"]["diag/grad_logit_wrong"] == pytest.approx(1 - p, rel=1e-4)  # |p - 1|
    assert got["mse"]["diag/grad_logit_wrong"] < 1e-3 * got["ce"]["diag/grad_logit_wrong"]
    assert got["kl_probs"]["diag/grad_logit_wrong"] == pytest.approx(p * (1 - p), rel=1e-3)
    for name in got:  # the margin is -10 on wrong rows and +10 on right ones, |logit| 5 everywhere
        assert got[name]["diag/max_abs_logit"] == pytest.approx(5.0)


def test_bce_probs_loses_the_gradient_that_bce_keeps_once_logits_saturate():
    batch = sample_batch()
    probs = measure(confidently_wrong_net(40.0), make_loss("bce_probs"), batch)
    stable = measure(confidently_wrong_net(40.0), make_loss("bce"), batch)
    assert stable["diag/grad_logit_wrong"] == pytest.approx(0.5, rel=1e-4)  # (sigmoid(-40) - 1) / C
    assert probs["diag/grad_logit_wrong"] < 1e-3 and probs["diag/grad_norm_output"] < 1e-3 * stable[
        "diag/grad_norm_output"]


def test_dead_units_are_hidden_units_never_positive_on_the_sample():
    net, batch = network(), sample_batch()
    with torch.no_grad():
        net.input.weight[:, :3] = 0.0
        net.input.bias[:3] = -1.0  # 3 of 8 units: pre-activation -1 on every row
        net.input.bias[3:] = 10.0  # the others: always positive
    assert measure(net, make_loss("ce"), batch)["diag/dead_units"] == pytest.approx(3 / 8)


def test_the_fixed_sample_is_seeded_and_capped_at_the_split():
    x = sp.csr_matrix(np.eye(10, dtype=np.float32))
    batches = SparseBatches(x, np.arange(10) % 2, batch_size=4, shuffle=True)
    a, b = fixed_sample(batches, 6, seed=1), fixed_sample(batches, 6, seed=1)
    assert all(torch.equal(s, t) for s, t in zip(a, b)) and len(a[3]) == 6
    assert not torch.equal(a[0], fixed_sample(batches, 6, seed=2)[0])
    assert len(fixed_sample(batches, 100, seed=0)[3]) == 10


# --- real trainings ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_training_logs_every_diag_metric_once_per_epoch_and_can_turn_them_off(compose, tiny_binary, tmp_path):
    from losslab.training.train import train

    on = train(compose(*data_overrides(tiny_binary), "model.depth=2"), tmp_path / "on")
    client = MlflowClient(on.tracking_uri)
    logged = {k for k in client.get_run(on.run_id).data.metrics if k.startswith("diag/")}
    assert logged == set(diagnostics.keys(["input", "hidden1", "output"]))
    for key in logged:
        assert [m.step for m in client.get_metric_history(on.run_id, key)] == [0, 1, 2], key
    # each epoch's diag/* rode along with its train/loss: one write (RunLogger.stage), one timestamp
    stamps = {m.step: m.timestamp for m in client.get_metric_history(on.run_id, "train/loss")}
    assert {m.step: m.timestamp for m in client.get_metric_history(on.run_id, "diag/seconds")} == stamps

    off = train(compose(*data_overrides(tiny_binary), "model.depth=2", "diagnostics=false"), tmp_path / "off")
    assert not [k for k in client.get_run(off.run_id).data.metrics if k.startswith("diag/")]
    assert off.test_metrics == on.test_metrics  # measuring never changes the training


def test_staged_metrics_ride_with_their_epochs_write_and_finalize_writes_the_rest(tmp_path):
    from losslab.training.callbacks import RunLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("staging")).info.run_id
    logger = RunLogger(tracking_uri=uri, run_id=run_id)
    logger.stage({"diag/a": 1.0}, epoch=0)
    logger.log_metrics({"train/loss": 0.5, "epoch": 0}, step=7)
    logger.stage({"diag/a": 2.0}, epoch=1)  # no write of epoch 1 follows: finalize writes it
    logger.finalize()
    history = {key: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]
               for key in ("diag/a", "train/loss")}
    assert [(step, value) for step, value, _ in history["diag/a"]] == [(0, 1.0), (1, 2.0)]
    assert history["train/loss"][0][:2] == (0, 0.5)
    assert history["diag/a"][0][2] == history["train/loss"][0][2]  # the same log_batch
