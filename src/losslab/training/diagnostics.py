"""Loss-health diagnostics: why a loss trains the way it does, measured once per epoch (``diag/*`` metrics).

At the end of every training epoch ``LossDiagnostics`` runs the network once, in eval mode (no
dropout, so no random numbers are drawn), on a fixed sample of training rows, and logs:

- ``diag/grad_norm_<layer>``: L2 norm of the gradient of the (batch-mean) loss for each weight layer —
  ``input``, ``hidden1``…, ``output`` — large or tiny norms show exploding or vanishing gradients;
- ``diag/confident_wrong``: share of rows with p(true class) < 0.05, ``diag/saturated_right``: > 0.99;
- ``diag/margin_mean``: mean of (true logit − best other logit); ``diag/max_abs_logit``: the largest |logit|;
- ``diag/dead_units``: share of hidden units whose PReLU input is ≤ 0 on every sampled row;
  ``diag/prelu_slope_mean``: mean of the PReLU negative slopes (0 = ReLU, 1 = linear);
- ``diag/grad_logit_wrong`` / ``diag/grad_logit_correct``: mean per-row |∂L/∂z_true| (the gradient of
  that row's own loss on its true logit) over confidently wrong rows / rows predicted right, with the
  mean p(true class) of each group (``diag/p_true_wrong``, ``diag/p_true_correct``): the lecture's claim
  that cross-entropy "penalises confident mistakes most", measured;
- ``diag/seconds``: what the measurement cost.

Gradients come from ``torch.autograd.grad``, so the parameters' ``.grad`` and the optimiser are
untouched: a run with diagnostics trains exactly as one without (``diagnostics=false``).
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from losslab.data.batches import Batch, csr_to_batch
from losslab.training.callbacks import RunLogger


def weight_layers(net: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """The network's weight layers in order, named ``input``, ``hidden1``…, ``output`` (PReLU slopes excluded)."""
    found = [m for m in net.modules() if m is not net and not isinstance(m, nn.PReLU)
             and any(True for _ in m.parameters(recurse=False))]
    names = ["input", *(f"hidden{i}" for i in range(1, len(found) - 1)), "output"] if len(found) > 1 else ["output"]
    return [(name, list(module.parameters(recurse=False))) for name, module in zip(names, found)]


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if values.numel() else math.nan


def measure(net: nn.Module, loss_fn: Any, batch: Batch, wrong_below: float = 0.05,
            saturated_above: float = 0.99) -> dict[str, float]:
    """The ``diag/*`` values of ``net`` under ``loss_fn`` on one batch (see the module docstring)."""
    was_training = net.training
    net.eval()
    prelu_inputs: list[torch.Tensor] = []
    prelus = [m for m in net.modules() if isinstance(m, nn.PReLU)]
    hooks = [m.register_forward_hook(lambda _m, args, _out: prelu_inputs.append(args[0].detach())) for m in prelus]
    try:
        with torch.enable_grad():
            logits = net(*batch[:3])
            y = batch[3]
            layers = weight_layers(net)
            params = [p for _, group in layers for p in group]
            grads = torch.autograd.grad(loss_fn(logits, y), [logits, *params], allow_unused=True)
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)

    values: dict[str, float] = {}
    flat = iter(grads[1:])
    for name, group in layers:
        squares = [g.pow(2).sum() for g in (next(flat) for _ in group) if g is not None]
        values[f"diag/grad_norm_{name}"] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0

    logits = logits.detach()
    n = len(y)
    probs = loss_fn.probabilities(logits)  # the loss's own predictive distribution (bce: normalised sigmoids)
    p_true = probs.gather(1, y[:, None]).squeeze(1)
    correct = probs.argmax(dim=1) == y
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    wrong = p_true < wrong_below
    per_row = grads[0].gather(1, y[:, None]).squeeze(1).abs() * n  # each row's own loss: n × grad of the mean
    values |= {
        "diag/confident_wrong": float(wrong.float().mean()),
        "diag/saturated_right": float((p_true > saturated_above).float().mean()),
        "diag/margin_mean": float((true_logit - others.max(dim=1).values).mean()),
        "diag/max_abs_logit": float(logits.abs().max()),
        "diag/grad_logit_wrong": _mean(per_row[wrong]),
        "diag/grad_logit_correct": _mean(per_row[correct]),
        "diag/p_true_wrong": _mean(p_true[wrong]),
        "diag/p_true_correct": _mean(p_true[correct]),
    }
    if prelu_inputs:
        dead = sum(int((x <= 0).all(dim=0).sum()) for x in prelu_inputs)
        values["diag/dead_units"] = dead / sum(x.shape[1] for x in prelu_inputs)
        values["diag/prelu_slope_mean"] = float(torch.cat([m.weight.detach().flatten() for m in prelus]).mean())
    return values


def fixed_sample(batches: Any, size: int, seed: int) -> Batch:
    """``size`` training rows drawn once (seeded, without replacement, in row order), as one batch.

    ``batches`` is the training iterable: its CSR matrix ``x`` and labels ``y`` when it has them
    (``losslab.data.batches.SparseBatches``), otherwise its first batch.
    """
    if hasattr(batches, "x") and hasattr(batches, "y"):
        n = len(batches.y)
        rows = np.sort(np.random.default_rng(seed).choice(n, size=min(int(size), n), replace=False))
        return csr_to_batch(batches.x[rows], batches.y[rows])
    return next(iter(batches))


class LossDiagnostics(pl.Callback):
    """Logs the ``diag/*`` metrics once per training epoch through the module's logger (``conf/callbacks``).

    ``enabled`` is the top-level ``diagnostics`` knob; ``sample_size`` rows of the training split,
    drawn once with ``seed``, are measured at the end of every ``every_n_epochs``-th epoch.
    """

    def __init__(self, enabled: bool = True, sample_size: int = 1024, seed: int = 0, every_n_epochs: int = 1,
                 wrong_below: float = 0.05, saturated_above: float = 0.99) -> None:
        self.enabled = bool(enabled)
        self.sample_size = int(sample_size)
        self.seed = int(seed)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.wrong_below, self.saturated_above = float(wrong_below), float(saturated_above)
        self.seconds: list[float] = []  # per measured epoch (read by bench/measure.py)
        self._batch: Batch | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (not self.enabled or trainer.sanity_checking or trainer.global_rank != 0
                or trainer.current_epoch % self.every_n_epochs):
            return
        started = time.perf_counter()
        if self._batch is None:
            self._batch = fixed_sample(trainer.train_dataloader, self.sample_size, self.seed)
        batch = tuple(t.to(pl_module.device) for t in self._batch)
        values = measure(pl_module.net, pl_module.loss, batch, self.wrong_below, self.saturated_above)
        self.seconds.append(time.perf_counter() - started)
        values["diag/seconds"] = self.seconds[-1]
        if isinstance(trainer.logger, RunLogger):  # into the epoch's own write (RunLogger.stage)
            trainer.logger.stage(values, trainer.current_epoch)
        else:
            pl_module.log_dict(values, on_step=False, on_epoch=True, batch_size=1, rank_zero_only=True)


def keys(layers: Sequence[str]) -> list[str]:
    """Every ``diag/*`` key a PReLU MLP with these weight layers logs (tests and the report use it)."""
    return sorted([*(f"diag/grad_norm_{name}" for name in layers), "diag/confident_wrong", "diag/saturated_right",
                   "diag/margin_mean", "diag/max_abs_logit", "diag/grad_logit_wrong", "diag/grad_logit_correct",
                   "diag/p_true_wrong", "diag/p_true_correct", "diag/dead_units", "diag/prelu_slope_mean",
                   "diag/seconds"])
