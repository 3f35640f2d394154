"""Stage ``evaluate@<loss>``: score the model of ``train@<loss>`` on the featurized test split.

    python -m losslab.pipeline.evaluate --loss ce --features artifacts/features --model-dir artifacts/models/ce \
        --out artifacts/evaluation/ce --metrics metrics/test/ce.json --predictions artifacts/predictions/ce.csv

Loads the model bundle (``losslab.serving.bundle.Predictor``, weights only) and scores
``artifacts/features``' test split exactly as the training's test loop does: batches of
``data.eval_batch_size`` rows, the metrics of ``losslab.model.metrics`` (``test/*``, the same names
as in the MLflow run) and ``test/loss`` with the loss it was trained with (``losses.<loss>``), and
``test_tuned/*`` under the decision rule the training chose on validation (kept in the bundle).
Those two keys are all it reads from ``params.yaml``. Writes the metrics (JSON), the per-class
report, confusion matrix and per-row probabilities (``--out``) and ``actual,predicted`` per test
row (the data of ``dvc plots``' confusion matrix). When ``train@<loss>`` recorded its MLflow run
(``mlflow_run.json`` in the model dir), the metrics and the evaluation files are logged to that run
too, so the run always shows the latest evaluation.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Any

from losslab.errors import ConfigError, DataError, friendly_exit
from losslab.pipeline.common import BUNDLE_DIR, PARAMS_FILE, RUN_FILE, load_params, read_json, write_json


def score(predictor: Any, x: Any, y: Any, loss: Any, batch_size: int) -> tuple[dict[str, float], Any]:
    """Test metrics and probabilities of ``predictor`` on rows ``x`` (CSR) with labels ``y``.

    As ``TextClassifier``'s test loop: consecutive batches of ``batch_size`` rows, the metric
    collection updated per batch, ``test/loss`` the batch-size-weighted mean of the batch losses.
    """
    import numpy as np
    import scipy.sparse as sp
    import torch

    from losslab.model.losses import probabilities
    from losslab.model.metrics import flatten, make_metrics

    x = sp.csr_matrix(x, dtype=np.float32)
    x.sort_indices()  # as losslab.data.batches.SparseBatches feeds the network
    metrics = make_metrics(len(predictor.class_names))
    total, chunks = 0.0, []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            logits = predictor.logits(x[start:start + batch_size], batch_size)
            target = torch.as_tensor(np.asarray(y[start:start + batch_size]), dtype=torch.long)
            probs = probabilities(logits, predictor.activation)
            metrics.update(probs, target)
            total += float(loss(logits, target)) * len(target)
            chunks.append(probs.numpy())
    values = {k: float(v) for k, v in flatten(metrics.compute(), "test", predictor.class_names).items()}
    values["test/loss"] = total / max(len(y), 1)
    probs = np.concatenate(chunks) if chunks else np.zeros((0, len(predictor.class_names)), dtype=np.float32)
    return values, probs


def write_predictions(path: Path, y: Any, probs: Any, class_names: list[str]) -> None:
    """``actual,predicted`` class names per test row: the data of the confusion-matrix plot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual", "predicted"])
        writer.writerows((class_names[int(a)], class_names[int(p)]) for a, p in zip(y, probs.argmax(axis=1)))


def log_to_training_run(model_dir: Path, metrics: dict[str, float], evaluation: Path, stage: str) -> str | None:
    """Log the metrics and the evaluation files to the run in ``<model_dir>/mlflow_run.json``; its id, or None."""
    record = model_dir / RUN_FILE
    if not record.is_file():
        return None
    import time

    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from losslab.tracking.store import sqlite_path

    info = read_json(record)
    run_id, uri = str(info["run_id"]), str(info["tracking_uri"])
    fix = (f"Retrain it (`dvc repro --force train@{model_dir.name}`), or delete {record} to evaluate without "
           "logging to MLflow.")
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # MlflowClient would create an empty store there
        raise ConfigError(f"{record}: the training's MLflow store {uri} no longer exists. {fix}")
    client = MlflowClient(uri)
    try:
        client.get_run(run_id)
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
        client.set_tag(run_id, "dvc_evaluate_stage", stage)
        client.log_artifacts(run_id, str(evaluation), "evaluation")
    except MlflowException as exc:
        reason = str(exc.message).splitlines()[0]
        raise ConfigError(f"{record}: cannot log to MLflow run {run_id} in {uri} ({reason}). {fix}") from None
    return run_id


def evaluate(params: Any, args: argparse.Namespace) -> dict[str, float]:
    from losslab.data.featureset import FeatureSet
    from losslab.model.losses import build_loss
    from losslab.serving.bundle import Predictor
    from losslab.training.evaluation import write_test_artifacts

    losses = params.get("losses") or {}
    if args.loss not in losses:
        raise ConfigError(f"params.yaml has no losses.{args.loss} (it has {sorted(losses)}); add "
                          f"`loss@losses.{args.loss}: <loss>` to conf/pipeline.yaml's defaults and run `make params`.")
    bundle = args.model_dir / BUNDLE_DIR
    if not bundle.is_dir():
        raise DataError(f"{bundle}: no model bundle; stage train@{args.loss} has not run (run `dvc repro`).")
    predictor = Predictor.load(bundle)
    features = FeatureSet.load(args.features)
    if predictor.class_names != features.class_names:
        raise DataError(f"{bundle}: trained for classes {predictor.class_names} but {args.features} holds "
                        f"{features.class_names}; rerun train@{args.loss} (`dvc repro`).")
    loss = build_loss(losses[args.loss], features.class_counts())
    if loss.activation != predictor.activation:
        raise DataError(f"{bundle}: trained with {predictor.activation} outputs but losses.{args.loss} gives "
                        f"{loss.activation}; rerun train@{args.loss} (`dvc repro`).")
    y = features.y["test"]
    values, probs = score(predictor, features.x["test"], y, loss, int(params.data.eval_batch_size))
    rule = predictor.operating_point  # chosen on validation by train@<loss> (training.operating), kept in the bundle
    if rule:
        from losslab.model.operating_point import apply_rule, label_metrics

        values |= {f"test_tuned/{k}": v for k, v in label_metrics(y, apply_rule(probs, rule),
                                                                   predictor.class_names).items()}
    metrics = {k: round(v, 6) for k, v in sorted(values.items())}
    write_test_artifacts(args.out, probs, y, predictor.class_names, title=f"{args.loss} — test", rule=rule)
    write_predictions(args.predictions, y, probs, predictor.class_names)
    write_json(args.metrics, metrics)
    stage = os.environ.get("DVC_STAGE") or f"evaluate@{args.loss}"
    run_id = log_to_training_run(args.model_dir, values, args.out, stage)
    print(f"evaluate@{args.loss}: test macro-F1 {metrics['test/f1_macro']:.4f} on {len(y)} rows -> {args.metrics}"
          + (f"; logged to MLflow run {run_id}" if run_id else f" (no {RUN_FILE}: nothing logged to MLflow)"))
    return metrics


@friendly_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DVC stage evaluate@<loss>: score one model on the test split.")
    parser.add_argument("--loss", required=True, help="a key of `losses` in params.yaml")
    parser.add_argument("--params", default=PARAMS_FILE)
    parser.add_argument("--features", type=Path, default=Path("artifacts/features"))
    parser.add_argument("--model-dir", type=Path, required=True, help="train@<loss>'s output")
    parser.add_argument("--out", type=Path, required=True, help="per-class report, confusion matrix, probabilities")
    parser.add_argument("--metrics", type=Path, required=True, help="test metrics (JSON)")
    parser.add_argument("--predictions", type=Path, required=True, help="actual,predicted per test row (CSV)")
    args = parser.parse_args(argv)
    evaluate(load_params(args.params), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
