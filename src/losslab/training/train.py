"""Train the PReLU MLP once with the configured loss and record it in MLflow.

    python -m losslab.train loss=mse model.hidden=512      # or: make train ARGS="loss=mse"

Flow: data → features → batches → module (network + loss from ``conf/``) → Lightning fit
(best-validation checkpoint) → test → MLflow (params, dataset input, tags, curves, test
metrics, artifacts, model bundle).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from losslab.console import quiet_third_party, verbose  # noqa: F401  (quiet_third_party: also imported from here)
from losslab.errors import ConfigError, TrainingInterrupted, friendly_exit
from losslab.paths import config_dir
from losslab.training.result import TrainResult

if TYPE_CHECKING:
    from losslab.data.featureset import FeatureSet


def import_training_stack() -> None:
    """Import what a training needs before its first step (~7 s on 2 cores: MLflow and its sqlite store client,
    torch, Lightning, torchmetrics). A sweep's workers run this while the parent still prepares the sweep."""
    import mlflow  # noqa: F401
    import pytorch_lightning  # noqa: F401
    from mlflow.store.tracking import sqlalchemy_store  # noqa: F401  (the first store open imports it, ~1 s)

    from losslab.training import build, durability, preemption, record  # noqa: F401


def train(cfg: DictConfig, output_dir: str | Path, features: "FeatureSet | None" = None,
          resume_run_id: str | None = None) -> TrainResult:
    """One full training run; the MLflow run ends FINISHED, FAILED (with the reason) or KILLED.

    ``features`` lets a caller (a pipeline stage) pass prepared inputs; by default they are
    built from ``cfg.data`` / ``cfg.features`` (memoised per process, so sweeps featurize once).
    ``resume_run_id`` reopens an interrupted run and continues from its checkpoint. Inside a
    sweep (``tracking.parent_run_id`` set) nothing is printed unless ``LOSSLAB_VERBOSE=1``.
    """
    started = time.perf_counter()
    import_training_stack()  # here, so that time/imports_seconds counts it
    import mlflow

    from losslab.data.featureset import build_feature_set
    from losslab.tracking import outbox, runs
    from losslab.training import durability, preemption, record
    from losslab.training.build import build_parts, check_config, make_trainer, resolve_sizes

    timings = {"imports": time.perf_counter() - started}
    _freeze_heap_once()
    quiet_third_party()
    talk = verbose() or not cfg.tracking.get("parent_run_id")

    check_config(cfg)
    output_dir = Path(output_dir)
    mark = time.perf_counter()
    uri = runs.open_store(cfg.tracking, create_experiment=not resume_run_id)
    timings["store"] = time.perf_counter() - mark  # the first open in a process imports the store's client (~1 s)
    mark = time.perf_counter()
    fs = features if features is not None else build_feature_set(cfg.data, cfg.features, int(cfg.seed))
    auto_sized = resolve_sizes(cfg, len(fs.y["train"]))  # data.batch_size / trainer.max_epochs: auto → numbers
    if talk:
        record.print_data_notes(fs.stats)
    parts = build_parts(cfg, fs)
    timings["data"] = time.perf_counter() - mark

    with runs.mlflow_run(uri, str(cfg.tracking.experiment), str(cfg.tracking.run_name), record.run_tags(cfg, fs),
                         parent_run_id=cfg.tracking.get("parent_run_id"), resume_run_id=resume_run_id) as run:
        run_id = run.info.run_id
        outbox.watch(run_id, output_dir, uri)
        if not resume_run_id:
            record.log_run_inputs(cfg, fs, output_dir)
        mark = time.perf_counter()
        trainer, stopper = make_trainer(cfg, output_dir, run_id, uri, show_epochs=talk, parts=parts)
        timings["setup"] = time.perf_counter() - mark  # the Trainer, its logger and callbacks
        mlflow.set_tags(record.placement_tags(trainer.strategy.root_device, auto_sized))

        interrupted_ckpt = output_dir / "checkpoints" / "interrupted.ckpt"
        start = time.perf_counter()
        resume_from = durability.resume_checkpoint(output_dir) if resume_run_id else None  # interrupted or last
        trainer.fit(parts.module, parts.train, parts.val, ckpt_path=str(resume_from) if resume_from else None)
        fit_seconds = time.perf_counter() - start
        if trainer.world_size > 1:  # DDP: each rank saw its own share of every epoch (ShardAcrossRanks)
            mlflow.log_params({"ddp.world_size": trainer.world_size,
                               "ddp.samples_per_rank": parts.train.samples_per_epoch})
        if stopper.signal_name:
            trainer.save_checkpoint(interrupted_ckpt)
            mlflow.set_tags({"completed_epochs": str(trainer.current_epoch), "checkpoint": str(interrupted_ckpt)})
            preemption.remember(output_dir, run_id)  # inside a SLURM job: the requeued job resumes this run
            raise TrainingInterrupted(f"{stopper.signal_name} after epoch {trainer.current_epoch - 1}; checkpoint "
                                      f"{interrupted_ckpt}. Resume with: python -m losslab.train resume={run_id}",
                                      run_id, stopper.signal_name)
        mark = time.perf_counter()
        best = trainer.checkpoint_callback  # the best-validation ModelCheckpoint (last_checkpoint is a second one)
        trainer.test(parts.module, parts.test, ckpt_path=best.best_model_path or "best", verbose=False)
        timings |= {"fit": fit_seconds, "test": time.perf_counter() - mark}
        test_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        checkpoint = trainer.checkpoint_callback
        best_val = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
        epochs_run = trainer.current_epoch - stopper.start_epoch  # after a resume: only this process's epochs
        test_metrics |= record.log_outcome(cfg, fs, parts, fit_seconds, epochs_run, best_val, _epoch_of(checkpoint))
        if runs.process_rank() == 0:  # DDP ranks > 0 hold the same gathered predictions: one writer
            record.log_artifacts(cfg, fs, parts, output_dir / "artifacts")
        timings["logging"] = time.perf_counter() - started - sum(timings.values())  # run start, params, outcome, files
        mlflow.log_metrics({f"time/{k}_seconds": v for k, v in timings.items()})

    if runs.process_rank() == 0:
        for callback in trainer.callbacks:
            if isinstance(callback, durability.LastCheckpoint):
                callback.run_finished()
    if talk:
        runs.print_run(run_id, uri, test_metrics)
    return TrainResult(run_id, uri, test_metrics, best_val, timings)


_HEAP_FROZEN = False


def _freeze_heap_once() -> None:
    """Once per process, after the heavy imports: keep their ~1M long-lived objects out of the cyclic GC.

    Every full collection scanned them (about 1 s each here, twice per training, and again at
    interpreter exit); ``gc.freeze()`` skips them. Objects made later are collected as usual.
    """
    global _HEAP_FROZEN
    if not _HEAP_FROZEN:
        import gc

        gc.freeze()
        _HEAP_FROZEN = True


def _epoch_of(checkpoint: object) -> str:
    """The epoch of the best checkpoint, read from its file name ``best-epoch<N>.ckpt``."""
    import re

    found = re.search(r"best-epoch(\d+)", str(getattr(checkpoint, "best_model_path", "")))
    return found.group(1) if found else "unknown"


def resume(run_id: str, cfg: DictConfig | None = None) -> TrainResult:
    """Continue interrupted run ``run_id`` from its checkpoint, with the config it was started with."""
    from losslab.tracking import runs, store
    from losslab.training.durability import resume_checkpoint

    uri = store.tracking_uri(cfg.tracking if cfg is not None else None)
    logged, output_dir = runs.resume_info(uri, run_id)
    if resume_checkpoint(output_dir) is None:
        raise ConfigError(f"resume={run_id}: no interrupted.ckpt or last.ckpt in {Path(output_dir) / 'checkpoints'} "
                          "(the run stopped before its first epoch ended, or its output directory was removed).")
    logged.tracking.uri = uri
    return train(logged, output_dir, resume_run_id=run_id)


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
@friendly_exit
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best validation macro-F1 (what a sweeper maximises).

    In a SLURM job that was signalled (preemption, time limit): the job requeues itself and exits
    without a result; when it restarts, it resumes the same run (``losslab.training.preemption``).
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from losslab.training import preemption

    if cfg.get("resume"):
        return resume(str(cfg.resume), cfg).best_val_f1_macro
    hydra_cfg = HydraConfig.get()
    if int(OmegaConf.select(cfg, "ensemble.folds", default=0) or 0):  # k-fold bagging: one ensemble run
        import pytorch_lightning  # noqa: F401  (importing it resets its loggers: quiet them after)

        from losslab.training.ensemble import train_folds

        quiet_third_party()
        return train_folds(cfg, hydra_cfg.runtime.output_dir).best_val_f1_macro
    output_dir = hydra_cfg.runtime.output_dir
    if OmegaConf.select(cfg, "fused.losses"):  # every loss of this seed in one pass: one run per loss
        from losslab.training.fused import train_fused

        return max(r.best_val_f1_macro for r in train_fused(cfg, output_dir).members.values())
    try:
        requeued = preemption.requeued_run(output_dir)
        result = resume(requeued, cfg) if requeued else train(cfg, output_dir)
    except TrainingInterrupted as exc:
        if preemption.request_requeue(exc.signal_name, OmegaConf.select(hydra_cfg, "launcher.max_num_timeout")):
            raise SystemExit(REQUEUED_EXIT) from None  # no result file: the submitter waits for the requeued job
        raise
    return result.best_val_f1_macro


REQUEUED_EXIT = 3


if __name__ == "__main__":
    main()
