"""The comparison report: its statistics, and whole reports built from real sqlite MLflow stores.

The stores are written with MlflowClient (runs with known metrics, curves and prediction files), so
each figure in the report can be checked against the numbers that went in; one report comes from
the real parallel sweep of ``sweep_fixture``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from losslab.report import stats
from losslab.report.build import write_report
from losslab.report.plots import expected_calibration_error, reliability_bins
from sweep_fixture import EXPERIMENT, LOSSES as QUICK_LOSSES, quick_sweep  # noqa: F401

CLASSES = ["calm", "aggressive"]


# ---- statistics -----------------------------------------------------------------------------------

def test_t_interval_brackets_the_mean():
    values = np.array([0.60, 0.62, 0.61, 0.65, 0.58])
    low, high = stats.t_interval(values)
    assert low < values.mean() < high and high - values.mean() == pytest.approx(values.mean() - low)
    assert high - low > 2 * 1.96 * values.std(ddof=1) / math.sqrt(5)  # Student t, wider than a normal interval
    assert all(math.isnan(v) for v in stats.t_interval(np.array([0.6])))


def test_paired_comparison_of_a_consistent_gain():
    seeds = range(6)
    base = pd.Series([0.60, 0.61, 0.59, 0.62, 0.60, 0.58], index=seeds)
    gain = base + np.array([0.05, 0.04, 0.06, 0.05, 0.03, 0.05])
    result = stats.paired_comparison(gain, base)
    assert (result.n, result.wins, result.losses) == (6, 6, 0)
    assert result.mean_diff == pytest.approx(0.0467, abs=1e-4) and result.ci_low > 0
    assert result.p_wilcoxon == pytest.approx(2 / 2**6) == stats.wilcoxon_floor(6)
    assert result.rank_biserial == 1.0 and not result.identical
    worse = stats.paired_comparison(base, gain, higher_better=True)
    assert worse.wins == 0 and worse.rank_biserial == -1.0
    lower_is_better = stats.paired_comparison(base, gain, higher_better=False)
    assert lower_is_better.wins == 6  # e.g. NLL: smaller is the win


def test_identical_runs_are_flagged_not_tested():
    base = pd.Series([0.6, 0.7, 0.65], index=[0, 1, 2])
    result = stats.paired_comparison(base.copy(), base)
    assert result.identical and result.p_wilcoxon == 1.0 and result.mean_diff == 0.0 and result.ties == 3


def test_rank_table_and_friedman():
    rows = [{"loss": loss, "seed": s, "test/f1_macro": score + 0.01 * s}
            for s in range(5) for loss, score in (("a", 0.7), ("b", 0.6), ("c", 0.5))]
    ranks, p_value = stats.rank_table(pd.DataFrame(rows), "test/f1_macro")
    assert list(ranks["loss"]) == ["a", "b", "c"] and list(ranks["mean_rank"]) == [1.0, 2.0, 3.0]
    assert list(ranks["best_on"]) == [5, 0, 0] and p_value < 0.01
    ece_ranks, _ = stats.rank_table(pd.DataFrame(rows).rename(columns={"test/f1_macro": "test/ece"}), "test/ece")
    assert list(ece_ranks["loss"]) == ["c", "b", "a"]  # lower ECE is better


def test_variant_selection_uses_validation_never_test():
    frame = pd.DataFrame([{"loss": "ce", "variant": v, "best_val/f1_macro": val, "test/f1_macro": test}
                          for v, val, test in (("h=16", 0.70, 0.90), ("h=64", 0.80, 0.50))] * 2)
    assert set(stats.select_variants(frame, "best_val/f1_macro")["variant"]) == {"h=64"}
    # a group without the selection metric (the linear baseline) keeps its runs
    baseline = pd.DataFrame([{"loss": "linear-baseline", "variant": "default", "best_val/f1_macro": math.nan,
                              "test/f1_macro": 0.6}])
    kept = stats.select_variants(pd.concat([frame, baseline]), "best_val/f1_macro")
    assert set(kept["loss"]) == {"ce", "linear-baseline"} and set(kept["variant"]) == {"h=64", "default"}


def test_reliability_bins_and_ece():
    probs = np.array([[0.8, 0.2]] * 10)
    labels = np.array([0] * 8 + [1] * 2)  # 80% right at 80% confidence: calibrated
    table = reliability_bins(labels, probs, 10)
    assert table["count"].sum() == 10 and expected_calibration_error(table) == pytest.approx(0.0, abs=1e-9)
    overconfident = reliability_bins(np.array([0] * 5 + [1] * 5), probs, 10)
    assert expected_calibration_error(overconfident) == pytest.approx(0.3)


def test_one_confusion_matrix_drawing_for_the_run_png_and_the_report_grid(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from losslab.report.plots import confusion_matrices
    from losslab.training.evaluation import draw_confusion_matrix, plot_confusion_matrix

    labels, predicted = np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 1])
    fig, ax = plt.subplots()
    draw_confusion_matrix(ax, labels, predicted, CLASSES, title="ce")
    assert [t.get_text() for t in ax.texts] == ["2\n67%", "1\n33%", "0\n0%", "2\n100%"]
    assert ax.get_title() == "ce" and [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    plt.close(fig)
    probs = np.eye(2)[predicted] * 0.8 + 0.1
    assert plot_confusion_matrix(labels, predicted, CLASSES, tmp_path / "one.png").stat().st_size > 0
    assert confusion_matrices({"ce": (labels, probs), "kl": (labels, probs)}, CLASSES,
                              tmp_path / "grid.png").stat().st_size > 0


# ---- whole reports from real stores ----------------------------------------------------------------

def log_run(client: MlflowClient, experiment_id: str, tmp: Path, loss: str, seed: int, f1: float, *,
            device: str = "cpu", fit: float = 2.0, sweep: tuple[str, str] | None = None, phase: str = "",
            hidden: int = 16, val: float | None = None) -> str:
    """One finished training as train() records it: tags, params, curves, test metrics, predictions."""
    tags = {"loss": loss, "seed": str(seed), "device": device, "dataset_md5": "md5-of-data",
            "device_name": "Test GPU" if device == "cuda" else "Test CPU"}
    if sweep:
        tags |= {"sweep_id": sweep[0], "mlflow.parentRunId": sweep[1]}
    if phase:
        tags["sweep_phase"] = phase
    run_id = client.create_run(experiment_id, run_name=f"{loss}-s{seed}", tags=tags).info.run_id
    params = {"loss.name": loss, "seed": seed, "model.hidden": hidden, "trainer.max_epochs": 3, "data.name": "synth",
              "trainer.accelerator": "gpu" if device == "cuda" else "cpu", "data.train_path": f"/{device}/train.csv"}
    values = {"test/f1_macro": f1, "test/f1_aggressive": f1 - 0.1, "test/f1_calm": f1 + 0.1, "test/accuracy": f1 + 0.02,
              "test/auroc": f1 + 0.1, "test/ece": 0.1 - f1 / 10, "test/nll": 1.2 - f1, "fit_seconds": fit,
              "best_val/f1_macro": f1 if val is None else val}
    metrics = [Metric(k, v, 0, 0) for k, v in values.items()]
    metrics += [Metric(k, f1 * (0.8 + 0.1 * e) if k == "val/f1_macro" else 1 - 0.1 * e, 0, e)
                for e in range(3) for k in ("val/f1_macro", "val/nll")]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    p_aggr = np.clip(np.where(labels == 1, 0.5 + f1 / 3, 0.5 - f1 / 3) + rng.normal(0, 0.15, 40), 0.01, 0.99)
    folder = tmp / run_id / "evaluation"
    folder.mkdir(parents=True)
    table = pd.DataFrame({"label": labels, "predicted": (p_aggr > 0.5).astype(int), "p_calm": 1 - p_aggr,
                          "p_aggressive": p_aggr})
    table.to_csv(folder / "test_predictions.csv", index=False, float_format="%.6f")
    client.log_artifacts(run_id, str(folder), "evaluation")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def new_sweep(client: MlflowClient, experiment_id: str, sweep_id: str) -> str:
    tags = {"sweep_id": sweep_id, "sweep_role": "parent"}
    run_id = client.create_run(experiment_id, run_name=f"sweep-{sweep_id}", tags=tags).info.run_id
    client.set_terminated(run_id, "FINISHED")
    return run_id


BASE_F1 = [0.60, 0.61, 0.59, 0.62, 0.60, 0.58]
GAIN = [0.05, 0.04, 0.06, 0.05, 0.03, 0.05]


@pytest.fixture(scope="module")
def two_device_report(tmp_path_factory) -> tuple[Path, str, str]:
    """ce, kl (== ce), focal (+0.047 on every seed), mse (−0.03) × 6 seeds on CPU; ce also on a GPU."""
    tmp = tmp_path_factory.mktemp("report-store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("synthetic", artifact_location=(tmp / "artifacts").as_uri())
    parent = new_sweep(client, experiment_id, "losses-test")
    for seed, f1 in enumerate(BASE_F1):
        for loss, score in (("ce", f1), ("kl", f1), ("focal", f1 + GAIN[seed]), ("mse", f1 - 0.03)):
            log_run(client, experiment_id, tmp / "files", loss, seed, score, sweep=("losses-test", parent))
        # not in the sweep:
        log_run(client, experiment_id, tmp / "files", "ce", seed, f1 + 0.001, device="cuda", fit=0.5)
    out = write_report(uri, experiment="synthetic", reports_dir=tmp / "reports")
    return out, uri, parent


@pytest.mark.slow
def test_report_names_the_best_loss_and_by_how_much(two_device_report):
    out, _, _ = two_device_report
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["loss"])[0] == "focal" and list(summary["n"]) == [6, 6, 6, 6]
    assert summary.set_index("loss").loc["ce", "test/f1_macro|mean"] == pytest.approx(np.mean(BASE_F1))
    comparison = pd.read_csv(out / "comparison.csv").query("metric == 'test/f1_macro'").set_index("loss")
    assert comparison.loc["focal", "mean_diff"] == pytest.approx(np.mean(GAIN))
    assert comparison.loc["focal", "wins"] == 6 and comparison.loc["focal", "p_wilcoxon"] == pytest.approx(1 / 32)
    assert bool(comparison.loc["kl", "identical"]) and comparison.loc["mse", "mean_diff"] == pytest.approx(-0.03)
    assert comparison.loc["kl", "verdict"] == "identical"
    text = (out / "report.md").read_text()
    assert "Best mean test/f1_macro: **focal**" in text and f"{np.mean(GAIN):+.4f} vs ce" in text
    assert f"): verdict **{comparison.loc['focal', 'verdict']}** against ce." in text and "**kl == ce here.**" in text
    for name in ("report.html", "test_f1_macro.png", "test_f1_aggressive.png", "validation_curves.png",
                 "reliability.png", "confusion_matrices.png"):
        assert (out / name).stat().st_size > 0, name
    assert "<table>" in (out / "report.html").read_text()


@pytest.mark.slow
def test_report_compares_cpu_and_gpu_twins_and_is_logged_on_the_parent(two_device_report):
    out, uri, parent = two_device_report
    text = (out / "report.md").read_text()
    section = text[text.index("## CPU vs GPU"):text.index("## Notes")]
    assert "6 (loss, seed) pairs ran on both Test CPU (cpu) and Test GPU (cuda)" in section
    assert "| ce | 6 | +0.0010" in section and "4.00×" in section  # 2.0 s on CPU / 0.5 s on GPU
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.html", "report/reliability.png"} <= logged


@pytest.mark.slow
def test_report_without_the_configured_reference_names_the_loss_it_compares_with(tmp_path):
    """No ce run (the configured reference): the report compares with the stand-in and says so, never 'vs ce'."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("no-ce", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = new_sweep(client, experiment_id, "no-ce-test")
    for seed, f1 in enumerate(BASE_F1[:4]):
        for loss, score in (("focal", f1 + GAIN[seed]), ("mse", f1)):
            log_run(client, experiment_id, tmp_path / "files", loss, seed, score, sweep=("no-ce-test", parent))
    out = write_report(uri, experiment="no-ce", reports_dir=tmp_path / "reports", log_to_parent=False,
                       settings={"reference": "ce"})
    text = (out / "report.md").read_text()
    note = ("The configured reference `ce` (sweep.report.reference) has no finished run in this sweep: every loss is "
            "compared with **mse** instead (the loss with the lowest mean test/f1_macro).")
    assert text.count(note) == 3  # header, paired comparison, notes
    assert "Every loss is compared with **mse**" in text and "## Paired comparison with mse (same seeds)" in text
    assert "## Verdicts against mse" in text and "vs mse (95% two-level interval" in text
    assert "(mse stands in for the configured reference ce, which has no run here.)" in text
    assert "compared with **ce**" not in text and "vs ce" not in text and "with ce " not in text
    assert "No critical-difference diagram: autorank needs at least 5 seeds" in text  # 4 seeds, 2 losses
    comparison = pd.read_csv(out / "comparison.csv")
    assert set(comparison["reference"]) == {"mse"} and set(comparison["loss"]) == {"focal"}


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory) -> tuple[Path, str]:
    """A CPU-only grid: ce and focal × 2 seeds × hidden 16/64, plus search trials that must be ignored."""
    tmp = tmp_path_factory.mktemp("grid-store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("grid", artifact_location=(tmp / "artifacts").as_uri())
    parent = new_sweep(client, experiment_id, "grid-test")
    for seed in (0, 1):
        for loss in ("ce", "focal"):
            # hidden 64 wins on validation, hidden 16 on test: the report must pick 64
            log_run(client, experiment_id, tmp / "files", loss, seed, 0.70, hidden=16, val=0.60,
                    sweep=("grid-test", parent))
            log_run(client, experiment_id, tmp / "files", loss, seed, 0.50 + 0.05 * (loss == "focal"), hidden=64,
                    val=0.65, sweep=("grid-test", parent))
        log_run(client, experiment_id, tmp / "files", "ce", seed, 0.99, hidden=32, phase="search",
                sweep=("grid-test", parent))
    return tmp, uri


@pytest.mark.slow
def test_grid_report_picks_variants_by_validation_and_says_one_device(grid_store, capsys):
    from losslab.report.__main__ import main

    tmp, uri = grid_store
    main(["--tracking-uri", uri, "--experiment", "grid", "--output", str(tmp / "reports"), "--no-log"])
    out = tmp / "reports" / "grid-test"
    assert f"open {out / 'report.html'}" in capsys.readouterr().out
    summary = pd.read_csv(out / "summary.csv").set_index("loss")
    assert summary.loc["ce", "n"] == 2 and summary.loc["ce", "test/f1_macro|mean"] == pytest.approx(0.50)
    assert summary.loc["focal", "test/f1_macro|mean"] == pytest.approx(0.55)
    text = (out / "report.md").read_text()
    assert "## Hyperparameter variants" in text and "model.hidden=64" in text and "✓" in text
    assert "2 search trials not counted" in text
    assert "Only one device is present" in text


def test_report_errors_name_the_fix(tmp_path, capsys):
    from losslab.report.__main__ import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("empty")
    with pytest.raises(SystemExit):
        main(["--tracking-uri", uri, "--experiment", "nosuch"])
    assert "no MLflow experiment 'nosuch'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--tracking-uri", uri, "--experiment", "empty"])
    assert "run `make sweep` first" in capsys.readouterr().err


@pytest.mark.slow
def test_report_of_the_real_parallel_sweep(quick_sweep):
    sweep_ids = [p.name for p in quick_sweep.reports.iterdir()]
    assert len(sweep_ids) == 1
    out = quick_sweep.reports / sweep_ids[0]
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["loss"]) == sorted([*QUICK_LOSSES, "linear-baseline"]) and set(summary["n"]) == {2}
    assert {"test/f1_aggressive|mean", "test/f1_calm|mean", "test/auroc|mean", "fit_seconds|ci_high_seeds",
            "test/f1_macro|ci_low"} <= set(summary)
    comparison = pd.read_csv(out / "comparison.csv")
    assert "linear-baseline" in set(comparison["loss"]) and set(comparison["reference"]) == {"ce"}
    text = (out / "report.md").read_text()
    assert f"Experiment **{EXPERIMENT}**" in text
    assert "**kl == ce here.**" in text and "Only one device is present" in text
    assert text.splitlines()[2] == "![forest plot: every loss against the reference](forest_plot.png)"
    assert "- **kl**: identical to ce" in text and "## Linear baseline" in text and "- **linear-baseline**: " in text
