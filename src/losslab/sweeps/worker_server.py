"""A sweep's joblib workers forked from one process that imported the training stack once.

Hydra's joblib launcher runs a sweep's jobs in loky worker processes. Spawned the usual way, each worker is a fresh
interpreter that imports torch, Lightning and MLflow itself (~6 s of CPU each), so on 2 cores the first trainings
began ~9 s after the command, three processes sharing the cores for their imports. ``start`` — the first step of
``python -m losslab.sweeps`` with two or more workers — launches Python's fork server at once; the server imports
that stack a single time, at the workers' low priority (``losslab.sweeps.worker_preload``), while this process
composes the sweep and opens its MLflow run; loky then forks every worker from it, imports done (README
"Performance": the first trainings begin ~2 s sooner).

Forking is safe because the server only imports: it runs no torch op (no thread pool exists yet) and never touches
CUDA. What loky hands the workers it spawns is handed to the server instead: joblib's thread limits (cores // jobs
for OpenMP, BLAS & co. unless set; loky applies them only in processes it spawns itself, so without this each forked
worker would run torch with every core's threads). The server ends with this process (multiprocessing's own rule);
while it still imports, it watches this process and stops when it is gone (a sweep that failed at once).
"""

from __future__ import annotations

import os

from losslab import environ
from losslab.sweeps.jobs import nvidia_device_present
from losslab.sweeps.worker_preload import PARENT_PID_ENV  # the preload's watch: it stops when this pid is gone

PRELOAD = "losslab.sweeps.worker_preload"
SWITCH_ENV = "LOSSLAB_WORKER_SERVER"  # 0: workers spawned the usual way, each importing on its own


def start(jobs: int) -> bool:
    """Make loky fork the sweep's ``jobs`` workers from a fork server started now, importing the training stack.
    False (nothing changed) for fewer than 2 workers, ``LOSSLAB_WORKER_SERVER=0``, a loky start method set already
    by someone else, or a machine with an NVIDIA device (its workers are spawned as before)."""
    import multiprocessing
    from multiprocessing import forkserver

    from joblib.externals.loky.backend import context

    if jobs < 2 or os.environ.get(SWITCH_ENV, "1") == "0" or context.get_start_method() not in (None, "forkserver"):
        return False
    if nvidia_device_present():  # forks and CUDA: not tried on a GPU yet, and sweeps there run one worker
        return False
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    context.set_start_method("forkserver", force=True)
    multiprocessing.get_context("forkserver").set_forkserver_preload([PRELOAD])
    with environ.scoped(worker_environment(jobs) | {PARENT_PID_ENV: str(os.getpid())}):
        forkserver.ensure_running()  # the server (and its environment) starts now; its imports follow
    return True


def worker_environment(jobs: int) -> dict[str, str]:
    """The thread limits joblib gives each of ``jobs`` loky workers it spawns (``OMP_NUM_THREADS`` & co.: a value
    already in this environment stands, else usable cores // jobs, at least 1)."""
    from joblib import cpu_count
    from joblib.parallel import LokyBackend

    default = str(max(cpu_count() // max(jobs, 1), 1))
    return {var: os.environ.get(var, default) for var in LokyBackend.MAX_NUM_THREADS_VARS}

