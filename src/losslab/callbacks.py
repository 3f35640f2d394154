"""Small Lightning callbacks: a one-line summary per epoch instead of a progress bar."""

from __future__ import annotations

import sys

import pytorch_lightning as pl


class EpochSummary(pl.Callback):
    """Prints ``epoch  train/loss  val/loss  val/f1_macro`` once per epoch (no per-step sync)."""

    def __init__(self, keys: tuple[str, ...] = ("train/loss", "val/loss", "val/f1_macro")) -> None:
        self.keys = keys

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [f"{k} {float(metrics[k]):.4f}" for k in self.keys if k in metrics]
        print(f"epoch {trainer.current_epoch:>3}  " + "  ".join(parts), file=sys.stderr, flush=True)
