"""No run left RUNNING by a dead process: where each run runs, its heartbeat, and closing the dead ones.

Every training run (and sweep parent) carries the tags ``host``, ``pid``, ``pid_start_time`` (field 22 of
``/proc/<pid>/stat``: when that process started, so a pid reused by another process is told apart) and
``heartbeat`` (epoch milliseconds), written when the run starts and at every epoch end
(``losslab.training.durability.Heartbeat``).

``close_dead_runs`` (called by every command that opens a store: train, sweep, report, ui and
``make runs-check``) marks ``KILLED`` each RUNNING run whose process is gone:

- same host: the pid no longer exists, is a zombie, or belongs to a process started at another time;
- another host: its heartbeat is older than ``tracking.heartbeat_max_age_s`` (a sweep parent counts the
  heartbeats of its children too, so a long sweep stays alive while its jobs progress).

The run gets the tag ``error`` (why, and when it was last alive), ``end_time`` = its last heartbeat, and
one ``note:`` line is printed. Runs without these tags (recorded before this existed) are left alone; a
run whose results wait on disk for ``make runs-sync`` is left for that command.

    python -m losslab.tracking.liveness [--max-age 1800] [--tracking-uri URI]     # or: make runs-check
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from losslab.errors import ConfigError, friendly_exit

HEARTBEAT_TAG = "heartbeat"
DEAD_PREFIX = "dead process: "  # how the ``error`` tag of a run closed here starts (runs-sync may lift it)
DEFAULT_MAX_AGE_S = 1800.0


def now_ms() -> int:
    return int(time.time() * 1000)


def process_start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks after boot); None when the process does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "(comm)" start at field 3


def process_tags() -> dict[str, str]:
    """Where this process runs and a first heartbeat: the tags every run carries from its start."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": str(pid), "pid_start_time": process_start_time(pid) or "",
            HEARTBEAT_TAG: str(now_ms())}


def process_gone(pid: int, start_time: str) -> str | None:
    """Why process ``pid`` (started at ``start_time``) no longer runs on this host, or None if it does."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return f"no process {pid} on this host"
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return f"process {pid} exited"
    if start_time and fields[19] != start_time:
        return f"pid {pid} now belongs to another process"
    return None


def when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "unknown"


def max_age_setting(cfg: Any | None = None) -> float:
    """``tracking.heartbeat_max_age_s`` from ``cfg`` (the tracking node), else ``conf/tracking/mlflow.yaml``."""
    if cfg is None:
        from omegaconf import OmegaConf

        from losslab.paths import config_dir

        cfg = OmegaConf.load(config_dir() / "tracking" / "mlflow.yaml")
    value = cfg.get("heartbeat_max_age_s")
    return float(value) if value else DEFAULT_MAX_AGE_S


@dataclass
class Closed:
    run_id: str
    run_name: str
    reason: str


def _heartbeat(run: Any) -> int | None:
    value = run.data.tags.get(HEARTBEAT_TAG, "")
    return int(value) if value.isdigit() else None


def _results_pending(run: Any) -> bool:
    output_dir = run.data.tags.get("output_dir")
    return bool(output_dir) and (Path(output_dir) / "pending" / "journal.jsonl").is_file()


def death_of(run: Any, max_age_s: float, host: str, newest_child_beat: int | None = None) -> str | None:
    """Why RUNNING ``run`` is dead (the ``error`` text), or None when it is alive or cannot be judged."""
    tags = run.data.tags
    beat = max(filter(None, [_heartbeat(run), newest_child_beat]), default=None)
    if tags.get("host") == host and tags.get("pid", "").isdigit():
        gone = process_gone(int(tags["pid"]), tags.get("pid_start_time", ""))
        return f"{DEAD_PREFIX}{gone} ({host}); last alive {when(beat)}" if gone else None
    if tags.get("host") and beat is not None:
        age = time.time() - beat / 1000
        if age > max_age_s:
            return (f"{DEAD_PREFIX}no heartbeat from {tags['host']} (pid {tags.get('pid', '?')}) for "
                    f"{age / 60:.0f} min (limit {max_age_s / 60:.0f} min); last alive {when(beat)}")
    return None


def close_dead_runs(uri: str, max_age_s: float | None = None, experiment_ids: Sequence[str] | None = None,
                    stream: Any = None, quiet_errors: bool = True) -> list[Closed]:
    """Mark every dead RUNNING run of the store (or of ``experiment_ids``) KILLED; one ``note:`` line each.

    Never fails the calling command: a store it cannot read gives one ``note:`` line (unless
    ``quiet_errors`` is False, then it raises).
    """
    from losslab.tracking.store import health_problem, search_all, sqlite_path

    stream = stream or sys.stderr
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return []  # nothing recorded yet (and never create a store here, outside the store lock)
    if uri.startswith(("http://", "https://")) and (problem := health_problem(uri, timeout=5.0)):
        if not quiet_errors:  # (asked first: MLflow's own retries would wait minutes for a server that is down)
            raise ConfigError(f"tracking server {uri} does not answer ({problem}). Start it (make server) or set "
                              "MLFLOW_TRACKING_URI to the store to check.")
        print(f"note: could not check {uri} for runs left RUNNING by a dead process ({problem})", file=stream)
        return []
    max_age_s = float(max_age_s) if max_age_s else max_age_setting()
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        ids = list(experiment_ids) if experiment_ids else [e.experiment_id for e in client.search_experiments()]
        running = search_all(client, ids, "attributes.status = 'RUNNING'") if ids else []
        closed = []
        host = socket.gethostname()
        for run in running:
            newest_child = None
            if run.data.tags.get("sweep_role") == "parent" and run.data.tags.get("host") != host:
                children = search_all(client, [run.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{run.info.run_id}'")
                newest_child = max(filter(None, (_heartbeat(c) for c in children)), default=None)
            reason = death_of(run, max_age_s, host, newest_child)
            if reason is None or _results_pending(run):
                continue
            beat = max(filter(None, [_heartbeat(run), newest_child]), default=None)
            client.set_tag(run.info.run_id, "error", reason)
            client.set_terminated(run.info.run_id, "KILLED", end_time=max(beat or 0, run.info.start_time) or None)
            closed.append(Closed(run.info.run_id, run.info.run_name or "", reason))
            print(f"note: run {run.info.run_id} ({run.info.run_name}) was RUNNING but {reason[len(DEAD_PREFIX):]}: "
                  f"marked KILLED (resume it with: python -m losslab.train resume={run.info.run_id})",
                  file=stream, flush=True)
        return closed
    except Exception as exc:  # noqa: BLE001  (a check, never the reason a command fails)
        if not quiet_errors:
            raise
        print(f"note: could not check {uri} for runs left RUNNING by a dead process ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0][:200] if str(exc) else ''})", file=stream)
        return []


_CHECKED: set[str] = set()


def close_dead_runs_once(uri: str, max_age_s: float | None = None) -> list[Closed]:
    """``close_dead_runs`` at most once per store per process (a sweep worker runs many trainings)."""
    if uri in _CHECKED:
        return []
    _CHECKED.add(uri)
    return close_dead_runs(uri, max_age_s)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m losslab.tracking.liveness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=None,
                        help="store (default: $MLFLOW_TRACKING_URI, else the project's)")
    parser.add_argument("--max-age", type=float, default=None,
                        help="seconds without a heartbeat before a run of another host counts as dead "
                             "(default: tracking.heartbeat_max_age_s in conf/tracking/mlflow.yaml)")
    return parser.parse_args(argv)


@friendly_exit
def main(argv: Sequence[str] | None = None) -> int:
    from losslab.paths import default_tracking_uri
    from losslab.tracking.store import configure_http

    args = parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    configure_http(uri)
    closed = close_dead_runs(uri, args.max_age, quiet_errors=False)
    print(f"{len(closed)} run(s) closed as KILLED in {uri}" if closed else f"no run left RUNNING by a dead process "
          f"in {uri}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
