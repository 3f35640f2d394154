"""Start and stop the daemons `make slurm` runs: by the pid they record, never by name."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

from losslab.errors import LosslabError
from losslab.paths import config_dir, project_root



def load_settings(name: str, **overrides: Any) -> Any:
    """``conf/<name>.yaml`` with the non-None ``overrides`` applied (``postgres.port`` style keys allowed)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config_dir() / f"{name}.yaml")
    for key, value in overrides.items():
        if value is not None:
            OmegaConf.update(cfg, key, value)
    return cfg


def run_dir_of(cfg: Any) -> Path:
    """``cfg.run_dir`` as an absolute path (relative ones are under the project root)."""
    path = Path(str(cfg.run_dir)).expanduser()
    return (path if path.is_absolute() else project_root() / path).resolve()


def find_tools(names: Iterable[str], sbin_dir: str | None) -> tuple[dict[str, str], list[str]]:
    """``({name: path}, [missing names])``: each tool in ``sbin_dir`` (default /usr/sbin), else on PATH."""
    found, missing = {}, []
    for name in names:
        candidate = Path(sbin_dir or "/usr/sbin") / name
        path = str(candidate) if candidate.is_file() else shutil.which(name)
        if path:
            found[name] = path
        else:
            missing.append(name)
    return found, missing


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True

def log_tail(path: Path, chars: int = 2500) -> str:
    return f"\n--- {path} ---\n{path.read_text(errors='replace')[-chars:]}" if path.is_file() else ""


def read_pid(pid_file: Path) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(pid_file.read_text().split()[0])
    return 0


def start_forking(command: list[str], pid_file: Path, log: Path, timeout: float, env: dict[str, str]) -> int:
    """Run a daemon that forks into the background; returns the pid it writes to ``pid_file``."""
    pid_file.unlink(missing_ok=True)
    result = subprocess.run(command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    name = Path(command[0]).name
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip()
        raise LosslabError(f"{name} did not start (exit {result.returncode}): {said}" + log_tail(log))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = read_pid(pid_file)
        if pid and running(pid):
            return pid
        time.sleep(0.1)
    raise LosslabError(f"{name} wrote no live pid to {pid_file} within {timeout:.0f} s" + log_tail(log))


def is_ours(pid: int, name: str, marker: str) -> bool:
    """Whether ``pid`` is still the daemon we started: its name on its command line, and our conf or socket
    there or in its environment (slurmdbd finds its conf through ``$SLURM_CONF``)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        environ = Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return name in cmdline and (marker in cmdline or marker in environ)


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited daemon waits for init to reap it, which can take a while)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return pid_alive(pid)  # no /proc: the signal check alone
    return stat[stat.rindex(")") + 2:][:1] not in ("Z", "X")


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM ``pid``, SIGKILL if it is still running after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if running(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
