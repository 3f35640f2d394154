"""Preemption on SLURM: a signalled job checkpoints, asks to be requeued, and resumes its MLflow run when it restarts.

SLURM warns a job before its time limit (submitit's ``--signal=USR2@<signal_delay_s>``), a
preempting scheduler sends SIGTERM, and ``scancel --signal=USR2 <job>`` does it by hand.
``GracefulStop`` finishes the epoch; ``train`` saves ``checkpoints/interrupted.ckpt``, ends the run
KILLED and, inside a SLURM job, leaves ``checkpoints/requeue.json`` (run id + job id) in the job's
output folder. On SIGUSR1/SIGUSR2 the job then runs ``scontrol requeue`` itself (at most
``max_requeues`` times: ``hydra.launcher.max_num_timeout``); after a SIGTERM preemption SLURM
requeues it when the cluster is set up to. A requeued job keeps its job id and runs the same
command in the same output folder: ``requeued_run`` finds the marker there and the training
resumes that run from its checkpoint, to FINISHED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MARKER = "requeue.json"
NOTICE_SIGNALS = ("SIGUSR1", "SIGUSR2")  # "you will be stopped soon": checkpoint and come back
DEFAULT_MAX_REQUEUES = 3


def slurm_job_id() -> str | None:
    """This SLURM job's id as squeue and sacct show it (``<array job>_<index>`` for an array task); None outside."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    array_job, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{index}" if array_job and index else job


def restarts() -> int:
    """How many times SLURM has requeued this job so far."""
    value = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(value) if value.isdigit() else 0


def remember(output_dir: str | Path, run_id: str) -> None:
    """Inside a SLURM job: note in the job's output folder which run its checkpoint belongs to (rank 0's run)."""
    from losslab.tracking.runs import process_rank

    job = slurm_job_id()
    if job and process_rank() == 0:
        path = Path(output_dir) / "checkpoints" / MARKER
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"run_id": run_id, "slurm_job_id": job}) + "\n")


def requeued_run(output_dir: str | Path) -> str | None:
    """The run this (requeued) SLURM job checkpointed in ``output_dir`` before, if any; the marker is consumed."""
    path = Path(output_dir) / "checkpoints" / MARKER
    job = slurm_job_id()
    if not job or not path.is_file():
        return None
    try:
        noted = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if noted.get("slurm_job_id") != job:
        return None  # another job's folder (a reused hydra.run.dir): not ours to resume
    path.unlink()
    return str(noted["run_id"])


def request_requeue(signal_name: str | None, max_requeues: int | None = None) -> bool:
    """After a notice signal inside a SLURM job: ``scontrol requeue`` this job (within ``max_requeues``)."""
    from losslab.tracking.runs import process_rank

    job = slurm_job_id()
    limit = DEFAULT_MAX_REQUEUES if max_requeues is None else int(max_requeues)
    if not job or signal_name not in NOTICE_SIGNALS:
        return False
    if process_rank() > 0:
        return True  # a DDP rank > 0 under srun: rank 0 requeues the job; this one leaves without a result too
    if restarts() >= limit:
        print(f"SLURM job {job}: not requeued, it already restarted {restarts()} time(s) (max_requeues={limit}, "
              "hydra.launcher.max_num_timeout); resume by hand with resume=<run id>", file=sys.stderr, flush=True)
        return False
    result = subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"SLURM job {job}: scontrol requeue failed ({result.stderr.strip()}); resume by hand with "
              "resume=<run id>", file=sys.stderr, flush=True)
        return False
    print(f"SLURM job {job} requeued after {signal_name}: it resumes from its checkpoint when it restarts",
          file=sys.stderr, flush=True)
    return True
