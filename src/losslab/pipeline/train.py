"""Stage ``train@<loss>``: one training per entry of ``losses`` in ``params.yaml``.

    python -m losslab.pipeline.train --loss ce --features artifacts/features --model-dir artifacts/models/ce \
        --metrics metrics/train/ce.json --curves metrics/curves/ce.csv

The config is ``params.yaml`` with ``loss`` replaced by ``losses.<loss>`` (never a fresh
composition of ``conf/``, which would ignore ``dvc exp run -S``). The training is the core's
``losslab.training.train.train`` on the featurized splits, so it is a complete MLflow run, tagged in
addition with ``dvc_stage`` and ``dvc_data_md5`` (the md5 of the features this model was
trained on, as ``dvc.lock`` records it), in the store at the DVC project root.

Writes the model bundle and ``mlflow_run.json`` (the run's id and store, for ``evaluate@<loss>``)
into ``--model-dir``, the per-epoch curves and the validation results (best validation macro-F1,
its epoch, epochs run). Scoring the test split is the next stage's job (``losslab.pipeline.evaluate``).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from losslab.errors import ConfigError, friendly_exit
from losslab.pipeline.common import (BUNDLE_DIR, LOCK_FILE, PARAMS_FILE, RUN_FILE, anchor_project_root, load_params,
                                     lock_out_md5, write_json)

FEATURIZE_STAGE = "featurize"
CURVE_PREFIXES = ("train/", "val/")


def dvc_tags(loss_key: str, features_out: str, lock: str | Path = LOCK_FILE) -> dict[str, str]:
    """Tags linking the MLflow run to the DVC stage, its input data and the experiment."""
    tags = {"dvc_stage": os.environ.get("DVC_STAGE") or f"train@{loss_key}",
            "dvc_data_md5": lock_out_md5(FEATURIZE_STAGE, features_out, lock) or "unlocked"}
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def stage_config(params: Any, loss_key: str, tags: dict[str, str]) -> Any:
    """``params.yaml`` → the config ``train()`` expects, for the loss ``losses.<loss_key>``."""
    from omegaconf import OmegaConf

    losses = params.get("losses") or {}
    if loss_key not in losses:
        raise ConfigError(f"params.yaml has no losses.{loss_key} (it has {sorted(losses)}); add "
                          f"`loss@losses.{loss_key}: <loss>` to conf/pipeline.yaml's defaults and run `make params`.")
    plain = OmegaConf.to_container(params, resolve=True)
    plain.pop("losses")
    plain["loss"] = OmegaConf.to_container(losses[loss_key], resolve=True)
    tracking = plain.setdefault("tracking", {})
    tracking["run_name"] = f"{loss_key}-s{plain['seed']}"
    tracking["parent_run_id"] = None
    tracking["tags"] = {**(tracking.get("tags") or {}), **tags}
    return OmegaConf.create(plain)


def write_curves(path: Path, run_id: str, uri: str) -> int:
    """Per-epoch ``train/*`` and ``val/*`` metrics of the run (read back from MLflow) as CSV."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    keys = sorted(k for k in client.get_run(run_id).data.metrics if k.startswith(CURVE_PREFIXES))
    rows: dict[int, dict[str, float]] = {}
    for key in keys:
        for m in client.get_metric_history(run_id, key):
            rows.setdefault(int(m.step), {})[key] = m.value
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", *keys])
        for epoch in sorted(rows):
            writer.writerow([epoch, *(_fmt(rows[epoch].get(k)) for k in keys)])
    return len(rows)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def run_stage(args: argparse.Namespace) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from losslab.data.featureset import FeatureSet
    from losslab.training.train import train

    anchor_project_root()
    cfg = stage_config(load_params(args.params), args.loss, dvc_tags(args.loss, str(args.features)))
    features = FeatureSet.load(args.features)
    with tempfile.TemporaryDirectory(prefix=f"losslab-train-{args.loss}-") as tmp:
        result = train(cfg, tmp, features=features)
        if args.model_dir.exists():
            shutil.rmtree(args.model_dir)
        args.model_dir.mkdir(parents=True)
        shutil.copytree(Path(tmp) / "artifacts" / "model", args.model_dir / BUNDLE_DIR)
    write_json(args.model_dir / RUN_FILE, {"run_id": result.run_id, "tracking_uri": result.tracking_uri,
                                           "dvc_stage": cfg.tracking.tags.dvc_stage})
    epochs = write_curves(args.curves, result.run_id, result.tracking_uri)
    best_epoch = MlflowClient(result.tracking_uri).get_run(result.run_id).data.tags.get("best_epoch", "")
    metrics = {"best_val/f1_macro": round(result.best_val_f1_macro, 6),
               "best_epoch": int(best_epoch) if best_epoch.isdigit() else -1, "epochs": epochs}
    write_json(args.metrics, metrics)
    return metrics


@friendly_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DVC stage train@<loss>: train one loss of params.yaml's losses.")
    parser.add_argument("--loss", required=True, help="a key of `losses` in params.yaml")
    parser.add_argument("--params", default=PARAMS_FILE)
    parser.add_argument("--features", type=Path, default=Path("artifacts/features"))
    parser.add_argument("--model-dir", type=Path, required=True, help="the model bundle + mlflow_run.json go here")
    parser.add_argument("--metrics", type=Path, required=True, help="validation results (JSON)")
    parser.add_argument("--curves", type=Path, required=True, help="per-epoch train/val metrics (CSV)")
    args = parser.parse_args(argv)
    metrics = run_stage(args)
    print(f"train@{args.loss}: best val macro-F1 {metrics['best_val/f1_macro']:.4f} at epoch {metrics['best_epoch']} "
          f"-> {args.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
