"""Lightning pieces of a training: a one-line summary per epoch, the MLflow logger, graceful stop, DDP shards."""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

import pytorch_lightning as pl
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only


class EpochSummary(pl.Callback):
    """Prints ``epoch  train/loss  val/loss  val/f1_macro`` once per epoch (no per-step sync)."""

    def __init__(self, keys: Sequence[str] = ("train/loss", "val/loss", "val/f1_macro")) -> None:
        self.keys = tuple(keys)

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        parts = [f"{k} {float(metrics[k]):.4f}" for k in self.keys if k in metrics]
        print(f"epoch {trainer.current_epoch:>3}  " + "  ".join(parts), file=sys.stderr, flush=True)


class RunLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` on the run losslab opened (``conf/logger/mlflow.yaml``).

    Two differences: epoch-level curves use the epoch as their step (Lightning passes the
    optimizer step), and ``finalize`` leaves the run open — the test metrics and artifacts come
    after fit, and ``losslab.tracking.runs.mlflow_run`` ends the run with its real status.
    """

    def __init__(self, tracking_uri: str, run_id: str, **kwargs: Any) -> None:
        super().__init__(tracking_uri=tracking_uri, run_id=run_id, **kwargs)
        self._logged_steps: dict[str, int] | None = None  # newest step per metric already in the run
        self._staged: dict[int, dict[str, float]] = {}  # step → metrics waiting for that step's write

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """One ``log_batch`` per call, written by the background writer (``tracking.background``): the next
        epoch computes while the store commits. Metrics ``stage``d for this step ride along."""
        from losslab.tracking import background

        values = {k: float(v) for k, v in metrics.items()}  # plain floats now: tensors may change under the writer
        epoch = values.pop("epoch", None)
        step = int(epoch) if epoch is not None else step
        values = (self._staged.pop(step, {}) | values) if step is not None else values
        self._write_staged()  # another step's (none in a normal epoch)
        background.writer().submit(self._write, values, step)

    @rank_zero_only
    def stage(self, metrics: Mapping[str, float], epoch: int) -> None:
        """``metrics`` of ``epoch``, written with that epoch's own write: Lightning logs the epoch's training
        metrics right after ``on_train_epoch_end``. A callback's once-per-epoch values (``diag/*``) then cost
        neither a store write of their own (~6 ms) nor Lightning's per-key ``self.log`` bookkeeping (~0.5 ms each);
        ``finalize`` writes anything still staged."""
        self._staged.setdefault(int(epoch), {}).update({k: float(v) for k, v in metrics.items()})

    def _write_staged(self) -> None:
        from losslab.tracking import background

        staged, self._staged = self._staged, {}
        for step, values in staged.items():
            background.writer().submit(self._write, values, step)

    def _write(self, values: dict[str, float], step: int | None) -> None:
        """Skip the points the run already has: a run resumed from an older ``last.ckpt`` (a kill while the
        newer one was being written) redoes that epoch, with the same values, and must not log it twice."""
        if self._logged_steps is None:
            run = self.experiment.get_run(self.run_id)
            self._logged_steps = {m.key: m.step for m in getattr(run.data, "_metric_objs", [])}
        fresh = {k: v for k, v in values.items() if step is None or step > self._logged_steps.get(k, -1)}
        if fresh:
            MLFlowLogger.log_metrics(self, fresh, step)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Land the queued curves; the run itself is ended by ``mlflow_run`` once test and artifacts are logged."""
        from losslab.tracking import background

        self._write_staged()
        background.flush()


class ShardAcrossRanks(pl.Callback):
    """Under DDP, give each rank its own share of the batches (``SparseBatches.shard``) once ranks are known.

    Lightning injects a ``DistributedSampler`` only into ``DataLoader`` objects; the sparse batches
    are plain iterables, so this does the same at ``setup`` (after the processes joined, before
    Lightning counts the batches).
    """

    def __init__(self, batches: Sequence[Any]) -> None:
        self.batches = list(batches)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for batches in self.batches:
            batches.shard(trainer.global_rank, trainer.world_size)


class BatchesOnDevice(pl.Callback):
    """On a GPU, copy the feature matrices to it once (``SparseBatches.to``): every batch is then a slice made on
    the device, with no host-to-device copy and no host sync per step. On the CPU the host path stays (slicing
    scipy's CSR is ~10× faster there than the same gather in torch)."""

    def __init__(self, batches: Sequence[Any]) -> None:
        self.batches = list(batches)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device
        if device.type == "cuda":
            for batches in self.batches:
                if hasattr(batches, "to") and getattr(batches, "device", None) != device:
                    batches.to(device)


class GracefulStop(pl.Callback):
    """SIGINT/SIGTERM during fit: finish the current epoch (so checkpoints stay consistent), then stop.

    ``train`` sees ``signal_name`` set, saves a full checkpoint and ends the run KILLED; a
    second signal stops at once. SIGUSR1/SIGUSR2 are a cluster's notice (SLURM sends one before
    the time limit or a preemption, ``scancel --signal=USR2`` too): the same stop, after which a
    SLURM job asks to be requeued (``losslab.training.preemption``).
    """

    SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.start_epoch = 0  # the epoch this fit started from (after a resume, not 0)
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

        self.start_epoch = trainer.current_epoch
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

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Before Lightning's teardown puts back the handlers it found: restoring later (``on_fit_end``) would
        re-install Lightning's handler, which holds this trainer — every later fit chained it (a leak of one
        trainer and its model per training, and old trainers notified of a later SIGTERM)."""
        self.restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.restore_handlers()
