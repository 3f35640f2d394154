"""What a training writes into its MLflow run besides the curves: config, data facts, dataset, artifacts."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from losslab.data.featureset import FeatureSet
    from losslab.training.build import Parts


def run_tags(cfg: DictConfig, fs: "FeatureSet") -> dict[str, str]:
    """Loss, seed, code and data versions, the stack's versions, where it runs and any ``tracking.tags``."""
    from losslab.tracking import liveness, runs

    commit, dirty = runs.git_state()
    return {"loss": str(cfg.loss.name), "seed": str(cfg.seed), "git_commit": commit, "git_dirty": str(dirty).lower(),
            "dataset_md5": fs.dataset_md5, "dataset": str(cfg.data.name), **runs.environment_tags(),
            **liveness.process_tags(),  # host, pid, its start time, a first heartbeat (dead runs get closed)
            **{str(k): str(v) for k, v in (cfg.tracking.get("tags") or {}).items()}}


def placement_tags(root_device: Any, auto_sized: dict[str, int]) -> dict[str, str]:
    """Where the training ran (device, SLURM job) and, when ``batch_size``/``max_epochs`` were ``auto``, the numbers
    the training-set size gave them (the params show the numbers; ``auto_sized`` says where they came from)."""
    from losslab.tracking.runs import device_tags, slurm_tags

    tags = device_tags(root_device) | slurm_tags()
    if auto_sized:
        tags["auto_sized"] = ", ".join(f"{k}={v}" for k, v in auto_sized.items())
    return tags


def log_run_inputs(cfg: DictConfig, fs: "FeatureSet", output_dir: Path) -> None:
    """The resolved config (params + ``config.yaml``), the data's facts and the dataset as an MLflow input.

    Params and tags go in one ``log_batch`` (each store write costs a round trip or an fsync).
    """
    import mlflow
    from mlflow.entities import Param, RunTag

    from losslab.tracking.runs import flatten_config

    resolved = OmegaConf.to_container(cfg, resolve=True)  # resolved once: params and config.yaml
    params = flatten_config(resolved)
    params |= {f"dataset.{k}": str(v) for k, v in fs.stats.items()} | {"vocabulary_size": str(fs.vocabulary_size)}
    client, run_id = mlflow.MlflowClient(), mlflow.active_run().info.run_id
    batch = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(batch), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=batch[start:start + 100],
                         tags=[RunTag("output_dir", str(output_dir.resolve()))] if start == 0 else [])
    mlflow.log_text(config_yaml(resolved), "config.yaml")
    log_dataset(dataset_entity(cfg, fs))


def config_yaml(resolved: dict[str, Any]) -> str:
    """A resolved config as YAML (keys in config order), as ``OmegaConf.to_yaml(cfg, resolve=True)`` writes it, from
    the container already made (OmegaConf would resolve the whole config again: ~7 ms of each run's records)."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(resolved, Dumper=dumper, default_flow_style=False, allow_unicode=True, sort_keys=False)


def log_dataset(dataset: Any) -> None:
    """``mlflow.log_input`` safe against parallel trainings: MLflow checks for the (experiment, name, digest)
    row, then inserts it, so two processes logging the same new dataset at once collide on that key. Under the
    store's lock (sqlite), and once more after a collision (another process's row now exists: it is linked)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from losslab.tracking.store import store_lock

    with store_lock(mlflow.get_tracking_uri()):
        try:
            mlflow.log_input(dataset, context="training")
        except MlflowException as exc:
            if "UNIQUE constraint" not in str(exc) and "unique constraint" not in str(exc).lower():
                raise
            mlflow.log_input(dataset, context="training")


def dataset_entity(cfg: DictConfig, fs: "FeatureSet") -> Any:
    """The data as an MLflow dataset (the UI's Dataset column): its name, the DVC md5 as digest, its folder."""
    from mlflow.data.dataset_source_registry import get_registered_sources
    from mlflow.data.meta_dataset import MetaDataset

    from losslab.paths import resolve_path

    folder = resolve_path(str(cfg.data.train_path)).parent
    local = next(s for s in get_registered_sources() if s._get_source_type() == "local")
    return MetaDataset(local(str(folder)), name=str(cfg.data.name), digest=fs.dataset_md5[:36])


def log_artifacts(cfg: DictConfig, fs: "FeatureSet", parts: "Parts", directory: Path) -> None:
    """Test report + confusion matrix + predictions, and the model bundle, as run artifacts."""
    import mlflow
    import numpy as np

    from losslab.data.text import Normalizer
    from losslab.serving.bundle import save_bundle
    from losslab.training.evaluation import write_predictions, write_test_artifacts
    from losslab.training.operating import validation_probabilities

    module = parts.module
    probs = np.concatenate([p.numpy() for p in module.test_probs])
    targets = np.concatenate([t.numpy() for t in module.test_targets])
    rule = getattr(module, "operating_point", None)  # chosen on validation (training.operating)
    write_test_artifacts(directory / "evaluation", probs, targets, fs.class_names,
                         title=f"{cfg.tracking.run_name} — test", rule=rule,
                         png=bool(OmegaConf.select(cfg, "tracking.confusion_matrix_png", default=True)))
    # the best checkpoint's validation probabilities: a seed ensemble tunes its rule on them (sweeps.ensembles)
    val_probs = getattr(module, "val_probs", None)  # computed once, when the rule was tuned (training.operating)
    write_predictions(directory / "evaluation" / "val_predictions.csv",
                      val_probs if val_probs is not None else validation_probabilities(cfg, fs, parts),
                      fs.y["val"], fs.class_names)
    model_params = {k: v for k, v in module.hparams.model.items() if not str(k).startswith("_")}
    save_bundle(directory / "model", featurizer=fs.featurizer, net=module.net.cpu(), class_names=fs.class_names,
                normalizer=Normalizer(**dict(cfg.data.normalize)), model_params=model_params,
                activation=module.loss.activation, operating_point=rule)
    mlflow.log_artifacts(str(directory / "evaluation"), "evaluation")
    mlflow.log_artifacts(str(directory / "model"), "model")


def log_outcome(cfg: DictConfig, fs: "FeatureSet", parts: "Parts", fit_seconds: float, epochs_run: int,
                best_val: float, best_epoch: str) -> dict[str, float]:
    """After the test: the decision rule chosen on validation (``training.operating``) and the metrics under it,
    the fit's cost and the best epoch, into the active run; returns the ``test_tuned/*`` metrics."""
    import mlflow

    from losslab.training import operating

    from mlflow.entities import Metric, RunTag

    _, tuned = operating.tune(cfg, fs, parts)
    values = tuned | {"fit_seconds": fit_seconds, "best_val/f1_macro": best_val,
                      "train_samples_per_second": len(fs.y["train"]) * epochs_run / max(fit_seconds, 1e-9)}
    now = int(time.time() * 1000)
    mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id,  # one write (each costs a round trip)
                                    metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
                                    tags=[RunTag("best_epoch", best_epoch)])
    return {k: v for k, v in tuned.items() if k.startswith("test_tuned/")}


def print_data_notes(stats: dict[str, int]) -> None:
    notes = [f"{stats[k]} empty text(s) dropped from the {k.split('_')[0]} file" for k in
             ("train_empty_dropped", "test_empty_dropped") if stats.get(k)]
    if stats.get("train_duplicates"):
        notes.append(f"{stats['train_duplicates']} duplicated text(s) in the training file "
                     "(kept; see dataset.* params)")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
