"""The MLflow store: where it is, that it is reachable and writable, and its experiments.

The store is ``tracking.uri`` → ``$MLFLOW_TRACKING_URI`` → ``sqlite:///<root>/mlflow.db``
(artifacts in ``<root>/mlartifacts``). Experiments are created once, under a file lock for
sqlite stores, and runs are started by experiment id, never by name, so parallel jobs cannot
be misfiled.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from losslab.errors import ConfigError
from losslab.paths import default_tracking_uri


def tracking_uri(cfg: Any | None = None) -> str:
    """``tracking.uri`` → ``$MLFLOW_TRACKING_URI`` → the project's sqlite store; for a tracking server, this
    process's MLflow HTTP retries are set from ``tracking.http`` (``configure_http``)."""
    configured = cfg.get("uri") if cfg is not None else None
    uri = str(configured) if configured else default_tracking_uri()
    configure_http(uri, cfg.get("http") if cfg is not None else None)
    return uri


# tracking.http key → the MLflow client's own environment variable (read at every request)
HTTP_ENV = {"max_retries": "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "backoff_factor": "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
            "backoff_jitter": "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "timeout": "MLFLOW_HTTP_REQUEST_TIMEOUT"}
_SET_BY_US: dict[str, str] = {}


def http_settings(cfg_http: Any | None = None) -> dict[str, Any]:
    """``tracking.http`` as given, else as in ``conf/tracking/mlflow.yaml``."""
    if cfg_http is None:
        from omegaconf import OmegaConf

        from losslab.paths import config_dir

        cfg_http = OmegaConf.load(config_dir() / "tracking" / "mlflow.yaml").get("http") or {}
    return {str(k): v for k, v in dict(cfg_http).items()}


def configure_http(uri: str, cfg_http: Any | None = None) -> None:
    """For an ``http(s)://`` store: MLflow's retry settings (``MLFLOW_HTTP_REQUEST_*``) from ``tracking.http``.

    A variable the user exported wins; values this function set earlier are replaced. MLflow retries a
    failed request (refused connection, 408/429/5xx) ``max_retries`` times, waiting ``backoff_factor ·
    2^(n-1)`` s (at most 120 s) plus up to ``backoff_jitter`` s before try n+1, each try at most ``timeout`` s.
    """
    import os

    if not uri.startswith(("http://", "https://")):
        return
    for key, value in http_settings(cfg_http).items():
        name = HTTP_ENV.get(key)
        if name is None or value is None:
            continue
        if name in os.environ and _SET_BY_US.get(name) != os.environ[name]:
            continue  # exported by the user
        os.environ[name] = _SET_BY_US[name] = str(value)


def ensure_experiment(client: Any, name: str, uri: str) -> str:
    """The id of experiment ``name``, creating it (race-safe) with artifacts beside a sqlite store."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise ConfigError(f"MLflow experiment '{name}' is deleted in {uri}; restore it or set tracking.experiment.")
        return found.experiment_id
    location = artifact_root_for(uri)
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another process created it first
        if found is None:
            raise
        return found.experiment_id


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///…`` URI; None for any other store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def artifact_root_for(uri: str) -> str | None:
    """Artifacts of a sqlite store live beside it (``<db dir>/mlartifacts``), not in the cwd."""
    db = sqlite_path(uri)
    return (db.resolve().parent / "mlartifacts").as_uri() if db else None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise store creation/migration and experiment creation across processes (sqlite only).

    Several processes creating one new sqlite store at once corrupt it, and racing
    ``set_experiment`` calls misfile runs: every process takes this file lock for that step.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def experiment_id_for(uri: str, experiment: str) -> str:
    """Open (creating or upgrading if needed) the store and return the experiment's id."""
    from mlflow.tracking import MlflowClient

    with store_lock(uri):
        return ensure_experiment(MlflowClient(uri), experiment, uri)


def health_problem(uri: str, timeout: float = 2.0) -> str | None:
    """Ask the tracking server's ``/health``: None when it answers 200, else what went wrong."""
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            return None if response.status == 200 else f"/health answered HTTP {response.status}"
    except OSError as exc:  # URLError, HTTPError, timeouts and refused connections are all OSErrors
        return str(exc)


def check_store(uri: str, wait_s: float = 0.0) -> None:
    """Fail fast, with the fix, when the tracking store cannot be reached or written.

    ``wait_s`` > 0: a tracking server that does not answer is asked again for up to that long (a sweep's
    jobs ride out a server restart) before failing.
    """
    import time

    from losslab.errors import ConfigError

    fix = "Set MLFLOW_TRACKING_URI (or tracking.uri) to a reachable, writable store, or unset it for the default."
    if uri.startswith(("http://", "https://")):
        problem = health_problem(uri, timeout=5.0)
        deadline = time.monotonic() + wait_s
        if problem and wait_s > 0:
            import sys

            print(f"note: tracking server {uri} does not answer ({problem}); waiting up to {wait_s:.0f} s",
                  file=sys.stderr, flush=True)
        while problem and time.monotonic() < deadline:
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
            problem = health_problem(uri, timeout=5.0)
        if problem:
            raise ConfigError(f"tracking server {uri} is unreachable ({problem}). Start it (make server) or: {fix}")
    elif (db := sqlite_path(uri)) is not None:
        import os

        parent = db.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"tracking store {uri}: cannot create {parent} ({exc.strerror}). {fix}") from None
        target = db if db.exists() else parent
        if not os.access(target, os.W_OK):
            raise ConfigError(f"tracking store {uri}: {target} is read-only. {fix}")


def search_all(client: Any, experiment_ids: list[str], filter_string: str = "") -> list[Any]:
    """Every run matching ``filter_string`` (all pages)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
