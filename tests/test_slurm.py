"""A real one-node SLURM cluster (losslab.ops.slurm, what `make slurm` runs): sweeps through it, preemption.

The module's cluster runs in a short temp folder with its own munged, slurmctld and slurmd (beside any
other cluster on this machine, `make slurm`'s included) and is stopped at the end even when a test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytorch_lightning as pl
from mlflow.tracking import MlflowClient

from losslab.ops.daemons import running
from losslab.ops.slurm import (DAEMONS, SOCKET_DIR_MAX, SlurmState, read_state, render_conf, settings,
                               socket_dir_of)
from losslab.training import preemption
from sweep_fixture import EXPERIMENT, run_sweep

TESTS = Path(__file__).resolve().parent
HAVE_SLURM = all(Path(f"/usr/sbin/{name}").is_file() for name in DAEMONS) and shutil.which("sbatch")
needs_slurm = pytest.mark.skipif(not HAVE_SLURM, reason="slurm-wlm/munge not installed: make slurm-deps "
                                 "(make test installs them)")
LAUNCH = ["hydra/launcher=submitit_slurm", "hydra.launcher.mem_gb=1", "hydra.launcher.cpus_per_task=1",
          "sweep.register=false", "sweep.report.enabled=false"]


class ScancelAtEpoch(pl.Callback):
    """Test hook, run inside a SLURM job: at the end of epoch ``epoch`` of the job's first run, ask SLURM to
    signal this job (``scancel --signal=USR2``, as before a time limit) and wait until the signal arrived."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch != self.epoch or preemption.restarts() > 0:
            return
        subprocess.run(["scancel", "--signal=USR2", os.environ["SLURM_JOB_ID"]], check=True, timeout=30)
        stopper = next(c for c in trainer.callbacks if type(c).__name__ == "GracefulStop")
        deadline = time.monotonic() + 60
        while stopper.signal_name is None and time.monotonic() < deadline:
            time.sleep(0.05)


@dataclass
class Cluster:
    run_dir: Path
    conf: str
    state: SlurmState

    def env(self, **extra: str) -> dict[str, str]:
        return {"SLURM_CONF": self.conf, **extra}

    def jobcomp(self) -> str:
        """slurmctld's record of every job that ended (JobCompType=jobcomp/filetxt)."""
        path = self.run_dir / "log" / "jobcomp.txt"
        return path.read_text() if path.is_file() else ""


def slurm_cli(action: str, run_dir: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "losslab.ops.slurm", action, "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster():
    """`make slurm` in a temp folder (short: slurmstepd puts Unix sockets there); stopped whatever happens."""
    run_dir = Path(tempfile.mkdtemp(prefix="ll-slurm-"))
    run_dir.chmod(0o755)  # munged wants the folders above its socket traversable
    started = None
    try:
        started = slurm_cli("start", run_dir)
        assert started.returncode == 0, started.stderr[-3000:]
        line = started.stdout.strip().splitlines()[-1]
        assert line == f"export SLURM_CONF={run_dir / 'slurm.conf'}", started.stdout
        yield Cluster(run_dir, str(run_dir / "slurm.conf"), read_state(run_dir))
    finally:
        state = read_state(run_dir)
        stopped = slurm_cli("stop", run_dir)
        pids = [state.munged_pid, state.db_pid, state.dbd_pid, state.slurmctld_pid, state.slurmd_pid] if state else []
        left = [pid for pid in pids if pid and running(pid)]
        shutil.rmtree(run_dir, ignore_errors=True)
        assert stopped.returncode == 0 and not left, f"daemons left running: {left}; {stopped.stderr}"


def child_runs(root: Path) -> tuple[object, list]:
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def test_slurm_conf_is_one_node_on_loopback_with_every_path_in_its_folder(tmp_path):
    run_dir = tmp_path / ("run-" + "x" * SOCKET_DIR_MAX)  # too long for sockets, however long tmp_path is
    run_dir.mkdir()
    cfg = settings(run_dir=str(run_dir), cpus=2, memory_mb=1000)
    text = render_conf(cfg, run_dir, "node1", run_dir / "munge.socket", 7001, 7002)
    assert "NodeName=node1 NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000" in text
    assert "SlurmctldPort=7001" in text and "SlurmdPort=7002" in text and "SlurmctldHost=node1(127.0.0.1)" in text
    assert f"AuthInfo=socket={run_dir / 'munge.socket'},cred_expire=" in text
    assert re.search(r"PartitionName=local Nodes=node1 Default=YES", text)
    paths = re.findall(r"^\w+(?:File|Dir|Location|Loc)=(\S+)$", text, flags=re.M)
    short = socket_dir_of(run_dir)  # a long folder: the sockets' folder moves to a short one in /tmp
    assert short != run_dir and len(str(short)) <= SOCKET_DIR_MAX
    assert socket_dir_of(Path("/tmp/ll-slurm-abc")) == Path("/tmp/ll-slurm-abc")  # a short one stays
    assert len(paths) == 7 and all(p.startswith((str(run_dir), str(short))) for p in paths), paths


def test_requeue_marker_belongs_to_one_slurm_job(tmp_path, monkeypatch):
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    preemption.remember(tmp_path, "run-a")
    assert not (tmp_path / "checkpoints" / preemption.MARKER).exists(), "outside SLURM: no marker"
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    preemption.remember(tmp_path, "run-a")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert preemption.requeued_run(tmp_path) is None, "another job's checkpoint is not resumed"
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert preemption.requeued_run(tmp_path) == "run-a"
    assert preemption.requeued_run(tmp_path) is None, "the marker is consumed"
    assert not preemption.request_requeue("SIGTERM"), "only a notice signal (SIGUSR1/2) requeues"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    assert not preemption.request_requeue("SIGUSR2", max_requeues=3)


@pytest.mark.slow
@needs_slurm
def test_make_slurm_starts_a_cluster_that_answers(cluster):
    status = slurm_cli("status", cluster.run_dir)
    assert status.returncode == 0 and status.stdout.strip() == f"export SLURM_CONF={cluster.conf}", status.stderr
    info = subprocess.run(["sinfo", "-h", "-o", "%P %t %D"], env=os.environ | cluster.env(), capture_output=True,
                          text=True, timeout=30)
    assert info.stdout.split() == ["local*", "idle", "1"], info.stdout + info.stderr
    assert all(running(pid) for pid in (cluster.state.munged_pid, cluster.state.db_pid, cluster.state.dbd_pid,
                                          cluster.state.slurmctld_pid, cluster.state.slurmd_pid))
    clusters = subprocess.run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env=os.environ
                              | cluster.env(), capture_output=True, text=True, timeout=30)
    assert clusters.stdout.split() == [cluster.state.cluster_name], "slurmctld registered with its slurmdbd"
    assert Path(cluster.state.munge_socket).is_socket() and str(cluster.run_dir) in cluster.state.munge_socket
    again = slurm_cli("start", cluster.run_dir)  # a second `make slurm` finds it running
    assert again.returncode == 0 and "already running" in again.stderr
    assert read_state(cluster.run_dir).slurmd_pid == cluster.state.slurmd_pid


@pytest.mark.slow
@needs_slurm
def test_sweep_through_slurm_runs_every_job_as_its_own_slurm_job(cluster, tmp_path):
    result = run_sweep(tmp_path, "quick", 1, *LAUNCH, "seed=0", "loss=ce,mse", env=cluster.env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    parent, children = child_runs(tmp_path)
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.launcher"].endswith("SlurmLauncher")
    assert sorted(r.data.tags["loss"] for r in children) == ["ce", "mse"]
    assert all(r.info.status == "FINISHED" for r in children)
    tags = [r.data.tags for r in children]
    assert len({t["slurm_job_id"] for t in tags}) == 2, "one SLURM job per training"
    (array_job,) = {t["slurm_array_job_id"] for t in tags}
    assert sorted(t["slurm_array_task_id"] for t in tags) == ["0", "1"]
    assert all(t["slurm_job_id"] == f"{array_job}_{t['slurm_array_task_id']}" for t in tags)
    assert {t["slurm_cluster"] for t in tags} == {cluster.state.cluster_name}
    ended = re.findall(rf"JobState=(\w+) .*ArrayJobId={array_job} ArrayTaskId=(\d+)", cluster.jobcomp())
    assert sorted(ended) == [("COMPLETED", "0"), ("COMPLETED", "1")], cluster.jobcomp()
    accounted = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", array_job],
                               env=os.environ | cluster.env(), capture_output=True, text=True, timeout=30)
    assert sorted(accounted.stdout.split()) == [f"{array_job}_{i}|COMPLETED" for i in range(2)], accounted.stderr
    assert "sacct" not in result.stderr, "submitit follows the jobs with sacct, without a warning"


@pytest.mark.slow
@needs_slurm
def test_signalled_job_checkpoints_requeues_and_resumes_its_run_to_finished(cluster, tmp_path):
    hook = ["+callbacks.preempt._target_=test_slurm.ScancelAtEpoch", "+callbacks.preempt.epoch=1"]
    result = run_sweep(tmp_path, "quick", 1, *LAUNCH, "seed=0", "loss=ce", "trainer.max_epochs=4", *hook,
                       env=cluster.env(PYTHONPATH=str(TESTS)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    parent, children = child_runs(tmp_path)
    (run,) = children  # the requeued job continued the same run: no second one
    assert parent.info.status == "FINISHED" and run.info.status == "FINISHED"
    # the signal came during epoch 1's end: epoch 2 completed first, then the checkpoint
    assert run.data.tags["completed_epochs"] == "3" and run.data.tags["slurm_restarts"] == "1"
    assert "SIGUSR2" in run.data.tags["last_interruption"] and "error" not in run.data.tags
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/f1_macro")] == [0, 1, 2, 3]
    job = run.data.tags["slurm_job_id"]
    log = "".join(p.read_text() for p in (tmp_path / "multirun" / ".submitit" / job).glob("*_log.*"))
    assert f"SLURM job {job} requeued after SIGUSR2" in log, log[-3000:]
    # slurmctld's record of both runs of the job (a one-job sweep is no array): the first ended requeued, i.e.
    # PENDING again, the second COMPLETED
    ended = re.findall(rf"^JobId={job} .*JobState=(\w+) ", cluster.jobcomp(), flags=re.M)
    assert ended == ["PENDING", "COMPLETED"], cluster.jobcomp()
