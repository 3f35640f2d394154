"""A team MLflow tracking server on PostgreSQL, started and stopped by the project itself.

    python -m losslab.ops.server start [--port 5000]     # or: make server [PORT=5000]
    python -m losslab.ops.server stop                    # or: make server-stop
    python -m losslab.ops.server status
    python -m losslab.ops.server start --auth             # or: make server AUTH=1 (losslab.ops.auth)
    python -m losslab.ops.server user NAME [--permission READ]   # or: make server-user NAME=...

``start`` initialises (once) a PostgreSQL cluster under ``<root>/.run/pg/`` and starts it on a
free loopback port, creates the ``mlflow`` database, then starts ``mlflow server`` on
127.0.0.1 with that database as backend store and ``<root>/.run/artifacts`` as artifact store
(served through the server, so clients need no access to the folder). It returns once
``/health`` answers and prints ``export MLFLOW_TRACKING_URI=http://127.0.0.1:<port>`` on stdout
(everything else goes to stderr, so ``eval "$(make -s server)"`` works). Ports and process ids
go to ``.run/server.json``; ``stop`` stops exactly those processes and keeps the data, so the
next ``start`` finds every run again. Settings: ``conf/server.yaml``. Without authentication the server binds
loopback only; ``--auth`` runs MLflow's basic-auth app (``losslab.ops.auth``) and allows another ``--host``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from losslab.errors import ConfigError, LosslabError, friendly_exit
from losslab.ops.auth import add_user, first_start_message
from losslab.ops.auth import server_env as auth_server_env
from losslab.ops.daemons import free_port, load_settings, pid_alive, port_is_free, run_dir_of
from losslab.ops.postgres import DbUser, ensure_database, init_cluster, postgres_bin_dir, start_postgres, stop_postgres
from losslab.paths import config_dir
from losslab.tracking.store import health_problem

STATE_FILE = "server.json"


@dataclass
class ServerState:
    """What ``start`` launched: enough for ``stop`` to stop exactly that."""

    tracking_uri: str
    host: str
    port: int
    mlflow_pid: int
    pg_port: int
    pg_pid: int
    pg_data: str
    pg_bin: str
    run_dir: str
    started_at: float
    auth: bool = False


def backend_store_uri(cfg: Any, port: int, password: str) -> str:
    from urllib.parse import quote

    pg = cfg.postgres
    return f"{pg.driver}://{quote(str(pg.user))}:{quote(password)}@127.0.0.1:{port}/{pg.database}"


def start_mlflow(run_dir: Path, host: str, port: int, backend_uri: str, workers: int,
                 auth_env: dict[str, str] | None = None) -> subprocess.Popen:
    """``mlflow server`` in its own process group; the backend URI (with its password) and, with ``auth_env``, the
    basic-auth secrets travel in the environment (``ps`` shows neither)."""
    artifacts = run_dir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MLFLOW_BACKEND_STORE_URI=backend_uri, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               **(auth_env or {}))
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    command = [sys.executable, "-m", "mlflow", "server", "--artifacts-destination", str(artifacts),
               "--host", host, "--port", str(port), "--workers", str(workers)]
    if auth_env is not None:
        command += ["--app-name", "basic-auth"]
    log = open(run_dir / "mlflow.log", "ab")
    try:
        return subprocess.Popen(command, cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def healthy(uri: str, timeout: float = 2.0) -> bool:
    """Whether the server at ``uri`` answers ``/health`` (``tracking.store.health_problem``)."""
    return health_problem(uri, timeout) is None


def wait_healthy(uri: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(uri):
            return
        if process.poll() is not None:
            break
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
    reason = f"exited with {process.returncode}" if process.poll() is not None else f"no /health after {timeout:.0f} s"
    raise LosslabError(f"mlflow server {reason}; its log ({log}):\n{tail}")


def read_state(run_dir: Path) -> ServerState | None:
    path = run_dir / STATE_FILE
    if not path.is_file():
        return None
    return ServerState(**json.loads(path.read_text()))


def write_state(run_dir: Path, state: ServerState) -> None:
    path = run_dir / STATE_FILE
    path.write_text(json.dumps(asdict(state), indent=2) + "\n")
    path.chmod(0o600)


def settings(**overrides: Any) -> Any:
    """``conf/server.yaml`` with the non-None ``overrides`` applied (``postgres.port`` style keys allowed)."""
    return load_settings("server", **overrides)


def _group_of(pid: int) -> int | None:
    with contextlib.suppress(ProcessLookupError):
        return os.getpgid(pid)
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def start(cfg: Any) -> ServerState:
    """Start PostgreSQL and the MLflow server (or find them running); see the module docstring."""
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = read_state(run_dir)
    auth = bool(cfg.auth.enabled)
    if existing and healthy(existing.tracking_uri):
        print(f"already running: {existing.tracking_uri}{' with authentication' if existing.auth else ''} "
              "(make server-stop to stop it)", file=sys.stderr)
        if auth and not existing.auth:
            print("note: it runs WITHOUT authentication; make server-stop, then make server AUTH=1", file=sys.stderr)
        return existing
    if existing:
        print("a previous server left state behind and does not answer: stopping what is left of it", file=sys.stderr)
        stop(run_dir)
    host = str(cfg.host)
    if not auth and host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"host {host}: without authentication the server binds loopback only (anyone reaching the "
                          "port could read or delete every run). Use make server AUTH=1 HOST=... or leave HOST unset.")
    port = int(cfg.port) if cfg.port else free_port(host)
    if not port_is_free(host, port):
        raise ConfigError(f"port {port} on {host} is in use: choose another (make server PORT=...) or leave it unset.")
    bin_dir = postgres_bin_dir(cfg.postgres.bin_dir)
    db_user = DbUser(str(cfg.postgres.os_user))
    pg_dir = run_dir / "pg"
    pg_port = int(cfg.postgres.port) if cfg.postgres.port else free_port()
    password = init_cluster(pg_dir, bin_dir, db_user, cfg.postgres)
    t0 = time.monotonic()
    pg_pid = start_postgres(pg_dir, bin_dir, db_user, pg_port, int(cfg.postgres.start_timeout))
    process: subprocess.Popen | None = None
    try:
        ensure_database(pg_port, str(cfg.postgres.user), password, str(cfg.postgres.database))
        print(f"PostgreSQL {bin_dir.parent.name} on 127.0.0.1:{pg_port} (pid {pg_pid}, data {pg_dir / 'data'}) "
              f"in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        uri = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        auth_env, first_auth = auth_server_env(run_dir, cfg.auth) if auth else (None, False)
        process = start_mlflow(run_dir, host, port, backend_store_uri(cfg, pg_port, password), int(cfg.workers),
                               auth_env)
        state = ServerState(uri, host, port, process.pid, pg_port, pg_pid, str(pg_dir / "data"), str(bin_dir),
                            str(run_dir), time.time(), auth)
        write_state(run_dir, state)  # before waiting: a failed start is still stoppable
        wait_healthy(uri, process, float(cfg.health_timeout), run_dir / "mlflow.log")
    except BaseException:
        if process is not None:
            _stop_group(process.pid)
        stop_postgres(pg_dir / "data", bin_dir, db_user)
        (run_dir / STATE_FILE).unlink(missing_ok=True)
        raise
    print(f"MLflow server {uri} (pid {process.pid}): backend PostgreSQL database '{cfg.postgres.database}', "
          f"artifacts in {run_dir / 'artifacts'}; logs in {run_dir}; ready in {time.monotonic() - t0:.1f} s"
          + ("; basic-auth: clients need MLFLOW_TRACKING_USERNAME/PASSWORD" if auth else ""), file=sys.stderr)
    if auth and (run_dir / "auth" / "basic_auth.db").is_file():
        (run_dir / "auth" / "basic_auth.db").chmod(0o600)  # password hashes: the owner's only, like the rest
    if first_auth:
        print(first_start_message(run_dir, cfg.auth), file=sys.stderr)
    return state


def _stop_group(pid: int, timeout: float = 20.0) -> bool:
    """SIGTERM the process group led by ``pid`` (the server and its workers), SIGKILL after ``timeout``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        _reap(pid)
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    """Collect our own child (a failed start); a server started by an earlier command is not ours."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(run_dir: Path) -> list[str]:
    """Stop the server and the cluster recorded in ``run_dir/server.json``; returns what was stopped."""
    state = read_state(run_dir)
    if state is None:
        return []
    stopped = []
    if "mlflow" in _cmdline(state.mlflow_pid) and _group_of(state.mlflow_pid) == state.mlflow_pid:
        _stop_group(state.mlflow_pid)
        stopped.append(f"mlflow server (process group {state.mlflow_pid}, port {state.port})")
    cfg = settings()
    if stop_postgres(Path(state.pg_data), Path(state.pg_bin), DbUser(str(cfg.postgres.os_user))):
        stopped.append(f"PostgreSQL (pid {state.pg_pid}, port {state.pg_port})")
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m losslab.ops.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "status", "user"])
    parser.add_argument("name", nargs="?", help="user: the user to add to the AUTH server")
    parser.add_argument("--auth", action="store_true", help="start: MLflow's basic-auth app (make server AUTH=1)")
    parser.add_argument("--permission", default=None, help="user: READ, EDIT (default), MANAGE on the project's "
                                                           "experiments and registered models")
    parser.add_argument("--port", type=int, help="tracking server port (default: conf/server.yaml, else a free one)")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--run-dir", help="where the cluster, artifacts, logs and state live (default <root>/.run)")
    return parser.parse_args(argv)


@friendly_exit
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = settings(port=args.port, host=args.host, run_dir=args.run_dir, **{"auth.enabled": args.auth or None})
    run_dir = run_dir_of(cfg)
    if args.action == "user":
        state = read_state(run_dir)
        if state is None or not healthy(state.tracking_uri):
            raise ConfigError(f"no server answers from {run_dir}: start it first (make server AUTH=1).")
        if not state.auth:
            raise ConfigError(f"{state.tracking_uri} runs without authentication: make server-stop, then make server "
                              "AUTH=1.")
        if not args.name:
            raise ConfigError("which user? make server-user NAME=<name>")
        from omegaconf import OmegaConf

        experiment = str(OmegaConf.load(config_dir() / "tracking" / "mlflow.yaml").experiment)
        add_user(state.tracking_uri, run_dir, cfg.auth, args.name, args.permission or str(cfg.auth.user_permission),
                 experiment)
        return 0
    if args.action == "start":
        state = start(cfg)
        print(f"export MLFLOW_TRACKING_URI={state.tracking_uri}")
        return 0
    if args.action == "stop":
        stopped = stop(run_dir)
        print("stopped: " + "; ".join(stopped) if stopped else f"nothing to stop (no {run_dir / STATE_FILE})",
              file=sys.stderr)
        return 0
    state = read_state(run_dir)
    if state is None:
        print(f"not running (no {run_dir / STATE_FILE})", file=sys.stderr)
        return 1
    up = healthy(state.tracking_uri)
    print(f"{state.tracking_uri} {'answers' if up else 'does NOT answer'}; PostgreSQL 127.0.0.1:{state.pg_port} "
          f"(pid {state.pg_pid}, {'running' if pid_alive(state.pg_pid) else 'not running'})", file=sys.stderr)
    if up:
        print(f"export MLFLOW_TRACKING_URI={state.tracking_uri}")
    return 0 if up else 1


if __name__ == "__main__":
    sys.exit(main())
