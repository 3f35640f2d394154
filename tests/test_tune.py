"""make tune: a search on validation writes the winner as an experiment file that composes and trains."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient
from sweep_fixture import EXPERIMENT, tiny_data

from losslab.sweeps.tune import best_trial


def test_the_best_trial_is_the_highest_objective_over_losses():
    results = [{"loss": "ce", "best_value": 0.61, "best_params": {}},
               {"loss": "mse", "best_value": 0.74, "best_params": {}},
               {"loss": "bce", "best_value": 0.74, "best_params": {}}]
    assert best_trial(results)["loss"] == "mse"  # ties: the first listed


@pytest.mark.slow
def test_tune_writes_the_validation_winner_as_an_experiment_that_composes(tmp_path, monkeypatch, compose):
    from losslab.sweeps.tune import run_tune

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "experiment" / "tiny_best.yaml"
    written = run_tune([*tiny_data(tmp_path), f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}",
                        "sweep.search.losses=[ce,mse]", "sweep.search.trials=2", "sweep.search.seeds=[0]",
                        "trainer.max_epochs=4",
                        "model.hidden=16", "sweep.search.space={features: {choices: [onehot, tfidf]}, "
                        "model.dropout: {low: 0.0, high: 0.5}}", f"sweep.output={out}"])
    assert written == out
    text = out.read_text()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get("sweep_phase") == "search"]
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    best = max(r.data.metrics["best_val/f1_macro"] for r in trials)  # validation only: no test metric
    tied = [r for r in trials if r.data.metrics["best_val/f1_macro"] == best]
    winner = next((r for r in tied if f"override /loss: {r.data.tags['loss']}\n" in text), None)
    assert winner is not None, text
    assert f"best_val/f1_macro = {winner.data.metrics['best_val/f1_macro']:.4f}" in text

    cfg = compose(f"hydra.searchpath=[file://{tmp_path}]", "experiment=tiny_best")
    assert cfg.loss.name == winner.data.tags["loss"]
    assert cfg.features.weighting == winner.data.params["features.weighting"]  # onehot: binary, tfidf: tfidf
    assert math.isclose(cfg.model.dropout, float(winner.data.params["model.dropout"]), abs_tol=1e-6)
    assert "early_stopping" in cfg.callbacks and cfg.trainer.min_epochs == 3
    assert cfg.tracking.tags.experiment == "tiny_best"


def test_trials_train_on_every_listed_seed_else_the_search_seed():
    from omegaconf import OmegaConf

    from losslab.sweeps.search import trial_seeds

    assert trial_seeds(OmegaConf.create({"seed": 4, "seeds": [0, 1, 2]})) == [0, 1, 2]
    assert trial_seeds(OmegaConf.create({"seed": 4})) == [4]
    assert trial_seeds(OmegaConf.create({"seed": 4, "seeds": None})) == [4]
