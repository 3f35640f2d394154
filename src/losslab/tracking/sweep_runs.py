"""Sweep parent runs: one RUNNING parent per sweep, its children, and how it is closed.

The children find their parent through ``tracking.parent_run_id`` (a sweep sets
``$LOSSLAB_PARENT_RUN_ID`` for each job) and carry the ``sweep_id`` tag; the parent carries
``sweep_role=parent``. The report and the champion are written by the sweeps layer before
``close_parent`` ends the run.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from losslab.tracking.liveness import close_dead_runs_once, process_tags
from losslab.tracking.runs import git_state
from losslab.tracking.store import experiment_id_for, search_all

SWEEP_ROLE_TAG = "sweep_role"
PARENT_ROLE = "parent"
PARENT_FILTER = f"tags.{SWEEP_ROLE_TAG} = '{PARENT_ROLE}'"
PARENT_ENV = "LOSSLAB_PARENT_RUN_ID"
SWEEP_ID_ENV = "LOSSLAB_SWEEP_ID"


def new_sweep_id(name: str) -> str:
    """``<name>-<YYYYmmdd-HHMMSS>-<4 hex>``: readable, sortable, unique."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def is_parent(run: Any) -> bool:
    return run.data.tags.get(SWEEP_ROLE_TAG) == PARENT_ROLE


@dataclass
class SweepParent:
    """The open parent run of one sweep."""

    sweep_id: str
    run_id: str
    uri: str
    experiment_id: str
    started: float = field(default_factory=time.perf_counter)
    experiment: str = ""          # the experiment's name


def start_parent(uri: str, experiment: str, name: str, params: Mapping[str, Any] | None = None) -> SweepParent:
    """Create the experiment (once, under the store lock) and the RUNNING parent run of a sweep."""
    from mlflow.tracking import MlflowClient

    experiment_id = experiment_id_for(uri, experiment)
    close_dead_runs_once(uri)  # runs left RUNNING by a dead process (KILLED, one note: line each)
    sweep_id = new_sweep_id(name)
    commit, dirty = git_state()
    tags = {"sweep_id": sweep_id, "sweep_name": name, SWEEP_ROLE_TAG: PARENT_ROLE, "git_commit": commit,
            "git_dirty": str(dirty).lower(), **process_tags()}  # its children's heartbeats keep it alive
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=f"sweep-{sweep_id}", tags=tags)
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, str(key)[:250], str(value)[:6000])
    print(f"sweep {sweep_id}: parent MLflow run {run.info.run_id} in experiment '{experiment}' ({uri})")
    return SweepParent(sweep_id, run.info.run_id, uri, experiment_id, experiment=experiment)


def child_runs(uri: str, experiment_id: str, parent_run_id: str) -> list[Any]:
    """Every run nested under ``parent_run_id`` (any status)."""
    from mlflow.tracking import MlflowClient

    return search_all(MlflowClient(uri), [experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")


def job_run(uri: str, parent_run_id: str, output_dir: str) -> Any | None:
    """The child of ``parent_run_id`` that a job with output folder ``output_dir`` recorded (tag ``output_dir``,
    set by every training), or None if it recorded none."""
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    wanted = str(Path(output_dir).resolve())
    if "'" in wanted:  # not expressible in a filter string: read every child (slower as the sweep grows)
        found = [r for r in child_runs(uri, experiment_id, parent_run_id) if r.data.tags.get("output_dir") == wanted]
    else:  # the store finds it: reading every child after each job made a sweep's bookkeeping grow as n²
        found = search_all(client, [experiment_id],
                           f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.output_dir = '{wanted}'")
    return max(found, key=lambda r: r.info.start_time) if found else None


def status_counts(runs: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.info.status] = counts.get(run.info.status, 0) + 1
    return counts


def sweep_problem(counts: Mapping[str, int], failed: str | None = None) -> str | None:
    """Why the sweep is FAILED (a reason given, a child not FINISHED, no child), or None."""
    total = sum(counts.values())
    bad = total - counts.get("FINISHED", 0)
    if failed:
        return failed
    if not total:
        return "no job ran"
    return f"{bad} of {total} jobs did not finish" if bad else None


def close_parent(parent: SweepParent, counts: Mapping[str, int], problem: str | None) -> None:
    """Log the sweep's size and duration on the parent and end it FINISHED, or FAILED with ``sweep_error``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(parent.uri)
    client.log_metric(parent.run_id, "sweep_seconds", time.perf_counter() - parent.started)
    client.log_metric(parent.run_id, "sweep_jobs", sum(counts.values()))
    client.set_tag(parent.run_id, "sweep_jobs_by_status", ", ".join(f"{s}={n}" for s, n in sorted(counts.items())))
    if problem:
        client.set_tag(parent.run_id, "sweep_error", problem)
    client.set_terminated(parent.run_id, "FAILED" if problem else "FINISHED")


def find_sweep_parent(client: Any, experiment_ids: list[str], sweep_id: str | None = None) -> Any | None:
    """The parent run of ``sweep_id`` (else the newest sweep) among ``experiment_ids``; None if there is none."""
    query = PARENT_FILTER + (f" and tags.sweep_id = '{sweep_id}'" if sweep_id else "")
    runs = client.search_runs(experiment_ids, query, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None
