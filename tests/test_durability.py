"""kill -9 during a training: the next command closes the run as KILLED, resume=<id> finishes it from last.ckpt.

The trainings that die run in a subprocess that kills itself with SIGKILL at a chosen point (a test
callback, so the point is deterministic): between two epochs, or in the middle of writing last.ckpt.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from conftest import ROOT, data_overrides, tiny_overrides
from losslab.tracking.liveness import DEAD_PREFIX, close_dead_runs, death_of, process_gone, process_tags
from losslab.training.durability import atomic_torch_save, resume_checkpoint
from losslab.training.train import resume, train

TESTS = Path(__file__).resolve().parent
ARMED = "LOSSLAB_TEST_SIGKILL"  # only the subprocess dies: a resume reads the same callbacks from the logged config


class SigkillAtEpochStart(pl.Callback):
    """The process kills itself with SIGKILL (as the OOM killer would) when epoch ``epoch`` starts: every
    earlier epoch is complete and checkpointed, except that the previous epoch's curves and last.ckpt may still
    be in the background writer (tracking.background)."""

    def __init__(self, epoch: int = 2) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and os.environ.get(ARMED):
            os.kill(os.getpid(), signal.SIGKILL)


class _Detonator:
    def __reduce__(self):  # runs while torch.save pickles the checkpoint, i.e. in the middle of writing it
        os.kill(os.getpid(), signal.SIGKILL)


class SigkillWhileCheckpointing(pl.Callback):
    """Its state goes into every full checkpoint; at epoch ``epoch`` pickling that state SIGKILLs the process,
    so it dies while last.ckpt of that epoch is being written."""

    def __init__(self, epoch: int = 2) -> None:
        self.epoch = epoch
        self.trainer = None

    def setup(self, trainer, pl_module, stage):
        self.trainer = trainer

    def state_dict(self):
        armed = self.trainer is not None and self.trainer.current_epoch == self.epoch and os.environ.get(ARMED)
        return {"boom": _Detonator()} if armed else {}


def killed_training(tmp_path: Path, overrides: list[str], callback: str, run_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LOSSLAB_DEBUG", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env[ARMED] = "1"
    command = [sys.executable, "-m", "losslab.training.train", *tiny_overrides(tmp_path), *overrides,
               f"+callbacks.killer._target_=test_durability.{callback}", f"hydra.run.dir={run_dir}"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def the_run(uri: str):
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.killer_test = 'yes'")
    return run


@pytest.mark.slow
def test_sigkill_between_epochs_is_closed_as_killed_and_resumes_to_the_uninterrupted_result(compose, tiny_binary,
                                                                                              tmp_path):
    base = [*data_overrides(tiny_binary), "trainer.max_epochs=5", "model.dropout=0.3", "seed=7"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    died = killed_training(tmp_path, [*base, "+tracking.tags.killer_test=yes"], "SigkillAtEpochStart",
                           tmp_path / "killed")
    assert died.returncode == -signal.SIGKILL, died.stderr[-3000:]
    run = the_run(uri)
    assert run.info.status == "RUNNING"  # what MLflow alone leaves behind
    tags = run.data.tags
    assert tags["host"] == socket.gethostname() and tags["pid"].isdigit() and tags["pid_start_time"]
    checkpoints = tmp_path / "killed" / "checkpoints"
    assert resume_checkpoint(tmp_path / "killed") == checkpoints / "last.ckpt"
    # last.ckpt is written in the background while the next epoch runs: the kill may cut that write short
    # (its temp file stays), never the previous complete last.ckpt
    state = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] in (0, 1) and "optimizer_states" in state  # epoch 1's, or epoch 0's if 1's was cut
    assert len(list(checkpoints.glob(".last.ckpt.tmp-*"))) <= 1

    check = subprocess.run([sys.executable, "-m", "losslab.tracking.liveness", "--tracking-uri", uri], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)  # make runs-check: the next command
    assert check.returncode == 0, check.stderr
    notes = [line for line in check.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and run.info.run_id in notes[0] and "marked KILLED" in notes[0], check.stderr
    closed = MlflowClient(uri).get_run(run.info.run_id)
    assert closed.info.status == "KILLED"
    error = closed.data.tags["error"]
    assert error.startswith(DEAD_PREFIX) and f"process {tags['pid']}" in error and "last alive" in error, error
    assert closed.info.end_time == int(closed.data.tags["heartbeat"])  # ended when it was last alive

    again = subprocess.run([sys.executable, "-m", "losslab.tracking.liveness", "--tracking-uri", uri], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert "note:" not in again.stderr  # closed once

    resumed = resume(run.info.run_id, compose(*base))
    finished = MlflowClient(uri).get_run(run.info.run_id)
    assert finished.info.status == "FINISHED" and "error" not in finished.data.tags
    assert finished.data.tags["last_interruption"] == error
    # each epoch's point once, even when the resume redid an epoch whose point was already logged
    assert [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, "val/f1_macro")] == [0, 1, 2, 3, 4]
    expected = train(compose(*base), tmp_path / "straight").test_metrics
    assert resumed.test_metrics == expected
    assert not list(checkpoints.glob(".last.ckpt.tmp-*"))  # the resumed run's first save cleared any debris


@pytest.mark.slow
def test_sigkill_while_writing_last_ckpt_leaves_the_previous_one_loadable(compose, tiny_binary, tmp_path):
    base = [*data_overrides(tiny_binary), "trainer.max_epochs=4", "seed=3"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    died = killed_training(tmp_path, [*base, "+tracking.tags.killer_test=yes"], "SigkillWhileCheckpointing",
                           tmp_path / "killed")
    assert died.returncode == -signal.SIGKILL, died.stderr[-3000:]
    checkpoints = tmp_path / "killed" / "checkpoints"
    # the kill came while epoch 2's state was being pickled (in memory, before its file is opened): at most a
    # temp file of an earlier write is left, never a damaged last.ckpt
    assert len(list(checkpoints.glob(".last.ckpt.tmp-*"))) <= 1
    state = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and "optimizer_states" in state  # epoch 1's complete state, not epoch 2's half

    expected = train(compose(*base), tmp_path / "straight")  # the next training closes the dead run
    run = MlflowClient(uri).get_run(the_run(uri).info.run_id)
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith(DEAD_PREFIX)
    resumed = resume(run.info.run_id, compose(*base))
    assert MlflowClient(uri).get_run(run.info.run_id).info.status == "FINISHED"
    assert resumed.test_metrics == expected.test_metrics
    assert not list(checkpoints.glob(".last.ckpt.tmp-*"))  # the next save cleared the debris


# --- liveness rules, on real processes -----------------------------------------------------------------------------
def test_a_dead_or_reused_pid_is_gone_and_a_live_one_is_not():
    tags = process_tags()
    assert process_gone(int(tags["pid"]), tags["pid_start_time"]) is None
    assert "another process" in process_gone(int(tags["pid"]), str(int(tags["pid_start_time"]) + 1))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert "no process" in process_gone(child.pid, "")


class FakeRun:  # the two attributes death_of reads, as MLflow's Run has them
    def __init__(self, tags: dict) -> None:
        self.data = type("Data", (), {"tags": tags})()


def test_a_run_of_another_host_dies_by_heartbeat_age_only():
    old = str(int((time.time() - 3600) * 1000))
    other = {"host": "elsewhere", "pid": "1", "pid_start_time": "5", "heartbeat": old}
    assert "no heartbeat from elsewhere" in death_of(FakeRun(other), max_age_s=1800, host="here")
    assert death_of(FakeRun(other), max_age_s=7200, host="here") is None
    fresh_child = int(time.time() * 1000)
    assert death_of(FakeRun(other), max_age_s=1800, host="here", newest_child_beat=fresh_child) is None
    assert death_of(FakeRun({}), max_age_s=1, host="here") is None  # recorded before heartbeats: left alone


def test_close_dead_runs_never_fails_a_command_and_never_creates_a_store(tmp_path, capsys):
    missing = tmp_path / "none" / "mlflow.db"
    assert close_dead_runs(f"sqlite:///{missing}") == [] and not missing.exists()
    assert close_dead_runs("http://127.0.0.1:9", 10) == []
    assert "note: could not check http://127.0.0.1:9" in capsys.readouterr().err


def test_a_finished_run_drops_its_resume_checkpoint_unless_told_to_keep_it(compose, tiny_binary, tmp_path):
    for keep in (False, True):
        out = tmp_path / f"keep-{keep}"
        cfg = compose(*data_overrides(tiny_binary), "trainer.max_epochs=2",
                      f"callbacks.last_checkpoint.keep_when_finished={keep}")
        result = train(cfg, out)
        assert MlflowClient(result.tracking_uri).get_run(result.run_id).info.status == "FINISHED"
        names = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert any(n.startswith("best-epoch") for n in names)  # the scored checkpoint stays
        assert ("last.ckpt" in names) == keep, names


def test_atomic_save_replaces_whole_files_only(tmp_path):
    target = tmp_path / "c" / "last.ckpt"
    atomic_torch_save({"epoch": 1}, target)
    with pytest.raises(Exception, match="(?i)pickle"):
        atomic_torch_save({"epoch": 2, "bad": lambda: 0}, target)  # torch.save fails half-way through
    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_a_snapshot_loads_back_equal_and_leaves_torchs_crc_setting_alone():
    from torch.serialization import get_crc32_options

    from losslab.training.durability import serialize

    state = {"weights": torch.randn(300, 7), "epoch": 3}
    before = get_crc32_options()
    data = serialize(state)
    assert get_crc32_options() == before
    loaded = torch.load(io.BytesIO(data), weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["weights"], state["weights"])
