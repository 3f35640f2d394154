"""``losslab.sweeps.worker_server``: a sweep's joblib workers forked from one server that imported the training stack,
with the thread limits joblib gives the workers it spawns itself; the server stops with the sweep."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT
from losslab.sweeps.jobs import nvidia_device_present

PROBE = textwrap.dedent("""
    import json, os, sys

    def probe():
        import torch
        lightning_before = "pytorch_lightning" in sys.modules  # before this task imported anything itself
        return {"ppid": os.getppid(), "lightning": lightning_before, "threads": torch.get_num_threads(),
                "nice": os.nice(0), "pid_env": os.environ.get("LOSSLAB_SWEEP_PID")}

    if __name__ == "__main__":
        from joblib import Parallel, delayed
        from losslab.sweeps import worker_server

        started = worker_server.start(2)
        env_after = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "LOSSLAB_SWEEP_PID")}
        workers = Parallel(n_jobs=2)(delayed(probe)() for _ in range(4))
        print(json.dumps({"pid": os.getpid(), "started": started, "env_after": env_after, "workers": workers}))
""")


def run_probe(tmp_path, switch: str) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_NUM_THREADS", "_MAXIMUM_THREADS"))}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=env | {"LOSSLAB_WORKER_SERVER": switch, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(nvidia_device_present(), reason="the server is off where an NVIDIA device exists")
def test_workers_fork_from_one_server_that_imported_the_stack_with_joblibs_thread_limits(tmp_path):
    from joblib import cpu_count

    from losslab.sweeps.jobs import WORKER_NICENESS

    threads = max(cpu_count() // 2, 1)  # what joblib gives each of 2 workers it spawns itself
    served, spawned = run_probe(tmp_path, "1"), run_probe(tmp_path, "0")

    assert served["started"] and not spawned["started"]
    parents = {w["ppid"] for w in served["workers"]}
    assert len(parents) == 1 and served["pid"] not in parents  # every worker a fork of one other process: the server
    assert all(w["lightning"] for w in served["workers"])  # imported before the first task, once, by the server
    assert {w["threads"] for w in served["workers"]} == {w["threads"] for w in spawned["workers"]} == {threads}
    assert {w["nice"] for w in served["workers"]} == {WORKER_NICENESS}
    assert {w["pid_env"] for w in served["workers"]} == {None}  # a sweep a worker starts gets no server of ours
    assert served["env_after"] == {"OMP_NUM_THREADS": None, "LOSSLAB_SWEEP_PID": None}  # the sweep's own: unchanged
    assert {w["ppid"] for w in spawned["workers"]} == {spawned["pid"]}  # switched off: loky spawns them itself


def test_one_worker_or_the_switch_off_leaves_loky_alone(monkeypatch):
    from joblib.externals.loky.backend import context

    from losslab.sweeps import worker_server

    assert not worker_server.start(1)
    monkeypatch.setenv("LOSSLAB_WORKER_SERVER", "0")
    assert not worker_server.start(4)
    assert context.get_start_method() is None  # this process's joblib untouched


def test_worker_environment_is_joblibs_limits_and_keeps_a_set_value(monkeypatch):
    from joblib import cpu_count
    from joblib.parallel import LokyBackend

    from losslab.sweeps.worker_server import worker_environment

    for var in LokyBackend.MAX_NUM_THREADS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    env = worker_environment(2)
    assert set(env) == set(LokyBackend.MAX_NUM_THREADS_VARS)
    assert env["OMP_NUM_THREADS"] == str(max(cpu_count() // 2, 1)) and env["OPENBLAS_NUM_THREADS"] == "3"
    assert worker_environment(10 * cpu_count())["OMP_NUM_THREADS"] == "1"


WATCHED = textwrap.dedent("""
    import os, sys, threading, time
    from losslab.sweeps.worker_preload import _exit_with

    parent = os.getpid()
    child = os.fork()
    if child == 0:  # the "server", still importing (sleeping) when its sweep is gone
        threading.Thread(target=_exit_with, args=(parent, threading.Event()), daemon=True).start()
        time.sleep(120)
        os._exit(3)
    print(child, flush=True)
    os._exit(0)  # the sweep fails at once
""")


def test_a_server_still_importing_stops_when_its_sweep_is_gone(tmp_path):
    script = tmp_path / "watched.py"
    script.write_text(WATCHED)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    child = int(done.stdout.split()[0])
    for _ in range(300):  # it would sleep 120 s without the watch
        if not running(child):
            return
        time.sleep(0.1)
    os.kill(child, 9)
    pytest.fail("the orphaned server kept running")


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited orphan waits for its reaper in the process table)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
