"""One training's objects, built from the config: the batches, the LightningModule, the Trainer.

Network, loss, optimizer, scheduler, logger and callbacks are ``_target_`` configs
(``conf/model``, ``conf/loss``, ``conf/optimizer``, ``conf/scheduler``, ``conf/logger``,
``conf/callbacks``); this module only supplies what the data and the run decide: the input
width, the classes and their counts, the run id and the output directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from losslab.errors import ConfigError

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from losslab.data.batches import SparseBatches
    from losslab.data.featureset import FeatureSet
    from losslab.model.module import TextClassifier
    from losslab.training.callbacks import GracefulStop


@dataclass
class Parts:
    """The module and its three batch iterables."""

    module: "TextClassifier"
    train: "SparseBatches"
    val: "SparseBatches"
    test: "SparseBatches"


def check_config(cfg: DictConfig) -> None:
    """Reject settings no object checks itself (the network, loss and optimizer validate their own)."""
    checks = [
        (cfg.optimizer.lr > 0, f"optimizer.lr={cfg.optimizer.lr} must be > 0"),
        (_size_ok(cfg.trainer.max_epochs), f"trainer.max_epochs={cfg.trainer.max_epochs} must be >= 1 or auto"),
        (_size_ok(cfg.data.batch_size), f"data.batch_size={cfg.data.batch_size} must be >= 1 or auto"),
    ]
    problems = [msg for ok, msg in checks if not ok]
    if problems:
        raise ConfigError("; ".join(problems) + ". Fix the override or the file in conf/.")


def _size_ok(value: Any) -> bool:
    return value == AUTO if isinstance(value, str) else value >= 1


AUTO = "auto"
AUTO_MIN_STEPS, AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS = 200, 10, 100


def auto_batch_size(n_train: int) -> int:
    """``clip(2^floor(log2(N / 10)), 32, 256)``: about ten batches per epoch, within 32..256 rows."""
    if n_train < 20:
        return 32
    return int(min(256, max(32, 2 ** math.floor(math.log2(n_train / 10)))))


def auto_max_epochs(n_train: int, batch_size: int) -> int:
    """Epochs giving at least ``AUTO_MIN_STEPS`` optimiser steps: ``max(10, ceil(200 / steps per epoch))``,
    at most ``AUTO_MAX_EPOCHS`` (the best-validation checkpoint is the one kept either way)."""
    steps = max(1, math.ceil(n_train / batch_size))
    return int(min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, math.ceil(AUTO_MIN_STEPS / steps))))


def resolve_sizes(cfg: DictConfig, n_train: int) -> dict[str, int]:
    """Replace ``data.batch_size: auto`` / ``trainer.max_epochs: auto`` in ``cfg`` by the numbers the training-set
    size gives (explicit numbers are kept); returns the resolved ones, so the logged config shows what ran."""
    resolved: dict[str, int] = {}
    if cfg.data.batch_size == AUTO:
        resolved["data.batch_size"] = cfg.data.batch_size = auto_batch_size(n_train)
    if cfg.trainer.max_epochs == AUTO:
        resolved["trainer.max_epochs"] = cfg.trainer.max_epochs = auto_max_epochs(n_train, int(cfg.data.batch_size))
    return resolved


def plain(node: Any) -> Any:
    """A config node as plain dicts/lists (resolved), as the module's saved hyperparameters need."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def build_parts(cfg: DictConfig, fs: "FeatureSet") -> Parts:
    """Batches and the LightningModule, seeded: the same seed gives the same init and batch order."""
    import pytorch_lightning as pl

    from losslab.data.batches import SparseBatches
    from losslab.model.module import TextClassifier, build_optimizer

    seed = int(cfg.seed)
    pl.seed_everything(seed, workers=True, verbose=False)
    module = TextClassifier(model=plain(cfg.model), loss=plain(cfg.loss), optimizer=plain(cfg.optimizer),
                            scheduler=plain(cfg.get("scheduler")) or None, in_features=fs.vocabulary_size,
                            class_names=list(fs.class_names), class_counts=fs.class_counts())
    build_optimizer(module.hparams.optimizer, module.parameters())  # an impossible setting fails before any run
    batch, eval_batch = int(cfg.data.batch_size), int(cfg.data.eval_batch_size)
    return Parts(module, SparseBatches(fs.x["train"], fs.y["train"], batch, shuffle=True, seed=seed),
                 SparseBatches(fs.x["val"], fs.y["val"], eval_batch),
                 SparseBatches(fs.x["test"], fs.y["test"], eval_batch))


def build_callbacks(callbacks: DictConfig | None, output_dir: Path, show_epochs: bool = True) -> list[Any]:
    """Every callback of ``conf/callbacks`` (a ``dirpath: null`` means ``<output_dir>/checkpoints``)."""
    from hydra.utils import instantiate

    from losslab.training.callbacks import EpochSummary

    built = []
    for spec in (callbacks or {}).values():
        if not spec or "_target_" not in spec:
            continue
        extra = {"dirpath": str(output_dir / "checkpoints")} if "dirpath" in spec and spec.dirpath is None else {}
        callback = instantiate(spec, **extra)
        if show_epochs or not isinstance(callback, EpochSummary):
            built.append(callback)
    return built


def make_trainer(cfg: DictConfig, output_dir: Path, run_id: str, uri: str, show_epochs: bool = True,
                 parts: Parts | None = None) -> tuple["pl.Trainer", "GracefulStop"]:
    """The configured Trainer logging into run ``run_id``, with the configured callbacks and graceful stop;
    under DDP each rank iterates over its own share of ``parts``' batches."""
    from hydra.utils import instantiate

    from losslab.training.callbacks import BatchesOnDevice, GracefulStop, ShardAcrossRanks

    stopper = GracefulStop()
    callbacks = [stopper, *build_callbacks(cfg.get("callbacks"), output_dir, show_epochs)]
    if parts is not None:
        callbacks += [ShardAcrossRanks([parts.train, parts.val, parts.test]),
                      BatchesOnDevice([parts.train, parts.val, parts.test])]  # after sharding: each rank its share
    logger = instantiate(cfg.logger, tracking_uri=uri, run_id=run_id)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(output_dir))
    if trainer.checkpoint_callback is None:
        raise ConfigError("callbacks: no ModelCheckpoint (callbacks.model_checkpoint in conf/callbacks/default.yaml); "
                          "the test split is scored with the best-validation checkpoint it keeps.")
    return trainer, stopper
