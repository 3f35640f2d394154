"""End-to-end trainings on tiny synthetic data with a real sqlite MLflow store in tmp_path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, data_overrides
from losslab.serving.bundle import Predictor, download_bundle
from losslab.model.losses import LOSSES
from losslab.training.train import train


def run_of(result):
    return MlflowClient(result.tracking_uri).get_run(result.run_id)


@pytest.mark.slow
def test_training_records_a_complete_mlflow_run(compose, tiny_binary, tmp_path):
    cfg = compose(*data_overrides(tiny_binary), "data.class_names=[calm,aggressive]")
    result = train(cfg, tmp_path / "out")
    run = run_of(result)
    client = MlflowClient(result.tracking_uri)

    assert run.info.status == "FINISHED" and run.info.run_name == "ce-s0"
    assert client.get_experiment(run.info.experiment_id).name == "tests"
    assert run.data.params["model.hidden"] == "16" and run.data.params["loss.name"] == "ce"
    for tag in ("loss", "seed", "git_commit", "git_dirty", "dataset_md5", "device", "device_name",
                "torch_version", "lightning_version", "mlflow_version"):
        assert run.data.tags.get(tag), tag
    assert run.data.tags["device"] == "cpu" and run.data.tags["dataset_md5"] != ""
    for key in ("train/loss", "val/loss", "val/f1_macro"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1, 2], key
    for key in ("test/accuracy", "test/f1_macro", "test/f1_aggressive", "test/f1_calm", "test/auroc", "test/ece",
                "test/nll", "fit_seconds", "train_samples_per_second"):
        assert key in run.data.metrics, key
    assert run.data.metrics["test/accuracy"] > 0.8  # the synthetic classes are learnable
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "evaluation", "model"} <= artifacts
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/classification_report.txt"} <= evaluation

    (dataset_input,) = run.inputs.dataset_inputs  # the UI's Dataset column: name, DVC/file md5, source folder
    assert dataset_input.dataset.name == "custom" and dataset_input.dataset.digest == run.data.tags["dataset_md5"]
    assert str(tiny_binary["train"].parent) in dataset_input.dataset.source
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"

    predictor = Predictor.load(download_bundle(result.run_id, result.tracking_uri))
    probs = predictor.predict_proba(["eres un idiota maldito @pepe", "gracias amigos feliz"])
    assert probs.shape == (2, 2) and abs(probs.sum(1) - 1).max() < 1e-5
    assert predictor.predict(["eres un idiota maldito @pepe", "gracias amigos feliz"]) == ["aggressive", "calm"]


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(compose, tiny_binary, tmp_path):
    cfg = compose(*data_overrides(tiny_binary), "model.dropout=0.3")
    first = train(cfg, tmp_path / "a").test_metrics
    second = train(cfg, tmp_path / "b").test_metrics
    assert first == second


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains(compose, tiny_binary, tmp_path, loss):
    result = train(compose(*data_overrides(tiny_binary), f"loss={loss}", "trainer.max_epochs=2"), tmp_path / loss)
    run = run_of(result)
    assert run.info.status == "FINISHED" and run.data.tags["loss"] == loss and run.info.run_name == f"{loss}-s0"
    # the synthetic classes are learnable in 2 epochs with every loss (0.90-0.98 seen; chance is 0.5)
    f1 = result.test_metrics["test/f1_macro"]
    assert f1 > 0.8, f"{loss}: test macro-F1 {f1:.3f} after 2 epochs"
    assert run.data.metrics["test/f1_macro"] == pytest.approx(f1, rel=1e-6)  # what MLflow shows is what was scored


def cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    env.pop("LOSSLAB_DEBUG", None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_cli_trains_three_classes_then_predicts_from_the_run(tmp_path):
    from conftest import synthetic_rows, write_table

    labels = ["aggressive", "calm", "sad"]
    train_file = write_table(tmp_path / "train.jsonl", synthetic_rows(150, labels), "jsonl", "tweet", "tag")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = cli("-m", "losslab.training.train", "data=custom", f"data.train_path={train_file}", "data.text_column=tweet",
               "data.label_column=tag", "features.word.min_df=1", "model.hidden=16", "optimizer.lr=0.01",
               "trainer.max_epochs=3",
               "loss=kl", "seed=3", f"hydra.run.dir={tmp_path / 'run'}", env_extra={"MLFLOW_TRACKING_URI": store})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test/f1_sad" in done.stdout
    run_id = done.stdout.split("MLflow run id:")[1].split()[0]
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "kl-s3"

    predicted = cli("-m", "losslab.serving.predict", "--run", run_id, "--tracking-uri", store,
                    "--text", "triste llorar solo")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    answer = json.loads(predicted.stdout.strip().splitlines()[-1])
    assert answer["class"] == "sad" and set(answer["probabilities"]) == set(labels)


@pytest.mark.slow
def test_bad_input_is_one_clear_message_and_no_run(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bad = tmp_path / "bad.csv"
    bad.write_text("tweet,label\nhola,0\n", encoding="utf-8")
    done = cli("-m", "losslab.training.train", "data=custom", f"data.train_path={bad}",
               f"hydra.run.dir={tmp_path / 'run'}",
               env_extra={"MLFLOW_TRACKING_URI": store})
    assert done.returncode == 2
    assert "no column 'text' (data.text_column)" in done.stderr and "Traceback" not in done.stderr
    assert not Path(tmp_path / "mlflow.db").exists() or not MlflowClient(store).search_runs(
        [e.experiment_id for e in MlflowClient(store).search_experiments()])

    unknown = cli("-m", "losslab.training.train", "loss=hinge", env_extra={"MLFLOW_TRACKING_URI": store})
    assert unknown.returncode != 0 and "ce_weighted" in unknown.stderr


@pytest.mark.slow
def test_best_checkpoint_loads_alone_and_predicts_as_the_bundle(compose, tiny_binary, tmp_path):
    """save_hyperparameters: the checkpoint rebuilds the module (network, loss, classes) with no other input."""
    import numpy as np
    import torch

    from losslab.data.batches import csr_to_batch
    from losslab.model.module import TextClassifier

    cfg = compose(*data_overrides(tiny_binary), "loss=ce_weighted", "model.depth=2")
    result = train(cfg, tmp_path / "out")
    (best,) = (tmp_path / "out" / "checkpoints").glob("best-epoch*.ckpt")
    module = TextClassifier.load_from_checkpoint(best, map_location="cpu", weights_only=True).eval()
    assert module.class_names == ["0", "1"] and module.hparams.loss["name"] == "ce_weighted"
    assert module.loss.weight is not None and len(module.net.hidden) == 5  # depth 2: PReLU, Dropout + 3 more
    predictor = Predictor.load(download_bundle(result.run_id, result.tracking_uri))
    texts = ["eres un idiota maldito @pepe", "gracias amigos feliz", "hoy el de la"]
    x = predictor.featurizer.transform(predictor.normalizer.many(texts))
    with torch.no_grad():
        from_checkpoint = module.loss.probabilities(module(*csr_to_batch(x)[:3])).numpy()
    assert np.allclose(from_checkpoint, predictor.predict_proba(texts), atol=1e-6)
