"""Sweeps: configs compose, a parallel sweep loses nothing, a failing job leaves no run RUNNING, the search."""

from __future__ import annotations

import itertools

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import CONF
from losslab.model.losses import LOSSES
from losslab.sweeps.cli import available_sweeps, hydra_argv, main as sweep_main
from sweep_fixture import EXPERIMENT, LOSSES as QUICK_LOSSES, SEEDS, quick_sweep, run_sweep, tiny_data  # noqa: F401


def composed(name: str):
    """The real config of sweep ``name``, hydra node included."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def sweeper_params(name: str) -> dict[str, list[str]]:
    """The sweep's ``hydra.sweeper.params`` as lists of values (``range(a,b)`` expanded)."""
    cfg = composed(name)
    out = {}
    for key, value in cfg.hydra.sweeper.params.items():
        value = str(value)
        if value.startswith("range("):
            low, high = map(int, value[6:-1].split(","))
            out[key] = [str(i) for i in range(low, high)]
        else:
            out[key] = value.split(",")
    return out


def test_the_four_sweeps_exist():
    assert available_sweeps() == ["grid", "losses", "quick", "search"]


def test_losses_sweep_is_every_loss_times_five_seeds():
    params = sweeper_params("losses")
    assert sorted(params["loss"]) == sorted(LOSSES) and params["seed"] == ["0", "1", "2", "3", "4"]
    assert list(params)[0] == "seed", "seeds outermost: each split is featurized once per process"


def test_quick_sweep_is_four_lecture_losses_two_seeds_two_epochs():
    params = sweeper_params("quick")
    assert params == {"seed": ["0", "1"], "loss": ["mse", "bce", "ce", "kl"]}
    assert len(list(itertools.product(*params.values()))) == 8
    assert composed("quick").trainer.max_epochs == 2


def test_grid_sweep_varies_lr_and_width():
    params = sweeper_params("grid")
    assert {"optimizer.lr", "model.hidden", "loss", "seed"} <= set(params)
    assert len(params["optimizer.lr"]) > 1 and len(params["model.hidden"]) > 1


def test_search_space_names_real_config_keys():
    from omegaconf import OmegaConf

    cfg = composed("search")
    assert set(cfg.sweep.search.losses) <= set(LOSSES)
    for key in cfg.sweep.search.space:
        assert OmegaConf.select(cfg, key) is not None, key


def test_jobs_choose_the_launcher():
    assert hydra_argv("quick", 1, ["seed=3"]) == ["--multirun", "+sweep=quick", "seed=3"]
    assert hydra_argv("quick", 2, []) == ["--multirun", "+sweep=quick", "hydra/launcher=joblib",
                                          "hydra.launcher.n_jobs=2"]


def test_unknown_sweep_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep_main(["nosuch"])
    assert exit_info.value.code == 2
    assert "unknown sweep 'nosuch'" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_sweep_records_every_job_under_one_parent(quick_sweep):
    client = MlflowClient(quick_sweep.uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]

    assert len(parents) == 1 and len(children) == len(QUICK_LOSSES) * len(SEEDS) == 8
    parent = parents[0]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert all(r.data.tags["sweep_id"] == parent.data.tags["sweep_id"] for r in children)
    assert sorted((r.data.tags["loss"], int(r.data.tags["seed"])) for r in children) == sorted(
        itertools.product(QUICK_LOSSES, SEEDS))
    assert {r.data.params["trainer.max_epochs"] for r in children} == {"2"}
    assert {r.data.params["tracking.parent_run_id"] for r in children} == {parent.info.run_id}
    # the jobs ran in joblib's worker processes, and nothing landed in the Default experiment
    assert "joblib" in parent.data.params["sweep.launcher"].lower() and parent.data.params["sweep.n_jobs"] == "2"
    assert client.search_runs(["0"]) == []
    assert parent.data.metrics["sweep_jobs"] == 8
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/report.md",
                                                                                       "report/report.html"}
    multirun = yaml.safe_load(next((quick_sweep.root / "multirun").glob("multirun.yaml")).read_text())
    assert multirun["hydra"]["launcher"]["n_jobs"] == 2


@pytest.mark.slow
def test_failing_job_leaves_parent_failed_and_nothing_running(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SystemExit) as exit_info:  # the second job's config is impossible
        sweep_main(["quick", *tiny_data(tmp_path), f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}",
                    f"hydra.sweep.dir={tmp_path / 'multirun'}", "hydra.sweeper.params.seed=0",
                    "hydra.sweeper.params.loss=ce", "model.dropout=0.1,1.5"])
    assert exit_info.value.code != 0 and "model.dropout=1.5 must be in [0, 1)" in capsys.readouterr().err
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    assert parent.info.status == "FAILED" and "stopped" in parent.data.tags["sweep_error"]
    assert [r.info.status for r in runs if r is not parent] == ["FINISHED"]


@pytest.mark.slow
def test_search_reruns_each_losses_best_trial_on_the_final_seeds(tmp_path, monkeypatch):
    from losslab.sweeps.search import run_search

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results = run_search([*tiny_data(tmp_path), f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}",
                          f"sweep.reports_dir={tmp_path / 'reports'}", "sweep.search.losses=[ce,mse]",
                          "sweep.search.trials=2", "sweep.search.final_seeds=[0,1]", "trainer.max_epochs=2",
                          "sweep.report.enabled=false"])
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "FINISHED" and {r.info.status for r in children} == {"FINISHED"}
    phases = sorted((r.data.tags["loss"], r.data.tags["sweep_phase"]) for r in children)
    assert phases == sorted([(loss, phase) for loss in ("ce", "mse") for phase in ("search", "search", "final",
                                                                                      "final")])
    for summary in results:
        finals = [r for r in children if r.data.tags["loss"] == summary["loss"]
                  and r.data.tags["sweep_phase"] == "final"]
        for key, value in summary["best_params"].items():
            assert {r.data.params[key] for r in finals} == {str(value)}, key
    assert not (tmp_path / "reports").exists()  # sweep.report.enabled=false
