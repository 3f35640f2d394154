"""A private PostgreSQL cluster for the team server: ``initdb`` once, start on a loopback port, stop.

The cluster lives under ``<run_dir>/pg/`` and is password-protected (scram-sha-256). When we
are root its tools run as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from pathlib import Path
from typing import Any

from losslab.errors import ConfigError, LosslabError


SOCKET_PATH_MAX = 100  # a Unix socket path must fit in 107 bytes (".s.PGSQL.<port>" included)


def postgres_bin_dir(configured: str | None = None) -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: configured, else Debian's newest, else PATH."""
    import shutil

    candidates = [Path(configured)] if configured else []
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                    if p.parent.name.isdigit() else 0, reverse=True)
    candidates += debian
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).resolve().parent)
    for path in candidates:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    raise ConfigError("PostgreSQL is not installed (no initdb/pg_ctl in /usr/lib/postgresql/*/bin or on PATH). "
                      "Run `make postgres-deps` (apt-get install postgresql) "
                      "or set postgres.bin_dir in conf/server.yaml.")


class DbUser:
    """Runs PostgreSQL's tools as ``os_user`` when we are root (postgres refuses to run as root)."""

    def __init__(self, os_user: str) -> None:
        self.switch = os.geteuid() == 0
        if self.switch:
            import pwd

            try:
                entry = pwd.getpwnam(os_user)
            except KeyError:
                raise ConfigError(f"conf/server.yaml postgres.os_user: no system user '{os_user}' (Debian's postgresql "
                                  "package creates 'postgres'; run `make postgres-deps`).") from None
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.name = os_user

    def chown(self, path: Path) -> None:
        if self.switch:
            os.chown(path, self.uid, self.gid)

    def run(self, command: list[str], cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess:
        extra: dict[str, Any] = {"user": self.uid, "group": self.gid, "extra_groups": []} if self.switch else {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = env["LANG"] = "C.UTF-8"
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              **extra, **kwargs)

    def check_writable(self, path: Path) -> None:
        result = self.run(["test", "-w", str(path), "-a", "-x", str(path)], cwd=Path("/"))
        if result.returncode != 0:
            raise ConfigError(f"{path}: the '{self.name}' user cannot write there (PostgreSQL runs as that user). "
                              "Make the folders above it traversable (chmod o+x) or set run_dir in conf/server.yaml "
                              "to a folder it can reach (e.g. under /tmp).")


def checked(result: subprocess.CompletedProcess, what: str, log: Path | None = None) -> None:
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log and log.is_file() else ""
        output = (result.stderr or result.stdout).strip()[-2000:]
        raise LosslabError(f"{what} failed (exit {result.returncode}): {output}"
                           + (f"\n--- {log} ---\n{tail}" if tail else ""))


def init_cluster(pg_dir: Path, bin_dir: Path, db_user: DbUser, cfg: Any) -> str:
    """``initdb`` a password-protected cluster in ``pg_dir/data`` (once); returns the superuser's password."""
    password_file = pg_dir / "password"
    data = pg_dir / "data"
    if (data / "PG_VERSION").is_file() and password_file.is_file():
        return password_file.read_text().strip()
    pg_dir.mkdir(parents=True, exist_ok=True)
    pg_dir.chmod(0o755)
    db_user.chown(pg_dir)
    db_user.check_writable(pg_dir)
    password = secrets.token_urlsafe(24)
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    db_user.chown(password_file)  # initdb reads it as the database user
    result = db_user.run([str(bin_dir / "initdb"), "-D", str(data), "-U", str(cfg.user), f"--pwfile={password_file}",
                          "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"],
                         cwd=pg_dir)
    checked(result, "initdb")
    if db_user.switch:
        os.chown(password_file, 0, 0)  # back to root: only we need it from now on
    return password


def start_postgres(pg_dir: Path, bin_dir: Path, db_user: DbUser, port: int, timeout: int) -> int:
    """Start the cluster on 127.0.0.1:``port`` (socket in ``pg_dir`` when the path is short enough); returns its pid."""
    data = pg_dir / "data"
    socket_dir = str(pg_dir) if len(str(pg_dir)) + 20 < SOCKET_PATH_MAX else ""
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={shlex.quote(socket_dir)}"
    log = pg_dir / "postgres.log"
    result = db_user.run([str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w", "-t", str(timeout),
                          "-o", options], cwd=pg_dir)
    checked(result, "pg_ctl start", log)
    return int((data / "postmaster.pid").read_text().split()[0])


def ensure_database(port: int, user: str, password: str, database: str) -> None:
    """Create ``database`` unless it exists (connecting over TCP to the ``postgres`` database)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres",
                         autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def stop_postgres(data: Path, bin_dir: Path, db_user: DbUser) -> bool:
    if not (data / "postmaster.pid").is_file():
        return False
    result = db_user.run([str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60"],
                         cwd=data.parent)
    checked(result, "pg_ctl stop")
    return True
