"""Ensembles as models: k-fold bagging (``ensemble.folds``), seed ensembles of a sweep, their bundles and serving.

Tiny synthetic data written in tmp_path, a real sqlite MLflow store, CPU only.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import data_overrides, synthetic_rows, write_table
from test_train import cli
from losslab.errors import ConfigError
from losslab.model.operating_point import choose_rule
from losslab.serving.bundle import EnsemblePredictor, Predictor, combine_bundles, download_bundle
from losslab.training.ensemble import fold_assignment

FOLDS = 3


def test_fold_assignment_is_stratified_seeded_and_covers_every_row_once():
    y = np.array([0] * 40 + [1] * 14)
    folds = fold_assignment(y, 5, seed=0)
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4] and len(folds) == len(y)
    for i in range(5):  # every fold holds each class's share, within one row
        for c, total in ((0, 40), (1, 14)):
            assert abs((folds[y == c] == i).sum() - total / 5) < 1
    assert np.array_equal(folds, fold_assignment(y, 5, seed=0))
    assert not np.array_equal(folds, fold_assignment(y, 5, seed=1))
    with pytest.raises(ConfigError, match="ensemble.folds"):
        fold_assignment(np.array([0] * 10 + [1] * 2), 3, seed=0)


def read_predictions(client: MlflowClient, run_id: str, name: str, tmp: Path) -> pd.DataFrame:
    return pd.read_csv(client.download_artifacts(run_id, f"evaluation/{name}", str(tmp)))


def texts_of_file(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [row["text"] for row in csv.DictReader(fh)]


@pytest.fixture
def kfold(tiny_binary, tmp_path):
    """``python -m losslab.train ensemble.folds=3`` on the tiny binary data (the CLI's dispatch included)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = cli("-m", "losslab.train", *data_overrides(tiny_binary), "data.class_names=[calm,aggressive]",
               f"ensemble.folds={FOLDS}", "diagnostics=false", "trainer.accelerator=cpu", "trainer.max_epochs=3",
               "model.hidden=16", "optimizer.lr=0.01", "data.batch_size=32", "tracking.experiment=tests",
               f"hydra.run.dir={tmp_path / 'run'}", env_extra={"MLFLOW_TRACKING_URI": store})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test_tuned/f1_aggressive" in done.stdout and "fold 3/3" in done.stdout
    assert "GPU available" not in done.stdout + done.stderr  # Lightning's info lines stay off the console
    run_id = done.stdout.split("MLflow run id:")[1].split()[0]
    return SimpleNamespace(run_id=run_id, tracking_uri=store)


def train_folds_of(cfg, output_dir):
    import pytorch_lightning  # noqa: F401  (then quieted, as training.train.main does)

    from losslab.training.ensemble import train_folds
    from losslab.training.train import quiet_third_party

    quiet_third_party()
    return train_folds(cfg, output_dir)


@pytest.mark.slow
def test_kfold_ensemble_is_one_run_with_a_single_runs_metrics_and_an_ensemble_bundle(kfold, tiny_binary, tmp_path):
    client = MlflowClient(kfold.tracking_uri)
    run = client.get_run(kfold.run_id)
    runs = client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in runs] == [kfold.run_id]  # the fold models are no runs of their own
    tags = run.data.tags
    assert run.info.status == "FINISHED" and tags["ensemble"] == "folds" and tags["ensemble_members"] == str(FOLDS)
    for tag in ("loss", "seed", "dataset_md5", "git_commit"):
        assert tags.get(tag), tag
    metrics = run.data.metrics
    for key in ("test/f1_macro", "test/f1_aggressive", "test/accuracy", "test/auroc", "test_tuned/f1_aggressive",
                "test_tuned/f1_macro", "val/threshold", "best_val/f1_macro"):
        assert key in metrics, key
    assert metrics["test/accuracy"] > 0.8
    assert run.data.params["ensemble.folds"] == str(FOLDS)
    assert [m.step for m in client.get_metric_history(kfold.run_id, "fold0-val/f1_macro")] == [0, 1, 2]

    # the rule is the one the out-of-fold predictions choose (every pooled training row, once)
    oof = read_predictions(client, kfold.run_id, "val_predictions.csv", tmp_path)
    assert len(oof) == 160
    rule = choose_rule(oof[["p_calm", "p_aggressive"]].to_numpy(), oof["label"].to_numpy(), metric="f1_minority",
                       class_counts=np.bincount(oof["label"].to_numpy()))
    assert metrics["val/threshold"] == pytest.approx(rule["threshold"])

    # the bundle: k networks, one featurizer; the Predictor reproduces the run's averaged test probabilities
    bundle = download_bundle(kfold.run_id, kfold.tracking_uri)
    assert {f"network_{i}.pt" for i in range(FOLDS)} <= {p.name for p in bundle.iterdir()}
    predictor = Predictor.load(bundle)
    assert isinstance(predictor, EnsemblePredictor) and len(predictor.members) == FOLDS
    assert predictor.operating_point["threshold"] == pytest.approx(metrics["val/threshold"])
    logged = read_predictions(client, kfold.run_id, "test_predictions.csv", tmp_path)
    probs = predictor.predict_proba(texts_of_file(tiny_binary["test"]))
    assert np.allclose(probs, logged[["p_calm", "p_aggressive"]].to_numpy(), atol=2e-6)
    # registered and served like a single run: the pyfunc (models from code) averages the same way
    import mlflow.pyfunc

    from losslab.serving.registry import describe, register_one
    from losslab.sweeps.finish import quiet_registration

    with quiet_registration():
        champion = register_one(kfold.tracking_uri, kfold.run_id, "tests-ensemble")  # make register RUN=<id>
    assert champion.new and champion.run_id == kfold.run_id and champion.model_uri == "models:/tests-ensemble@champion"
    assert describe(champion).startswith(f"champion: run {kfold.run_id} (ce-s0-{FOLDS}fold, best_val/f1_macro")
    served = mlflow.pyfunc.load_model(champion.model_uri).predict(texts_of_file(tiny_binary["test"])[:5])
    assert np.allclose(served[["p_calm", "p_aggressive"]].to_numpy(), probs[:5], atol=1e-6)
    # make predict RUN=<ensemble run>
    answer = cli("-m", "losslab.serving.predict", "--run", kfold.run_id, "--tracking-uri", kfold.tracking_uri,
                 "--text", "eres un pendejo idiota", "--text", "gracias amigos hermoso")
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert [line.split('"class": "')[1].split('"')[0] for line in answer.stdout.strip().splitlines()] == [
        "aggressive", "calm"]


@pytest.mark.slow
def test_kfold_threshold_never_sees_the_test_labels(compose, tiny_binary, tmp_path):
    """Flipping every test label changes the test metrics, not the operating point."""
    def run_with(test_path: Path, out: str) -> dict[str, float]:
        cfg = compose("data=custom", f"data.train_path={tiny_binary['train']}", f"data.test_path={test_path}",
                      "features.word.min_df=1", "data.class_names=[calm,aggressive]", f"ensemble.folds={FOLDS}",
                      "diagnostics=false")
        result = train_folds_of(cfg, tmp_path / out)
        return MlflowClient(result.tracking_uri).get_run(result.run_id).data.metrics

    with tiny_binary["test"].open(newline="", encoding="utf-8") as fh:
        rows = [(r["text"], 1 - int(r["label"])) for r in csv.DictReader(fh)]
    flipped = write_table(tmp_path / "flipped.csv", rows, "csv")
    original, other = run_with(tiny_binary["test"], "a"), run_with(flipped, "b")
    assert other["val/threshold"] == original["val/threshold"]
    assert other["test/accuracy"] == pytest.approx(1 - original["test/accuracy"], abs=1e-6)


def test_out_of_bag_rows_average_only_the_members_that_held_them_out():
    from losslab.sweeps.ensembles import Member, out_of_bag

    def member(keys, probs, train):
        return Member(None, 0, np.zeros(1), np.zeros((1, 2)), keys, np.array(probs, dtype=np.float32), set(train),
                      ["calm", "aggressive"], {})

    a = member([("a", 0), ("b", 1)], [[0.9, 0.1], [0.2, 0.8]], ["c"])
    b = member([("b", 1), ("c", 0), ("a", 0)], [[0.4, 0.6], [0.7, 0.3], [0.1, 0.9]], ["a"])  # b trained on "a"
    probs, labels, counts = out_of_bag([a, b])
    rows = {key: (p.tolist(), n) for key, p, n in zip(zip(["a", "b", "c"], labels.tolist()), probs, counts)}
    assert rows[("a", 0)] == (pytest.approx([0.9, 0.1]), 1)
    assert rows[("b", 1)] == (pytest.approx([0.3, 0.7]), 2)
    assert rows[("c", 0)] == (pytest.approx([0.7, 0.3]), 1)


def test_ensemble_settings_follow_the_sweeps_overrides(tmp_path):
    from losslab.sweeps.finish import ensemble_settings
    from losslab.tracking.sweep_runs import start_parent

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    default = start_parent(uri, "tests", "t")
    assert ensemble_settings(default)["enabled"] is True
    off = start_parent(uri, "tests", "t", {"sweep.overrides": "loss=ce,mse sweep.ensemble.enabled=false"})
    assert ensemble_settings(off)["enabled"] is False


@pytest.mark.slow
def test_seed_ensemble_of_a_sweep_is_its_own_run_left_out_of_per_seed_rows_and_champion(compose, tiny_binary,
                                                                                         tmp_path):
    from losslab.report.collect import load_sweep
    from losslab.serving.registry import best_child
    from losslab.sweeps.finish import finish_sweep
    from losslab.tracking.sweep_runs import start_parent
    from losslab.training.train import train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = start_parent(uri, "tests", "t")
    members = []
    for seed in (0, 1):
        cfg = compose(*data_overrides(tiny_binary), "data.class_names=[calm,aggressive]", f"seed={seed}",
                      "diagnostics=false", "tracking.confusion_matrix_png=false",  # as in sweeps
                      f"tracking.parent_run_id={parent.run_id}",
                      f"+tracking.tags.sweep_id={parent.sweep_id}")
        members.append(train(cfg, tmp_path / f"out{seed}").run_id)
    finish_sweep(parent, report=False, ensemble={"enabled": True}, settings={"select_metric": "best_val/f1_macro"})

    client = MlflowClient(uri)
    runs = client.search_runs([parent.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'")
    (ensemble,) = [r for r in runs if r.data.tags.get("ensemble") == "seeds"]
    assert ensemble.info.status == "FINISHED" and ensemble.data.tags["ensemble_members"] == "2"
    assert sorted(ensemble.data.tags["ensemble_member_runs"].split(",")) == sorted(members)
    files = [f.path for f in client.list_artifacts(ensemble.info.run_id, "evaluation")]
    assert "evaluation/test_predictions.csv" in files and not [f for f in files if f.endswith(".png")]  # as members'

    for key in ("test/f1_macro", "test/f1_aggressive", "test_tuned/f1_aggressive", "val/threshold"):
        assert key in ensemble.data.metrics, key

    # test probabilities: the members' mean; the rule: chosen on the out-of-bag validation rows it logged
    cols = ["p_calm", "p_aggressive"]
    member_probs = [read_predictions(client, r, "test_predictions.csv", tmp_path / r)[cols].to_numpy()
                    for r in members]
    logged = read_predictions(client, ensemble.info.run_id, "test_predictions.csv", tmp_path / "e")
    assert np.allclose(logged[cols].to_numpy(), np.mean(member_probs, axis=0), atol=2e-6)
    oob = read_predictions(client, ensemble.info.run_id, "val_predictions.csv", tmp_path / "e")
    rule = choose_rule(oob[cols].to_numpy(), oob["label"].to_numpy(), class_counts=np.bincount(oob["label"]))
    assert ensemble.data.metrics["val/threshold"] == pytest.approx(rule["threshold"])
    assert ensemble.data.metrics["val/oob_rows"] == len(oob) > 16  # more rows than one seed's validation split

    # its bundle: one featurizer per member; the Predictor gives the ensemble's logged probabilities
    bundle = download_bundle(ensemble.info.run_id, uri)
    assert (bundle / "featurizer_1" / "featurizer.json").is_file()
    predictor = Predictor.load(bundle)
    assert np.allclose(predictor.predict_proba(texts_of_file(tiny_binary["test"])), logged[cols].to_numpy(),
                       atol=3e-6)

    # not a per-seed row of the report, not the champion (even with the best validation score)
    assert ensemble.info.run_id not in set(load_sweep(uri, parent.sweep_id, experiment_id=parent.experiment_id)
                                           .runs["run_id"])
    client.log_metric(ensemble.info.run_id, "best_val/f1_macro", 2.0)
    assert best_child(uri, client.get_run(parent.run_id), "best_val/f1_macro").info.run_id in members


def test_combined_bundle_averages_its_members(tmp_path):
    """combine_bundles + EnsemblePredictor: exactly the mean of the single bundles' probabilities."""
    import torch

    from losslab.data.features import Featurizer
    from losslab.data.text import Normalizer
    from losslab.model.network import PReLUMLP
    from losslab.serving.bundle import save_bundle

    rows = synthetic_rows(60, ["calm", "aggressive"], seed=3)
    texts = [t for t, _ in rows]
    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        featurizer = Featurizer.from_config({"weighting": "binary", "word": {"min_df": 1}}).fit(texts[seed::2])
        net = PReLUMLP(featurizer.vocabulary_size, 2, hidden=8)
        dirs.append(save_bundle(tmp_path / f"m{seed}", featurizer=featurizer, net=net.eval(),
                                class_names=["calm", "aggressive"], normalizer=Normalizer(),
                                model_params={"hidden": 8}, activation="softmax"))
    combined = Predictor.load(combine_bundles(dirs, tmp_path / "ens", {"kind": "threshold", "positive": 1,
                                                                       "threshold": 0.4, "metric": "f1_minority"}))
    singles = [Predictor.load(d).predict_proba(texts) for d in dirs]
    assert not np.allclose(singles[0], singles[1])
    assert np.allclose(combined.predict_proba(texts), np.mean(singles, axis=0), atol=1e-7)
    assert combined.predict(texts) == ["aggressive" if p >= 0.4 else "calm"
                                       for p in combined.predict_proba(texts)[:, 1]]
