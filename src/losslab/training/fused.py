"""Every loss of one seed in one pass (``python -m losslab.train fused.losses=[ce,mse,bce] seed=0``).

The K losses train together as one ``FusedClassifier`` on identical batches (``losslab.model.fused``): each
member starts from the weights its separate training gets (``build_parts`` with the same seed), gets its own
gradient and optimiser state. Afterwards each member is recorded as its own complete MLflow run — the same
params, tags, curves, ``test/*`` and ``test_tuned/*`` (operating point tuned on validation with the member's
best-validation weights), artifacts and model bundle as a separate training — plus the tag ``fused=true``.
The test split is scored per member by a plain ``TextClassifier`` holding the member's best weights.
Not supported fused: DDP, ``resume=``, gradient clipping (its global norm would mix the members).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import Logger

from losslab.errors import ConfigError
from losslab.training.diagnostics import LossDiagnostics, measure

if TYPE_CHECKING:
    from losslab.data.featureset import FeatureSet
    from losslab.model.fused import FusedClassifier
    from losslab.training.build import Parts
    from losslab.training.result import TrainResult


@dataclass
class FusedResult:
    """One ``TrainResult`` per member (by loss name) and the fused fit's wall time."""

    members: dict[str, "TrainResult"]
    fit_seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def fused_losses(cfg: DictConfig) -> list[str]:
    """``fused.losses`` of a config as a list (empty: the single-loss training)."""
    losses = OmegaConf.select(cfg, "fused.losses")
    if not losses:
        return []
    names = [str(x) for x in losses] if OmegaConf.is_list(losses) or isinstance(losses, list) else \
        [x.strip() for x in str(losses).split(",") if x.strip()]
    if len(set(names)) != len(names):
        raise ConfigError(f"fused.losses={names}: a loss is named twice.")
    return names


def member_config(cfg: DictConfig, loss: str) -> DictConfig:
    """``cfg`` with ``loss`` from ``conf/loss/<loss>.yaml``: what ``python -m losslab.train loss=<loss>`` composes."""
    from losslab.model.losses import available_losses
    from losslab.paths import config_dir

    if loss not in available_losses():
        raise ConfigError(f"fused.losses: unknown loss '{loss}'; valid losses: {', '.join(available_losses())}.")
    member = copy.deepcopy(cfg)
    with open_dict(member):
        member.loss = OmegaConf.load(config_dir() / "loss" / f"{loss}.yaml")
    return member


def check_fused_config(cfg: DictConfig) -> None:
    """Reject what the fused training cannot do as separate trainings would."""
    problems = []
    if OmegaConf.select(cfg, "trainer.gradient_clip_val"):
        problems.append("trainer.gradient_clip_val (a global norm would mix the members' gradients)")
    strategy = str(OmegaConf.select(cfg, "trainer.strategy") or "auto")
    devices = OmegaConf.select(cfg, "trainer.devices")
    if "ddp" in strategy or (devices not in (None, 1, "1", "auto") and not isinstance(devices, list)):
        problems.append(f"trainer.strategy={strategy}/devices={devices} (one device only)")
    if cfg.get("resume"):
        problems.append("resume= (a fused training keeps no checkpoint)")
    stopping = early_stopping(cfg)
    if stopping is not None:
        from losslab.model.member_stopping import SUPPORTED

        extra = sorted(k for k, v in stopping.items() if k not in SUPPORTED and v not in (None, False))
        if extra:
            problems.append(f"callbacks.early_stopping.{extra[0]} (each member stops by patience/min_delta only)")
    if problems:
        raise ConfigError("fused.losses cannot be combined with " + "; ".join(problems) + ".")


def early_stopping(cfg: DictConfig) -> dict[str, Any] | None:
    """``callbacks.early_stopping`` as a plain dict when it is Lightning's ``EarlyStopping``, else None."""
    node = OmegaConf.select(cfg, "callbacks.early_stopping")
    if not node or not str(node.get("_target_", "")).endswith("EarlyStopping"):
        return None
    settings = OmegaConf.to_container(node, resolve=True)
    assert isinstance(settings, dict)
    return {str(k): v for k, v in settings.items()}


class MemberCurves(Logger):
    """Lightning logger of the fused fit: keeps each member's epoch curves (step = epoch) in memory, written
    into the member's run afterwards (``member_key`` names; others are dropped)."""

    def __init__(self, members: int) -> None:
        super().__init__()
        self.curves: list[list[tuple[str, float, int]]] = [[] for _ in range(members)]

    @property
    def name(self) -> str:
        return "fused"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Each member's run logs its own resolved config."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from losslab.model.fused import split_member_key

        values = dict(metrics)
        epoch = values.pop("epoch", None)
        for name, value in values.items():
            found = split_member_key(name)
            if found is not None:
                self.curves[found[0]].append((found[1], float(value), int(epoch) if epoch is not None else step or 0))


class FusedDiagnostics(LossDiagnostics):
    """``diag/*`` per member (``losslab.training.diagnostics``), measured on a ``PReLUMLP`` holding the
    member's current weights, under ``member_key`` names."""

    def __init__(self, scratch: Sequence[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scratch = list(scratch)  # one PReLUMLP per member, overwritten each time

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from losslab.model.fused import member_key
        from losslab.training.diagnostics import fixed_sample

        if not self.enabled or trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        if self._batch is None:
            self._batch = fixed_sample(trainer.train_dataloader, self.sample_size, self.seed)
        batch = tuple(t.to(pl_module.device) for t in self._batch)
        values: dict[str, float] = {}
        for k, net in enumerate(self.scratch):
            if pl_module.member_done(k):  # stopped early: its curves end at its last epoch
                continue
            started = time.perf_counter()
            net.load_state_dict(pl_module.net.member_state(k))
            found = measure(net.to(pl_module.device), pl_module.losses[k], batch, self.wrong_below,
                            self.saturated_above)
            found["diag/seconds"] = time.perf_counter() - started
            values |= {member_key(k, key): value for key, value in found.items()}
        pl_module.log_dict(values, on_step=False, on_epoch=True, batch_size=1)


class FusedEpochSummary(pl.Callback):
    """One line per epoch: each member's ``val/f1_macro``."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import sys

        from losslab.model.fused import member_key

        metrics = trainer.callback_metrics
        parts = [f"{name} {float(metrics[member_key(k, 'val/f1_macro')]):.4f}" for k, name in enumerate(self.names)
                 if member_key(k, "val/f1_macro") in metrics]
        print(f"epoch {trainer.current_epoch:>3}  val/f1_macro  " + "  ".join(parts), file=sys.stderr, flush=True)


def train_fused(cfg: DictConfig, output_dir: str | Path, features: "FeatureSet | None" = None) -> FusedResult:
    """Train ``fused.losses`` together and record one MLflow run per member (under ``<output_dir>/<loss>``)."""
    started = time.perf_counter()
    import mlflow  # noqa: F401  (here, so that time/imports_seconds counts it)
    from hydra.utils import instantiate

    from losslab.console import verbose
    from losslab.data.featureset import build_feature_set
    from losslab.model.fused import FusedClassifier, FusedMLP
    from losslab.model.member_stopping import MemberStopping
    from losslab.tracking import runs
    from losslab.training.build import build_parts, check_config, plain, resolve_sizes
    from losslab.training.callbacks import GracefulStop
    from losslab.console import quiet_third_party

    timings = {"imports": time.perf_counter() - started}
    quiet_third_party()
    names = fused_losses(cfg)
    if not names:
        raise ConfigError("fused.losses is empty: name the losses to train together, e.g. fused.losses=[ce,mse].")
    check_config(cfg)
    check_fused_config(cfg)
    output_dir = Path(output_dir)
    in_sweep = bool(cfg.tracking.get("parent_run_id"))
    talk = verbose() or not in_sweep
    mark = time.perf_counter()
    uri = runs.open_store(cfg.tracking)
    timings["store"] = time.perf_counter() - mark
    mark = time.perf_counter()
    fs = features if features is not None else build_feature_set(cfg.data, cfg.features, int(cfg.seed))
    auto_sized = resolve_sizes(cfg, len(fs.y["train"]))
    members = [member_config(cfg, name) for name in names]
    parts = [build_parts(member, fs) for member in members]  # each member seeded and built as its own training
    net = FusedMLP([p.module.net for p in parts], batched=bool(OmegaConf.select(cfg, "fused.batched")))
    stopping_settings = early_stopping(cfg)
    stopping = (MemberStopping.from_config(len(names), stopping_settings, OmegaConf.select(cfg, "trainer.min_epochs"))
                if stopping_settings is not None else None)
    module = FusedClassifier(net, [p.module.loss for p in parts], plain(cfg.optimizer),
                             plain(cfg.get("scheduler")) or None, list(fs.class_names), stopping)
    timings["data"] = time.perf_counter() - mark

    mark = time.perf_counter()
    stopper = GracefulStop()
    callbacks: list[Any] = [stopper]
    diagnostics = OmegaConf.select(cfg, "callbacks.diagnostics")
    if diagnostics and "_target_" in diagnostics:
        settings = {k: v for k, v in plain(diagnostics).items() if not str(k).startswith("_")}
        callbacks.append(FusedDiagnostics([copy.deepcopy(p.module.net) for p in parts], **settings))
    if talk:
        callbacks.append(FusedEpochSummary(names))
    curves = MemberCurves(len(names))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=curves, enable_checkpointing=False,
                          default_root_dir=str(output_dir))
    timings["setup"] = time.perf_counter() - mark  # the Trainer and its callbacks (as train's time/setup_seconds)
    start = time.perf_counter()
    try:
        trainer.fit(module, parts[0].train, parts[0].val)  # the members' batches are identical (same seed)
    except BaseException as exc:
        _record_failures(cfg, members, fs, output_dir, uri, exc)
        raise
    fit_seconds = time.perf_counter() - start
    timings["fit"] = fit_seconds
    if stopper.signal_name:
        from losslab.errors import TrainingInterrupted

        exc = TrainingInterrupted(f"{stopper.signal_name} during the fused training of {', '.join(names)} (a fused "
                                  "training keeps no checkpoint: run it again)", "", stopper.signal_name)
        _record_failures(cfg, members, fs, output_dir, uri, exc)
        raise exc
    results = {}
    for k, name in enumerate(names):
        context = _Member(k, members[k], parts[k], output_dir / name, curves.curves[k], dict(timings), auto_sized,
                          trainer, len(names))
        results[name] = _record_member(context, module, fs, uri, started)
    if talk:
        _print_members(results)
    return FusedResult(results, fit_seconds, timings)


@dataclass
class _Member:
    k: int
    cfg: DictConfig
    parts: "Parts"
    output_dir: Path
    curves: list[tuple[str, float, int]]
    timings: dict[str, float]
    auto_sized: dict[str, int]
    trainer: pl.Trainer
    count: int


def _record_member(m: _Member, module: "FusedClassifier", fs: "FeatureSet", uri: str, started: float) -> "TrainResult":
    """Member ``m.k``'s complete run: what ``losslab.training.train.train`` records, from the fused fit."""
    import mlflow
    from hydra.utils import instantiate
    from mlflow.entities import Metric

    from losslab.model.metrics import absent_classes
    from losslab.model.module import NonFiniteLossError
    from losslab.tracking import outbox, runs
    from losslab.training import record
    from losslab.training.result import TrainResult

    cfg, parts, k = m.cfg, m.parts, m.k
    mark = time.perf_counter()
    tags = record.run_tags(cfg, fs) | fused_tags(cfg, m.timings["fit"])
    with runs.mlflow_run(uri, str(cfg.tracking.experiment), str(cfg.tracking.run_name), tags,
                         parent_run_id=cfg.tracking.get("parent_run_id")) as run:
        run_id = run.info.run_id
        outbox.watch(run_id, m.output_dir, uri)
        record.log_run_inputs(cfg, fs, m.output_dir)
        mlflow.set_tags(record.placement_tags(m.trainer.strategy.root_device, m.auto_sized))
        absent = absent_classes(_tensor(fs.y["val"]), list(fs.class_names))
        if absent:
            mlflow.set_tag("absent_classes.val", ", ".join(absent))
        now = int(time.time() * 1000)
        last = module.stopping.last_epoch[k] if module.stopping is not None else None  # it stopped early there
        epochs = m.trainer.current_epoch if last is None else last + 1
        batch = [Metric(key, value, now, step) for key, value, step in m.curves if last is None or step <= last]
        client = mlflow.MlflowClient()
        for begin in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
            client.log_batch(run_id, metrics=batch[begin:begin + 1000])
        if module.failed_epoch[k] is not None:
            raise NonFiniteLossError(f"train/loss is not finite at epoch {module.failed_epoch[k]} (fused training)",
                                     epoch=module.failed_epoch[k])
        parts.module.net.load_state_dict(module.best_state[k])
        tester = instantiate(cfg.trainer, callbacks=[], logger=instantiate(cfg.logger, tracking_uri=uri, run_id=run_id),
                             enable_checkpointing=False, default_root_dir=str(m.output_dir))
        test_started = time.perf_counter()
        tester.test(parts.module, parts.test, verbose=False)
        timings = m.timings | {"test": time.perf_counter() - test_started}
        test_metrics = {key: float(v) for key, v in tester.callback_metrics.items() if key.startswith("test/")}
        best_val = float(module.best_score[k]) if module.best_score[k] is not None else float("nan")
        share = m.timings["fit"] / m.count  # this member's share of the fused fit
        best_epoch = str(module.best_epoch[k]) if module.best_epoch[k] is not None else "unknown"
        test_metrics |= record.log_outcome(cfg, fs, parts, share, epochs, best_val, best_epoch)
        record.log_artifacts(cfg, fs, parts, m.output_dir / "artifacts")
        timings["fit"] = share
        timings["logging"] = time.perf_counter() - mark - timings["test"]
        mlflow.log_metrics({f"time/{key}_seconds": v for key, v in timings.items()})
    return TrainResult(run_id, uri, test_metrics, best_val, timings)


def _tensor(values: Any) -> Any:
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(values, dtype=np.int64))


def fused_tags(cfg: DictConfig, fit_seconds: float) -> dict[str, str]:
    """What marks a member run of a fused training (the rest of its record is a separate training's)."""
    return {"fused": "true", "fused_losses": ",".join(fused_losses(cfg)), "fused_fit_seconds": f"{fit_seconds:.3f}"}


def _record_failures(cfg: DictConfig, members: Sequence[DictConfig], fs: "FeatureSet", output_dir: Path, uri: str,
                     exc: BaseException) -> None:
    """The fused fit failed or was stopped: every member's run ends FAILED (KILLED if interrupted) with the reason."""
    import contextlib

    from losslab.tracking import runs
    from losslab.training import record

    for member in members:
        with contextlib.suppress(BaseException):
            with runs.mlflow_run(uri, str(member.tracking.experiment), str(member.tracking.run_name),
                                 record.run_tags(member, fs) | fused_tags(member, float("nan")),
                                 parent_run_id=member.tracking.get("parent_run_id")):
                record.log_run_inputs(member, fs, output_dir / str(member.loss.name))
                raise exc


def _print_members(results: Mapping[str, "TrainResult"]) -> None:
    print("\nFused training: one MLflow run per loss (test metrics of its best validation checkpoint)")
    for name, result in results.items():
        metrics = result.test_metrics
        print(f"  {name:<12} test/f1_macro {metrics.get('test/f1_macro', float('nan')):.4f}  test_tuned/f1_macro "
              f"{metrics.get('test_tuned/f1_macro', float('nan')):.4f}  run {result.run_id}")
    if results:
        print(f"Tracking URI:  {next(iter(results.values())).tracking_uri}")
