"""k-fold bagging as one model: ``python -m losslab.train ensemble.folds=5``.

The seed's training and validation splits are pooled and cut into k stratified folds (seeded by
``seed``). Fold i's model trains on the other k-1 folds with the configured loss, optimizer and
Trainer (``build_parts`` / ``make_trainer`` / Lightning fit, its curves prefixed ``fold<i>-`` in the one
run) and keeps its best epoch on its held-out fold, which it then predicts: the out-of-fold (OOF)
probabilities cover every pooled row once. The operating point is chosen on those OOF probabilities
(``operating_point.*``, as a single run chooses it on validation); the test split is only scored, by the
mean of the k models' probabilities. One MLflow run (tags ``ensemble=folds``, ``ensemble_members=k``) holds
``test/*``, ``test_tuned/*``, ``val/*`` (OOF), ``best_val/f1_macro`` (OOF macro-F1), ``val/threshold`` or
``val/offset_*``, ``evaluation/`` (``val_predictions.csv`` = the OOF rows) and ``model/`` = an ensemble bundle
(one shared featurizer, k networks; ``losslab.serving.bundle``). The fold models are not runs of their own.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from losslab.console import verbose
from losslab.errors import ConfigError, TrainingInterrupted

if TYPE_CHECKING:
    from losslab.data.featureset import FeatureSet

ENSEMBLE_TAG, MEMBERS_TAG = "ensemble", "ensemble_members"


@dataclass
class EnsembleResult:
    """What ``train_folds`` returns: the fields of ``training.train.TrainResult`` (main reads the same ones)."""

    run_id: str
    tracking_uri: str
    test_metrics: dict[str, float]
    best_val_f1_macro: float
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class FoldModel:
    """One fold's model after fit: its network (best epoch), OOF and test probabilities."""

    net: Any
    oof: np.ndarray
    test: np.ndarray
    best_epoch: str
    best_val: float
    device: Any
    activation: str


def fold_assignment(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of every row: scikit-learn's ``StratifiedKFold(shuffle=True, random_state=seed)``."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    if folds < 2:
        raise ConfigError(f"ensemble.folds={folds}: use 0 (one model) or k >= 2 folds.")
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    if smallest < folds:
        raise ConfigError(f"ensemble.folds={folds}: a class has only {smallest} training rows, fewer than the folds; "
                          f"use ensemble.folds<={smallest}.")
    out = np.empty(len(y), dtype=np.int64)
    for i, (_, held) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=int(seed)).split(y, y)):
        out[held] = i
    return out


def rule_settings(cfg: DictConfig, class_names: Sequence[str]) -> tuple[str, int | None]:
    """``(metric, positive class)`` of ``operating_point.*``, resolved as ``training.operating.tune`` does."""
    metric = str(OmegaConf.select(cfg, "operating_point.metric", default="f1_minority"))
    class_name = OmegaConf.select(cfg, "operating_point.class_name", default=None)
    names = list(class_names)
    if class_name is not None:
        if str(class_name) not in names:
            raise ConfigError(f"operating_point.class_name={class_name}: not one of the classes {names}.")
        return metric, names.index(str(class_name))
    return ("f1_minority" if metric == "f1_class" else metric), None


def tune_rule(cfg: DictConfig, probs: np.ndarray, y: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """The decision rule chosen on (held-out) ``probs`` only; the minority class is that of ``y``."""
    from losslab.model.operating_point import choose_rule

    metric, positive = rule_settings(cfg, class_names)
    rule = choose_rule(probs, y, metric=metric, positive=positive,
                       class_counts=np.bincount(y, minlength=len(class_names)))
    if rule["kind"] == "threshold":
        rule["class_name"] = list(class_names)[rule["positive"]]
    return rule


def ensemble_metrics(probs: np.ndarray, y: np.ndarray, rule: dict[str, Any], val_probs: np.ndarray,
                     val_y: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """A single run's metric names: ``test/*`` (argmax), ``test_tuned/*`` (the rule), ``val/*`` + the rule's
    ``val/threshold`` / ``val/offset_*`` and ``val_tuned/<metric>`` on the held-out probabilities."""
    from losslab.model.operating_point import apply_rule, label_metrics, rule_metrics
    from losslab.training.baseline import scores

    names = list(class_names)
    out = scores(probs, y, "test", names) | scores(val_probs, val_y, "val", names)
    out |= {f"test_tuned/{k}": v for k, v in label_metrics(y, apply_rule(probs, rule), names).items()}
    out |= {f"val/{k}": v for k, v in rule_metrics(rule, names).items()}
    out[f"val_tuned/{rule['metric']}"] = float(rule["val_score"])
    out["best_val/f1_macro"] = out["val/f1_macro"]
    return out


def train_fold(cfg: DictConfig, fs: "FeatureSet", x: Any, y: np.ndarray, folds: np.ndarray, i: int,
               output_dir: Path, run_id: str, uri: str) -> FoldModel:
    """Fold ``i``'s model: fit on the other folds, best epoch on fold ``i``, then OOF and test probabilities."""
    from losslab.data.featureset import FeatureSet
    from losslab.training.build import build_parts, make_trainer
    from losslab.training.operating import validation_probabilities

    held = folds == i
    fold_fs = FeatureSet({"train": x[~held], "val": x[held], "test": fs.x["test"]},
                         {"train": y[~held], "val": y[held], "test": fs.y["test"]}, list(fs.class_names),
                         fs.featurizer, fs.dataset_md5, dict(fs.stats))
    fold_cfg = copy.deepcopy(cfg)
    with open_dict(fold_cfg):
        fold_cfg.seed = int(cfg.seed) + i  # each member its own init and batch order
        fold_cfg.logger.prefix = f"fold{i}"  # its curves in the ensemble's run: fold<i>-val/f1_macro, ...
    parts = build_parts(fold_cfg, fold_fs)
    trainer, stopper = make_trainer(fold_cfg, output_dir / f"fold{i}", run_id, uri, show_epochs=verbose(),
                                    parts=parts)
    trainer.fit(parts.module, parts.train, parts.val)
    if stopper.signal_name:
        raise TrainingInterrupted(f"{stopper.signal_name} during fold {i}: an ensemble run does not resume; "
                                  "start it again.", run_id, stopper.signal_name)
    best = trainer.checkpoint_callback
    trainer.test(parts.module, parts.test, ckpt_path=best.best_model_path or "best", verbose=False)
    oof = validation_probabilities(fold_cfg, fold_fs, parts)  # the best checkpoint, loaded by test
    test = np.concatenate([p.numpy() for p in parts.module.test_probs])
    found = re.search(r"best-epoch(\d+)", str(best.best_model_path or ""))
    score = float(best.best_model_score) if best.best_model_score is not None else float("nan")
    return FoldModel(parts.module.net.cpu(), oof, test, found.group(1) if found else "unknown", score,
                     trainer.strategy.root_device, str(parts.module.loss.activation))


def train_folds(cfg: DictConfig, output_dir: str | Path) -> EnsembleResult:
    """k-fold bagging of ``cfg`` as one MLflow run (see the module docstring). The caller quiets Lightning's
    console (``training.train.main``: ``quiet_third_party``)."""
    started = time.perf_counter()
    import mlflow
    import scipy.sparse as sp

    from losslab.data.featureset import build_feature_set
    from losslab.serving.bundle import mean_probabilities
    from losslab.tracking import outbox, runs
    from losslab.training import record
    from losslab.training.build import check_config, resolve_sizes

    timings = {"imports": time.perf_counter() - started}
    in_sweep = bool(cfg.tracking.get("parent_run_id"))
    talk = verbose() or not in_sweep
    check_config(cfg)
    k = int(cfg.ensemble.folds)
    output_dir = Path(output_dir)
    uri = runs.open_store(cfg.tracking)
    mark = time.perf_counter()
    fs = build_feature_set(cfg.data, cfg.features, int(cfg.seed))
    x = sp.vstack([fs.x["train"], fs.x["val"]]).tocsr()  # the non-test rows of the training file
    y = np.concatenate([fs.y["train"], fs.y["val"]])
    folds = fold_assignment(y, k, int(cfg.seed))
    auto_sized = resolve_sizes(cfg, int((folds != 0).sum()))  # a member trains on k-1 folds
    if talk:
        record.print_data_notes(fs.stats)
    timings["data"] = time.perf_counter() - mark
    tags = record.run_tags(cfg, fs) | {ENSEMBLE_TAG: "folds", MEMBERS_TAG: str(k)}
    with runs.mlflow_run(uri, str(cfg.tracking.experiment), f"{cfg.tracking.run_name}-{k}fold", tags,
                         parent_run_id=cfg.tracking.get("parent_run_id")) as run:
        run_id = run.info.run_id
        outbox.watch(run_id, output_dir, uri)
        record.log_run_inputs(cfg, fs, output_dir)
        mark = time.perf_counter()
        members = []
        for i in range(k):
            members.append(train_fold(cfg, fs, x, y, folds, i, output_dir, run_id, uri))
            if talk:
                print(f"fold {i + 1}/{k}: best epoch {members[-1].best_epoch}, held-out f1_macro "
                      f"{members[-1].best_val:.4f}", flush=True)
        timings["fit"] = time.perf_counter() - mark
        mlflow.set_tags(record.placement_tags(members[0].device, auto_sized))
        oof = np.zeros((len(y), fs.num_classes), dtype=np.float32)
        for i, member in enumerate(members):
            oof[folds == i] = member.oof
        rule = tune_rule(cfg, oof, y, fs.class_names)  # out-of-fold only: the test split chooses nothing
        probs = mean_probabilities([m.test for m in members])
        metrics = ensemble_metrics(probs, fs.y["test"], rule, oof, y, fs.class_names)
        mlflow.log_metrics(metrics | {"fit_seconds": timings["fit"]})
        for i, member in enumerate(members):
            mlflow.log_metric("ensemble/member_best_val_f1_macro", member.best_val, step=i)
        mlflow.set_tag("best_epoch", ",".join(m.best_epoch for m in members))
        log_artifacts(cfg, fs, members, probs, rule, oof, y, output_dir / "artifacts")
        timings["logging"] = time.perf_counter() - started - sum(timings.values())
        mlflow.log_metrics({f"time/{key}_seconds": v for key, v in timings.items()})
    test_metrics = {key: v for key, v in metrics.items() if key.startswith(("test/", "test_tuned/"))}
    if talk:
        runs.print_run(run_id, uri, test_metrics)
    return EnsembleResult(run_id, uri, test_metrics, metrics["best_val/f1_macro"], timings)


def log_artifacts(cfg: DictConfig, fs: "FeatureSet", members: list[FoldModel], probs: np.ndarray,
                  rule: dict[str, Any], oof: np.ndarray, y: np.ndarray, directory: Path) -> None:
    """``evaluation/`` (test artifacts under the OOF rule, ``val_predictions.csv`` = OOF) and ``model/``."""
    import mlflow

    from losslab.data.text import Normalizer
    from losslab.serving.bundle import save_ensemble_bundle
    from losslab.training.evaluation import write_predictions, write_test_artifacts

    k = len(members)
    write_test_artifacts(directory / "evaluation", probs, fs.y["test"], fs.class_names,
                         title=f"{cfg.tracking.run_name} ({k}-fold ensemble) — test", rule=rule)
    write_predictions(directory / "evaluation" / "val_predictions.csv", oof, y, fs.class_names)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    save_ensemble_bundle(directory / "model", featurizers=[fs.featurizer], nets=[m.net for m in members],
                         class_names=fs.class_names, normalizer=Normalizer(**dict(cfg.data.normalize)),
                         model_params={key: v for key, v in model.items() if not str(key).startswith("_")},
                         activation=members[0].activation, operating_point=rule,
                         extra={"ensemble": "folds", "fold_seed": int(cfg.seed)})
    mlflow.log_artifacts(str(directory / "evaluation"), "evaluation")
    mlflow.log_artifacts(str(directory / "model"), "model")

