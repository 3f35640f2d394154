"""make server end to end: PostgreSQL + MLflow server, a parallel quick sweep logging there, then make server-stop.

The cluster lives in a fresh folder under /tmp (pytest's tmp_path is private to root, and
PostgreSQL runs as the ``postgres`` user); everything binds 127.0.0.1 on ports picked at run time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from losslab.ops.server import healthy, read_state
from sweep_fixture import LOSSES, SEEDS, tiny_data

pytestmark = pytest.mark.slow

EXPERIMENT = "server-test"


def server_cli(action: str, run_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "losslab.ops.server", action, "--run-dir", str(run_dir)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def postgres_counts(run_dir: Path, port: int) -> dict[str, int]:
    """Rows straight from the PostgreSQL database: the runs really live there."""
    import psycopg

    password = (run_dir / "pg" / "password").read_text().strip()
    with psycopg.connect(host="127.0.0.1", port=port, user="losslab", password=password, dbname="mlflow") as conn:
        runs = conn.execute("SELECT count(*) FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                            "WHERE e.name = %s AND r.status = 'FINISHED'", (EXPERIMENT,)).fetchone()[0]
        versions = conn.execute("SELECT count(*) FROM model_versions").fetchone()[0]
    return {"finished_runs": runs, "model_versions": versions}


def gone(pid: int) -> bool:
    """Dead, or a zombie waiting for its parent (init) to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def test_quick_sweep_with_two_jobs_logs_every_run_to_the_postgres_server():
    from mlflow.tracking import MlflowClient

    base = Path(tempfile.mkdtemp(prefix="losslab-server-test-"))
    base.chmod(0o755)
    run_dir = base / "run"
    state = None
    try:
        started = server_cli("start", run_dir)
        assert started.returncode == 0, started.stdout + started.stderr
        export = started.stdout.strip().splitlines()[-1]
        assert export.startswith("export MLFLOW_TRACKING_URI=http://127.0.0.1:"), started.stdout
        uri = export.split("=", 1)[1]
        state = read_state(run_dir)
        assert state is not None and state.tracking_uri == uri and healthy(uri)

        again = server_cli("start", run_dir)  # make server twice: the same server, not a second one
        assert again.returncode == 0 and again.stdout.strip().endswith(uri), again.stderr

        env = {k: v for k, v in os.environ.items() if k != "LOSSLAB_DEBUG"} | {"MLFLOW_TRACKING_URI": uri}
        command = [sys.executable, "-m", "losslab.sweeps.cli", "quick", "--jobs", "2", *tiny_data(base),
                   f"tracking.experiment={EXPERIMENT}", f"sweep.reports_dir={base / 'reports'}",
                   f"hydra.sweep.dir={base / 'multirun'}"]
        sweep = subprocess.run(command, cwd=base, env=env, capture_output=True, text=True, timeout=400)
        assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id], max_results=100)
        parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
                    and r.data.tags.get("model") != "linear-baseline" and r.data.tags.get("ensemble") != "seeds"]
        # the trainings; + one baseline run per seed, + one seed ensemble per loss
        assert len(runs) == 1 + len(LOSSES) * len(SEEDS) + len(SEEDS) + len(LOSSES) == \
            1 + len(children) + len(SEEDS) + len(LOSSES)
        assert all(r.info.status == "FINISHED" for r in children)
        assert sorted((r.data.tags["loss"], int(r.data.tags["seed"])) for r in children) == \
            sorted((loss, seed) for loss in LOSSES for seed in SEEDS)
        assert all(r.data.tags["sweep_id"] == parents[0].data.tags["sweep_id"] for r in children)
        default = client.get_experiment_by_name("Default")
        assert not client.search_runs([default.experiment_id]), "a run was misfiled in Default"
        # artifacts went through the server into its artifact store
        bundles = list((run_dir / "artifacts").glob("*/*/artifacts/model/losslab_model.json"))
        assert len(bundles) == len(children) + len(LOSSES)  # every training's model and every seed ensemble's
        # the sweep's end registered its champion in the server's registry
        name = f"losslab-{EXPERIMENT}"
        champion = client.get_model_version_by_alias(name, "champion")
        best = max(children, key=lambda r: r.data.metrics["best_val/f1_macro"])
        assert champion.run_id in {r.info.run_id for r in children}
        assert client.get_run(champion.run_id).data.metrics["best_val/f1_macro"] == \
            best.data.metrics["best_val/f1_macro"]
        assert postgres_counts(run_dir, state.pg_port) == {"finished_runs": len(runs), "model_versions": 1}
    finally:
        stopped = server_cli("stop", run_dir, timeout=120)
        try:
            assert stopped.returncode == 0, stopped.stderr
            if state is not None:
                assert "mlflow server" in stopped.stderr and "PostgreSQL" in stopped.stderr, stopped.stderr
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not (gone(state.mlflow_pid) and gone(state.pg_pid)):
                    time.sleep(0.2)
                assert gone(state.mlflow_pid) and gone(state.pg_pid)
                assert not healthy(state.tracking_uri)
                assert read_state(run_dir) is None
                assert (run_dir / "pg" / "data" / "PG_VERSION").is_file(), "stop keeps the data"
        finally:
            shutil.rmtree(base, ignore_errors=True)
