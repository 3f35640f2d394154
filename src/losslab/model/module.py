"""The LightningModule: the PReLU MLP, the configured loss, the optimiser and per-stage metrics."""

from __future__ import annotations

from typing import Any, Callable

import pytorch_lightning as pl
import torch

from losslab.data.batches import Batch
from losslab.model.losses import Loss
from losslab.model.metrics import flatten, make_metrics


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf (``epoch`` says when)."""

    def __init__(self, message: str, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


class TextClassifier(pl.LightningModule):
    """Trains ``net`` with ``loss``; validates every epoch and tests once, with torchmetrics."""

    def __init__(self, net: torch.nn.Module, loss: Loss, optimizer: Callable[..., torch.optim.Optimizer],
                 class_names: list[str], scheduler: Callable[..., Any] | None = None) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = list(class_names)
        self.val_metrics = make_metrics(len(class_names))
        self.test_metrics = make_metrics(len(class_names))
        self.test_probs: list[torch.Tensor] = []
        self.test_targets: list[torch.Tensor] = []
        self._epoch_loss, self._epoch_samples = torch.zeros(()), 0  # the epoch's summed train loss, samples

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.net(indices, offsets, weights)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        logits = self(*batch[:3])
        loss = self.loss(logits, batch[3])
        n = len(batch[3])
        self._epoch_loss = self._epoch_loss.to(loss.device) + loss.detach() * n  # on the device: no host sync
        self._epoch_samples += n
        if batch_idx + 1 >= self.trainer.num_training_batches:
            # One self.log per epoch, not per step: each call costs Lightning ~0.3 ms of bookkeeping.
            self.log("train/loss", self._epoch_loss / self._epoch_samples, on_step=False, on_epoch=True, batch_size=1)
        return loss

    def on_train_epoch_start(self) -> None:
        self._epoch_loss, self._epoch_samples = torch.zeros((), device=self.device), 0
        loader = self.trainer.train_dataloader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        value = self.trainer.callback_metrics.get("train/loss")
        if value is not None and not torch.isfinite(value):
            raise NonFiniteLossError(f"train/loss is {value.item()} at epoch {self.current_epoch}",
                                     epoch=self.current_epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the RNG state (dropout) so a resumed run continues exactly as an uninterrupted one."""
        checkpoint["losslab_rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["losslab_rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("losslab_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def _evaluate(self, batch: Batch, stage: str) -> torch.Tensor:
        logits = self(*batch[:3])
        y = batch[3]
        loss = self.loss(logits, y)
        probs = self.loss.probabilities(logits)
        (self.val_metrics if stage == "val" else self.test_metrics).update(probs, y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return probs

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(flatten(self.val_metrics.compute(), "val", self.class_names))
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        self.test_probs, self.test_targets = [], []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_probs.append(self._evaluate(batch, "test").detach().cpu())
        self.test_targets.append(batch[3].cpu())

    def on_test_epoch_end(self) -> None:
        self.log_dict(flatten(self.test_metrics.compute(), "test", self.class_names))
        self.test_metrics.reset()

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                         "interval": "epoch"}}
