"""Nothing finished is lost when the tracking server stays down: a run's writes wait on disk, then get uploaded.

A training logging to a server (``http(s)://``) calls ``install(uri)`` and ``watch(run_id, output_dir)``.
``install`` hands MLflow (through its tracking-store and artifact-repository registries, the hooks its
plugins use) a REST store and an ``mlflow-artifacts`` repository that behave exactly like MLflow's own
while the server answers — requests that fail are retried by MLflow itself (``MLFLOW_HTTP_REQUEST_*``,
set from ``tracking.http``). When a write of a watched run still fails after every retry, that run goes
*offline*: this write and every later one (metrics, params, tags, dataset inputs, artifacts, the final
status) are appended to ``<output_dir>/pending/journal.jsonl`` (artifact files copied beside it) and the
training goes on without waiting again. At its end ``finish`` uploads the journal if the server is back;
otherwise ``make runs-sync`` does it later:

    python -m losslab.tracking.outbox [FOLDER ...]      # default: every pending/ under outputs/ and multirun/

Replaying keeps each value's original timestamp and step, remembers how far it got (``pending/synced``:
a second sync resumes there), and removes ``pending/`` once everything is on the server. A run closed
as KILLED meanwhile (``tracking.liveness``) gets its recorded final status back.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from losslab.errors import ConfigError, friendly_exit

JOURNAL = "journal.jsonl"
SKIPPED_TAGS = {"heartbeat"}  # a heartbeat replayed later says nothing about liveness

_WATCHED: dict[str, Path] = {}   # run id → its pending/ folder
_OFFLINE: dict[str, str] = {}    # run id → why it went offline
_RUNS: dict[str, Any] = {}       # run id → the run as last read from the server (to build repos offline)
_INSTALLED: set[str] = set()


def unreachable(exc: BaseException) -> bool:
    """A failure of the connection itself (after MLflow's retries), not an answer such as 'no such run'."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.RetryError, ConnectionError, TimeoutError)):
        return True
    message = str(exc)
    return isinstance(exc, MlflowException) and message.startswith("API request to") and "failed with" in message


def pending_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "pending"


def _append(run_id: str, record: dict[str, Any]) -> None:
    folder = _WATCHED[run_id]
    with open(folder / JOURNAL, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def _go_offline(run_id: str, exc: BaseException, uri: str) -> None:
    if run_id in _OFFLINE:
        return
    folder = _WATCHED[run_id]
    folder.mkdir(parents=True, exist_ok=True)
    reason = str(exc).splitlines()[0][:300]
    _OFFLINE[run_id] = reason
    (folder / "run.json").write_text(json.dumps({"run_id": run_id, "tracking_uri": uri, "since": time.time(),
                                                 "reason": reason}) + "\n")
    print(f"note: tracking server {uri} still unreachable after MLflow's retries ({reason}); run {run_id} goes on "
          f"and keeps what it logs in {folder} (make runs-sync uploads it)", file=sys.stderr, flush=True)


def _guarded(run_id: str, uri: str, send: Callable[[], Any], record: Callable[[], dict[str, Any] | None],
             offline_result: Callable[[], Any] = lambda: None) -> Any:
    """``send()``; for a watched run whose server is unreachable, append ``record()`` to its journal instead."""
    if run_id not in _WATCHED:
        return send()
    if run_id not in _OFFLINE:
        try:
            return send()
        except Exception as exc:
            if not unreachable(exc):
                raise
            _go_offline(run_id, exc, uri)
    entry = record()
    if entry is not None:
        _append(run_id, entry)
    return offline_result()


def _store_class() -> type:
    from mlflow.entities import RunInfo, RunStatus
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.proto_json_utils import message_to_json

    class OutboxRestStore(RestStore):
        """MLflow's REST store; the writes of an offline watched run go to its journal."""

        def __init__(self, get_host_creds: Callable[[], Any], uri: str) -> None:
            super().__init__(get_host_creds)
            self._uri = uri

        def get_run(self, run_id):
            try:
                run = super().get_run(run_id)
            except Exception as exc:
                if run_id in _RUNS and unreachable(exc):
                    return _RUNS[run_id]  # e.g. MLflow looking up where the run's artifacts go
                raise
            if run_id in _WATCHED:
                _RUNS[run_id] = run
            return run

        def log_batch(self, run_id, metrics, params, tags):
            def record():
                kept = [t for t in tags if t.key not in SKIPPED_TAGS]
                if not (metrics or params or kept):
                    return None
                return {"op": "batch", "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                        "params": [[p.key, p.value] for p in params], "tags": [[t.key, t.value] for t in kept]}
            return _guarded(run_id, self._uri, lambda: super(OutboxRestStore, self).log_batch(run_id, metrics, params,
                                                                                              tags), record)

        def log_metric(self, run_id, metric):
            return self.log_batch(run_id, [metric], [], [])

        def log_param(self, run_id, param):
            return self.log_batch(run_id, [], [param], [])

        def set_tag(self, run_id, tag):
            return self.log_batch(run_id, [], [], [tag])

        def delete_tag(self, run_id, key):
            return _guarded(run_id, self._uri, lambda: super(OutboxRestStore, self).delete_tag(run_id, key),
                            lambda: {"op": "delete_tag", "key": key})

        def log_inputs(self, run_id, datasets=None, models=None):
            def record():
                return {"op": "inputs", "datasets": [message_to_json(d.to_proto()) for d in datasets or []]}
            return _guarded(run_id, self._uri, lambda: super(OutboxRestStore, self).log_inputs(run_id, datasets,
                                                                                               models), record)

        def update_run_info(self, run_id, run_status, end_time, run_name):
            status = RunStatus.to_string(run_status) if isinstance(run_status, int) else str(run_status)

            def offline_info():
                info = _RUNS[run_id].info if run_id in _RUNS else None
                return RunInfo(run_id, info.experiment_id if info else "", info.user_id if info else "", status,
                               info.start_time if info else None, end_time, "active",
                               artifact_uri=info.artifact_uri if info else None, run_name=run_name)
            return _guarded(run_id, self._uri,
                            lambda: super(OutboxRestStore, self).update_run_info(run_id, run_status, end_time,
                                                                                 run_name),
                            lambda: {"op": "status", "status": status, "end_time": end_time, "run_name": run_name},
                            offline_info)

    return OutboxRestStore


def _artifact_repo_class() -> type:
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    class OutboxArtifactsRepository(MlflowArtifactsRepository):
        """The server's artifact store; the uploads of an offline watched run are copied into its pending/."""

        def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
            super().__init__(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
            found = re.search(r"([0-9a-f]{32})/artifacts", artifact_uri)
            self._run_id = found.group(1) if found else ""
            self._uri = tracking_uri or ""

        def _copy(self, source: Path, artifact_path: str | None) -> dict[str, Any]:
            copies = _WATCHED[self._run_id] / "artifacts"
            folder = copies / str(len(list(copies.glob("*"))) if copies.is_dir() else 0)
            if source.is_dir():
                shutil.copytree(source, folder)
            else:
                folder.mkdir(parents=True)
                shutil.copy2(source, folder / source.name)
            return {"op": "artifacts", "dir": str(folder.relative_to(_WATCHED[self._run_id])), "path": artifact_path}

        def log_artifact(self, local_file, artifact_path=None):
            return _guarded(self._run_id, self._uri,
                            lambda: super(OutboxArtifactsRepository, self).log_artifact(local_file, artifact_path),
                            lambda: self._copy(Path(local_file), artifact_path))

        def log_artifacts(self, local_dir, artifact_path=None):
            return _guarded(self._run_id, self._uri,
                            lambda: super(OutboxArtifactsRepository, self).log_artifacts(local_dir, artifact_path),
                            lambda: self._copy(Path(local_dir), artifact_path))

    return OutboxArtifactsRepository


def install(uri: str) -> None:
    """For a tracking server: MLflow builds this process's REST stores and server artifact repos from here on."""
    if not uri.startswith(("http://", "https://")) or uri in _INSTALLED:
        return
    from functools import partial

    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry
    from mlflow.tracking._tracking_service import utils as tracking_utils
    from mlflow.utils.credentials import get_default_host_creds

    store_class = _store_class()

    def build(store_uri: str, **_: Any) -> Any:
        return store_class(partial(get_default_host_creds, store_uri), store_uri)

    for scheme in ("http", "https"):
        tracking_utils._tracking_store_registry.register(scheme, build)
    _artifact_repository_registry.register("mlflow-artifacts", _artifact_repo_class())
    tracking_utils._tracking_store_registry._get_store_with_resolved_uri.cache_clear()  # stores built before
    tracking_utils._artifact_repos_cache.clear()
    _INSTALLED.add(uri)


def watch(run_id: str, output_dir: str | Path, uri: str) -> None:
    """From now on a write of ``run_id`` that cannot reach the server goes to ``<output_dir>/pending/``."""
    if uri not in _INSTALLED:
        return
    _WATCHED[run_id] = pending_dir(output_dir)
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).get_run(run_id)  # remembered: where its artifacts go, should the server vanish


def finish(run_id: str, uri: str) -> bool:
    """End of a training: upload what waits on disk if the server answers again; True when nothing waits."""
    folder = _WATCHED.pop(run_id, None)
    reason = _OFFLINE.pop(run_id, None)
    if folder is None or reason is None:
        return True
    from losslab.tracking.store import health_problem

    if health_problem(uri) is None:
        try:
            sync(folder, uri)
            return True
        except Exception as exc:  # noqa: BLE001  (it stays on disk; runs-sync says why)
            if not unreachable(exc):
                raise
    print(f"note: run {run_id}: results kept in {folder} (the tracking server did not answer); once it is up: "
          f"make runs-sync ARGS={folder}", file=sys.stderr, flush=True)
    return False


def _replay(client: Any, run_id: str, entry: dict[str, Any], folder: Path) -> None:
    from mlflow.entities import Metric, Param, RunTag

    op = entry["op"]
    if op == "batch":
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in entry["metrics"]]
        params = [Param(k, v) for k, v in entry["params"]]
        tags = [RunTag(k, v) for k, v in entry["tags"]]
        existing = client.get_run(run_id).data.params
        params = [p for p in params if p.key not in existing]  # a param is written once; a resend would fail
        for start in range(0, max(len(metrics), len(params), len(tags), 1), 100):
            client.log_batch(run_id, metrics[start:start + 100], params[start:start + 100], tags[start:start + 100])
    elif op == "delete_tag":
        if entry["key"] in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, entry["key"])
    elif op == "inputs":
        from mlflow.entities import DatasetInput
        from mlflow.protos.service_pb2 import DatasetInput as DatasetInputProto
        from mlflow.utils.proto_json_utils import parse_dict

        datasets = []
        for text in entry["datasets"]:
            proto = DatasetInputProto()
            parse_dict(json.loads(text), proto)
            datasets.append(DatasetInput.from_proto(proto))
        client.log_inputs(run_id, datasets)
    elif op == "artifacts":
        source = folder / entry["dir"]
        client.log_artifacts(run_id, str(source), entry["path"])
    elif op == "status":
        from losslab.tracking.liveness import DEAD_PREFIX

        run = client.get_run(run_id)
        if run.data.tags.get("error", "").startswith(DEAD_PREFIX) and entry["status"] == "FINISHED":
            client.delete_tag(run_id, "error")  # closed as dead while its results waited here: it did finish
        client.set_terminated(run_id, entry["status"], end_time=entry["end_time"])


def sync(folder: str | Path, uri: str | None = None) -> int:
    """Upload one ``pending/`` folder to its run; returns the number of journal entries sent."""
    from mlflow.tracking import MlflowClient

    folder = Path(folder)
    meta = json.loads((folder / "run.json").read_text())
    uri = uri or meta["tracking_uri"]
    run_id = meta["run_id"]
    entries = [json.loads(line) for line in (folder / JOURNAL).read_text(encoding="utf-8").splitlines() if line]
    progress = folder / "synced"
    done = int(progress.read_text()) if progress.is_file() else 0
    client = MlflowClient(uri)
    for index in range(done, len(entries)):
        _replay(client, run_id, entries[index], folder)
        progress.write_text(str(index + 1))
    shutil.rmtree(folder)
    print(f"run {run_id}: {len(entries) - done} pending write(s) uploaded to {uri}", file=sys.stderr)
    return len(entries) - done


def find_pending(roots: Sequence[str | Path]) -> list[Path]:
    """Every ``pending/`` folder (with a journal) under ``roots`` (a root may be one itself)."""
    found: list[Path] = []
    for root in map(Path, roots):
        if (root / JOURNAL).is_file():
            found.append(root)
        elif root.is_dir():
            found += sorted(p.parent for p in root.rglob(f"pending/{JOURNAL}"))
    return found


@friendly_exit
def main(argv: Sequence[str] | None = None) -> int:
    from losslab.paths import project_root
    from losslab.tracking.store import configure_http, health_problem

    parser = argparse.ArgumentParser(prog="python -m losslab.tracking.outbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", help="run output folders or pending/ folders (default: every one "
                                                   "under <project>/outputs and <project>/multirun)")
    args = parser.parse_args(argv)
    roots = args.folders or [project_root() / "outputs", project_root() / "multirun"]
    folders = find_pending(roots)
    if not folders:
        print(f"nothing waits to be uploaded (no pending/ under {', '.join(map(str, roots))})", file=sys.stderr)
        return 0
    failed = []
    for folder in folders:
        uri = json.loads((folder / "run.json").read_text())["tracking_uri"]
        configure_http(uri)
        if (problem := health_problem(uri, timeout=5.0)) is not None:
            failed.append(f"{folder}: {uri} does not answer ({problem})")
            continue
        sync(folder, uri)
    if failed:
        raise ConfigError("not uploaded: " + "; ".join(failed) + ". Start the server (make server) and run again.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
