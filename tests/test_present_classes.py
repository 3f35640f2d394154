"""Macro metrics over the classes present in the evaluated split (as scikit-learn), with a note naming the absent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from losslab.model.metrics import absent_classes, flatten, make_metrics


def _split_without_class_2(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.choice(2, size=80)  # class 2 never occurs
    logits = rng.normal(0, 1, (80, 3)) + 1.5 * np.eye(3)[y]
    logits[:5, 2] += 4  # ... but is predicted a few times
    probs = torch.softmax(torch.tensor(logits, dtype=torch.float32), dim=1)
    return probs, torch.tensor(y)


def test_macro_metrics_skip_a_class_absent_from_the_split_like_sklearn():
    probs, y = _split_without_class_2()
    metrics = make_metrics(3)
    metrics.update(probs, y)
    values = flatten(metrics.compute(), "test", ["a", "b", "c"])
    pred = probs.argmax(1).numpy()
    assert (pred == 2).any()  # the absent class is predicted: its F1 is 0, and it counts (sklearn: labels seen)
    assert values["test/f1_macro"].item() == pytest.approx(f1_score(y.numpy(), pred, average="macro"), abs=1e-6)
    present_auroc = np.mean([roc_auc_score((y.numpy() == c).astype(int), probs[:, c].numpy()) for c in (0, 1)])
    assert values["test/auroc"].item() == pytest.approx(present_auroc, abs=1e-5)  # not (a + b + 0) / 3
    assert values["test/f1_c"].item() == 0.0
    assert absent_classes(y, ["a", "b", "c"]) == ["c"]
    assert absent_classes(torch.tensor([0, 1, 2]), ["a", "b", "c"]) == []


def test_with_every_class_present_auroc_is_torchmetrics_macro():
    from torchmetrics.classification import MulticlassAUROC

    rng = np.random.default_rng(1)
    y = torch.tensor(rng.choice(3, size=60))
    probs = torch.softmax(torch.tensor(rng.normal(0, 1, (60, 3)), dtype=torch.float32) + 2 * torch.eye(3)[y], 1)
    metrics = make_metrics(3)
    metrics.update(probs, y)
    expected = MulticlassAUROC(3, average="macro")(probs, y)
    assert metrics.compute()["auroc"].item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.slow
def test_a_test_split_lacking_a_class_is_noted_and_scored_over_the_others(compose, tmp_path, capfd):
    from mlflow.tracking import MlflowClient

    from conftest import synthetic_rows, write_table
    from losslab.training.train import train

    labels = ["aggressive", "calm", "sad"]
    train_file = write_table(tmp_path / "train.csv", synthetic_rows(150, labels, seed=1), "csv")
    test_rows = [r for r in synthetic_rows(90, labels, seed=2) if r[1] != "sad"]
    test_file = write_table(tmp_path / "test.csv", test_rows, "csv")
    cfg = compose("data=custom", f"data.train_path={train_file}", f"data.test_path={test_file}",
                  "features.word.min_df=1", "diagnostics=false")
    result = train(cfg, tmp_path / "out")
    assert "no test example of class(es) sad" in capfd.readouterr().err
    run = MlflowClient(result.tracking_uri).get_run(result.run_id)
    assert run.data.tags["absent_classes.test"] == "sad" and "absent_classes.val" not in run.data.tags
    rows = np.loadtxt(tmp_path / "out" / "artifacts" / "evaluation" / "test_predictions.csv", delimiter=",",
                      skiprows=1)
    y, pred, probs = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2:]
    assert run.data.metrics["test/f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-4)
    present = [roc_auc_score((y == c).astype(int), probs[:, c]) for c in (0, 1)]
    assert run.data.metrics["test/auroc"] == pytest.approx(np.mean(present), abs=1e-3)
