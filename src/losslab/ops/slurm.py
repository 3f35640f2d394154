"""A one-node SLURM cluster on this machine, started and stopped by the project itself.

    python -m losslab.ops.slurm start       # or: make slurm         (prints export SLURM_CONF=...)
    python -m losslab.ops.slurm stop        # or: make slurm-stop
    python -m losslab.ops.slurm status      # or: make slurm-status
    python -m losslab.ops.slurm conf        # the slurm.conf a sweep should use (make sweep LAUNCHER=slurm)

``start`` writes ``<run_dir>/slurm.conf`` for this host (one node with this machine's CPUs and
memory, one default partition, loopback ports picked at start), creates a munge key of its own
and starts ``munged`` on its own socket, then ``slurmctld`` and ``slurmd``; it returns once
``sinfo`` shows the node idle and prints ``export SLURM_CONF=<run_dir>/slurm.conf`` on stdout
(everything else goes to stderr, so ``eval "$(make -s slurm)"`` works). Process ids go to
``<run_dir>/slurm.json``; ``stop`` cancels the cluster's jobs, then stops exactly the daemons it
started (a munged, SLURM or database already on this machine is left alone: this cluster uses its
own sockets, ports and folders). With ``accounting: true`` (the default) a private MariaDB and
slurmdbd keep the jobs' records, so ``sacct`` answers as on a real cluster (submitit follows its
jobs with it): ``losslab.ops.accounting``. Settings: ``conf/slurm.yaml``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from losslab.errors import ConfigError, LosslabError, friendly_exit
from losslab.ops import accounting
from losslab.ops.daemons import (find_tools, free_port, is_ours, load_settings, log_tail, run_dir_of, running,
                                 start_forking, terminate)

STATE_FILE = "slurm.json"
DAEMONS = ("munged", "slurmctld", "slurmd")
READY = ("idle", "mixed", "allocated", "completing")  # sinfo %t of a node that takes jobs
SOCKET_DIR_MAX = 60  # slurmstepd and munged make Unix sockets (<= 107 bytes) under these folders


@dataclass
class SlurmState:
    """What ``start`` launched: enough for ``stop`` to stop exactly that."""

    slurm_conf: str
    cluster_name: str
    node: str
    partition: str
    munge_socket: str
    munged_pid: int
    slurmctld_pid: int
    slurmd_pid: int
    run_dir: str
    started_at: float
    db_pid: int = 0          # MariaDB and slurmdbd (accounting: true)
    dbd_pid: int = 0
    db_data: str = ""


def settings(**overrides: Any) -> Any:
    """``conf/slurm.yaml`` with the non-None ``overrides`` applied."""
    return load_settings("slurm", **overrides)


def socket_dir_of(run_dir: Path) -> Path:
    """Where munged's socket and slurmd's spool (slurmstepd sockets) go: ``run_dir``, or a short /tmp folder."""
    if len(str(run_dir)) <= SOCKET_DIR_MAX:
        return run_dir
    digest = hashlib.sha1(str(run_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"losslab-slurm-{digest}"


def binaries(cfg: Any) -> dict[str, str]:
    """Paths of the daemons and tools the cluster needs; a clear error naming the fix when one is missing."""
    found, missing = find_tools([*DAEMONS, "mungekey", "sinfo", "squeue", "scancel", "sbatch"], cfg.sbin_dir)
    if missing:
        raise ConfigError(f"SLURM/munge not installed ({', '.join(missing)} not found in {cfg.sbin_dir} or on PATH). "
                          "Run `make slurm-deps` (apt-get install slurm-wlm munge), or set sbin_dir in "
                          "conf/slurm.yaml.")
    return found


def node_resources(cfg: Any) -> tuple[int, int]:
    """(CPUs, memory in MB) the node offers: configured, else this machine's (90% of its memory)."""
    cpus = int(cfg.cpus) if cfg.cpus else len(os.sched_getaffinity(0))
    if cfg.memory_mb:
        return cpus, int(cfg.memory_mb)
    with open("/proc/meminfo", encoding="utf-8") as fh:
        total_kb = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
    return cpus, int(total_kb / 1024 * 0.9)


def render_conf(cfg: Any, run_dir: Path, node: str, munge_socket: Path, ctld_port: int, slurmd_port: int,
                accounting_lines: dict[str, Any] | None = None) -> str:
    """The slurm.conf of a one-node cluster: every path in ``run_dir``, loopback ports; accounting through
    ``accounting_lines`` (slurmdbd), else none."""
    import getpass

    user = getpass.getuser()
    cpus, memory = node_resources(cfg)
    spool = socket_dir_of(run_dir) / "spool"
    lines = {
        "ClusterName": cfg.cluster_name, "SlurmctldHost": f"{node}(127.0.0.1)",
        "SlurmctldPort": ctld_port, "SlurmdPort": slurmd_port, "SlurmUser": user, "SlurmdUser": user,
        "AuthType": "auth/munge", "CredType": "cred/munge",
        "AuthInfo": f"socket={munge_socket},cred_expire={int(cfg.requeue_delay_s)}",
        "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none", "MpiDefault": "none",
        "SelectType": "select/cons_tres", "SelectTypeParameters": "CR_Core_Memory",
        "SchedulerParameters": f"sched_interval={int(cfg.sched_interval_s)}",
        "JobAcctGatherType": "jobacct_gather/none",
        **(accounting_lines or {"AccountingStorageType": "accounting_storage/none"}),
        "JobCompType": "jobcomp/filetxt", "JobCompLoc": run_dir / "log" / "jobcomp.txt",
        "ReturnToService": 2, "KillWait": int(cfg.kill_wait_s), "MailProg": "/bin/true",
        "StateSaveLocation": run_dir / "state", "SlurmdSpoolDir": spool,
        "SlurmctldPidFile": run_dir / "slurmctld.pid", "SlurmdPidFile": run_dir / "slurmd.pid",
        "SlurmctldLogFile": run_dir / "log" / "slurmctld.log", "SlurmdLogFile": run_dir / "log" / "slurmd.log",
    }
    body = "".join(f"{key}={value}\n" for key, value in lines.items())
    return (f"# written by `make slurm` (losslab.ops.slurm, settings in conf/slurm.yaml); rewritten at each start\n"
            f"{body}NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN\n"
            f"PartitionName={cfg.partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP\n")


def slurm_env(slurm_conf: str | Path) -> dict[str, str]:
    return dict(os.environ, SLURM_CONF=str(slurm_conf))


def node_state(state: SlurmState) -> str:
    """``sinfo``'s short state of the node (``idle``, ``mixed``, ``down*`` ...), or ``""`` when nobody answers."""
    try:
        result = subprocess.run(["sinfo", "-h", "-n", state.node, "-o", "%t"], env=slurm_env(state.slurm_conf),
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def read_state(run_dir: Path) -> SlurmState | None:
    path = run_dir / STATE_FILE
    return SlurmState(**json.loads(path.read_text())) if path.is_file() else None


def write_state(run_dir: Path, state: SlurmState) -> None:
    (run_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2) + "\n")


def start_munged(bins: dict[str, str], run_dir: Path, munge_socket: Path, timeout: float) -> int:
    """munged with a key and a socket of this cluster's own (a system munged, if any, is not touched)."""
    key_dir = run_dir / "munge"
    key_dir.mkdir(parents=True, exist_ok=True)
    key_dir.chmod(0o700)
    key = key_dir / "munge.key"
    if not key.is_file():
        subprocess.run([bins["mungekey"], "--create", f"--keyfile={key}"], check=True, capture_output=True)
    munge_socket.parent.mkdir(parents=True, exist_ok=True)
    munge_socket.parent.chmod(0o755)  # munged wants its socket's folder traversable by all ...
    closed = [str(d) for d in munge_socket.parent.parents if not d.stat().st_mode & 0o001]
    if closed:  # ... and every folder above it
        raise ConfigError(f"munged's socket {munge_socket} is in a folder others cannot traverse ({closed[0]}): "
                          f"`chmod o+x {closed[0]}`, or set run_dir in conf/slurm.yaml (make slurm) / --run-dir "
                          "to a folder under one they can.")
    log = key_dir / "munged.log"
    return start_forking([bins["munged"], f"--socket={munge_socket}", f"--key-file={key}", f"--log-file={log}",
                    f"--pid-file={key_dir / 'munged.pid'}", f"--seed-file={key_dir / 'munged.seed'}"],
                   key_dir / "munged.pid", log, timeout, dict(os.environ))


def start(cfg: Any) -> SlurmState:
    """Start munged, slurmctld and slurmd (or find them running); see the module docstring."""
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = read_state(run_dir)
    if existing and node_state(existing).rstrip("*") in READY:
        print(f"already running: cluster '{existing.cluster_name}' (make slurm-stop to stop it)", file=sys.stderr)
        return existing
    if existing:
        print("a previous cluster left state behind and does not answer: stopping what is left of it", file=sys.stderr)
        stop(run_dir, float(cfg.stop_timeout))
    bins = binaries(cfg)
    t0 = time.monotonic()
    node = socket.gethostname().split(".")[0]
    short = socket_dir_of(run_dir)
    munge_socket = short / "munge-socket" / "munge.socket"
    for folder in (run_dir / "state", run_dir / "log", short / "spool"):
        folder.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "slurm.conf"
    ctld_port = int(cfg.slurmctld_port) if cfg.slurmctld_port else free_port()
    slurmd_port = int(cfg.slurmd_port) if cfg.slurmd_port else free_port()
    dbd_port, db_port = free_port(), free_port()
    extra = accounting.slurm_conf_lines(dbd_port, munge_socket) if cfg.accounting else None
    acct_bins = accounting.binaries(str(cfg.sbin_dir)) if cfg.accounting else {}
    conf.write_text(render_conf(cfg, run_dir, node, munge_socket, ctld_port, slurmd_port, extra))
    state = SlurmState(str(conf), str(cfg.cluster_name), node, str(cfg.partition), str(munge_socket), 0, 0, 0,
                       str(run_dir), time.time())
    timeout = float(cfg.start_timeout)
    env = slurm_env(conf)
    try:  # the state file is written after each daemon: a failed start is still stoppable
        state.munged_pid = start_munged(bins, run_dir, munge_socket, timeout)
        write_state(run_dir, state)
        if cfg.accounting:
            state.db_pid, password = accounting.start_database(acct_bins, run_dir, short / "db" / "mysqld.sock",
                                                               db_port, timeout)
            state.db_data = str(run_dir / "db" / "data")
            write_state(run_dir, state)
            accounting.write_dbd_conf(run_dir, node, dbd_port, db_port, password, munge_socket)
            state.dbd_pid = accounting.start_dbd(acct_bins, run_dir, env, float(cfg.accounting_timeout))
            write_state(run_dir, state)
        # its saved state carries the job id counter on: job ids are never reused (sacct keys on them)
        state.slurmctld_pid = start_forking([bins["slurmctld"], "-f", str(conf)], run_dir / "slurmctld.pid",
                                            run_dir / "log" / "slurmctld.log", timeout, env)
        write_state(run_dir, state)
        state.slurmd_pid = start_forking([bins["slurmd"], "-f", str(conf)], run_dir / "slurmd.pid",
                                         run_dir / "log" / "slurmd.log", timeout, env)
        write_state(run_dir, state)
        wait_ready(state, timeout)
    except BaseException:
        stop(run_dir, float(cfg.stop_timeout))
        raise
    cpus, memory = node_resources(cfg)
    print(f"SLURM cluster '{cfg.cluster_name}': node {node} ({cpus} CPUs, {memory} MB), partition '{cfg.partition}', "
          f"slurmctld :{ctld_port} (pid {state.slurmctld_pid}), slurmd :{slurmd_port} (pid {state.slurmd_pid}), "
          f"munged (pid {state.munged_pid}), accounting {'slurmdbd + MariaDB' if cfg.accounting else 'off'}; "
          f"ready in {time.monotonic() - t0:.1f} s; logs in {run_dir / 'log'}",
          file=sys.stderr)
    return state


def wait_ready(state: SlurmState, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = node_state(state)
        if seen.rstrip("*") in READY and not seen.endswith("*"):
            return
        time.sleep(0.3)
    run_dir = Path(state.run_dir)
    raise LosslabError(f"node {state.node} not idle after {timeout:.0f} s (sinfo says {seen or 'nothing'})"
                       + log_tail(run_dir / "log" / "slurmctld.log") + log_tail(run_dir / "log" / "slurmd.log"))


def cancel_jobs(state: SlurmState, timeout: float) -> list[str]:
    """scancel every job of this cluster and wait until the queue is empty; returns their ids."""
    env = slurm_env(state.slurm_conf)
    try:
        listed = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    jobs = listed.stdout.split() if listed.returncode == 0 else []
    if not jobs:
        return []
    subprocess.run(["scancel", *jobs], env=env, capture_output=True, timeout=10)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=10)
        if left.returncode != 0 or not left.stdout.strip():
            break
        time.sleep(0.5)
    return jobs


def stop(run_dir: Path, timeout: float = 30.0) -> list[str]:
    """Cancel the jobs, then stop slurmd, slurmctld and munged as recorded in ``run_dir/slurm.json``."""
    state = read_state(run_dir)
    if state is None:
        return []
    stopped = []
    if state.slurmctld_pid and running(state.slurmctld_pid):
        jobs = cancel_jobs(state, timeout)
        if jobs:
            stopped.append(f"{len(jobs)} job(s) cancelled ({', '.join(jobs)})")
    for name, pid, marker in (("slurmd", state.slurmd_pid, state.slurm_conf),
                              ("slurmctld", state.slurmctld_pid, state.slurm_conf),
                              ("slurmdbd", state.dbd_pid, state.slurm_conf),
                              ("mariadbd", state.db_pid, state.db_data or "-"),
                              ("munged", state.munged_pid, state.munge_socket)):
        if is_ours(pid, name, marker):
            terminate(pid, timeout)
            stopped.append(f"{name} (pid {pid})")
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    short = socket_dir_of(run_dir)
    if short != run_dir:
        shutil.rmtree(short, ignore_errors=True)
    return stopped


def conf_for_jobs(run_dir: Path) -> str:
    """The slurm.conf a sweep should submit with: ``$SLURM_CONF``, else the running ``make slurm`` cluster's,
    else the system's; a clear error when there is none."""
    configured = os.environ.get("SLURM_CONF")
    if configured:
        if not Path(configured).is_file():
            raise ConfigError(f"SLURM_CONF={configured}: no such file. Unset it, or start a cluster with `make slurm` "
                              "and paste the export line it prints.")
        return configured
    state = read_state(run_dir)
    if state is not None and node_state(state):
        return state.slurm_conf
    for system in (Path("/etc/slurm/slurm.conf"), Path("/etc/slurm-llnl/slurm.conf")):
        if system.is_file():
            return str(system)
    raise ConfigError("no SLURM cluster to submit to: start one with `make slurm` (a one-node cluster on this "
                      "machine), or set SLURM_CONF to your cluster's slurm.conf (on a login node, sbatch finds it).")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m losslab.ops.slurm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "status", "conf"])
    parser.add_argument("--run-dir", help="where slurm.conf, state, logs and slurm.json live (default .run/slurm)")
    parser.add_argument("--cpus", type=int, help="CPUs the node offers (default: conf/slurm.yaml, else all)")
    return parser.parse_args(argv)


@friendly_exit
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = settings(run_dir=args.run_dir, cpus=args.cpus)
    run_dir = run_dir_of(cfg)
    if args.action == "start":
        state = start(cfg)
        print(f"export SLURM_CONF={state.slurm_conf}")
        return 0
    if args.action == "stop":
        stopped = stop(run_dir, float(cfg.stop_timeout))
        print("stopped: " + "; ".join(stopped) if stopped else f"nothing to stop (no {run_dir / STATE_FILE})",
              file=sys.stderr)
        return 0
    if args.action == "conf":
        print(conf_for_jobs(run_dir))
        return 0
    state = read_state(run_dir)
    if state is None:
        print(f"not running (no {run_dir / STATE_FILE})", file=sys.stderr)
        return 1
    seen = node_state(state)
    pids = {"munged": state.munged_pid, "slurmdbd": state.dbd_pid, "mariadbd": state.db_pid,
            "slurmctld": state.slurmctld_pid, "slurmd": state.slurmd_pid}
    alive = {name: running(pid) for name, pid in pids.items() if pid}
    print(f"cluster '{state.cluster_name}': node {state.node} {seen or 'does NOT answer'}; "
          + ", ".join(f"{name} {'running' if up else 'NOT running'}" for name, up in alive.items()), file=sys.stderr)
    up = bool(seen) and all(alive.values())
    if up:
        print(f"export SLURM_CONF={state.slurm_conf}")
    return 0 if up else 1


if __name__ == "__main__":
    sys.exit(main())
