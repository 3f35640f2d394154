"""Train the PReLU MLP once with the configured loss and record it in MLflow.

    python -m losslab.train loss=mse model.hidden=512      # or: make train ARGS="loss=mse"

Flow: data → features → batches → model + loss → Lightning fit (best val macro-F1 checkpoint)
→ test → MLflow (params, tags, curves, test metrics, artifacts, model bundle).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from losslab.errors import ConfigError, LosslabError, debug_enabled
from losslab.paths import config_dir

if TYPE_CHECKING:
    from losslab.featureset import FeatureSet


@dataclass
class TrainResult:
    """What a caller (CLI, sweep, test) gets back from one training."""

    run_id: str
    tracking_uri: str
    test_metrics: dict[str, float]
    best_val_f1_macro: float


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


def train(cfg: DictConfig, output_dir: str | Path, features: "FeatureSet | None" = None) -> TrainResult:
    """One full training run; the MLflow run ends FINISHED, or FAILED/KILLED with the reason.

    ``features`` lets a caller (a pipeline stage) pass prepared inputs; by default they are
    built from ``cfg.data`` / ``cfg.features`` (memoised per process, so sweeps featurize once).
    """
    import mlflow
    import numpy as np
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    from losslab import tracking
    from losslab.batches import SparseBatches
    from losslab.bundle import save_bundle
    from losslab.callbacks import EpochSummary, MLflowEpochLogger
    from losslab.evaluation import write_test_artifacts
    from losslab.featureset import build_feature_set
    from losslab.losses import build_loss
    from losslab.model import PReLUMLP
    from losslab.module import TextClassifier
    from losslab.text import Normalizer

    check_config(cfg)
    output_dir = Path(output_dir)
    seed = int(cfg.seed)

    fs = features if features is not None else build_feature_set(cfg.data, cfg.features, seed)
    batch, eval_batch = int(cfg.data.batch_size), int(cfg.data.eval_batch_size)
    train_batches = SparseBatches(fs.x["train"], fs.y["train"], batch, shuffle=True, seed=seed)
    val_batches = SparseBatches(fs.x["val"], fs.y["val"], eval_batch)
    test_batches = SparseBatches(fs.x["test"], fs.y["test"], eval_batch)

    pl.seed_everything(seed, workers=True, verbose=False)  # init and dropout do not depend on featurizing
    loss = build_loss(cfg.loss, fs.class_counts())
    model_params = {k: cfg.model[k] for k in ("hidden", "depth", "dropout")}
    net = PReLUMLP(fs.vocabulary_size, fs.num_classes, **model_params)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = TextClassifier(net, loss, instantiate(cfg.optimizer), fs.class_names, scheduler)

    uri = tracking.tracking_uri(cfg.tracking)
    commit, dirty = tracking.git_state()
    tags = {"loss": str(cfg.loss.name), "seed": str(seed), "git_commit": commit, "git_dirty": str(dirty).lower(),
            "dataset_md5": fs.dataset_md5, "dataset": str(cfg.data.name), **tracking.environment_tags(),
            **{str(k): str(v) for k, v in (cfg.tracking.get("tags") or {}).items()}}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with tracking.mlflow_run(uri, str(cfg.tracking.experiment), str(cfg.tracking.run_name), tags,
                             parent_run_id=cfg.tracking.get("parent_run_id")) as run:
        run_id = run.info.run_id
        mlflow.log_params(tracking.flatten_config(resolved))
        mlflow.log_params({f"dataset.{k}": v for k, v in fs.stats.items()} | {"vocabulary_size": fs.vocabulary_size})
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

        checkpoint = ModelCheckpoint(dirpath=output_dir / "checkpoints", filename="best-epoch{epoch}", auto_insert_metric_name=False, monitor="val/f1_macro",
                                     mode="max", save_top_k=1, save_weights_only=True)
        trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=[checkpoint, EpochSummary()],
                                          logger=MLflowEpochLogger(run_id, uri),
                                          default_root_dir=str(output_dir))
        mlflow.set_tags(tracking.device_tags(trainer.strategy.root_device))

        start = time.perf_counter()
        trainer.fit(module, train_batches, val_batches)
        fit_seconds = time.perf_counter() - start
        trainer.test(module, test_batches, ckpt_path="best", verbose=False)

        test_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        best_val = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
        epochs_run = trainer.current_epoch
        mlflow.log_metrics({"fit_seconds": fit_seconds, "best_val/f1_macro": best_val,
                            "train_samples_per_second": len(fs.y["train"]) * epochs_run / max(fit_seconds, 1e-9)})
        mlflow.set_tag("best_epoch", _epoch_of(checkpoint))

        probs = np.concatenate([p.numpy() for p in module.test_probs])
        targets = np.concatenate([t.numpy() for t in module.test_targets])
        artifacts = output_dir / "artifacts"
        write_test_artifacts(artifacts / "evaluation", probs, targets, fs.class_names,
                             title=f"{cfg.tracking.run_name} — test")
        save_bundle(artifacts / "model", featurizer=fs.featurizer, net=module.net.cpu(), class_names=fs.class_names,
                    normalizer=Normalizer(**dict(cfg.data.normalize)), model_params=model_params,
                    activation=loss.activation)
        mlflow.log_artifacts(str(artifacts / "evaluation"), "evaluation")
        mlflow.log_artifacts(str(artifacts / "model"), "model")

    tracking.print_run(run_id, uri, test_metrics)
    return TrainResult(run_id, uri, test_metrics, best_val)


def _epoch_of(checkpoint: Any) -> str:
    """The epoch of the best checkpoint, read from its file name ``best-epoch<N>.ckpt``."""
    import re

    found = re.search(r"best-epoch(\d+)", str(checkpoint.best_model_path))
    return found.group(1) if found else "unknown"


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best validation macro-F1 (what a sweeper maximises)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return train(cfg, HydraConfig.get().runtime.output_dir).best_val_f1_macro
    except LosslabError as exc:
        if debug_enabled():
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
