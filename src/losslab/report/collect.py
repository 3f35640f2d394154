"""Read one sweep back from the MLflow store: its parent, its child runs as a table, curves, predictions."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from losslab.errors import ConfigError
from losslab.report.bootstrap import RunPredictions
from losslab.tracking.store import search_all
from losslab.training.baseline import BASELINE
from losslab.tracking.sweep_runs import find_sweep_parent, is_parent

# Config keys whose differences make two runs of one loss different "variants" (grid/search).
VARIANT_PREFIXES = ("model.", "optimizer.", "scheduler.", "trainer.", "features.", "data.")
DEVICE_KEYS = ("trainer.accelerator", "trainer.devices")


@dataclass
class Sweep:
    """A sweep as the store holds it."""

    uri: str
    experiment_id: str
    experiment_name: str
    sweep_id: str
    parent: Any | None          # mlflow Run, None if the runs only carry the tag
    runs: pd.DataFrame          # one row per child run (every status)
    variant_keys: list[str]     # config keys that vary between runs of the sweep (besides seed and loss)


def is_seed_ensemble(run: Any) -> bool:
    """A sweep's seed ensemble (``sweeps.ensembles``): one model over the seeds, so no row of the per-seed tables."""
    return run.data.tags.get("ensemble") == "seeds"


def client_for(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def resolve_experiment(client: Any, experiment: str | None, experiment_id: str | None) -> tuple[str, str]:
    """``(id, name)`` of the experiment named or numbered; a clear error when it is missing."""
    if experiment_id is not None:
        found = client.get_experiment(str(experiment_id))
    else:
        found = client.get_experiment_by_name(str(experiment))
    if found is None:
        names = ", ".join(e.name for e in client.search_experiments())
        raise ConfigError(f"no MLflow experiment '{experiment or experiment_id}' in this store (it has: {names}); "
                          "pass EXPERIMENT=<name>.")
    return found.experiment_id, found.name


def find_parent(client: Any, experiment_id: str, sweep_id: str | None) -> tuple[str, Any | None]:
    """The sweep's parent run; without ``sweep_id``, the most recent sweep of the experiment."""
    parent = find_sweep_parent(client, [experiment_id], sweep_id)
    if sweep_id is None:
        if parent is None:
            raise ConfigError("this experiment has no sweep (no run tagged sweep_role=parent): run `make sweep` first, "
                              "or pass SWEEP_ID=<id>.")
        return parent.data.tags["sweep_id"], parent
    return sweep_id, parent


def run_row(run: Any) -> dict[str, Any]:
    """One run as a flat dict: info, tags we use, every param (``param:`` prefix) and latest metric."""
    tags = run.data.tags
    row: dict[str, Any] = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
                           "start_time": run.info.start_time, "loss": tags.get("loss"),
                           "seed": int(tags["seed"]) if str(tags.get("seed", "")).lstrip("-").isdigit() else None,
                           "device": tags.get("device", "unknown"), "device_name": tags.get("device_name", ""),
                           "dataset_md5": tags.get("dataset_md5", ""), "phase": tags.get("sweep_phase", ""),
                           "git_commit": tags.get("git_commit", ""), "sweep_id": tags.get("sweep_id", ""),
                           "model": tags.get("model", "mlp"),
                           "artifact_uri": run.info.artifact_uri}
    row.update({f"param:{k}": v for k, v in run.data.params.items()})
    row.update(run.data.metrics)
    return row


def runs_frame(runs: Iterable[Any]) -> pd.DataFrame:
    frame = pd.DataFrame([run_row(r) for r in runs])
    if frame.empty:
        return frame
    return frame.sort_values(["loss", "seed", "start_time"], na_position="last").reset_index(drop=True)


def varying_keys(frame: pd.DataFrame, prefixes: tuple[str, ...] = VARIANT_PREFIXES,
                 ignore: tuple[str, ...] = ()) -> list[str]:
    """Config keys (``param:`` columns with those prefixes) taking more than one value among ``frame``'s runs."""
    keys = []
    for column in frame.columns:
        key = column[len("param:"):] if column.startswith("param:") else None
        if key and key.startswith(prefixes) and key not in ignore and frame[column].nunique(dropna=False) > 1:
            keys.append(key)
    return sorted(keys)


def variant_label(row: pd.Series, keys: list[str]) -> str:
    return " ".join(f"{k}={row.get('param:' + k)}" for k in keys) or "default"


def load_sweep(uri: str, sweep_id: str | None = None, experiment: str | None = None,
               experiment_id: str | None = None) -> Sweep:
    """Find the sweep (latest one when ``sweep_id`` is None) and load its child runs."""
    client = client_for(uri)
    experiment_id, experiment_name = resolve_experiment(client, experiment, experiment_id)
    sweep_id, parent = find_parent(client, experiment_id, sweep_id)
    runs = [r for r in search_all(client, [experiment_id], f"tags.sweep_id = '{sweep_id}'")
            if not is_parent(r) and not is_seed_ensemble(r)]
    if not runs:
        raise ConfigError(f"no runs tagged sweep_id={sweep_id} in experiment '{experiment_name}' of {uri}.")
    frame = runs_frame(runs)
    trainings = frame[(frame.status == "FINISHED") & (frame.model != BASELINE)]  # the baseline's params differ
    keys = varying_keys(trainings) if len(trainings) else []
    frame["variant"] = [variant_label(row, keys) for _, row in frame.iterrows()]
    return Sweep(uri, experiment_id, experiment_name, sweep_id, parent, frame, keys)


def histories(uri: str, run_ids: Iterable[str], keys: Iterable[str]) -> dict[str, dict[str, pd.Series]]:
    """``{run_id: {metric: Series(value, index=step)}}`` for the per-epoch curves."""
    client = client_for(uri)
    out: dict[str, dict[str, pd.Series]] = {}
    for run_id in run_ids:
        out[run_id] = {}
        for key in keys:
            points = client.get_metric_history(run_id, key)
            if points:
                series = pd.Series({p.step: p.value for p in sorted(points, key=lambda p: (p.step, p.timestamp))})
                out[run_id][key] = series
    return out


def prediction_table(artifact_uri: str) -> RunPredictions | None:
    """A run's ``evaluation/test_predictions.csv`` (label, predicted, p_<class>...); None if it has none."""
    import mlflow.artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        text = mlflow.artifacts.load_text(f"{artifact_uri.rstrip('/')}/evaluation/test_predictions.csv")
    except Exception:  # noqa: BLE001  (a run without the artifact is reported, not fatal)
        return None
    table = pd.read_csv(io.StringIO(text))
    prob_columns = [c for c in table.columns if c.startswith("p_")]
    labels = table["label"].to_numpy(dtype=int)
    probs = table[prob_columns].to_numpy(dtype=float)
    predicted = table["predicted"].to_numpy(dtype=int) if "predicted" in table else probs.argmax(axis=1)
    return RunPredictions(labels, predicted, probs, [c[2:] for c in prob_columns])


def predictions(artifact_uri: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """``(labels, probabilities, class names)`` from a run's ``evaluation/test_predictions.csv``."""
    found = prediction_table(artifact_uri)
    return None if found is None else (found.labels, found.probs, found.class_names)


def signature(row: pd.Series) -> frozenset:
    """What must match for two runs to be "the same training on another device": the data (md5),
    seed, loss and every model/optimizer/trainer/... setting except the device ones and file paths."""
    items = {("dataset_md5", row.get("dataset_md5"))}
    for column, value in row.items():
        key = str(column)[len("param:"):] if str(column).startswith("param:") else None
        if (key and key.startswith((*VARIANT_PREFIXES, "loss.", "seed")) and key not in DEVICE_KEYS
                and not key.endswith("_path") and isinstance(value, str)):
            items.add((key, value))
    return frozenset(items)


def experiment_frame(uri: str, experiment_id: str, device: str | None = None) -> pd.DataFrame:
    """Every FINISHED training run of the experiment (parents excluded; only those tagged ``device`` when given),
    for cross-device pairing."""
    client = client_for(uri)
    query = "attributes.status = 'FINISHED'" + (f" and tags.device = '{device}'" if device else "")
    runs = [r for r in search_all(client, [experiment_id], query)
            if not is_parent(r) and not is_seed_ensemble(r) and r.data.tags.get("loss")]
    return runs_frame(runs)
