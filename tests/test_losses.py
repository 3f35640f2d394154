"""Every loss against its formula written out by hand on a small tensor."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from losslab.errors import ConfigError
from losslab.model.losses import LOSSES, Loss, balanced_weights, build_loss
from losslab.model.targets import one_hot

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.5, 0.0], [0.0, 0.0, 0.0]])
Y = torch.tensor([0, 2, 1, 1])
N, C = LOGITS.shape


def softmax_rows() -> list[list[float]]:
    rows = []
    for row in LOGITS.tolist():
        exps = [math.exp(z) for z in row]
        rows.append([e / sum(exps) for e in exps])
    return rows


LOSS_CONF = Path(__file__).resolve().parents[1] / "conf" / "loss"


def loss_config(name: str, **params):
    """``conf/loss/<name>.yaml`` with ``params`` on top (just ``{name}`` for a loss without a file)."""
    path = LOSS_CONF / f"{name}.yaml"
    base = OmegaConf.load(path) if path.is_file() else OmegaConf.create({"name": name})
    return OmegaConf.merge(base, params)


def make(name: str, **params) -> torch.nn.Module:
    return build_loss(loss_config(name, **params), class_counts=[1, 2, 1])


def test_one_hot_and_smoothing():
    assert one_hot(torch.tensor([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    smoothed = one_hot(torch.tensor([1]), 4, smoothing=0.2)
    assert smoothed[0].tolist() == pytest.approx([0.05, 0.85, 0.05, 0.05])
    assert smoothed.sum().item() == pytest.approx(1.0)


def test_ce_is_mean_negative_log_softmax_of_true_class():
    p = softmax_rows()
    expected = -sum(math.log(p[i][int(Y[i])]) for i in range(N)) / N
    assert make("ce")(LOGITS, Y).item() == pytest.approx(expected, rel=1e-6)


def test_ce_smooth_mixes_uniform_target():
    p, eps = softmax_rows(), 0.1
    expected = 0.0
    for i in range(N):
        target = [(1 - eps) * (c == int(Y[i])) + eps / C for c in range(C)]
        expected -= sum(t * math.log(q) for t, q in zip(target, p[i]))
    assert make("ce_smooth", label_smoothing=eps)(LOGITS, Y).item() == pytest.approx(expected / N, rel=1e-6)


def test_ce_weighted_uses_balanced_training_frequencies():
    counts = [1, 2, 1]
    w = [4 / (3 * c) for c in counts]
    assert balanced_weights(counts) == pytest.approx(w)
    p = softmax_rows()
    num = -sum(w[int(Y[i])] * math.log(p[i][int(Y[i])]) for i in range(N))
    den = sum(w[int(Y[i])] for i in range(N))
    assert make("ce_weighted")(LOGITS, Y).item() == pytest.approx(num / den, rel=1e-6)


def test_bce_is_mean_binary_cross_entropy_of_sigmoids_vs_one_hot():
    total = 0.0
    for i, row in enumerate(LOGITS.tolist()):
        for c, z in enumerate(row):
            s, t = 1 / (1 + math.exp(-z)), float(c == int(Y[i]))
            total -= t * math.log(s) + (1 - t) * math.log(1 - s)
    assert make("bce")(LOGITS, Y).item() == pytest.approx(total / (N * C), rel=1e-6)


def test_bce_probabilities_are_normalised_sigmoids():
    probs = make("bce").probabilities(LOGITS)
    s = torch.sigmoid(LOGITS)
    assert torch.allclose(probs, s / s.sum(1, keepdim=True))


def test_mse_is_mean_squared_error_of_softmax_vs_one_hot():
    p = softmax_rows()
    total = sum((p[i][c] - float(c == int(Y[i]))) ** 2 for i in range(N) for c in range(C))
    assert make("mse")(LOGITS, Y).item() == pytest.approx(total / (N * C), rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_kl_is_batchmean_divergence_from_target(smoothing):
    p = softmax_rows()
    total = 0.0
    for i in range(N):
        target = [(1 - smoothing) * (c == int(Y[i])) + smoothing / C for c in range(C)]
        total += sum(t * (math.log(t) - math.log(q)) for t, q in zip(target, p[i]) if t > 0)
    assert make("kl", smoothing=smoothing)(LOGITS, Y).item() == pytest.approx(total / N, rel=1e-6)


def test_kl_with_one_hot_targets_equals_ce_and_its_gradient():
    a, b = LOGITS.clone().requires_grad_(), LOGITS.clone().requires_grad_()
    kl, ce = make("kl")(a, Y), make("ce")(b, Y)
    kl.backward()
    ce.backward()
    assert kl.item() == pytest.approx(ce.item(), rel=1e-6)
    assert torch.allclose(a.grad, b.grad, atol=1e-7)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_down_weights_easy_examples(gamma):
    p = softmax_rows()
    expected = -sum((1 - p[i][int(Y[i])]) ** gamma * math.log(p[i][int(Y[i])]) for i in range(N)) / N
    assert make("focal", gamma=gamma)(LOGITS, Y).item() == pytest.approx(expected, rel=1e-6)


def test_mse_lecture_is_the_slides_half_sum_over_rows():
    p = softmax_rows()
    total = sum((p[i][c] - float(c == int(Y[i]))) ** 2 for i in range(N) for c in range(C))
    assert make("mse_lecture")(LOGITS, Y).item() == pytest.approx(total / (2 * N), rel=1e-6)
    assert make("mse_lecture")(LOGITS, Y).item() == pytest.approx(make("mse")(LOGITS, Y).item() * C / 2, rel=1e-6)


def test_bce_probs_is_bce_loss_on_sigmoids():
    total = 0.0
    for i, row in enumerate(LOGITS.tolist()):
        for c, z in enumerate(row):
            s, t = 1 / (1 + math.exp(-z)), float(c == int(Y[i]))
            total -= t * math.log(s) + (1 - t) * math.log(1 - s)
    assert make("bce_probs")(LOGITS, Y).item() == pytest.approx(total / (N * C), rel=1e-5)
    assert make("bce_probs").activation == "sigmoid"


def test_bce_probs_saturates_where_bce_keeps_its_gradient():
    """A confidently wrong row (true class 1): sigmoid(30) is exactly 1.0 in float32, BCELoss clamps log 0 at
    -100 (loss 100 for that class) and passes no gradient to that logit; the true logit's gradient shrinks."""
    wrong, y = torch.tensor([[30.0, -30.0]]), torch.tensor([1])
    grads = {}
    for name in ("bce_probs", "bce"):
        z = wrong.clone().requires_grad_()
        value = make(name)(z, y)
        value.backward()
        grads[name] = (value.item(), z.grad[0].tolist())
    (probs_value, probs_grad), (bce_value, bce_grad) = grads["bce_probs"], grads["bce"]
    assert probs_value == pytest.approx((100 + 30) / 2, rel=1e-4) and bce_value == pytest.approx(30.0, rel=1e-4)
    assert probs_grad[0] == 0.0 and bce_grad[0] == pytest.approx(0.5, rel=1e-4)
    assert abs(probs_grad[1]) < 0.1 * abs(bce_grad[1]) and bce_grad[1] == pytest.approx(-0.5, rel=1e-4)


def test_kl_probs_optimises_minus_mean_true_probability():
    p = softmax_rows()
    expected = -sum(p[i][int(Y[i])] for i in range(N)) / N
    assert make("kl_probs")(LOGITS, Y).item() == pytest.approx(expected, rel=1e-6)
    assert make("kl_probs")(LOGITS, Y).item() == pytest.approx(make("mae")(LOGITS, Y).item() / 2 - 1, rel=1e-6)


def test_mae_is_l1_distance_of_softmax_to_one_hot():
    p = softmax_rows()
    expected = sum(abs(p[i][c] - float(c == int(Y[i]))) for i in range(N) for c in range(C)) / N
    assert make("mae")(LOGITS, Y).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(sum(2 * (1 - p[i][int(Y[i])]) for i in range(N)) / N)


@pytest.mark.parametrize("q", [0.7, 0.3, 1.0])
def test_gce_is_one_minus_p_true_to_the_q_over_q(q):
    p = softmax_rows()
    expected = sum((1 - p[i][int(Y[i])] ** q) / q for i in range(N)) / N
    assert make("gce", q=q)(LOGITS, Y).item() == pytest.approx(expected, rel=1e-6)


def test_gce_tends_to_ce_and_rejects_q_outside_0_1():
    assert make("gce", q=1e-4)(LOGITS, Y).item() == pytest.approx(make("ce")(LOGITS, Y).item(), rel=1e-3)
    for q in (0.0, 1.5):
        with pytest.raises(ConfigError, match=r"loss 'gce'.*loss.q="):
            make("gce", q=q)


@pytest.mark.parametrize("alpha, beta, log_zero", [(0.1, 1.0, -4.0), (1.0, 0.5, -9.2)])
def test_sce_is_alpha_ce_plus_beta_reverse_ce(alpha, beta, log_zero):
    p = softmax_rows()
    expected = 0.0
    for i in range(N):
        ce = -math.log(p[i][int(Y[i])])
        # reverse CE: -sum_c p_c log t_c, with log 1 = 0 and log 0 := log_zero
        rce = -sum(p[i][c] * (0.0 if c == int(Y[i]) else log_zero) for c in range(C))
        expected += alpha * ce + beta * rce
    value = make("sce", alpha=alpha, beta=beta, log_zero=log_zero)(LOGITS, Y).item()
    assert value == pytest.approx(expected / N, rel=1e-6)


def test_losses_stay_finite_on_extreme_logits():
    extreme = torch.tensor([[300.0, -300.0], [-300.0, 300.0]], requires_grad=True)
    y = torch.tensor([1, 1])
    for name in LOSSES:
        value = build_loss(loss_config(name), class_counts=[1, 1])(extreme, y)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(extreme.grad).all(), name
        extreme.grad = None


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        make("hinge")
    for name in ("ce", "bce", "mse", "kl", "focal", "ce_smooth", "ce_weighted"):
        assert name in str(err.value)


def test_every_loss_file_builds_its_loss():
    assert {"ce", "bce", "mse", "kl"} <= set(LOSSES)  # the lecture's four
    for path in LOSS_CONF.glob("*.yaml"):
        cfg = OmegaConf.load(path)
        assert cfg.name == path.stem and cfg._target_.startswith("losslab.model.losses.")
        assert isinstance(build_loss(cfg, class_counts=[3, 1]), Loss)


def test_a_target_that_is_not_a_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="is not a losslab.model.losses.Loss"):
        make("ce", _target_="torch.nn.Identity")
    with pytest.raises(ConfigError, match=r"loss 'focal': cannot build .*see conf/loss/focal.yaml"):
        make("focal", gamma=2.0, beta=1.0)
