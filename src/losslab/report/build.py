"""Build a sweep's comparison report from the MLflow store alone and log it on the parent run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from losslab.errors import ConfigError
from losslab.paths import config_dir, reports_root
from losslab.report import collect, plots, sections, stats
from losslab.report.render import Document
from losslab.report import why

BASE_METRICS = ["test/f1_macro", "test/accuracy", "test/auroc", "test/ece", "test/nll", "fit_seconds"]
CURVES = ["val/f1_macro", "val/nll"]


def load_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``sweep.report`` of ``conf/sweep/_common.yaml``, with ``overrides`` on top."""
    common = OmegaConf.load(config_dir() / "sweep" / "_common.yaml")
    settings = OmegaConf.to_container(common.sweep.report, resolve=True)
    assert isinstance(settings, dict)
    return {**settings, **(overrides or {})}


def default_experiment() -> str:
    """The experiment runs go to by default (``conf/tracking/mlflow.yaml``)."""
    return str(OmegaConf.load(config_dir() / "tracking" / "mlflow.yaml").experiment)


def class_metrics(frame: pd.DataFrame) -> list[str]:
    """``test/f1_<class>`` columns (per-class F1), in column order."""
    return [c for c in frame.columns if c.startswith("test/f1_") and c != "test/f1_macro"]


def loss_order(summary: pd.DataFrame, primary: str) -> list[str]:
    return list(summary.sort_values(f"{primary}|mean", ascending=not stats.higher_is_better(primary))["loss"])


def pooled_predictions(frame: pd.DataFrame, losses: list[str]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]],
                                                                          list[str], int]:
    """Test predictions of every run, concatenated per loss; the class names; how many runs lacked them."""
    pooled: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    names: list[str] = []
    missing = 0
    for loss in losses:
        labels, probs = [], []
        for uri in frame.loc[frame["loss"] == loss, "artifact_uri"]:
            found = collect.predictions(uri)
            if found is None:
                missing += 1
                continue
            labels.append(found[0])
            probs.append(found[1])
            names = names or found[2]
        if labels:
            pooled[loss] = (np.concatenate(labels), np.concatenate(probs))
    return pooled, names, missing


def curves_by_loss(uri: str, frame: pd.DataFrame, losses: list[str]) -> dict[str, dict[str, list[pd.Series]]]:
    history = collect.histories(uri, frame["run_id"], CURVES)
    out: dict[str, dict[str, list[pd.Series]]] = {key: {} for key in CURVES}
    for loss in losses:
        ids = frame.loc[frame["loss"] == loss, "run_id"]
        for key in CURVES:
            out[key][loss] = [history[i][key] for i in ids if key in history.get(i, {})]
    return out


def write_report(uri: str, sweep_id: str | None = None, experiment: str | None = None,
                 experiment_id: str | None = None, reports_dir: str | Path | None = None, log_to_parent: bool = True,
                 settings: Mapping[str, Any] | None = None) -> Path:
    """Write ``<reports_dir>/<sweep_id>/report.{md,html}`` + PNGs + CSVs; returns that folder."""
    started = time.perf_counter()
    s = load_settings(settings)
    if experiment is None and experiment_id is None:
        experiment = default_experiment()
    sweep = collect.load_sweep(uri, sweep_id, experiment, experiment_id)
    out = reports_root(str(reports_dir) if reports_dir else None) / sweep.sweep_id
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()

    runs = sweep.runs
    finished = runs[(runs["status"] == "FINISHED") & (runs["phase"] != "search")]
    if finished.empty:
        raise ConfigError(f"sweep {sweep.sweep_id} has no FINISHED training run to report on.")
    selected = stats.select_variants(finished, s["select_metric"]) if s["select_metric"] in finished else finished
    primary = s["primary_metric"]
    metrics = [primary] + [m for m in class_metrics(selected) + BASE_METRICS if m != primary]
    rng = np.random.default_rng(int(s["rng_seed"]))
    summary = stats.summarize(selected, metrics, rng, int(s["bootstrap"]), float(s["confidence"]))
    losses = loss_order(summary, primary)
    summary = summary.set_index("loss").loc[losses].reset_index()
    baseline = s["baseline"] if s["baseline"] in losses else losses[-1]  # absent: the lowest mean primary metric

    comparisons = {m: sections.compare_all(selected, losses, baseline, m, rng, s) for m in
                   [primary, *class_metrics(selected), "test/accuracy", "test/nll", "test/ece"]}
    ranks, friedman_p = stats.rank_table(selected, primary)

    figures: dict[str, Path] = {}
    for metric in [primary, *class_metrics(selected)]:
        path = out / f"{metric.replace('/', '_')}.png"
        figures[metric] = plots.metric_by_loss(selected, summary, metric, path)
    curves = curves_by_loss(sweep.uri, selected, losses)
    figures["curves"] = plots.validation_curves(curves, CURVES, out / "validation_curves.png")
    pooled, class_names, missing_predictions = pooled_predictions(selected, losses)
    if pooled:
        figures["reliability"] = plots.reliability_diagrams(pooled, int(s["reliability_bins"]), out / "reliability.png")
        figures["confusion"] = plots.confusion_matrices(pooled, class_names, out / "confusion_matrices.png")

    doc = Document(f"Loss comparison — sweep {sweep.sweep_id}")
    sections.header(doc, sweep, runs, selected, baseline, s)
    sections.headline(doc, summary, comparisons[primary], losses, baseline, primary, friedman_p, s)
    sections.per_loss(doc, summary, metrics, s)
    sections.paired(doc, comparisons, baseline, s)
    sections.ranking(doc, ranks, friedman_p, summary, metrics, primary)
    sections.figures(doc, figures, primary, missing_predictions)
    sections.variants(doc, finished, sweep.variant_keys, selected, s["select_metric"], primary)
    sections.devices(doc, sweep, selected, [primary, "test/accuracy", "test/nll"])
    why.section(doc, sweep.uri, finished, losses, out, primary)  # diagnostics, gradients, label noise
    sections.notes(doc, selected, losses, baseline, metrics, s)
    md_path, _ = doc.write(out)
    summary.to_csv(out / "summary.csv", index=False)
    pd.concat([table.assign(metric=m, baseline=baseline) for m, table in comparisons.items()]).to_csv(
        out / "comparison.csv", index=False)

    if log_to_parent and sweep.parent is not None:
        collect.client_for(sweep.uri).log_artifacts(sweep.parent.info.run_id, str(out), "report")
    print(f"report of sweep {sweep.sweep_id}: {md_path} ({len(selected)} runs, {len(losses)} losses, "
          f"{time.perf_counter() - started:.1f} s)" + ("" if sweep.parent is not None or not log_to_parent
                                                       else " — no parent run found, not logged to MLflow"))
    return out

