"""Runs that travel as files: export a sweep's runs from one store, import them into another.

    python -m losslab.tracking.transfer export --to runs-gpu/ [--sweep-id <id>] [--experiment mex-a3t]
    python -m losslab.tracking.transfer import --from runs-gpu/          # make export-runs / make import-runs

For a machine that cannot reach the team store (an offline GPU box, a cluster without access):
``export`` writes the sweep's parent and children — params, tags, every metric with its history
(step, timestamp), dataset inputs, status and times, and all artifacts — under
``<folder>/runs/<run id>/``. ``import`` recreates them in the current store under the experiment
of the same name, parents before children (``mlflow.parentRunId`` points at the new parent), and
tags each run ``imported_from=<original run id>``: importing the same folder twice adds nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from losslab.errors import ConfigError, friendly_exit
from losslab.paths import default_tracking_uri
from losslab.tracking.store import experiment_id_for, search_all
from losslab.tracking.sweep_runs import SWEEP_ROLE_TAG, find_sweep_parent

MANIFEST = "manifest.json"
IMPORTED_FROM = "imported_from"
PARENT_TAG = "mlflow.parentRunId"
BATCH = 900  # MLflow accepts at most 1000 metrics (100 params) per log_batch


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def sweep_runs(client: Any, experiment: str, sweep_id: str | None) -> tuple[str, list[Any]]:
    """The sweep's parent (the newest sweep without ``sweep_id``) and its children, parent first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"no MLflow experiment '{experiment}' in {client.tracking_uri}; pass --experiment.")
    parent = find_sweep_parent(client, [found.experiment_id], sweep_id)
    if parent is None:
        raise ConfigError(f"no sweep {sweep_id or ''} in experiment '{experiment}' of {client.tracking_uri}; "
                          "run one first (make sweep) or check --sweep-id.")
    sweep = parent.data.tags["sweep_id"]
    children = [r for r in search_all(client, [found.experiment_id], f"tags.sweep_id = '{sweep}'")
                if r.info.run_id != parent.info.run_id]
    return sweep, [parent, *sorted(children, key=lambda r: r.info.start_time)]


def run_record(client: Any, run: Any) -> dict[str, Any]:
    """Everything of ``run`` but its artifacts, as JSON-able data."""
    history = {key: [[m.step, m.timestamp, m.value] for m in client.get_metric_history(run.info.run_id, key)]
               for key in run.data.metrics}
    inputs = [{"dataset": {k: getattr(d.dataset, k) for k in ("name", "digest", "source_type", "source", "schema",
                                                               "profile")},
               "tags": {t.key: t.value for t in d.tags}} for d in (run.inputs.dataset_inputs if run.inputs else [])]
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
            "start_time": run.info.start_time, "end_time": run.info.end_time, "params": dict(run.data.params),
            "tags": dict(run.data.tags), "metrics": history, "inputs": inputs}


def export_runs(uri: str, experiment: str, folder: Path, sweep_id: str | None = None) -> list[str]:
    """Write the sweep's runs under ``folder``; returns their run ids (parent first)."""
    client = _client(uri)
    sweep, runs = sweep_runs(client, experiment, sweep_id)
    for run in runs:
        out = folder / "runs" / run.info.run_id
        if out.exists():
            shutil.rmtree(out)
        (out / "artifacts").mkdir(parents=True)
        (out / "run.json").write_text(json.dumps(run_record(client, run), indent=1))
        if client.list_artifacts(run.info.run_id):
            client.download_artifacts(run.info.run_id, "", str(out / "artifacts"))
    ids = [r.info.run_id for r in runs]
    manifest = {"experiment": experiment, "sweep_id": sweep, "source_uri": uri, "runs": ids}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return ids


def _existing(client: Any, experiment_id: str, run_id: str) -> str | None:
    """The run in this store that already is ``run_id`` (same id, or imported from it)."""
    from mlflow.exceptions import MlflowException

    try:
        if client.get_run(run_id).info.experiment_id == experiment_id:
            return run_id
    except MlflowException:
        pass
    found = client.search_runs([experiment_id], f"tags.{IMPORTED_FROM} = '{run_id}'", max_results=1)
    return found[0].info.run_id if found else None


def _recreate(client: Any, experiment_id: str, record: dict[str, Any], parent_id: str | None,
              artifacts: Path) -> str:
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

    tags = {k: v for k, v in record["tags"].items() if k != PARENT_TAG} | {IMPORTED_FROM: record["run_id"]}
    if parent_id:
        tags[PARENT_TAG] = parent_id
    run = client.create_run(experiment_id, start_time=record["start_time"], tags=tags, run_name=record["run_name"])
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in record["params"].items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    metrics = [Metric(key, value, timestamp, step) for key, points in record["metrics"].items()
               for step, timestamp, value in points]
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + BATCH])
    datasets = [DatasetInput(Dataset(**d["dataset"]), [InputTag(k, v) for k, v in d["tags"].items()])
                for d in record["inputs"]]
    if datasets:
        client.log_inputs(run_id, datasets=datasets)
    client.log_batch(run_id, tags=[RunTag("mlflow.runName", record["run_name"] or "")])
    if any(artifacts.iterdir()):
        client.log_artifacts(run_id, str(artifacts))
    client.set_terminated(run_id, record["status"], end_time=record["end_time"])
    return run_id


def import_runs(uri: str, folder: Path, experiment: str | None = None) -> tuple[list[str], int]:
    """Merge the exported runs into the store at ``uri``; returns (new run ids, how many were already there)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ConfigError(f"{folder}: no {MANIFEST} (not a folder written by `make export-runs`).")
    manifest = json.loads(manifest_path.read_text())
    client = _client(uri)
    experiment_id = experiment_id_for(uri, experiment or manifest["experiment"])
    new_ids: dict[str, str] = {}
    created, skipped = [], 0
    records = [json.loads((folder / "runs" / rid / "run.json").read_text()) for rid in manifest["runs"]]
    records.sort(key=lambda r: r["tags"].get(SWEEP_ROLE_TAG) != "parent")  # parents first (stable)
    for record in records:
        source_parent = record["tags"].get(PARENT_TAG)
        parent_id = new_ids.get(source_parent, source_parent) if source_parent else None
        existing = _existing(client, experiment_id, record["run_id"])
        if existing:
            new_ids[record["run_id"]] = existing
            skipped += 1
            continue
        run_id = _recreate(client, experiment_id, record, parent_id, folder / "runs" / record["run_id"] / "artifacts")
        new_ids[record["run_id"]] = run_id
        created.append(run_id)
    return created, skipped


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m losslab.tracking.transfer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    out = sub.add_parser("export", help="write a sweep's runs to a folder")
    out.add_argument("--to", type=Path, required=True)
    out.add_argument("--sweep-id", help="default: the newest sweep of the experiment")
    out.add_argument("--experiment", help="default: tracking.experiment (conf/tracking/mlflow.yaml)")
    into = sub.add_parser("import", help="merge an exported folder into the current store")
    into.add_argument("--from", dest="source", type=Path, required=True)
    into.add_argument("--experiment", help="default: the experiment the runs were exported from")
    return parser.parse_args(argv)


@friendly_exit
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    uri = default_tracking_uri()
    if args.action == "export":
        from omegaconf import OmegaConf

        from losslab.paths import config_dir

        experiment = args.experiment or str(OmegaConf.load(config_dir() / "tracking" / "mlflow.yaml").experiment)
        ids = export_runs(uri, experiment, args.to, args.sweep_id)
        print(f"exported {len(ids)} runs (parent + {len(ids) - 1} children) of experiment '{experiment}' "
              f"from {uri} to {args.to}")
        return 0
    created, skipped = import_runs(uri, args.source, args.experiment)
    print(f"imported {len(created)} runs into {uri}" + (f"; {skipped} were already there" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
