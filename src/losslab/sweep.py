"""Sweeps: many trainings as children of one MLflow parent run, then the comparison report.

    python -m losslab.sweep losses              # or: make sweep            (7 losses × seeds 0-4)
    python -m losslab.sweep quick --jobs 2      # or: make sweep SWEEP=quick SWEEP_JOBS=2
    python -m losslab.sweep grid trainer.max_epochs=5        # extra overrides go to every job

``losses``, ``quick`` and ``grid`` are Hydra multiruns of ``losslab.train`` (``conf/sweep/<name>.yaml``,
also runnable as ``python -m losslab.train +sweep=<name>``); their parent run is opened and closed
by ``losslab.sweep_callbacks.SweepParent``. ``search`` is an Optuna search per loss
(``losslab.search``). ``--jobs 1`` runs every job in this process (imports and featurizing are
paid once); ``--jobs N`` uses Hydra's joblib launcher with N worker processes.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from losslab.errors import ConfigError, friendly_exit
from losslab.paths import config_dir, project_root

SWEEP_ROLE_TAG = "sweep_role"
PARENT_ENV = "LOSSLAB_PARENT_RUN_ID"
SWEEP_ID_ENV = "LOSSLAB_SWEEP_ID"


def available_sweeps() -> list[str]:
    """Names of the sweeps in ``conf/sweep/`` (files starting with ``_`` are shared parts)."""
    return sorted(p.stem for p in (config_dir() / "sweep").glob("*.yaml") if not p.stem.startswith("_"))


def new_sweep_id(name: str) -> str:
    """``<name>-<YYYYmmdd-HHMMSS>-<4 hex>``: readable, sortable, unique."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


@dataclass
class SweepParent:
    """The open parent run of one sweep."""

    sweep_id: str
    run_id: str
    uri: str
    experiment_id: str
    started: float = field(default_factory=time.perf_counter)


def start_parent(uri: str, experiment: str, name: str, params: Mapping[str, Any] | None = None) -> SweepParent:
    """Create the experiment (once, under the store lock) and the RUNNING parent run of a sweep."""
    from mlflow.tracking import MlflowClient

    from losslab import tracking

    experiment_id = tracking.experiment_id_for(uri, experiment)
    sweep_id = new_sweep_id(name)
    commit, dirty = tracking.git_state()
    tags = {"sweep_id": sweep_id, "sweep_name": name, SWEEP_ROLE_TAG: "parent", "git_commit": commit,
            "git_dirty": str(dirty).lower()}
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=f"sweep-{sweep_id}", tags=tags)
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, str(key)[:250], str(value)[:6000])
    print(f"sweep {sweep_id}: parent MLflow run {run.info.run_id} in experiment '{experiment}' ({uri})")
    return SweepParent(sweep_id, run.info.run_id, uri, experiment_id)


def child_runs(uri: str, experiment_id: str, parent_run_id: str) -> list[Any]:
    """Every run nested under ``parent_run_id`` (any status)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finish_parent(parent: SweepParent, report: bool = True, reports_dir: str | Path | None = None,
                  failed: str | None = None) -> Path | None:
    """Write the report (optional), log it on the parent and end the parent run.

    The parent ends FINISHED when every child finished, else FAILED with a ``sweep_error`` tag.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(parent.uri)
    children = child_runs(parent.uri, parent.experiment_id, parent.run_id)
    status_counts: dict[str, int] = {}
    for run in children:
        status_counts[run.info.status] = status_counts.get(run.info.status, 0) + 1
    bad = sum(n for s, n in status_counts.items() if s != "FINISHED")
    problem = failed or (f"{bad} of {len(children)} jobs did not finish" if bad else None)
    if not children:
        problem = problem or "no job ran"
    client.log_metric(parent.run_id, "sweep_seconds", time.perf_counter() - parent.started)
    client.log_metric(parent.run_id, "sweep_jobs", len(children))
    client.set_tag(parent.run_id, "sweep_jobs_by_status", ", ".join(f"{s}={n}" for s, n in sorted(status_counts.items())))
    out: Path | None = None
    try:
        if report and status_counts.get("FINISHED"):
            from losslab.report import write_report

            out = write_report(parent.uri, sweep_id=parent.sweep_id, experiment_id=parent.experiment_id,
                               reports_dir=reports_dir, log_to_parent=True)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        problem = problem or f"the report failed: {type(exc).__name__}: {exc}"[:500]
    finally:
        if problem:
            client.set_tag(parent.run_id, "sweep_error", problem)
        client.set_terminated(parent.run_id, "FAILED" if problem else "FINISHED")
    print(f"sweep {parent.sweep_id}: {len(children)} runs ({status_counts}); parent {parent.run_id} "
          f"{'FAILED: ' + problem if problem else 'FINISHED'}")
    return out


def reports_root(configured: str | None = None) -> Path:
    """Where reports go: ``sweep.reports_dir`` if set, else ``<project root>/reports``."""
    return Path(configured).expanduser().resolve() if configured else project_root() / "reports"


def hydra_argv(name: str, jobs: int, overrides: Sequence[str]) -> list[str]:
    """The ``losslab.train`` command line of a Hydra sweep."""
    argv = ["--multirun", f"+sweep={name}"]
    if jobs > 1:
        argv += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    return argv + list(overrides)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m losslab.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default="losses", help="a file of conf/sweep/ (default: losses)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1: in-process)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job, e.g. trainer.max_epochs=5")
    return parser.parse_intermixed_args(argv)


@friendly_exit
def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    names = available_sweeps()
    if args.name not in names:
        raise ConfigError(f"unknown sweep '{args.name}': choose one of {', '.join(names)} (files in conf/sweep/).")
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs} (SWEEP_JOBS) must be >= 1.")
    if args.name == "search":
        from losslab.search import run_search

        run_search(args.overrides, jobs=args.jobs)
        return
    from losslab import train
    from losslab.sweep_callbacks import close_open_sweeps

    saved, sys.argv = sys.argv, [sys.argv[0], *hydra_argv(args.name, args.jobs, args.overrides)]
    try:
        train.main()  # Hydra parses sys.argv
    except BaseException as exc:
        close_open_sweeps(f"the multirun stopped: {type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
