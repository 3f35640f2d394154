"""Cluster launchers and multi-device training as config: submitit (local, SLURM) and trainer=ddp.

The real runs: tests/test_slurm.py (a SLURM cluster) and tests/test_ddp.py (the DDP split on 2 processes)."""

from __future__ import annotations

import re

import pytest
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from losslab.tracking.runs import process_rank
from sweep_fixture import EXPERIMENT, run_sweep


@pytest.fixture
def composed(compose):
    """conf/ as the CLI composes it (no test defaults), with the ``hydra`` node (launchers)."""
    return lambda *overrides: compose(*overrides, tiny=False, return_hydra_config=True)


@pytest.mark.parametrize("name, target", [("submitit_slurm", "SlurmLauncher"), ("submitit_local", "LocalLauncher")])
def test_submitit_launchers_compose_with_resources(composed, name, target):
    cfg = composed("+sweep=quick", f"hydra/launcher={name}")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith(f"submitit_launcher.{target}")
    assert launcher.timeout_min >= 10 and launcher.tasks_per_node == 1 and launcher.nodes == 1
    assert launcher.mem_gb and launcher.cpus_per_task
    built = instantiate(launcher)  # the plugin's own class takes every field (no sbatch is called here)
    assert type(built).__name__ == target and built.params["timeout_min"] == launcher.timeout_min
    if name == "submitit_slurm":
        assert {"partition", "account", "gres", "array_parallelism", "setup"} <= set(built.params)


def test_ddp_trainer_config_picks_lightnings_ddp_strategy(composed):
    cfg = composed("trainer=ddp")
    assert (cfg.trainer.strategy, cfg.trainer.accelerator, cfg.trainer.devices) == ("ddp", "gpu", "auto")
    assert cfg.trainer.max_epochs == composed().trainer.max_epochs  # everything else from trainer/default
    cpu = composed("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    trainer = instantiate(cpu.trainer, logger=False)
    assert type(trainer.strategy).__name__ == "DDPStrategy" and trainer.num_devices == 2


def test_process_rank_reads_the_launchers_variables(monkeypatch):
    for key in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert process_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert process_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert process_rank() == 1


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep_as_separate_processes(tmp_path):
    result = run_sweep(tmp_path, "quick", 1, "hydra/launcher=submitit_local", "seed=0", "loss=ce,mse",
                       "sweep.register=false", "sweep.report.enabled=false")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.launcher"].endswith("LocalLauncher")
    assert sorted(r.data.tags["loss"] for r in children) == ["ce", "mse"] and len(runs) == 3
    assert all(r.info.status == "FINISHED" for r in children)
    jobs = [d for d in (tmp_path / "multirun" / ".submitit").iterdir() if d.is_dir() and d.name.isdigit()]
    assert len(jobs) == 2, "one submitit job (its own process, its own folder) per training"
    for job in jobs:
        assert (job / f"{job.name}_0_result.pkl").is_file()
        log = (job / f"{job.name}_0_log.out").read_text() + (job / f"{job.name}_0_log.err").read_text()
        assert re.search(r"\[[12]/2\] (ce|mse) ", log), log[-2000:]  # the job's own progress line
