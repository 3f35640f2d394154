"""The operating point: a threshold / per-class offsets chosen on validation probabilities only."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from losslab.model.operating_point import (apply_rule, choose_rule, label_metrics, macro_f1, tune_offsets,
                                           tune_threshold)


def test_threshold_on_a_hand_made_validation_set_is_the_known_optimum():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    # F1(class 1) for p >= t: 0.9→.40, 0.8→.67, 0.7→.57, 0.6→.75, 0.4→.67, 0.3→.60, 0.2→.73, 0.1→.67
    t, score = tune_threshold(p, y, positive=1, metric="f1_class")
    assert t == pytest.approx(0.6) and score == pytest.approx(0.75)
    rule = choose_rule(np.column_stack([1 - p, p]), y, metric="f1_minority", class_counts=[900, 100])
    assert rule["kind"] == "threshold" and rule["positive"] == 1 and rule["threshold"] == pytest.approx(0.6)
    assert list(apply_rule(np.column_stack([1 - p, p]), rule)) == [1, 1, 1, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("metric", ["f1_class", "f1_macro"])
def test_threshold_search_matches_brute_force_with_sklearn(metric):
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.25).astype(int)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 300), 0, 1).round(2)  # ties on purpose
    t, score = tune_threshold(p, y, positive=1, metric=metric)
    average = "binary" if metric == "f1_class" else "macro"
    brute = max(f1_score(y, (p >= c).astype(int), average=average, zero_division=0) for c in np.unique(p))
    assert score == pytest.approx(brute)
    assert f1_score(y, (p >= t).astype(int), average=average, zero_division=0) == pytest.approx(brute)
    assert score >= f1_score(y, (p >= 0.5).astype(int), average=average, zero_division=0)


def test_minority_class_is_the_default_positive_even_when_it_is_class_0():
    p1 = np.array([0.9, 0.8, 0.3, 0.2])
    rule = choose_rule(np.column_stack([1 - p1, p1]), np.array([1, 1, 0, 1]), class_counts=[10, 90])
    assert rule["positive"] == 0


def test_offsets_for_three_classes_improve_validation_macro_f1():
    rng = np.random.default_rng(0)
    n = 600
    y_val = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    logits = rng.normal(0, 1, (n, 3)) + 1.2 * np.eye(3)[y_val] + np.array([1.5, 0.3, -1.0])  # biased to class 0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    argmax_score = f1_score(y_val, probs.argmax(1), average="macro")
    offsets, score = tune_offsets(probs, y_val)
    assert offsets[0] == 0.0 and np.any(offsets[1:] != 0)
    assert score > argmax_score + 0.02
    rule = choose_rule(probs, y_val)
    assert rule["kind"] == "offsets"
    assert f1_score(y_val, apply_rule(probs, rule), average="macro") == pytest.approx(rule["val_score"])
    # the rule is a function of the validation split alone: other data to score it on changes nothing
    test_probs = rng.dirichlet(np.ones(3), size=50)
    again = choose_rule(probs, y_val)
    assert again == rule and apply_rule(test_probs, rule).shape == (50,)


def test_macro_f1_counts_only_present_classes_like_sklearn():
    y, pred = np.array([0, 0, 1, 1, 0]), np.array([0, 1, 1, 1, 0])  # class 2 absent from both
    assert macro_f1(y, pred, 3) == pytest.approx(f1_score(y, pred, average="macro"))
    metrics = label_metrics(y, pred, ["a", "b", "c"])
    assert metrics["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro")) and metrics["f1_c"] == 0.0


@pytest.mark.slow
def test_a_training_tunes_on_validation_logs_test_tuned_and_the_bundle_applies_the_rule(compose, tiny_binary, tmp_path):
    import json
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from conftest import data_overrides
    from losslab.serving.bundle import Predictor, download_bundle
    from losslab.training.train import train

    cfg = compose(*data_overrides(tiny_binary), "data.class_names=[calm,aggressive]", "data.batch_size=auto",
                  "trainer.max_epochs=auto", "diagnostics=false", "model.dropout=0.3")
    result = train(cfg, tmp_path / "out")
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.run_id)
    metrics, params = run.data.metrics, run.data.params
    # auto sizes: 144 training rows → batch 32, 5 steps per epoch → 40 epochs, logged as numbers
    assert params["data.batch_size"] == "32" and params["trainer.max_epochs"] == "40"
    assert len(client.get_metric_history(result.run_id, "val/f1_macro")) == 40
    assert 0.0 < metrics["val/threshold"] <= 1.0 and "val_tuned/f1_minority" in metrics
    for key in ("test_tuned/f1_aggressive", "test_tuned/f1_calm", "test_tuned/f1_macro", "test_tuned/accuracy"):
        assert key in metrics and key in result.test_metrics, key
    evaluation = {a.path for a in client.list_artifacts(result.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix_tuned.png", "evaluation/classification_report_tuned.txt"} <= evaluation

    bundle = download_bundle(result.run_id, result.tracking_uri)
    rule = json.loads((bundle / "losslab_model.json").read_text())["operating_point"]
    assert rule["kind"] == "threshold" and rule["threshold"] == pytest.approx(metrics["val/threshold"])
    predictor = Predictor.load(bundle)
    assert predictor.operating_point == rule
    texts = ["eres un idiota maldito @pepe", "gracias amigos feliz", "hola", "maldito", "amigos idiota"]
    probs = predictor.predict_proba(texts)
    positive = rule["positive"]
    expected = [predictor.class_names[positive if p[positive] >= rule["threshold"] else 1 - positive] for p in probs]
    assert predictor.predict(texts) == expected
    assert predictor.predict(texts, "argmax") == [predictor.class_names[i] for i in probs.argmax(1)]
    for flag, want in (("tuned", expected), ("argmax", predictor.predict(texts, "argmax"))):
        done = subprocess.run([sys.executable, "-m", "losslab.serving.predict", "--model-dir", str(bundle),
                               "--operating-point", flag, *[a for t in texts for a in ("--text", t)]],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert [json.loads(line)["class"] for line in done.stdout.splitlines()] == want, flag
    # the tuned test metrics are the rule applied to the test predictions the run wrote
    rows = np.loadtxt(tmp_path / "out" / "artifacts" / "evaluation" / "test_predictions.csv", delimiter=",", skiprows=1)
    y_test, p_test = rows[:, 0].astype(int), rows[:, 2:]
    tuned = np.where(p_test[:, positive] >= rule["threshold"] - 1e-6, positive, 1 - positive)
    assert metrics["test_tuned/f1_macro"] == pytest.approx(f1_score(y_test, tuned, average="macro"), abs=0.02)
