"""The LightningModule: the PReLU MLP, the configured loss, the optimiser and per-stage metrics."""

from __future__ import annotations

from typing import Any, Iterable

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from losslab.data.batches import Batch
from losslab.errors import ConfigError
from losslab.model.losses import build_loss
from losslab.model.metrics import absent_classes, flatten, make_metrics


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf (``epoch`` says when)."""

    def __init__(self, message: str, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


class TextClassifier(pl.LightningModule):
    """Trains the configured network with the configured loss; validates every epoch and tests once.

    Built from plain config dicts (``conf/model``, ``conf/loss``, ``conf/optimizer``,
    ``conf/scheduler``) and the data's shape, all saved with ``save_hyperparameters``, so a
    checkpoint loads alone: ``TextClassifier.load_from_checkpoint(path)``.
    """

    def __init__(self, model: dict[str, Any], loss: dict[str, Any], optimizer: dict[str, Any],
                 scheduler: dict[str, Any] | None, in_features: int, class_names: list[str],
                 class_counts: list[int]) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # the run's params are the resolved config, logged once
        self.net = build_network(model, in_features, len(class_names))
        self.loss = build_loss(loss, class_counts)
        self.class_names = list(class_names)
        self.val_metrics = make_metrics(len(class_names))
        self.test_metrics = make_metrics(len(class_names))
        self.test_probs: list[torch.Tensor] = []
        self.test_targets: list[torch.Tensor] = []
        self._epoch_loss, self._epoch_samples = torch.zeros(()), 0  # the epoch's summed train loss, samples
        self._val_targets: list[torch.Tensor] = []  # the first validation pass's targets, for absent_classes
        self.notes: dict[str, list[str]] = {}  # stage → classes with no example there (macro metrics skip them)

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
            # sync_dist: under DDP the mean of the ranks' (equal-sized) shares, once per epoch
            self.log("train/loss", self._epoch_loss / self._epoch_samples, on_step=False, on_epoch=True, batch_size=1,
                     sync_dist=True)
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
        if stage == "val" and "val" not in self.notes:
            self._val_targets.append(y.detach().cpu())
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        return probs

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(flatten(self.val_metrics.compute(), "val", self.class_names))
        self.val_metrics.reset()
        if "val" not in self.notes and self._val_targets:
            self._note_absent("val", torch.cat(self._val_targets))
            self._val_targets = []

    def on_test_epoch_start(self) -> None:
        self.test_probs, self.test_targets = [], []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_probs.append(self._evaluate(batch, "test").detach().cpu())
        self.test_targets.append(batch[3].cpu())

    def on_test_epoch_end(self) -> None:
        """Metrics over every rank's share (torchmetrics syncs them); under DDP the ranks' predictions are
        gathered back in row order, so the test artifacts cover the whole test set."""
        self.log_dict(flatten(self.test_metrics.compute(), "test", self.class_names))
        self.test_metrics.reset()
        if self.trainer.world_size > 1:
            from torchmetrics.utilities.distributed import gather_all_tensors

            from losslab.data.batches import interleave

            for name in ("test_probs", "test_targets"):
                local = torch.cat(getattr(self, name)).to(self.device)
                setattr(self, name, [interleave([t.cpu() for t in gather_all_tensors(local)])])
        if self.test_targets:
            self._note_absent("test", torch.cat(self.test_targets))

    def _note_absent(self, stage: str, targets: torch.Tensor) -> None:
        """Name the classes with no example in this split: a note on stderr and an ``absent_classes.<stage>`` tag."""
        absent = absent_classes(targets, self.class_names)
        self.notes[stage] = absent
        if not absent or self.global_rank != 0:
            return
        import sys

        print(f"note: no {stage} example of class(es) {', '.join(absent)}: macro metrics average over the "
              f"{len(self.class_names) - len(absent)} classes present (as scikit-learn); "
              f"{stage}/f1_<absent class> reads 0", file=sys.stderr)
        logger = self.logger
        if logger is not None and getattr(logger, "run_id", None) and hasattr(logger.experiment, "set_tag"):
            logger.experiment.set_tag(logger.run_id, f"absent_classes.{stage}", ", ".join(absent))

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.hparams.optimizer, self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": instantiate(self.hparams.scheduler)(optimizer),
                                                         "interval": "epoch"}}


def build_network(model: dict[str, Any], in_features: int, num_classes: int) -> torch.nn.Module:
    """The network a ``model`` config describes (``_target_`` + ``_partial_``), for this data's shape."""
    return instantiate(model)(in_features=in_features, num_classes=num_classes)


def build_optimizer(optimizer: dict[str, Any], params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer an ``optimizer`` config describes; an impossible setting is a ``ConfigError``."""
    try:
        return instantiate(optimizer)(params)
    except ValueError as exc:  # torch.optim validates lr, betas, weight_decay, ...
        settings = ", ".join(f"optimizer.{k}={v}" for k, v in optimizer.items() if not k.startswith("_"))
        raise ConfigError(f"{exc} ({settings}); fix the override or conf/optimizer/.") from None
