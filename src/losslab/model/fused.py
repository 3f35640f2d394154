"""Every loss in one pass: K PReLU MLPs, one per loss, trained as one vectorised network on the same batches.

``FusedMLP`` stacks the members' weights: the first layers side by side in one V × (K·H) matrix read by a
single ``embedding_bag``; the hidden and output layers as ``(K, in, out)`` tensors applied with
``torch.baddbmm``; one PReLU slope per member. Member k's logits depend on member k's slices only, so the
SUM of the members' losses gives each member exactly its own gradient, and an elementwise optimiser (Adam,
AdamW, SGD; no global-norm clipping) over the stacked tensors updates each member as its own training would.

``FusedClassifier`` is the LightningModule: each member's loss object (``conf/loss/<name>.yaml``), its
``train/loss`` and validation curves logged under ``member_key(k, key)``, and its best-validation weights
(``val/f1_macro``, as the single-loss ``ModelCheckpoint``) kept in memory; with ``stopping``
(``callbacks.early_stopping``) each member also stops as its own training would (``model.member_stopping``).
"""

from __future__ import annotations

from typing import Any, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from losslab.data.batches import Batch
from losslab.model.losses import Loss
from losslab.model.member_stopping import MemberStopping
from losslab.model.metrics import flatten, make_metrics
from losslab.model.module import build_optimizer
from losslab.model.network import PReLUMLP, dropout


def member_key(k: int, key: str) -> str:
    """The name member ``k``'s metric ``key`` is logged under inside the fused training."""
    return f"member{k}:{key}"


def split_member_key(name: str) -> tuple[int, str] | None:
    """``member_key``'s inverse: ``(k, key)``, or None for a name of no member."""
    head, sep, key = name.partition(":")
    if not sep or not head.startswith("member") or not head[6:].isdigit():
        return None
    return int(head[6:]), key


class FusedMLP(nn.Module):
    """K ``PReLUMLP`` of one shape as stacked tensors; ``forward`` gives ``(K, N, C)`` logits.

    The first layer is always one ``embedding_bag`` (the costly part). After it, ``batched=False`` (default)
    runs each member's small layers with ``PReLUMLP``'s own ops on its slices (a K-step loop, bitwise equal
    to the separate training on CPU); ``batched=True`` runs them as one ``baddbmm`` per layer (one kernel
    for all K; its sums are ordered differently, so results match only to float rounding).
    """

    def __init__(self, members: Sequence[PReLUMLP], batched: bool = False) -> None:
        super().__init__()
        if not members:
            raise ValueError("a fused network needs at least one member")
        first = members[0]
        self.k = len(members)
        self.width = first.input.weight.shape[1]
        self.dropout = next((m.p for m in first.hidden if isinstance(m, nn.Dropout)), 0.0)
        self.prelu_keys = [f"hidden.{i}.weight" for i, m in enumerate(first.hidden) if isinstance(m, nn.PReLU)]
        self.linear_keys = [f"hidden.{i}" for i, m in enumerate(first.hidden) if isinstance(m, nn.Linear)]
        self.linear_keys.append("output")
        states = [{k: v.detach() for k, v in m.state_dict().items()} for m in members]
        if any(s.keys() != states[0].keys() or any(s[k].shape != states[0][k].shape for k in s) for s in states):
            raise ValueError("fused members must have the same architecture")
        self.input_weight = nn.Parameter(torch.cat([s["input.weight"] for s in states], dim=1))
        self.input_bias = nn.Parameter(torch.stack([s["input.bias"] for s in states]))  # (K, H)
        self.slopes = nn.ParameterList([nn.Parameter(torch.stack([s[key] for s in states]))
                                        for key in self.prelu_keys])  # (K, P): P = 1 or H
        self.weights = nn.ParameterList([nn.Parameter(torch.stack([s[f"{key}.weight"] for s in states]))
                                         for key in self.linear_keys])  # (K, out, in), as nn.Linear
        self.biases = nn.ParameterList([nn.Parameter(torch.stack([s[f"{key}.bias"] for s in states]))
                                        for key in self.linear_keys])  # (K, out)
        self.batched = batched

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        h = F.embedding_bag(indices, self.input_weight, offsets, mode="sum", per_sample_weights=weights)
        if self.batched:  # h is (N, K·H): member k in columns k·H … (k+1)·H
            h = (h.view(-1, self.k, self.width) + self.input_bias).transpose(0, 1)  # (K, N, H)
            for slope, weight, bias in zip(self.slopes, self.weights, self.biases):
                h = torch.where(h > 0, h, slope[:, None, :] * h)  # nn.PReLU, one slope (or H) per member
                h = dropout(h, self.dropout, self.training)
                h = torch.baddbmm(bias[:, None, :], h, weight.transpose(1, 2))
            return h
        return torch.stack([self._member_forward(k, h[:, k * self.width:(k + 1) * self.width] + self.input_bias[k])
                            for k in range(self.k)])

    def _member_forward(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Member ``k`` after its first layer, with the very ops of ``PReLUMLP`` (bitwise the same on CPU)."""
        for slope, weight, bias in zip(self.slopes, self.weights, self.biases):
            h = dropout(F.prelu(h, slope[k]), self.dropout, self.training)
            h = F.linear(h, weight[k], bias[k])
        return h

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s weights as a ``PReLUMLP`` state dict (detached copies)."""
        cols = slice(k * self.width, (k + 1) * self.width)
        state = {"input.weight": self.input_weight[:, cols], "input.bias": self.input_bias[k]}
        state |= {key: slope[k] for key, slope in zip(self.prelu_keys, self.slopes)}
        for key, weight, bias in zip(self.linear_keys, self.weights, self.biases):
            state |= {f"{key}.weight": weight[k], f"{key}.bias": bias[k]}
        return {key: value.detach().clone().contiguous() for key, value in state.items()}


class FusedClassifier(pl.LightningModule):
    """Trains a ``FusedMLP``: the sum of the members' own losses; per-member curves and best weights.

    Not checkpointed (a fused training is not resumable); the test split is scored per member afterwards,
    with each member's best weights in a plain ``TextClassifier`` (``losslab.training.fused``).
    """

    def __init__(self, net: FusedMLP, losses: Sequence[Loss], optimizer: dict[str, Any],
                 scheduler: dict[str, Any] | None, class_names: Sequence[str],
                 stopping: MemberStopping | None = None) -> None:
        super().__init__()
        if len(losses) != net.k:
            raise ValueError(f"{len(losses)} losses for {net.k} members")
        self.net = net
        self.losses = nn.ModuleList(losses)
        self.optimizer_config, self.scheduler_config = optimizer, scheduler
        self.class_names = list(class_names)
        self.val_metrics = nn.ModuleList([make_metrics(len(class_names)) for _ in losses])
        self._epoch_loss, self._epoch_samples = torch.zeros(net.k), 0
        self.best_score: list[float | None] = [None] * net.k
        self.best_epoch: list[int | None] = [None] * net.k
        self.best_state: list[dict[str, torch.Tensor] | None] = [None] * net.k
        self.failed_epoch: list[int | None] = [None] * net.k  # the epoch a member's train/loss became NaN/Inf
        self.stopping = stopping  # None: every member trains every epoch

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.net(indices, offsets, weights)

    def _member_losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([loss(logits[k], y) for k, loss in enumerate(self.losses)])

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        losses = self._member_losses(self(*batch[:3]), batch[3])
        n = len(batch[3])
        self._epoch_loss = self._epoch_loss.to(losses.device) + losses.detach() * n
        self._epoch_samples += n
        if batch_idx + 1 >= self.trainer.num_training_batches:
            means = self._epoch_loss / self._epoch_samples
            self.log_dict({member_key(k, "train/loss"): means[k] for k in range(self.net.k)},
                          on_step=False, on_epoch=True, batch_size=1)
        return losses.sum()  # d(sum)/d(loss_k) = 1: each member gets exactly its own gradient

    def on_train_epoch_start(self) -> None:
        self._epoch_loss, self._epoch_samples = torch.zeros(self.net.k, device=self.device), 0
        loader = self.trainer.train_dataloader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        for k in range(self.net.k):
            value = self.trainer.callback_metrics.get(member_key(k, "train/loss"))
            if self.failed_epoch[k] is None and value is not None and not torch.isfinite(value):
                self.failed_epoch[k] = self.current_epoch
            if self.stopping is not None and not self.trainer.sanity_checking:
                current = self.trainer.callback_metrics.get(member_key(k, self.stopping.monitor))
                if current is None:  # as EarlyStopping(strict=True)
                    raise RuntimeError(f"Early stopping conditioned on metric `{self.stopping.monitor}` which is "
                                       "not available to a fused member (val/loss, val/f1_macro, ... are).")
                self.stopping.update(k, current, self.current_epoch)
        if all(self.failed_epoch[k] is not None or self._stops_here(k) for k in range(self.net.k)):
            self.trainer.should_stop = True

    def _stops_here(self, k: int) -> bool:
        return self.stopping is not None and self.stopping.last_epoch[k] is not None

    def member_done(self, k: int) -> bool:
        """Member ``k`` has stopped early (before this epoch): what it records no longer changes."""
        return self.stopping is not None and self.stopping.done(k, self.current_epoch)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        logits, y = self(*batch[:3]), batch[3]
        for k, loss in enumerate(self.losses):
            self.val_metrics[k].update(loss.probabilities(logits[k]), y)
            self.log(member_key(k, "val/loss"), loss(logits[k], y), on_step=False, on_epoch=True, batch_size=len(y))

    def on_validation_epoch_end(self) -> None:
        for k, metrics in enumerate(self.val_metrics):
            values = flatten(metrics.compute(), "val", self.class_names)
            metrics.reset()
            self.log_dict({member_key(k, key): value for key, value in values.items()})
            self._keep_if_best(k, float(values["val/f1_macro"]))

    def _keep_if_best(self, k: int, score: float) -> None:
        """As ``ModelCheckpoint(monitor="val/f1_macro", mode="max", save_top_k=1)``: the first epoch, then
        strictly better ones; a member that failed keeps what it had."""
        if self.failed_epoch[k] is not None or self.trainer.sanity_checking or self.member_done(k):
            return
        best = self.best_score[k]
        if best is None or score > best or (best != best and score == score):  # NaN is never the best
            self.best_score[k], self.best_epoch[k] = score, self.current_epoch
            self.best_state[k] = self.net.member_state(k)

    def configure_optimizers(self) -> Any:
        from hydra.utils import instantiate

        optimizer = build_optimizer(self.optimizer_config, self.parameters())
        if not self.scheduler_config:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": instantiate(self.scheduler_config)(optimizer),
                                                         "interval": "epoch"}}
