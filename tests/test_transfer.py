"""Runs that travel as files: export a sweep from one real sqlite store, import it into another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.tracking import MlflowClient

from conftest import ROOT
from losslab.errors import ConfigError
from losslab.tracking.transfer import IMPORTED_FROM, export_runs, import_runs

EXPERIMENT = "synthetic"
LOSSES, SEEDS = ("ce", "mse"), (0, 1)


def make_sweep(uri: str, files: Path, sweep_id: str, device: str) -> str:
    """A finished sweep as training records it: parent + one child per (loss, seed) with curves,
    test metrics, a dataset input and the test predictions artifact. Returns the parent's run id."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = found.experiment_id if found else client.create_experiment(
        EXPERIMENT, artifact_location=(files / "artifacts").as_uri())
    parent = client.create_run(experiment_id, run_name=f"sweep-{sweep_id}",
                               tags={"sweep_id": sweep_id, "sweep_role": "parent"}).info.run_id
    for loss in LOSSES:
        for seed in SEEDS:
            tags = {"loss": loss, "seed": str(seed), "device": device, "dataset_md5": "abc123", "sweep_id": sweep_id,
                    "device_name": "Test GPU" if device == "cuda" else "Test CPU", "mlflow.parentRunId": parent}
            run = client.create_run(experiment_id, run_name=f"{loss}-s{seed}", tags=tags).info.run_id
            f1 = 0.6 + 0.01 * seed + (0.02 if loss == "ce" else 0.0) + (0.001 if device == "cuda" else 0.0)
            params = {"loss.name": loss, "seed": seed, "model.hidden": 16, "data.name": "synth",
                      "trainer.accelerator": "gpu" if device == "cuda" else "cpu"}
            metrics = [Metric(k, v, 1000, 0) for k, v in {
                "test/f1_macro": f1, "test/f1_aggressive": f1 - 0.1, "test/f1_calm": f1 + 0.1, "test/accuracy": f1,
                "test/auroc": f1, "test/ece": 0.05, "test/nll": 0.7, "fit_seconds": 0.5 if device == "cuda" else 2.0,
                "best_val/f1_macro": f1}.items()]
            metrics += [Metric("val/f1_macro", f1 - 0.1 + 0.05 * e, 2000 + e, e) for e in range(3)]
            client.log_batch(run, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
            client.log_inputs(run, datasets=[DatasetInput(Dataset("synth", "abc123", "local", '{"uri": "/data"}'),
                                                          [InputTag("mlflow.data.context", "training")])])
            rng = np.random.default_rng(seed)
            labels = rng.integers(0, 2, 40)
            p = np.clip(np.where(labels == 1, 0.7, 0.3) + rng.normal(0, 0.1, 40), 0.01, 0.99)
            folder = files / run / "evaluation"
            folder.mkdir(parents=True)
            pd.DataFrame({"label": labels, "predicted": (p > 0.5).astype(int), "p_calm": 1 - p,
                          "p_aggressive": p}).to_csv(folder / "test_predictions.csv", index=False)
            client.log_artifacts(run, str(folder), "evaluation")
            client.set_terminated(run, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent


def by_source(client: MlflowClient, experiment_id: str) -> dict[str, object]:
    return {r.data.tags[IMPORTED_FROM]: r for r in client.search_runs([experiment_id])
            if IMPORTED_FROM in r.data.tags}


def test_export_then_import_keeps_everything_and_is_idempotent(tmp_path):
    gpu_box = f"sqlite:///{tmp_path / 'gpu' / 'mlflow.db'}"
    (tmp_path / "gpu").mkdir()
    make_sweep(gpu_box, tmp_path / "gpu", "losses-gpu", device="cuda")
    folder = tmp_path / "exported"
    ids = export_runs(gpu_box, EXPERIMENT, folder)
    assert len(ids) == 1 + len(LOSSES) * len(SEEDS)
    assert json.loads((folder / "manifest.json").read_text())["sweep_id"] == "losses-gpu"

    team = f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}"
    (tmp_path / "team").mkdir()
    cpu_parent = make_sweep(team, tmp_path / "team", "losses-cpu", device="cpu")
    created, skipped = import_runs(team, folder)
    assert (len(created), skipped) == (len(ids), 0)
    assert import_runs(team, folder) == ([], len(ids))  # a second import adds nothing

    source, client = MlflowClient(gpu_box), MlflowClient(team)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    imported = by_source(client, experiment_id)
    assert set(imported) == set(ids)
    new_parent = imported[ids[0]].info.run_id
    for old_id in ids[1:]:
        old, new = source.get_run(old_id), imported[old_id]
        assert new.info.run_id != old_id and new.info.status == "FINISHED"
        assert new.info.run_name == old.info.run_name and new.info.start_time == old.info.start_time
        assert new.data.params == old.data.params and new.data.metrics == old.data.metrics
        assert new.data.tags["mlflow.parentRunId"] == new_parent and new.data.tags["device"] == "cuda"
        history = [(m.step, m.value) for m in client.get_metric_history(new.info.run_id, "val/f1_macro")]
        assert history == [(m.step, m.value) for m in source.get_metric_history(old_id, "val/f1_macro")]
        assert new.inputs.dataset_inputs[0].dataset.digest == "abc123"
        assert [a.path for a in client.list_artifacts(new.info.run_id, "evaluation")] == [
            "evaluation/test_predictions.csv"]
    assert cpu_parent not in imported  # the store's own runs are untouched


@pytest.mark.slow
def test_the_report_pairs_imported_gpu_runs_with_local_cpu_runs(tmp_path):
    """The CPU-vs-GPU section works on runs made elsewhere: `make export-runs` there, `make import-runs` here."""
    from losslab.report.build import write_report

    for box in ("gpu", "team"):
        (tmp_path / box).mkdir()
    gpu_box, team = (f"sqlite:///{tmp_path / box / 'mlflow.db'}" for box in ("gpu", "team"))
    make_sweep(gpu_box, tmp_path / "gpu", "losses-gpu", device="cuda")
    make_sweep(team, tmp_path / "team", "losses-cpu", device="cpu")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def make(target: str, uri: str, **variables: str) -> subprocess.CompletedProcess:
        args = [f"{k}={v}" for k, v in variables.items()]
        return subprocess.run(["make", "-s", "-o", "setup", target, f"EXPERIMENT={EXPERIMENT}", *args], cwd=ROOT,
                              env=env | {"MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True, timeout=300)

    exported = make("export-runs", gpu_box, TO=str(tmp_path / "exported"))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "exported 5 runs" in exported.stdout
    imported = make("import-runs", team, FROM=str(tmp_path / "exported"))
    assert imported.returncode == 0 and "imported 5 runs" in imported.stdout, imported.stderr[-2000:]
    out = write_report(team, sweep_id="losses-cpu", experiment=EXPERIMENT, reports_dir=tmp_path / "reports")
    text = (out / "report.md").read_text()
    section = text[text.index("## CPU vs GPU"):]
    assert "Test GPU (cuda)" in section and "| ce | 2 |" in section and "| mse | 2 |" in section


def test_import_of_a_folder_that_is_not_an_export_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="no manifest.json .*make export-runs"):
        import_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
