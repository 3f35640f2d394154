"""The team server's faults and access: a sweep that survives a server restart, a training that outlives an
outage (results kept on disk, uploaded by make runs-sync), and the AUTH=1 server refusing strangers.

Real PostgreSQL + ``mlflow server`` clusters in fresh folders under /tmp (as tests/test_server.py),
stopped in ``finally`` whatever happens.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import pytorch_lightning as pl
from mlflow.tracking import MlflowClient

from conftest import ROOT, data_overrides
from losslab.errors import ConfigError
from losslab.ops.server import read_state, settings, start, stop
from losslab.training.train import train
from sweep_fixture import tiny_data
from test_server import server_cli

EXPERIMENT = "faults-test"
HTTP_ENV = ["MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT"]


def fresh_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="losslab-faults-test-"))
    base.chmod(0o755)  # PostgreSQL runs as user postgres and must reach run/pg
    return base


def started(run_dir: Path, *extra: str) -> str:
    done = server_cli("start", run_dir) if not extra else subprocess.run(
        [sys.executable, "-m", "losslab.ops.server", "start", "--run-dir", str(run_dir), *extra],
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1].split("=", 1)[1]


@pytest.fixture(scope="module")
def server_dir():
    """One server for this module's fault tests (they may stop and restart it, and leave it running)."""
    base = fresh_base()
    try:
        started(base / "run")
        yield base
    finally:
        server_cli("stop", base / "run", timeout=120)
        shutil.rmtree(base, ignore_errors=True)


EPOCHS = 60  # long enough (~2 s on tiny data) that the training seen mid-fit is still running when the server stops


@pytest.mark.slow
def test_a_quick_sweep_survives_a_server_restart_on_the_same_port(server_dir):
    run_dir = server_dir / "run"
    state = read_state(run_dir)
    uri = state.tracking_uri
    env = {k: v for k, v in os.environ.items() if k not in ("LOSSLAB_DEBUG", "LOSSLAB_VERBOSE")}
    env["MLFLOW_TRACKING_URI"] = uri
    command = [sys.executable, "-m", "losslab.sweeps.cli", "quick", "--jobs", "2", *tiny_data(server_dir),
               f"tracking.experiment={EXPERIMENT}", f"sweep.reports_dir={server_dir / 'reports'}",
               f"hydra.sweep.dir={server_dir / 'multirun'}", f"trainer.max_epochs={EPOCHS}",
               "callbacks=default",  # every epoch: early stopping (the sweeps' default) would end them sooner
               "sweep.report.enabled=false", "sweep.register=false",  # the jobs are the point here
               "tracking.http.backoff_factor=1"]  # waits 0, 2, 4, .. 64 s: still ~2 min of retries, less idle after
    log = open(server_dir / "sweep.log", "w")
    sweep = subprocess.Popen(command, cwd=server_dir, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        client = MlflowClient(uri)
        in_flight = None
        deadline = time.monotonic() + 300
        while in_flight is None and time.monotonic() < deadline and sweep.poll() is None:
            experiment = client.get_experiment_by_name(EXPERIMENT)
            running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING' and "
                                         "tags.loss != ''") if experiment else []
            in_flight = next((r for r in running if r.data.metrics), None)  # a training in the middle of fit
            time.sleep(0.2)
        assert in_flight is not None, (server_dir / "sweep.log").read_text()[-3000:]
        stopped_at = time.time() * 1000
        assert server_cli("stop", run_dir, timeout=120).returncode == 0
        time.sleep(3)  # down for a while: the jobs' writes fail and are retried
        assert started(run_dir, "--port", str(state.port)) == uri  # the same address again
        restarted_at = time.time() * 1000
        assert sweep.wait(timeout=400) == 0, (server_dir / "sweep.log").read_text()[-3000:]
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
        log.close()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    trainings = [r for r in runs if r.data.tags.get("loss") and r.data.tags.get("sweep_role") != "parent"
                 and r.data.tags.get("model") != "linear-baseline" and r.data.tags.get("ensemble") != "seeds"]
    assert len(trainings) == 8
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert all("test/f1_macro" in r.data.metrics for r in trainings)
    survivor = client.get_run(in_flight.info.run_id)  # it was writing when the server went away
    assert survivor.info.start_time < stopped_at and survivor.info.end_time > restarted_at
    assert len(client.get_metric_history(survivor.info.run_id, "val/f1_macro")) == EPOCHS


class StopServerAtEpoch(pl.Callback):
    """Test helper: stops the tracking server (``make server-stop``) at the end of one epoch."""

    def __init__(self, run_dir: str, epoch: int = 1) -> None:
        self.run_dir, self.epoch = Path(run_dir), epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and read_state(self.run_dir) is not None:
            stop(self.run_dir)


@pytest.mark.slow
def test_a_training_outlives_an_outage_and_make_runs_sync_uploads_what_it_kept(server_dir, compose, tiny_binary,
                                                                              tmp_path, monkeypatch):
    for name in HTTP_ENV:  # what configure_http sets goes away after the test
        monkeypatch.delenv(name, raising=False)
    run_dir = server_dir / "run"
    state = read_state(run_dir)
    cfg = compose(*data_overrides(tiny_binary), f"tracking.uri={state.tracking_uri}", "tracking.experiment=outage",
                  "trainer.max_epochs=4", "tracking.http.max_retries=1", "tracking.http.backoff_factor=0",
                  "+callbacks.outage._target_=test_server_faults.StopServerAtEpoch",
                  f"+callbacks.outage.run_dir={run_dir}")
    out = tmp_path / "out"
    result = train(cfg, out)  # returns: nothing failed, the rest waits on disk
    pending = out / "pending"
    entries = [json.loads(line) for line in (pending / "journal.jsonl").read_text().splitlines()]
    assert entries[-1]["op"] == "status" and entries[-1]["status"] == "FINISHED"
    assert any(e["op"] == "batch" and any(m[0] == "test/f1_macro" for m in e["metrics"]) for e in entries)
    assert list(pending.glob("artifacts/*/losslab_model.json")), "the model bundle is kept on disk"

    assert started(run_dir, "--port", str(state.port)) == state.tracking_uri
    client = MlflowClient(state.tracking_uri)
    assert client.get_run(result.run_id).info.status == "RUNNING"  # the server never heard the end
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    synced = subprocess.run([sys.executable, "-m", "losslab.tracking.outbox", str(tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)  # make runs-sync ARGS=<folder>
    assert synced.returncode == 0, synced.stderr
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and not pending.exists()
    assert {k: run.data.metrics.get(k) for k in result.test_metrics} == pytest.approx(result.test_metrics)
    assert [m.step for m in client.get_metric_history(result.run_id, "val/f1_macro")] == [0, 1, 2, 3]
    names = {a.path for a in client.list_artifacts(result.run_id, "model")}
    assert "model/losslab_model.json" in names
    again = subprocess.run([sys.executable, "-m", "losslab.tracking.outbox", str(tmp_path)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing waits" in again.stderr


# --- authentication ------------------------------------------------------------------------------------------------
def call(url: str, method: str = "GET", body: dict | None = None, user: tuple[str, str] | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def add_user(run_dir: Path, name: str, *extra: str) -> str:
    done = subprocess.run([sys.executable, "-m", "losslab.ops.server", "user", name, "--run-dir", str(run_dir),
                           *extra], capture_output=True, text=True, timeout=120)  # make server-user NAME=...
    assert done.returncode == 0, done.stderr
    return (run_dir / "auth" / "users" / name).read_text().strip()


@pytest.mark.slow
def test_the_auth_server_refuses_anonymous_requests_and_read_only_deletes():
    base = fresh_base()
    run_dir = base / "run"
    try:
        done = subprocess.run([sys.executable, "-m", "losslab.ops.server", "start", "--auth", "--run-dir",
                               str(run_dir)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        uri = done.stdout.strip().splitlines()[-1].split("=", 1)[1]
        admin_file = run_dir / "auth" / "admin_password"
        assert f"cat {admin_file}" in done.stderr and admin_file.read_text().strip() not in done.stderr
        for secret in ("secret_key", "admin_password", "basic_auth.ini"):
            assert (run_dir / "auth" / secret).stat().st_mode & 0o777 == 0o600, secret
        assert (run_dir / "auth").stat().st_mode & 0o777 == 0o700
        api = uri + "/api/2.0/mlflow"
        admin = ("admin", admin_file.read_text().strip())
        assert call(api + "/experiments/search?max_results=10") == 401  # anonymous
        assert call(api + "/experiments/search?max_results=10", user=("admin", "password1234")) == 401
        assert call(api + "/experiments/search?max_results=10", user=admin) == 200
        assert call(uri + "/health") == 200  # what make server and the trainings probe stays open

        editor = add_user(run_dir, "ana")  # EDIT on the project's experiments (tracking.experiment created)
        reader = add_user(run_dir, "rita", "--permission", "READ")
        assert (run_dir / "auth" / "users" / "ana").stat().st_mode & 0o777 == 0o600
        os.environ.update(MLFLOW_TRACKING_USERNAME="ana", MLFLOW_TRACKING_PASSWORD=editor)  # what clients read
        try:
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name("mex-a3t")
            run = client.create_run(experiment.experiment_id, run_name="by-ana")
            client.log_metric(run.info.run_id, "val/f1_macro", 0.5)
            client.set_terminated(run.info.run_id)
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        run_id = run.info.run_id
        assert call(f"{api}/runs/get?run_id={run_id}", user=("rita", reader)) == 200  # READ reads
        assert call(api + "/runs/delete", "POST", {"run_id": run_id}, user=("rita", reader)) == 403
        assert call(api + "/runs/set-tag", "POST", {"run_id": run_id, "key": "k", "value": "v"},
                    user=("rita", reader)) == 403
        assert call(api + "/runs/delete", "POST", {"run_id": run_id}) == 401
        request = urllib.request.Request(f"{api}/runs/get?run_id={run_id}", headers={
            "Authorization": "Basic " + base64.b64encode(f"admin:{admin[1]}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["run"]["info"]["lifecycle_stage"] == "active"  # not deleted
    finally:
        server_cli("stop", run_dir, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def test_without_auth_the_server_refuses_to_bind_beyond_loopback(tmp_path):
    cfg = settings(run_dir=str(tmp_path / "run"), host="0.0.0.0")
    with pytest.raises(ConfigError, match="loopback only"):
        start(cfg)
    assert read_state(tmp_path / "run") is None
