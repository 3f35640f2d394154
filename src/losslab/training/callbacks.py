"""Lightning hooks: a one-line summary per epoch, and a logger writing epoch metrics to MLflow."""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping

import pytorch_lightning as pl
from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only


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


class MLflowEpochLogger(Logger):
    """A Lightning logger writing epoch-level metrics to an already started MLflow run (step = epoch)."""

    def __init__(self, run_id: str, uri: str) -> None:
        super().__init__()
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self._client = MlflowClient(uri)

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run_id

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        return self._client

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Params are logged once from the resolved config (``flatten_config``)."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        epoch = int(metrics.get("epoch", step or 0))
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, epoch) for key, value in metrics.items() if key != "epoch"]
        if batch:
            self._client.log_batch(self.run_id, metrics=batch, synchronous=True)


class GracefulStop(pl.Callback):
    """SIGINT/SIGTERM during fit: finish the current epoch (so checkpoints stay consistent), then stop.

    ``train`` sees ``signal_name`` set, saves a full checkpoint and ends the run KILLED; a
    second signal stops at once.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        if self.signal_name is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name} received: finishing this epoch, then saving a checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Installed after Lightning's own SIGTERM handler (which would abort mid-epoch) and replaces it."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._handle)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signal_name is not None:
            trainer.should_stop = True

    def restore_handlers(self) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.restore_handlers()
