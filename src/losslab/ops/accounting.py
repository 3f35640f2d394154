"""Job accounting for `make slurm`'s cluster: a private MariaDB and slurmdbd, so that ``sacct`` answers.

submitit (the Hydra SLURM launcher) follows its jobs with ``sacct``; without an accounting
database every poll fails with a warning and a job that dies without a result (killed,
out of memory) leaves the sweep waiting. This starts MariaDB on a free loopback port
(data in ``<run_dir>/db/``, created once; a ``slurm`` user with a generated password in
``<run_dir>/db/password``, mode 600) and slurmdbd next to it (``<run_dir>/slurmdbd.conf``,
where slurmdbd looks for it: beside ``$SLURM_CONF``). slurmctld registers the cluster itself.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from losslab.errors import ConfigError, LosslabError
from losslab.ops.daemons import find_tools, log_tail, read_pid

DATABASE = "slurm_acct_db"
TOOLS = ("mariadb-install-db", "mariadbd", "mariadb", "slurmdbd", "sacctmgr")


def binaries(sbin_dir: str) -> dict[str, str]:
    """Paths of the accounting tools; a clear error naming the fix when one is missing."""
    found, missing = find_tools(TOOLS, sbin_dir)
    if missing:
        raise ConfigError(f"SLURM accounting not installed ({', '.join(missing)} not found): run `make slurm-deps` "
                          "(apt-get install slurmdbd mariadb-server), or set accounting: false in conf/slurm.yaml.")
    return found


def _as_root_args() -> list[str]:
    return ["--user=root"] if os.geteuid() == 0 else []


def _wait(check: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise LosslabError(f"{what} not ready after {timeout:.0f} s" + log_tail(log))


def _sql(bins: dict[str, str], socket: Path, statement: str) -> subprocess.CompletedProcess:
    return subprocess.run([bins["mariadb"], "--no-defaults", f"--socket={socket}", "-u", "root", "-e", statement],
                          capture_output=True, text=True, timeout=20)


def start_database(bins: dict[str, str], run_dir: Path, socket: Path, port: int, timeout: float) -> tuple[int, str]:
    """MariaDB for the accounting tables on 127.0.0.1:``port`` (initialised once); returns (pid, password)."""
    db = run_dir / "db"
    data = db / "data"
    password_file = db / "password"
    if not (data / "mysql").is_dir():
        db.mkdir(parents=True, exist_ok=True)
        db.chmod(0o700)
        done = subprocess.run([bins["mariadb-install-db"], "--no-defaults", f"--datadir={data}", *_as_root_args(),
                               "--auth-root-authentication-method=socket", "--skip-test-db"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise LosslabError(f"mariadb-install-db failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    if not password_file.is_file():
        password_file.write_text(secrets.token_urlsafe(18) + "\n")
        password_file.chmod(0o600)
    password = password_file.read_text().strip()
    socket.parent.mkdir(parents=True, exist_ok=True)
    log, pid_file = db / "mariadbd.log", db / "mariadbd.pid"
    pid_file.unlink(missing_ok=True)
    with open(os.devnull, "wb") as null:
        subprocess.Popen([bins["mariadbd"], "--no-defaults", f"--datadir={data}", *_as_root_args(),
                          "--bind-address=127.0.0.1", f"--port={port}", f"--socket={socket}", f"--pid-file={pid_file}",
                          f"--log-error={log}", "--skip-name-resolve", "--innodb-buffer-pool-size=128M",
                          "--innodb-lock-wait-timeout=900"],
                         stdin=subprocess.DEVNULL, stdout=null, stderr=null, start_new_session=True)
    _wait(lambda: socket.exists() and _sql(bins, socket, "SELECT 1").returncode == 0, timeout, "MariaDB", log)
    created = _sql(bins, socket, f"CREATE DATABASE IF NOT EXISTS {DATABASE}; "
                   f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                   f"GRANT ALL ON {DATABASE}.* TO 'slurm'@'127.0.0.1';")
    if created.returncode != 0:
        raise LosslabError(f"MariaDB: cannot create {DATABASE} and its user: {created.stderr.strip()}")
    return read_pid(pid_file), password


def write_dbd_conf(run_dir: Path, host: str, dbd_port: int, db_port: int, password: str, munge_socket: Path) -> Path:
    """``slurmdbd.conf`` beside ``slurm.conf`` (slurmdbd finds it there), mode 600 as slurmdbd demands."""
    import getpass

    lines = {"AuthType": "auth/munge", "AuthInfo": f"socket={munge_socket}", "DbdAddr": "127.0.0.1", "DbdHost": host,
             "DbdPort": dbd_port, "SlurmUser": getpass.getuser(), "StorageType": "accounting_storage/mysql",
             "StorageHost": "127.0.0.1", "StoragePort": db_port, "StorageUser": "slurm", "StoragePass": password,
             "StorageLoc": DATABASE, "PidFile": run_dir / "slurmdbd.pid", "LogFile": run_dir / "log" / "slurmdbd.log"}
    path = run_dir / "slurmdbd.conf"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("# written by `make slurm` (losslab.ops.accounting)\n"
                    + "".join(f"{k}={v}\n" for k, v in lines.items()))
    return path


def slurm_conf_lines(dbd_port: int, munge_socket: Path) -> dict[str, Any]:
    """What slurm.conf needs to send the jobs' records to this slurmdbd (its munge socket: AccountingStoragePass)."""
    return {"AccountingStorageType": "accounting_storage/slurmdbd", "AccountingStorageHost": "127.0.0.1",
            "AccountingStoragePort": dbd_port, "AccountingStoragePass": munge_socket}


def start_dbd(bins: dict[str, str], run_dir: Path, env: dict[str, str], timeout: float) -> int:
    """slurmdbd (it creates its tables on the first start); returns once ``sacctmgr`` gets an answer."""
    pid_file, log = run_dir / "slurmdbd.pid", run_dir / "log" / "slurmdbd.log"
    pid_file.unlink(missing_ok=True)
    started = subprocess.run([bins["slurmdbd"]], env=env, capture_output=True, text=True, timeout=60)
    if started.returncode != 0:
        raise LosslabError(f"slurmdbd did not start: {(started.stderr or started.stdout).strip()[-2000:]}")

    def answers() -> bool:
        try:
            return subprocess.run([bins["sacctmgr"], "-n", "list", "cluster"], env=env, capture_output=True,
                                  timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    _wait(answers, timeout, "slurmdbd", log)
    return read_pid(pid_file)
