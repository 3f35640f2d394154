"""How many worker processes a sweep uses (``--jobs`` / ``SWEEP_JOBS``)."""

from __future__ import annotations

import threading
from typing import Any, Mapping, Sequence

from losslab.errors import ConfigError

MAX_AUTO_JOBS = 4  # parallel sqlite writers measured safe here (FIELD-NOTES); more workers also multiply memory


def resolve_jobs(value: str | int) -> int:
    """``--jobs``/``SWEEP_JOBS``: a number, or ``auto``.

    On CPU one training keeps about one core busy (its sparse ops barely use a second thread: 2 threads
    0.16 s/epoch, 1 thread 0.19 s, two 1-thread workers side by side 0.20 s each on 2 cores), so ``auto``
    runs one worker per usable core (at most ``MAX_AUTO_JOBS``); with CUDA, 1.
    """
    text = str(value).strip().lower()
    if text == "auto":
        import os

        return 1 if cuda_available() else max(1, min(len(os.sched_getaffinity(0)), MAX_AUTO_JOBS))
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise ConfigError(f"--jobs {value} (SWEEP_JOBS): use a number >= 1 or auto.")
    return jobs


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch (~1.6 s of a sweep's start) where no NVIDIA device
    node exists: then CUDA cannot be available."""
    if not nvidia_device_present():
        return False
    import torch

    return torch.cuda.is_available()


def nvidia_device_present() -> bool:
    """An NVIDIA device node exists (``/dev/nvidia0``, …): the cheap first half of ``cuda_available``."""
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*"))


def launcher_given(overrides: Sequence[str]) -> bool:
    """A ``hydra/launcher=...`` override (submitit, SLURM): it decides how jobs run, not ``--jobs``."""
    return any(o.partition("=")[0].lstrip("+") == "hydra/launcher" for o in overrides)


def worker_pool(launcher: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``joblib.Parallel`` arguments Hydra's joblib launcher ran the sweep's jobs with (``hydra.launcher`` as
    composed), None for another launcher or a single worker. A ``Parallel`` with exactly these arguments reuses
    the sweep's worker processes — warm, their imports paid (joblib keeps idle workers ~5 min); any other
    arguments make joblib replace them with new ones (~8 s of imports each)."""
    settings = {str(k): v for k, v in launcher.items() if k != "_target_"}
    if not str(launcher.get("_target_", "")).endswith("JoblibLauncher") or int(settings.get("n_jobs") or 1) < 2:
        return None
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    settings["backend"] = "loky"  # what the launcher's launch() does before its Parallel call
    process_joblib_cfg(settings)
    return settings


def warm_workers(pool: Mapping[str, Any] | None) -> threading.Thread | None:
    """Start the sweep's worker processes now, in a background thread, while the parent opens its MLflow run and
    Hydra composes the jobs' configs to check the batch: each imports the training stack (~7 s) — or, forked from
    ``worker_server``'s fork server (``python -m losslab.sweeps``), finds it imported there, once for all of them.
    The launcher's ``Parallel`` finds the same workers, warm (``pool`` = its exact arguments, ``worker_pool``). None
    without a pool (one worker, another launcher).

    The workers lower their CPU priority to nice ``WORKER_NICENESS`` (for good: an unprivileged process cannot
    raise it back): where cores are short they take only what the parent leaves — the parent is the critical path
    while it prepares the sweep and, at its end, writes the report beside the workers' seed ensembles."""
    if pool is None:
        return None
    from joblib import Parallel, delayed

    def start() -> None:
        try:
            Parallel(**pool)(delayed(warm_up)() for _ in range(int(pool["n_jobs"])))
        except Exception:  # noqa: BLE001  (an optimisation only: the launcher starts its workers anyway)
            pass

    thread = threading.Thread(target=start, name="losslab-warm-workers", daemon=True)
    thread.start()
    return thread


WORKER_NICENESS = 10


def warm_up() -> None:
    """In a worker (or the fork server its workers come from, ``worker_preload``): lower its priority to
    ``WORKER_NICENESS`` (once), import the training stack."""
    import os

    from losslab.training.train import import_training_stack

    if os.nice(0) < WORKER_NICENESS:
        os.nice(WORKER_NICENESS - os.nice(0))
    import_training_stack()
