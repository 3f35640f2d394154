"""Build a sweep's comparison report from the MLflow store alone and log it on the parent run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from losslab.errors import ConfigError
from losslab.model.names import metric_key
from losslab.paths import config_dir, reports_root
from losslab.report import bootstrap, collect, fieldtools, figures as first_figures, glance, plots, sections, stats
from losslab.report import verdicts
from losslab.report.render import Document
from losslab.report import why
from losslab.training.baseline import BASELINE

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


def run_predictions(frame: pd.DataFrame) -> tuple[dict[tuple[str, int], bootstrap.RunPredictions], int]:
    """Every run's test predictions by (loss, seed) (the first run if repeated); how many runs lacked them."""
    found: dict[tuple[str, int], bootstrap.RunPredictions] = {}
    missing = 0
    for _, row in frame.iterrows():
        key = (str(row["loss"]), int(row["seed"]))
        if key in found:
            continue
        table = collect.prediction_table(row["artifact_uri"])
        if table is None:
            missing += 1
        else:
            found[key] = table
    return found, missing


def identical_to(reference: str, losses: list[str], predictions: Mapping[tuple[str, int], bootstrap.RunPredictions],
                 frame: pd.DataFrame, metrics: list[str]) -> dict[str, bool]:
    """Per loss: the same test predictions as the reference on every seed both have (without predictions: every
    logged metric equal on every seed)."""
    out = {}
    for loss in losses:
        seeds = sorted({s for (x, s) in predictions if x == loss} & {s for (x, s) in predictions if x == reference})
        if seeds:
            out[loss] = all(predictions[(loss, s)].same_as(predictions[(reference, s)]) for s in seeds)
        else:
            out[loss] = all(stats.paired_comparison(verdicts.per_seed(frame, loss, m),
                                                    verdicts.per_seed(frame, reference, m)).identical
                            for m in metrics if m in frame and m != "fit_seconds")
    return out


def minority_metric(predictions: Mapping[tuple[str, int], bootstrap.RunPredictions], frame: pd.DataFrame,
                    primary: str) -> str | None:
    """``test/f1_<class>`` of the rarest class in the test labels (else the class with the lowest mean F1)."""
    per_class = [m for m in class_metrics(frame) if m != primary]
    if not per_class:
        return None
    if predictions:
        run = next(iter(predictions.values()))
        keys = [f"test/f1_{metric_key(c)}" for c in run.class_names]
        counts = np.bincount(run.labels, minlength=len(keys))
        rarest = keys[int(np.argmin(counts))]
        if rarest in per_class:
            return rarest
    return min(per_class, key=lambda m: frame[m].mean())


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
    trainings = finished[finished["model"] != BASELINE]
    if trainings.empty:
        raise ConfigError(f"sweep {sweep.sweep_id} has no FINISHED training run to report on.")
    selected = stats.select_variants(trainings, s["select_metric"]) if s["select_metric"] in trainings else trainings
    selected = pd.concat([selected, finished[finished["model"] == BASELINE]], ignore_index=True)
    primary = s["primary_metric"]
    metrics = [primary] + [m for m in class_metrics(selected) + BASE_METRICS if m != primary]
    confidence = float(s["confidence"])
    summary = stats.summarize(selected, metrics, confidence)
    losses = loss_order(summary, primary)
    summary = summary.set_index("loss").loc[losses].reset_index()
    mlp_losses = [x for x in losses if x != BASELINE]
    reference = s["reference"] if s["reference"] in mlp_losses else mlp_losses[-1]  # absent: the lowest mean primary

    predictions, missing_predictions = run_predictions(selected)
    rng = np.random.default_rng(int(s["rng_seed"]))
    class_keys = [metric_key(c) for c in next(iter(predictions.values())).class_names] if predictions else []
    reps = (bootstrap.replicate(predictions, class_keys, int(s["bootstrap"]), rng, str(s.get("seed_level", "t")))
            if predictions else None)
    if reps is not None:
        for metric in reps.values:
            if f"{metric}|mean" in summary:
                intervals = [bootstrap.single(reps, metric, loss, confidence, int(s["rng_seed"])) for loss in losses]
                summary[f"{metric}|ci_low"] = [i.low for i in intervals]
                summary[f"{metric}|ci_high"] = [i.high for i in intervals]
    identical = identical_to(reference, losses, predictions, selected, metrics)
    minority = minority_metric(predictions, selected, primary)
    verdict_metrics = [primary] + ([minority] if minority else [])
    compared = [primary, *class_metrics(selected), "test/accuracy", "test/auroc", "test/nll", "test/ece"]
    comparisons = {m: verdicts.compare(selected, reps, losses, reference, m, s, identical, m in verdict_metrics)
                   for m in dict.fromkeys(compared) if m in selected}
    ranks, friedman_p = stats.rank_table(selected, primary)

    figures: dict[str, Path] = {"forest": first_figures.forest_plot({m: comparisons[m] for m in verdict_metrics},
                                                                    reference, out / "forest_plot.png")}
    scores = selected.pivot_table(index="seed", columns="loss", values=primary, aggfunc="mean")
    cd_path, cd_text, _ = fieldtools.critical_difference(
        scores[[x for x in losses if x in scores]], stats.higher_is_better(primary), out / "critical_difference.png")
    if cd_path is not None:
        figures["cd"] = cd_path
    for metric in [primary, *class_metrics(selected)]:
        path = out / f"{metric.replace('/', '_')}.png"
        figures[metric] = plots.metric_by_loss(selected, summary, metric, path)
    curves = curves_by_loss(sweep.uri, selected, losses)
    figures["curves"] = plots.validation_curves(curves, CURVES, out / "validation_curves.png")
    pooled, class_names, _ = pooled_predictions(selected, losses)
    if pooled:
        figures["reliability"] = plots.reliability_diagrams(pooled, int(s["reliability_bins"]), out / "reliability.png")
        figures["confusion"] = plots.confusion_matrices(pooled, class_names, out / "confusion_matrices.png")

    seeds = int(selected["seed"].nunique())
    test_size = int(next(iter(predictions.values())).labels.size) if predictions else 0
    doc = Document(f"Loss comparison — sweep {sweep.sweep_id}")
    glance.first_screen(doc, figures, cd_text, comparisons, verdict_metrics, reference, losses)
    glance.reading_guide(doc, comparisons, verdict_metrics, s, seeds, test_size, reps.test_sets if reps else 0)
    sections.header(doc, sweep, runs, selected, reference, s)
    sections.headline(doc, summary, comparisons[primary], losses, reference, primary, friedman_p, s)
    glance.baseline_section(doc, selected, summary, comparisons, verdict_metrics, reference)
    sections.per_loss(doc, summary, metrics, s)
    sections.paired(doc, comparisons, reference, s)
    glance.power_table(doc, comparisons, verdict_metrics, s)
    sections.ranking(doc, ranks, friedman_p, summary, metrics, primary)
    sections.figures(doc, {k: v for k, v in figures.items() if k not in ("forest", "cd")}, primary, missing_predictions)
    sections.variants(doc, finished[finished["model"] != BASELINE], sweep.variant_keys, selected, s["select_metric"],
                      primary)
    sections.devices(doc, sweep, selected[selected["model"] != BASELINE], [primary, "test/accuracy", "test/nll"])
    why.section(doc, sweep.uri, finished, losses, out, primary)  # diagnostics, gradients, label noise
    check = glance.prediction_check(reps.observed, selected, reps.keys) if reps is not None else ""
    sections.notes(doc, selected, losses, reference, metrics, s, [check] if check else [])
    md_path, _ = doc.write(out)
    summary.to_csv(out / "summary.csv", index=False)
    pd.concat([table for table in comparisons.values() if len(table)]).to_csv(out / "comparison.csv", index=False)

    if log_to_parent and sweep.parent is not None:
        collect.client_for(sweep.uri).log_artifacts(sweep.parent.info.run_id, str(out), "report")
    print(f"report of sweep {sweep.sweep_id}: {md_path} ({len(selected)} runs, {len(losses)} losses, "
          f"{time.perf_counter() - started:.1f} s)" + ("" if sweep.parent is not None or not log_to_parent
                                                       else " — no parent run found, not logged to MLflow"))
    return out
