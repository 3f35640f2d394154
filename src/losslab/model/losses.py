"""The lecture's losses, their pitfalls as the slides write them, common variants and losses robust to label
noise, one small class each, built from ``conf/loss/``.

Every loss takes raw logits ``(N, C)`` and class ids ``(N,)``; those that compare
distributions build one-hot targets through ``losslab.model.targets``. ``probabilities`` is the
model's predictive distribution under that loss (softmax, except BCE's per-class sigmoids).

Conventions (what gets logged as ``train/loss``):
- ``mse``: ``nn.MSELoss`` = mean over N·C squared errors (the lecture writes 1/(2N)·Σ; ours is
  that value ·2/C).
- ``bce``: ``BCEWithLogitsLoss`` on one-hot targets = mean over N·C binary cross-entropies.
- ``kl``: ``KLDivLoss(reduction="batchmean")``; with pure one-hot targets it equals ``ce``
  (the target entropy is 0), so the two train identically unless ``smoothing`` > 0.
- ``mse_lecture``: the slide's 1/(2N)·Σ‖ŷ − y‖² exactly (= ``mse`` · C/2).
- ``bce_probs`` / ``kl_probs``: the slides' pitfalls, kept on purpose (``nn.BCELoss`` on sigmoids saturates;
  ``nn.KLDivLoss`` fed probabilities optimises −mean p(true class)).
- ``mae`` / ``gce`` / ``sce``: bounded losses robust to label noise (Ghosh 2017, Zhang & Sabuncu 2018, Wang 2019).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from losslab.errors import ConfigError
from losslab.paths import config_dir
from losslab.model.targets import one_hot


def probabilities(logits: torch.Tensor, activation: str = "softmax") -> torch.Tensor:
    """Predictive distribution from logits: ``softmax``, or ``sigmoid`` scores renormalised to sum 1."""
    if activation == "sigmoid":
        p = logits.sigmoid()
        return p / p.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return logits.softmax(dim=-1)


class Loss(nn.Module):
    """Base: a loss on logits and class ids; ``activation`` names its predictive distribution."""

    activation = "softmax"

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return probabilities(logits, self.activation)


class CrossEntropy(Loss):
    """``ce`` / ``ce_smooth`` / ``ce_weighted``: ``−log softmax(z)_y`` (``F.cross_entropy`` on logits and class ids;
    optional class weights w_y and label smoothing ε)."""

    def __init__(self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        weight = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=self.weight, label_smoothing=self.label_smoothing)


class BinaryCrossEntropy(Loss):
    """``bce``: ``−mean_c [t_c log σ(z_c) + (1 − t_c) log(1 − σ(z_c))]``, a sigmoid per class vs its one-hot
    target (the stable with-logits form), any C."""

    activation = "sigmoid"

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, one_hot(y, logits.shape[-1]))


class MeanSquaredError(Loss):
    """``mse``: ``mean_c (softmax(z)_c − t_c)²`` per row (``nn.MSELoss`` convention, 1/(N·C))."""

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.softmax(dim=-1), one_hot(y, logits.shape[-1]))


class KLDivergence(Loss):
    """``kl``: ``Σ_c t_c log(t_c / softmax(z)_c)`` = KL(target ‖ softmax), batchmean, target one-hot optionally
    smoothed."""

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = float(smoothing)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = one_hot(y, logits.shape[-1], self.smoothing)
        return F.kl_div(logits.log_softmax(dim=-1), target, reduction="batchmean")


class Focal(Loss):
    """``focal``: ``-(1 - p_t)^γ · log p_t``, mean over the batch (γ=0 gives ``ce``)."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_pt = logits.log_softmax(dim=-1).gather(1, y[:, None]).squeeze(1)
        return (-(1.0 - log_pt.exp()).pow(self.gamma) * log_pt).mean()


class LectureMSE(Loss):
    """``mse_lecture``: the slide's ``MSE = 1/(2N) · Σ_i ‖ŷ_i − y_i‖²`` exactly, ŷ = softmax(z), y one-hot.

    The squared errors are summed over the C classes and halved, then averaged over the N rows: the
    value is ``mse`` (``nn.MSELoss``, mean over N·C) times C/2, and so are its gradients.
    """

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        diff = logits.softmax(dim=-1) - one_hot(y, logits.shape[-1])
        return diff.pow(2).sum() / (2 * logits.shape[0])


class SigmoidBCE(Loss):
    """``bce_probs``: ``nn.BCELoss`` on ``sigmoid(z)`` vs one-hot targets, as the slide writes it — a pitfall.

    In float32 ``sigmoid(z)`` is exactly 1.0 from z ≈ 17 (and underflows to 0 far below): ``BCELoss``
    clamps its logs at −100, so the loss sticks at 100 and the gradient through the sigmoid is exactly 0.
    A row whose logits have drifted there stops learning, right or wrong. ``bce`` (with logits) is the
    stable form of the same loss.
    """

    activation = "sigmoid"

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy(logits.sigmoid(), one_hot(y, logits.shape[-1]))


class KLOnProbabilities(Loss):
    """``kl_probs``: ``nn.KLDivLoss(reduction="batchmean")`` fed softmax *probabilities* where it expects
    log-probabilities, as the slide's example does — a pitfall.

    ``KLDivLoss(input, t)`` computes ``Σ_c t_c·(log t_c − input_c)``; with ``input = p`` and one-hot ``t``
    each row gives ``−p_y``. So it optimises −mean p(true class): a bounded, linear-in-p loss (it equals
    ``mae``/2 − 1), not the KL divergence. Its gradient on the true logit is ``−p_y(1 − p_y)``: it vanishes
    for confidently wrong rows, where cross-entropy pushes hardest.
    """

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.kl_div(logits.softmax(dim=-1), one_hot(y, logits.shape[-1]), reduction="batchmean")


class MeanAbsoluteError(Loss):
    """``mae``: ``Σ_c |softmax(z)_c − t_c|`` per row (= 2(1 − p_y)), mean over rows (Ghosh et al. 2017).

    Symmetric (its sum over all possible labels is constant), hence tolerant of label noise; its
    gradient ``2p_y(1 − p_y)`` is small for hard rows, so it learns slowly.
    """

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (logits.softmax(dim=-1) - one_hot(y, logits.shape[-1])).abs().sum(dim=-1).mean()


class GeneralizedCrossEntropy(Loss):
    """``gce``: ``(1 − p_y^q) / q``, mean over rows (Zhang & Sabuncu 2018); q → 0 is ``ce``, q = 1 is ``mae``/2.

    ``p_y^q`` is computed as ``exp(q · log_softmax)`` so it stays finite when ``p_y`` underflows.
    """

    def __init__(self, q: float = 0.7) -> None:
        super().__init__()
        if not 0.0 < float(q) <= 1.0:
            raise ConfigError(f"loss.q={q} must be in (0, 1] (q -> 0 is ce, q = 1 is mae/2).")
        self.q = float(q)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_pt = logits.log_softmax(dim=-1).gather(1, y[:, None]).squeeze(1)
        return ((1.0 - torch.exp(self.q * log_pt)) / self.q).mean()


class SymmetricCrossEntropy(Loss):
    """``sce``: ``α·CE + β·RCE`` (Wang et al. 2019), RCE = ``−Σ_c p_c · log t_c`` with ``log 0 := A``.

    With one-hot ``t`` the reverse term is ``−A·(1 − p_y)`` (A = ``log_zero``, −4 in the paper): CE
    fits, the bounded RCE resists noisy labels.
    """

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, log_zero: float = -4.0) -> None:
        super().__init__()
        if float(alpha) < 0 or float(beta) < 0 or float(log_zero) >= 0:
            raise ConfigError(f"loss.alpha={alpha} and loss.beta={beta} must be >= 0 and loss.log_zero={log_zero} "
                              "< 0 (it stands for log 0).")
        self.alpha, self.beta, self.log_zero = float(alpha), float(beta), float(log_zero)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_p = logits.log_softmax(dim=-1)
        log_pt = log_p.gather(1, y[:, None]).squeeze(1)
        reverse = -self.log_zero * (1.0 - log_pt.exp())
        return (self.alpha * -log_pt + self.beta * reverse).mean()


def balanced_weights(class_counts: Sequence[int]) -> list[float]:
    """``N / (C · n_c)`` per class (scikit-learn's "balanced"); unseen classes get weight 0."""
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
    total, classes = counts.sum(), len(counts)
    return [float(total / (classes * c)) if c > 0 else 0.0 for c in counts]


def weighted_cross_entropy(class_counts: Sequence[int], class_weights: str | Sequence[float] = "balanced",
                           label_smoothing: float = 0.0) -> CrossEntropy:
    """``ce_weighted``: cross-entropy with ``balanced_weights(class_counts)`` or explicit per-class weights."""
    weights = balanced_weights(class_counts) if class_weights == "balanced" else list(class_weights)
    if len(weights) != len(class_counts):
        raise ConfigError(f"loss.class_weights has {len(weights)} values for {len(class_counts)} classes.")
    return CrossEntropy(label_smoothing=label_smoothing, class_weights=weights)


def available_losses() -> list[str]:
    """The losses a run can use: the files of ``conf/loss/`` (the one list of losses)."""
    return sorted(p.stem for p in (config_dir() / "loss").glob("*.yaml"))


LOSSES: tuple[str, ...] = tuple(available_losses())


def build_loss(cfg: Any, class_counts: Sequence[int]) -> Loss:
    """The loss a ``loss`` config describes (``conf/loss/<name>.yaml``), built with ``hydra.utils.instantiate``.

    ``_partial_: true`` marks a loss that needs the training split's ``class_counts``.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    name = str(cfg.get("name", ""))
    valid = available_losses()
    if name not in valid or not cfg.get("_target_"):
        raise ConfigError(f"unknown loss '{name}' (loss.name); valid losses: {', '.join(valid)}.")
    spec = {key: value for key, value in dict(cfg).items() if key != "name"}
    try:
        built = instantiate(spec)
        loss = built(class_counts=list(class_counts)) if isinstance(built, functools.partial) else built
    except (InstantiationException, TypeError) as exc:
        params = sorted(k for k in spec if not k.startswith("_"))
        reason = " ".join(str(exc.__cause__ or exc).split())  # one line: the target's own complaint
        raise ConfigError(f"loss '{name}': cannot build {spec['_target_']} with {params} ({reason}); "
                          f"see conf/loss/{name}.yaml.") from None
    if not isinstance(loss, Loss):
        raise ConfigError(f"loss '{name}': {spec['_target_']} is not a losslab.model.losses.Loss; "
                          f"fix loss._target_ in conf/loss/{name}.yaml.")
    return loss
