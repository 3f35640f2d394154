"""Train the PReLU MLP once with the configured loss and record it in MLflow.

    python -m losslab.train loss=mse model.hidden=512      # or: make train ARGS="loss=mse"

Flow: data → features → batches → model + loss → Lightning fit (best val macro-F1 checkpoint)
→ test → MLflow (params, tags, curves, test metrics, artifacts, model bundle).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from losslab.errors import ConfigError, LosslabError, debug_enabled
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


def check_config(cfg: DictConfig) -> None:
    """Reject impossible hyperparameters before anything is built."""
    checks = [
        (cfg.optimizer.lr > 0, f"optimizer.lr={cfg.optimizer.lr} must be > 0"),
        (cfg.optimizer.get("weight_decay", 0) >= 0, "optimizer.weight_decay must be >= 0"),
        (cfg.model.hidden >= 1, f"model.hidden={cfg.model.hidden} must be >= 1"),
        (cfg.model.depth >= 1, f"model.depth={cfg.model.depth} must be >= 1"),
        (0 <= cfg.model.dropout < 1, f"model.dropout={cfg.model.dropout} must be in [0, 1)"),
        (cfg.trainer.max_epochs >= 1, f"trainer.max_epochs={cfg.trainer.max_epochs} must be >= 1"),
        (cfg.data.batch_size >= 1, f"data.batch_size={cfg.data.batch_size} must be >= 1"),
    ]
    problems = [msg for ok, msg in checks if not ok]
    if problems:
        raise ConfigError("; ".join(problems) + ". Fix the override or the file in conf/.")


def train(cfg: DictConfig, output_dir: str | Path, features: "FeatureSet | None" = None,
          resume_run_id: str | None = None) -> TrainResult:
    """One full training run; the MLflow run ends FINISHED, FAILED (with the reason) or KILLED.

    ``features`` lets a caller (a pipeline stage) pass prepared inputs; by default they are
    built from ``cfg.data`` / ``cfg.features`` (memoised per process, so sweeps featurize once).
    ``resume_run_id`` reopens an interrupted run and continues from its checkpoint.
    """
    started = time.perf_counter()
    import mlflow
    import pytorch_lightning  # noqa: F401  (here, so that time/imports_seconds counts it)

    from losslab.errors import TrainingInterrupted
    from losslab.tracking import runs, store
    from losslab.data.featureset import build_feature_set

    timings = {"imports": time.perf_counter() - started}
    _freeze_heap_once()

    check_config(cfg)
    output_dir = Path(output_dir)
    seed = int(cfg.seed)
    uri = store.tracking_uri(cfg.tracking)
    store.check_store(uri)
    if not resume_run_id:
        store.experiment_id_for(uri, str(cfg.tracking.experiment))  # creates the store once, before any work
    mark = time.perf_counter()
    fs = features if features is not None else build_feature_set(cfg.data, cfg.features, seed)
    _print_data_notes(fs.stats)
    parts = _build(cfg, fs)
    timings["data"] = time.perf_counter() - mark

    with runs.mlflow_run(uri, str(cfg.tracking.experiment), str(cfg.tracking.run_name), _run_tags(cfg, fs),
                             parent_run_id=cfg.tracking.get("parent_run_id"), resume_run_id=resume_run_id) as run:
        run_id = run.info.run_id
        if not resume_run_id:
            mlflow.log_params(runs.flatten_config(OmegaConf.to_container(cfg, resolve=True)))
            mlflow.log_params({f"dataset.{k}": v for k, v in fs.stats.items()} | {"vocabulary_size": fs.vocabulary_size})
            mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
            mlflow.set_tag("output_dir", str(output_dir.resolve()))
        trainer, checkpoint, stopper = _make_trainer(cfg, output_dir, run_id, uri)
        mlflow.set_tags(runs.device_tags(trainer.strategy.root_device))

        interrupted_ckpt = output_dir / "checkpoints" / "interrupted.ckpt"
        resume_from = str(interrupted_ckpt) if resume_run_id else None
        start = time.perf_counter()
        trainer.fit(parts.module, parts.train, parts.val, ckpt_path=resume_from)
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
        best_val = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
        mlflow.log_metrics({"fit_seconds": fit_seconds, "best_val/f1_macro": best_val,
                            "train_samples_per_second": len(fs.y["train"]) * trainer.current_epoch
                            / max(fit_seconds, 1e-9)})
        mlflow.set_tag("best_epoch", _epoch_of(checkpoint))
        _log_artifacts(cfg, fs, parts, output_dir / "artifacts")
        timings["logging"] = time.perf_counter() - started - sum(timings.values())  # store, params, artifacts
        mlflow.log_metrics({f"time/{k}_seconds": v for k, v in timings.items()})

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


@dataclass
class _Parts:
    module: Any
    train: Any
    val: Any
    test: Any
    model_params: dict[str, Any]


def _build(cfg: DictConfig, fs: "FeatureSet") -> _Parts:
    """Batches, network, loss, optimiser → the LightningModule (seeded: same seed, same init)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from losslab.data.batches import SparseBatches
    from losslab.model.losses import build_loss
    from losslab.model.network import PReLUMLP
    from losslab.model.module import TextClassifier

    seed = int(cfg.seed)
    batch, eval_batch = int(cfg.data.batch_size), int(cfg.data.eval_batch_size)
    pl.seed_everything(seed, workers=True, verbose=False)
    loss = build_loss(cfg.loss, fs.class_counts())
    model_params = {k: cfg.model[k] for k in ("hidden", "depth", "dropout")}
    net = PReLUMLP(fs.vocabulary_size, fs.num_classes, **model_params)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = TextClassifier(net, loss, instantiate(cfg.optimizer), fs.class_names, scheduler)
    return _Parts(module, SparseBatches(fs.x["train"], fs.y["train"], batch, shuffle=True, seed=seed),
                  SparseBatches(fs.x["val"], fs.y["val"], eval_batch),
                  SparseBatches(fs.x["test"], fs.y["test"], eval_batch), model_params)


def _make_trainer(cfg: DictConfig, output_dir: Path, run_id: str, uri: str) -> tuple[Any, Any, Any]:
    """The configured Trainer with the best-val-F1 checkpoint, the epoch summary and graceful stop."""
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    from losslab.training.callbacks import EpochSummary, GracefulStop, MLflowEpochLogger

    checkpoint = ModelCheckpoint(dirpath=output_dir / "checkpoints", filename="best-epoch{epoch}",
                                 auto_insert_metric_name=False, monitor="val/f1_macro", mode="max", save_top_k=1,
                                 save_weights_only=True)
    stopper = GracefulStop()
    extra = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=[checkpoint, EpochSummary(), stopper, *extra],
                          logger=MLflowEpochLogger(run_id, uri), default_root_dir=str(output_dir))
    return trainer, checkpoint, stopper


def _run_tags(cfg: DictConfig, fs: "FeatureSet") -> dict[str, str]:
    from losslab.tracking import runs

    commit, dirty = runs.git_state()
    return {"loss": str(cfg.loss.name), "seed": str(cfg.seed), "git_commit": commit, "git_dirty": str(dirty).lower(),
            "dataset_md5": fs.dataset_md5, "dataset": str(cfg.data.name), **runs.environment_tags(),
            **{str(k): str(v) for k, v in (cfg.tracking.get("tags") or {}).items()}}


def _log_artifacts(cfg: DictConfig, fs: "FeatureSet", parts: _Parts, directory: Path) -> None:
    """Test report + confusion matrix, and the model bundle, as run artifacts."""
    import mlflow
    import numpy as np

    from losslab.serving.bundle import save_bundle
    from losslab.training.evaluation import write_test_artifacts
    from losslab.data.text import Normalizer

    module = parts.module
    probs = np.concatenate([p.numpy() for p in module.test_probs])
    targets = np.concatenate([t.numpy() for t in module.test_targets])
    write_test_artifacts(directory / "evaluation", probs, targets, fs.class_names,
                         title=f"{cfg.tracking.run_name} — test")
    save_bundle(directory / "model", featurizer=fs.featurizer, net=module.net.cpu(), class_names=fs.class_names,
                normalizer=Normalizer(**dict(cfg.data.normalize)), model_params=parts.model_params,
                activation=module.loss.activation)
    mlflow.log_artifacts(str(directory / "evaluation"), "evaluation")
    mlflow.log_artifacts(str(directory / "model"), "model")


def _print_data_notes(stats: dict[str, int]) -> None:
    notes = [f"{stats[k]} empty text(s) dropped from the {k.split('_')[0]} file" for k in
             ("train_empty_dropped", "test_empty_dropped") if stats.get(k)]
    if stats.get("train_duplicates"):
        notes.append(f"{stats['train_duplicates']} duplicated text(s) in the training file (kept; see dataset.* params)")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def _epoch_of(checkpoint: Any) -> str:
    """The epoch of the best checkpoint, read from its file name ``best-epoch<N>.ckpt``."""
    import re

    found = re.search(r"best-epoch(\d+)", str(checkpoint.best_model_path))
    return found.group(1) if found else "unknown"


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best validation macro-F1 (what a sweeper maximises)."""
    from hydra.core.hydra_config import HydraConfig

    from losslab.errors import TrainingInterrupted

    try:
        if cfg.get("resume"):
            return resume(str(cfg.resume), cfg).best_val_f1_macro
        return train(cfg, HydraConfig.get().runtime.output_dir).best_val_f1_macro
    except LosslabError as exc:
        if debug_enabled():
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(130)


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


if __name__ == "__main__":
    main()
