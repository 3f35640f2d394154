"""The linear baseline of every sweep (``losslab.training.baseline``): C chosen on validation, never on test, and
its runs in a real sweep's store."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import CONF, synthetic_rows, write_table
from losslab.training.baseline import BASELINE, cached_fit, fit_seed
from sweep_fixture import EXPERIMENT, LOSSES as QUICK_LOSSES, SEEDS, quick_sweep  # noqa: F401

SETTINGS = {"features": "ngrams", "C": [0.01, 1.0, 100.0], "class_weight": [None, "balanced"], "max_iter": 500}


def data_config(train, test) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "mex_a3t.yaml"))
    return cfg | {"name": "synthetic", "train_path": str(train), "test_path": str(test), "class_names": None,
                  "dvc_file": None}


def test_the_choice_sees_validation_only(tmp_path):
    """The same training file with two test files, the second with every label flipped: the same candidates, the
    same validation scores and the same C — only the test scores move."""
    labels = ["calm", "aggressive"]
    train = write_table(tmp_path / "train.csv", synthetic_rows(200, labels, seed=1), "csv")
    rows = synthetic_rows(80, labels, seed=2)
    test = write_table(tmp_path / "test.csv", rows, "csv")
    flipped = write_table(tmp_path / "flipped.csv", [(t, labels[1 - labels.index(y)]) for t, y in rows], "csv")
    first, second = (fit_seed(data_config(train, path), 3, SETTINGS) for path in (test, flipped))
    assert len(first.candidates) == 6 and first.sizes["test"] == 80
    assert [vars(c) for c in first.candidates] == [vars(c) for c in second.candidates]
    assert first.chosen == second.chosen
    best = max(first.candidates, key=lambda c: c.val_f1_macro)
    assert first.chosen.val_f1_macro == best.val_f1_macro
    assert (first.test_y != second.test_y).all() and (first.test_probs == second.test_probs).all()
    # the same split as a training of this seed: the validation rows a training would hold out
    assert first.sizes == {"train": 180, "val": 20, "test": 80}


def test_a_cached_fit_is_the_fit_and_a_changed_data_file_refits(tmp_path):
    import os

    labels = ["calm", "aggressive"]
    train = write_table(tmp_path / "train.csv", synthetic_rows(120, labels, seed=1), "csv")
    test = write_table(tmp_path / "test.csv", synthetic_rows(40, labels, seed=2), "csv")
    data, cache = data_config(train, test), tmp_path / "cache"
    settings = SETTINGS | {"C": [1.0], "class_weight": [None]}
    fresh = cached_fit(data, 0, settings, cache)
    again = cached_fit(data, 0, settings | {"cache": True, "cache_dir": str(cache)}, cache)  # whether and where
    # fits are kept is not part of the key
    assert not fresh.cached and again.cached and len(list(cache.glob("*.pkl"))) == 1
    assert (again.test_probs == fresh.test_probs).all() and again.chosen == fresh.chosen
    assert not cached_fit(data, 1, settings, cache).cached  # another seed: another split
    write_table(train, synthetic_rows(120, labels, seed=5), "csv")  # new rows in the same file
    os.utime(train, ns=(1, 1))
    changed = cached_fit(data, 0, settings, cache)
    assert not changed.cached and not (changed.test_probs == fresh.test_probs).all()


def test_the_cache_folder_is_the_settings():
    from losslab.paths import project_root
    from losslab.training.baseline import CACHE_DIR, cache_location

    assert cache_location({}) == project_root() / CACHE_DIR
    assert cache_location({"cache_dir": "elsewhere/fits"}) == project_root() / "elsewhere" / "fits"
    assert cache_location({"cache_dir": "/tmp/fits"}) == Path("/tmp/fits")
    assert cache_location({"cache": False, "cache_dir": "/tmp/fits"}) is None


def test_seeds_fitted_in_parallel_are_the_seeds_fitted_in_turn(tmp_path):
    import yaml

    from losslab.training.baseline import plan_baselines, run_baselines

    labels = ["calm", "aggressive"]
    train = write_table(tmp_path / "train.csv", synthetic_rows(120, labels, seed=1), "csv")
    test = write_table(tmp_path / "test.csv", synthetic_rows(40, labels, seed=2), "csv")
    config = yaml.safe_dump({"data": data_config(train, test)})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("baseline-jobs")
    got = {}
    for jobs in (1, 2):
        parent = client.create_run(experiment_id).info.run_id
        for seed in (0, 1, 2):  # the sweep's trainings: the baseline reads each seed's data config from them
            child = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, "seed": str(seed)})
            client.log_text(child.info.run_id, config, "config.yaml")
            client.set_terminated(child.info.run_id)
        settings = SETTINGS | {"C": [0.1, 1.0], "cache": False}
        plan = plan_baselines(uri, experiment_id, parent, settings)
        assert sorted(plan.todo) == plan.fresh == [0, 1, 2] and plan.cache_dir is None
        got[jobs] = run_baselines(uri, experiment_id, parent, f"sweep-{jobs}", settings, jobs=jobs)
        again = plan_baselines(uri, experiment_id, parent, settings)
        assert not again.todo and not again.fresh  # every seed has its baseline run now
    assert [fit.seed for _, fit in got[2]] == [0, 1, 2]
    for (_, one), (_, two) in zip(got[1], got[2]):
        assert one.chosen == two.chosen and (one.test_probs == two.test_probs).all()
    runs = client.search_runs([experiment_id], "tags.model = 'linear-baseline'")
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_the_sweep_has_a_baseline_run_per_seed(quick_sweep):  # noqa: F811
    client = MlflowClient(quick_sweep.uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    baselines = [r for r in runs if r.data.tags.get("model") == BASELINE]
    trainings = [r for r in runs if r.data.tags.get("loss") in QUICK_LOSSES]
    assert sorted(int(r.data.tags["seed"]) for r in baselines) == list(SEEDS)
    md5 = {r.data.tags["dataset_md5"] for r in trainings}
    for run in baselines:
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        assert run.info.status == "FINISHED" and tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["loss"] == BASELINE and tags["sweep_id"] == parent.data.tags["sweep_id"]
        assert {tags["dataset_md5"]} == md5
        assert {"test/f1_macro", "test/f1_aggressive", "test/accuracy", "test/auroc", "test/ece", "test/nll",
                "val/f1_macro", "fit_seconds", "baseline_seconds"} <= set(metrics)
        assert "best_val/f1_macro" not in metrics  # never the champion
        # C was chosen on validation: the logged candidates decide it, and they hold no test score
        candidates = pd.read_csv(io.StringIO(_text(run, "baseline/candidates.csv")))
        assert "test" not in " ".join(candidates.columns)
        best = candidates.loc[candidates["val_f1_macro"].idxmax()]
        assert candidates.loc[candidates["chosen"], "val_f1_macro"].item() == best["val_f1_macro"]
        chosen = candidates.loc[candidates["chosen"]].iloc[0]
        assert float(params["baseline.C"]) == chosen["C"] and metrics["val/f1_macro"] == pytest.approx(
            chosen["val_f1_macro"], abs=1e-6)
        history = client.get_metric_history(run.info.run_id, "baseline/candidate_val_f1_macro")
        assert sorted(p.step for p in history) == list(range(len(candidates)))
        predictions = pd.read_csv(io.StringIO(_text(run, "evaluation/test_predictions.csv")))
        assert list(predictions.columns) == ["label", "predicted", "p_aggressive", "p_calm"] or \
            list(predictions.columns)[:2] == ["label", "predicted"]
    champion = client.get_model_version_by_alias(f"losslab-{EXPERIMENT}", "champion")
    assert champion.run_id not in {r.info.run_id for r in baselines}
    out = quick_sweep.result.stdout
    assert "linear baseline: 2 runs (seeds 0, 1; chosen on validation: C=" in out
    assert out.index("linear baseline: ") < out.index("report of sweep")


def _text(run, path: str) -> str:
    import mlflow.artifacts

    return mlflow.artifacts.load_text(f"{run.info.artifact_uri}/{path}")
