"""Train the PReLU MLP once with the configured loss and record it in MLflow.

    python -m losslab.train loss=mse model.hidden=512      # or: make train ARGS="loss=mse"

Flow: data → features → batches → module (network + loss from ``conf/``) → Lightning fit
(best-validation checkpoint) → test → MLflow (params, dataset input, tags, curves, test
metrics, artifacts, model bundle).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from losslab.console import ignore_warning, verbose
from losslab.errors import ConfigError, TrainingInterrupted, friendly_exit
from losslab.paths import config_dir

if TYPE_CHECKING:
    from losslab.data.featureset import FeatureSet


@dataclass
class TrainResult:
    """What a caller (CLI, sweep, test) gets back from one training."""

    run_id: str
    tracking_uri: str
    test_metrics: dict[str, float]
    best_val_f1_macro: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (also logged as time/*)


def train(cfg: DictConfig, output_dir: str | Path, features: "FeatureSet | None" = None,
          resume_run_id: str | None = None) -> TrainResult:
    """One full training run; the MLflow run ends FINISHED, FAILED (with the reason) or KILLED.

    ``features`` lets a caller (a pipeline stage) pass prepared inputs; by default they are
    built from ``cfg.data`` / ``cfg.features`` (memoised per process, so sweeps featurize once).
    ``resume_run_id`` reopens an interrupted run and continues from its checkpoint. Inside a
    sweep (``tracking.parent_run_id`` set) nothing is printed unless ``LOSSLAB_VERBOSE=1``.
    """
    started = time.perf_counter()
    import mlflow
    import pytorch_lightning  # noqa: F401  (here, so that time/imports_seconds counts it)

    from losslab.data.featureset import build_feature_set
    from losslab.tracking import runs, store
    from losslab.training import record
    from losslab.training.build import build_parts, check_config, make_trainer

    timings = {"imports": time.perf_counter() - started}
    _freeze_heap_once()
    quiet_third_party()
    talk = verbose() or not cfg.tracking.get("parent_run_id")

    check_config(cfg)
    output_dir = Path(output_dir)
    uri = store.tracking_uri(cfg.tracking)
    store.check_store(uri)
    if not resume_run_id:
        store.experiment_id_for(uri, str(cfg.tracking.experiment))  # creates the store once, before any work
    mark = time.perf_counter()
    fs = features if features is not None else build_feature_set(cfg.data, cfg.features, int(cfg.seed))
    if talk:
        record.print_data_notes(fs.stats)
    parts = build_parts(cfg, fs)
    timings["data"] = time.perf_counter() - mark

    with runs.mlflow_run(uri, str(cfg.tracking.experiment), str(cfg.tracking.run_name), record.run_tags(cfg, fs),
                         parent_run_id=cfg.tracking.get("parent_run_id"), resume_run_id=resume_run_id) as run:
        run_id = run.info.run_id
        if not resume_run_id:
            record.log_run_inputs(cfg, fs, output_dir)
        trainer, stopper = make_trainer(cfg, output_dir, run_id, uri, show_epochs=talk)
        mlflow.set_tags(runs.device_tags(trainer.strategy.root_device))

        interrupted_ckpt = output_dir / "checkpoints" / "interrupted.ckpt"
        start = time.perf_counter()
        trainer.fit(parts.module, parts.train, parts.val, ckpt_path=str(interrupted_ckpt) if resume_run_id else None)
        fit_seconds = time.perf_counter() - start
        if stopper.signal_name:
            trainer.save_checkpoint(interrupted_ckpt)
            mlflow.set_tags({"completed_epochs": str(trainer.current_epoch), "checkpoint": str(interrupted_ckpt)})
            raise TrainingInterrupted(f"{stopper.signal_name} after epoch {trainer.current_epoch - 1}; checkpoint "
                                      f"{interrupted_ckpt}. Resume with: python -m losslab.train resume={run_id}",
                                      run_id)
        mark = time.perf_counter()
        trainer.test(parts.module, parts.test, ckpt_path="best", verbose=False)
        timings |= {"fit": fit_seconds, "test": time.perf_counter() - mark}
        test_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        checkpoint = trainer.checkpoint_callback
        best_val = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
        epochs_run = trainer.current_epoch - stopper.start_epoch  # after a resume: only this process's epochs
        mlflow.log_metrics({"fit_seconds": fit_seconds, "best_val/f1_macro": best_val,
                            "train_samples_per_second": len(fs.y["train"]) * epochs_run / max(fit_seconds, 1e-9)})
        mlflow.set_tag("best_epoch", _epoch_of(checkpoint))
        record.log_artifacts(cfg, fs, parts, output_dir / "artifacts")
        timings["logging"] = time.perf_counter() - started - sum(timings.values())  # store, params, artifacts
        mlflow.log_metrics({f"time/{k}_seconds": v for k, v in timings.items()})

    if talk:
        runs.print_run(run_id, uri, test_metrics)
    return TrainResult(run_id, uri, test_metrics, best_val, timings)


def quiet_third_party() -> None:
    """Keep Lightning's info lines (device banner, tips, checkpoint restores) and known deprecations off the
    console unless ``LOSSLAB_VERBOSE=1``; warnings about our own use still show."""
    if verbose():
        return
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning 2.6's CombinedLoader builds torch's LeafSpec, deprecated in torch 2.13 (not our code).
    ignore_warning(r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)


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

    uri = store.tracking_uri(cfg.tracking if cfg is not None else None)
    logged, output_dir = runs.resume_info(uri, run_id)
    checkpoint = Path(output_dir) / "checkpoints" / "interrupted.ckpt"
    if not checkpoint.is_file():
        raise ConfigError(f"resume={run_id}: no checkpoint at {checkpoint} (the run was not interrupted by "
                          "SIGINT/SIGTERM, or its output directory was removed).")
    logged.tracking.uri = uri
    return train(logged, output_dir, resume_run_id=run_id)


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
@friendly_exit
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best validation macro-F1 (what a sweeper maximises)."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("resume"):
        return resume(str(cfg.resume), cfg).best_val_f1_macro
    return train(cfg, HydraConfig.get().runtime.output_dir).best_val_f1_macro


if __name__ == "__main__":
    main()
