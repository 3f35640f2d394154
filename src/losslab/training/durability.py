"""What lets a training survive ``kill -9``: a heartbeat in its MLflow run and a last checkpoint every epoch.

- ``Heartbeat`` writes the run's ``host``/``pid``/``pid_start_time`` tags when fit starts (again after a
  resume: another process) and its ``heartbeat`` tag at every epoch end: one tag write per epoch.
  ``losslab.tracking.liveness.close_dead_runs`` reads them to close runs whose process died.
- ``LastCheckpoint`` saves the whole training state (weights, optimizer, loops, callbacks, RNG) to
  ``<output dir>/checkpoints/last.ckpt`` at every epoch end, atomically: into a temporary file in the
  same folder, flushed and fsynced, then ``os.replace`` — a kill during the write leaves the previous
  ``last.ckpt`` whole. (Lightning 2.6's own writer goes through a temp file under ``$TMPDIR`` and
  ``shutil.move``: a copy, not a rename, when that is another filesystem, and never fsynced.)
- ``resume_checkpoint`` picks what ``resume=<run id>`` continues from: the newer of
  ``interrupted.ckpt`` (Ctrl-C / SIGTERM) and ``last.ckpt`` (any death, SIGKILL included).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

LAST = "last.ckpt"
INTERRUPTED = "interrupted.ckpt"


class Heartbeat(pl.Callback):
    """The run's liveness tags (``conf/callbacks/default.yaml``): where it runs at fit start, a heartbeat
    (epoch ms) at every epoch end. ``seconds`` accumulates what the writes cost."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.beats = 0
        self._warned = False

    def _write(self, trainer: pl.Trainer, tags: dict[str, str]) -> None:
        from losslab.tracking import background

        logger = trainer.logger
        run_id = getattr(logger, "run_id", None)
        if run_id is None or not hasattr(logger, "experiment"):
            return  # not logging to MLflow
        background.writer().submit(self._send, logger, run_id, tags)  # off the loop (tracking.background)

    def _send(self, logger: Any, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        start = time.perf_counter()
        try:
            if len(tags) == 1:  # the per-epoch beat: MLflow's cheapest write (one tag upsert)
                logger.experiment.set_tag(run_id, *next(iter(tags.items())))
            else:
                logger.experiment.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception as exc:  # noqa: BLE001  (a missed beat must not stop the training)
            if not self._warned:
                print(f"note: heartbeat of run {run_id} not written ({type(exc).__name__}); training goes on",
                      file=sys.stderr)
                self._warned = True
        self.seconds += time.perf_counter() - start
        self.beats += 1

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from losslab.tracking.liveness import process_tags

        self._write(trainer, process_tags())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from losslab.tracking import background

        background.flush()  # every beat written (and counted) when fit returns

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from losslab.tracking.liveness import HEARTBEAT_TAG, now_ms

        if not trainer.sanity_checking:
            self._write(trainer, {HEARTBEAT_TAG: str(now_ms())})


def atomic_torch_save(obj: Any, path: Path, fsync: bool = True) -> None:
    """``torch.save`` to ``path`` so that readers only ever see the old file or the complete new one.

    The rename alone already survives a killed process; ``fsync`` (file, then folder) also survives a
    power cut or a kernel crash, for about 15 ms more per MEX-A3T checkpoint (17 MB).
    """
    atomic_write_bytes(serialize(obj), path, fsync)


def serialize(obj: Any) -> bytes:
    """``torch.save`` into memory: a snapshot of ``obj`` that later training steps cannot change.

    Without the zip records' CRC-32 (``torch.serialization.set_crc32_options``, for this call only): it is 70 % of
    the cost here (7 → 2 ms per 17 MB checkpoint, every epoch); ``torch.load`` does not check it, and the atomic
    write already guarantees a whole file.
    """
    import io

    import torch
    from torch.serialization import get_crc32_options, set_crc32_options

    buffer = io.BytesIO()
    crc = get_crc32_options()
    set_crc32_options(False)
    try:
        torch.save(obj, buffer)
    finally:
        set_crc32_options(crc)
    return buffer.getvalue()


def atomic_write_bytes(data: bytes, path: Path, fsync: bool = True) -> None:
    """``data`` to ``path`` via a temporary file in the same folder + ``os.replace`` (see ``atomic_torch_save``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not fsync:
        return
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` keeping only ``last.ckpt``: the full state every ``every_n_epochs``, at the
    point where Lightning itself checkpoints an epoch (its end, after validation), written with
    ``atomic_torch_save``. The best-validation ``ModelCheckpoint`` must stay the trainer's
    ``checkpoint_callback`` (the first one: ``conf/callbacks/default.yaml`` lists it first), and runs first, so
    its updated best score is part of the state saved here."""

    def __init__(self, dirpath: str | None = None, every_n_epochs: int = 1, fsync: bool = True,
                 keep_when_finished: bool = False) -> None:
        super().__init__(dirpath=dirpath, monitor=None, save_top_k=0, save_last=True, save_weights_only=False,
                         every_n_epochs=every_n_epochs, enable_version_counter=False)
        self.fsync = fsync
        self.keep_when_finished = keep_when_finished

    def run_finished(self) -> None:
        """The run ended FINISHED: ``last.ckpt`` (resume-only; the weights and Adam's two moments, ~3× the model)
        is removed unless ``keep_when_finished`` — a sweep would otherwise leave ~0.6 GB of them on MEX-A3T."""
        from losslab.tracking import background

        if self.keep_when_finished or not self.dirpath:
            return
        background.flush()  # no write of it still in flight
        (Path(self.dirpath) / LAST).unlink(missing_ok=True)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.checkpoint_callback is self:
            from losslab.errors import ConfigError

            raise ConfigError("callbacks: last_checkpoint comes before the best-validation ModelCheckpoint "
                              "(model_checkpoint); list model_checkpoint first (conf/callbacks/default.yaml).")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._save_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):
            self._save_last(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from losslab.tracking import background

        background.flush()  # last.ckpt is on disk when fit returns

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from losslab.tracking import background

        with contextlib.suppress(BaseException):
            background.flush()

    def _save_last(self, trainer: pl.Trainer) -> None:
        if (trainer.current_epoch + 1) % max(1, self._every_n_epochs) == 0:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        from losslab.tracking import background

        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)  # what save_checkpoint dumps
        if trainer.is_global_zero:  # snapshot now, write + fsync while the next epoch runs (tracking.background)
            background.flush()  # at most one checkpoint in flight: the previous one is whole on disk first
            background.writer().submit(atomic_write_bytes, serialize(checkpoint), Path(filepath), self.fsync)
        trainer.strategy.barrier("LastCheckpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


def resume_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint a resumed run continues from: the newer of ``interrupted.ckpt`` and ``last.ckpt``."""
    folder = Path(output_dir) / "checkpoints"
    found = [p for p in (folder / INTERRUPTED, folder / LAST) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None
