"""One MLflow run per training: its lifecycle (FINISHED / FAILED / KILLED), params, tags and summary.

Only rank 0 of a multi-process (DDP) training records the real run; other ranks write to a
throwaway store.
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
import sys
from typing import Any, Iterator, Mapping

from losslab.paths import project_root
from losslab.tracking import background, liveness, outbox
from losslab.tracking.store import experiment_id_for


MAX_PARAM_LENGTH = 6000


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"model.hidden": "256", …}`` (values as MLflow param strings)."""
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def git_state(root: Any = None) -> tuple[str, bool]:
    """``(commit, dirty)`` of the project checkout; ``("unknown", False)`` outside git."""
    cwd = str(root or project_root())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def environment_tags() -> dict[str, str]:
    """Versions of the stack a run depends on."""
    import mlflow
    import pytorch_lightning
    import torch

    return {"torch_version": torch.__version__, "lightning_version": pytorch_lightning.__version__,
            "mlflow_version": mlflow.__version__, "python_version": platform.python_version()}


def device_tags(root_device: Any) -> dict[str, str]:
    import torch

    if root_device.type == "cuda":
        return {"device": "cuda", "device_name": torch.cuda.get_device_name(root_device)}
    # its intra-op threads: a sweep's worker gets cores // workers (what its CPU timings mean)
    return {"device": "cpu", "device_name": _cpu_name(), "torch_threads": str(torch.get_num_threads())}


def slurm_tags() -> dict[str, str]:
    """Where a SLURM job ran: job id as squeue/sacct show it (``<array job>_<index>`` for an array task), the
    array's id and index, cluster, node and requeue count; empty outside SLURM."""
    import os

    env = os.environ
    if not env.get("SLURM_JOB_ID"):
        return {}
    array_job, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    tags = {"slurm_job_id": f"{array_job}_{index}" if array_job and index else env["SLURM_JOB_ID"],
            "slurm_array_job_id": array_job, "slurm_array_task_id": index,
            "slurm_cluster": env.get("SLURM_CLUSTER_NAME"), "slurm_node": env.get("SLURMD_NODENAME"),
            "slurm_restarts": env.get("SLURM_RESTART_COUNT", "0")}
    return {k: v for k, v in tags.items() if v}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def open_store(tracking: Any, create_experiment: bool = True) -> str:
    """The store a training logs to, ready before any work: its URI, the outbox installed (a tracking server:
    writes that still fail after MLflow's retries wait in pending/), reachable (inside a sweep: waiting up to
    ``tracking.http.server_wait_s`` for a server), the experiment created once, and — outside a sweep, which did
    it when it started — the runs of dead processes closed."""
    from omegaconf import OmegaConf

    from losslab.tracking import store

    in_sweep = bool(tracking.get("parent_run_id"))
    uri = store.tracking_uri(tracking)
    outbox.install(uri)
    store.check_store(uri, wait_s=float(OmegaConf.select(tracking, "http.server_wait_s") or 0) if in_sweep else 0)
    if create_experiment:
        store.experiment_id_for(uri, str(tracking.experiment))
    if not in_sweep:
        liveness.close_dead_runs_once(uri, tracking.get("heartbeat_max_age_s"))
    return uri


@contextlib.contextmanager
def mlflow_run(uri: str, experiment: str, run_name: str, tags: Mapping[str, str],
               parent_run_id: str | None = None, resume_run_id: str | None = None) -> Iterator[Any]:
    """Start a run (a child of ``parent_run_id``; or reopen ``resume_run_id``).

    It ends FINISHED; KILLED on Ctrl-C/SIGTERM; FAILED on any other exception, with the reason
    in the ``error`` tag (and ``failure_epoch`` when the exception knows its epoch).
    """
    import mlflow

    from losslab.errors import TrainingInterrupted

    if process_rank() > 0:  # DDP (trainer=ddp): every process runs train(); only rank 0 records the run
        uri, parent_run_id, resume_run_id = scratch_store(), None, None
    mlflow.set_tracking_uri(uri)
    if resume_run_id:
        run = mlflow.start_run(run_id=resume_run_id)
        _keep_interruption(run)
        with contextlib.suppress(Exception):  # this process now owns the run (see tracking.liveness)
            mlflow.set_tags(liveness.process_tags())
    else:
        tags = dict(tags)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = mlflow.start_run(experiment_id=experiment_id_for(uri, experiment), run_name=run_name, tags=tags)
    try:
        yield run
        background.flush()  # curves, heartbeats, last.ckpt still queued (tracking.background) land before the end
    except (KeyboardInterrupt, SystemExit, TrainingInterrupted) as exc:
        _flush_quietly()
        with contextlib.suppress(Exception):
            mlflow.set_tag("error", f"interrupted: {type(exc).__name__} {exc}"[:5000])
        mlflow.end_run("KILLED")
        raise
    except BaseException as exc:
        _flush_quietly()
        with contextlib.suppress(Exception):
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
            if getattr(exc, "epoch", None) is not None:
                mlflow.set_tag("failure_epoch", str(exc.epoch))  # type: ignore[attr-defined]
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")
    finally:
        outbox.finish(run.info.run_id, uri)  # what waited on disk while the server was down goes up now, if it can


def _flush_quietly() -> None:
    """On the way out of a failed run: land what is queued; a write failing too must not hide the first error."""
    with contextlib.suppress(BaseException):
        background.flush()


def _keep_interruption(run: Any) -> None:
    """A resumed run's ``error`` tag (how it was interrupted) becomes ``last_interruption``: history, not a failure."""
    import mlflow

    reason = run.data.tags.get("error")
    if reason:
        with contextlib.suppress(Exception):
            mlflow.set_tag("last_interruption", reason)
            mlflow.MlflowClient().delete_tag(run.info.run_id, "error")


def process_rank() -> int:
    """This process's rank in a multi-process (DDP) training, from the launcher's variables; 0 when alone."""
    import os

    for key in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"):  # any non-zero one means "not rank 0"
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def scratch_store() -> str:
    """A throwaway sqlite store (removed at exit) for the runs of DDP ranks > 0."""
    import atexit
    import shutil
    import tempfile

    scratch = tempfile.mkdtemp(prefix="losslab-rank-")
    atexit.register(shutil.rmtree, scratch, True)
    return f"sqlite:///{scratch}/mlflow.db"


def resume_info(uri: str, run_id: str) -> tuple[Any, str]:
    """The logged config and output dir of run ``run_id``, to resume it."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from omegaconf import OmegaConf

    from losslab.errors import ConfigError

    mlflow.set_tracking_uri(uri)
    try:
        run = mlflow.MlflowClient(uri).get_run(run_id)
        text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    except MlflowException as exc:
        raise ConfigError(f"resume={run_id}: no such run with a config.yaml in {uri} ({exc.message}).") from None
    if run.info.status == "FINISHED":
        raise ConfigError(f"resume={run_id}: the run already FINISHED; nothing to resume.")
    output_dir = run.data.tags.get("output_dir", "")
    return OmegaConf.create(text), output_dir


def print_run(run_id: str, uri: str, metrics: Mapping[str, float], stream: Any = None) -> None:
    """The end-of-training summary a user reads (on ``sys.stdout`` as it is at call time)."""
    if process_rank() > 0:
        return  # a DDP rank > 0: its run was a scratch copy; rank 0 prints the real one
    stream = stream or sys.stdout
    print("\nTest metrics (best validation checkpoint):", file=stream)
    for key in sorted(metrics):
        print(f"  {key:<24} {metrics[key]:.4f}", file=stream)
    print(f"MLflow run id: {run_id}\nTracking URI:  {uri}", file=stream)
