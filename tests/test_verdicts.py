"""Verdicts the report can trust: the two-level bootstrap (seeds × test examples), the ROPE rule, power, and whole
reports from real sqlite MLflow stores whose runs carry real ``evaluation/test_predictions.csv`` files.

The synthetic runs are built from predictions: each "loss" errs on a fixed set of test examples (what a
loss learns, the same on every seed) plus a few seed-specific flips (training noise), and the logged
``test/*`` metrics are computed from those predictions, as a training's are. Two losses whose error sets are
drawn with the same error rate differ only by which test examples happened to be drawn: seeds alone call
that gap real, the two-level interval must not.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from sklearn.metrics import accuracy_score, f1_score

from losslab.report import bootstrap, fieldtools, stats, verdicts
from losslab.report.build import load_settings, write_report

CLASSES = ["calm", "aggressive"]
N_TEST = 600
SEEDS = range(5)
SETTINGS = load_settings({"bootstrap": 4000, "bayes_samples": 1000, "aso_iterations": 50})


def make_labels(n: int = N_TEST) -> np.ndarray:
    return (np.random.default_rng(12345).random(n) < 0.3).astype(int)


def predictions(labels: np.ndarray, error_rate: float, loss_seed: int, seed: int, jitter: float = 0.01,
                shift: float = 0.0) -> np.ndarray:
    """Predicted classes: wrong on a fixed random set (rate ``error_rate``, drawn by ``loss_seed``), plus a share
    ``jitter`` of seed-specific flips and, with ``shift``, ``shift × seed`` more errors (a seed effect)."""
    fixed = np.random.default_rng(loss_seed).random(labels.size) < error_rate
    noise = np.random.default_rng([loss_seed, seed]).random(labels.size)
    wrong = fixed ^ (noise < jitter) | (noise > 1 - shift * seed)
    return np.where(wrong, 1 - labels, labels)


def scores(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    f1 = f1_score(labels, predicted, average=None, labels=[0, 1], zero_division=0)
    return {"test/f1_macro": float(f1.mean()), "test/f1_calm": float(f1[0]), "test/f1_aggressive": float(f1[1]),
            "test/accuracy": float(accuracy_score(labels, predicted))}


def frame_and_runs(losses: dict[str, dict]) -> tuple[pd.DataFrame, dict[tuple[str, int], bootstrap.RunPredictions]]:
    """The per-run table (logged metrics) and predictions of ``{loss: predictions() kwargs}`` over SEEDS."""
    labels = make_labels()
    rows, runs = [], {}
    for loss, kwargs in losses.items():
        for seed in SEEDS:
            predicted = predictions(labels, seed=seed, **kwargs)
            probs = np.column_stack([1 - (0.2 + 0.6 * predicted), 0.2 + 0.6 * predicted])
            runs[(loss, seed)] = bootstrap.RunPredictions(labels, predicted, probs, CLASSES)
            rows.append({"loss": loss, "seed": seed, **scores(labels, predicted)})
    return pd.DataFrame(rows), runs


def comparison(losses: dict[str, dict], metric: str = "test/f1_macro", replicates: int = 2000,
               seed_level: str = "t") -> pd.DataFrame:
    frame, runs = frame_and_runs(losses)
    reps = bootstrap.replicate(runs, ["calm", "aggressive"], replicates, np.random.default_rng(0), seed_level)
    identical = {loss: all(runs[(loss, s)].same_as(runs[("ref", s)]) for s in SEEDS) for loss in losses}
    return verdicts.compare(frame, reps, list(losses), "ref", metric, SETTINGS, identical)


# ---- the pieces -------------------------------------------------------------------------------------

def test_counts_from_the_weight_matrix_give_sklearns_metrics():
    labels = make_labels(200)
    predicted = predictions(labels, 0.3, 7, 0)
    run = bootstrap.RunPredictions(labels, predicted, np.column_stack([1 - 0.7 * predicted, 0.7 * predicted + 0.0]),
                                   CLASSES)
    reps = bootstrap.replicate({("a", 0): run}, ["calm", "aggressive"], 300, np.random.default_rng(1))
    expected = scores(labels, predicted)
    for metric in ("test/f1_macro", "test/f1_aggressive", "test/f1_calm", "test/accuracy"):
        assert reps.observed[metric][0] == pytest.approx(expected[metric], abs=1e-9), metric
    # one replicate recomputed by hand: the resample's counts are the examples drawn with replacement
    weights = bootstrap.example_weights(200, 3, np.random.default_rng(5))
    assert weights.shape == (3, 200) and set(weights.sum(axis=1)) == {200.0}
    index = np.repeat(np.arange(200), weights[0].astype(int))
    confusion = np.zeros((2, 2))
    np.add.at(confusion, (labels[index], predicted[index]), 1)
    by_counts = bootstrap.metrics_from_counts(confusion, np.array(0.0), ["calm", "aggressive"])
    assert by_counts["test/f1_macro"] == pytest.approx(f1_score(labels[index], predicted[index], average="macro"))


def test_rope_rule_and_lookup():
    assert verdicts.verdict(0.001, -0.003, 0.004, 0.005) == "equivalent"
    assert verdicts.verdict(0.02, 0.01, 0.03, 0.005) == "better"
    assert verdicts.verdict(0.004, 0.001, 0.007, 0.005) == "undecided"  # real but possibly negligible
    assert verdicts.verdict(-0.02, -0.03, -0.01, 0.005) == "worse"
    assert verdicts.verdict(0.01, -0.002, 0.022, 0.005) == "undecided"
    assert verdicts.verdict(-0.02, -0.03, -0.01, 0.005, higher_better=False) == "better"  # e.g. NLL went down
    assert verdicts.verdict(0.0, 0.0, 0.0, 0.005, identical=True) == "identical"
    ropes = SETTINGS["rope"]
    assert verdicts.rope_for("test/f1_macro", ropes) == 0.005 and verdicts.rope_for("test/f1_aggressive", ropes) == 0.01
    assert math.isnan(verdicts.rope_for("fit_seconds", ropes))


def test_power_and_seeds_needed():
    factor = verdicts.power_factor(0.8, 0.05)
    assert factor == pytest.approx(1.96 + 0.8416, abs=1e-3)
    # seeds only: k = s² / (gap / factor)²
    assert verdicts.seeds_needed(0.01, 0.01, 0.0) == str(math.ceil(factor ** 2))
    assert verdicts.seeds_needed(0.01, 0.01, (0.01 / factor) ** 2 * 1.01) == "not reachable with this test set"
    assert verdicts.seeds_needed(0.0, 0.01, 0.0) == "–"


def test_holm_and_the_field_tests():
    assert fieldtools.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(fieldtools.holm([math.nan, 0.2])[0]) and fieldtools.holm([math.nan, 0.2])[1] == 0.2
    reference = np.array([0.60, 0.61, 0.59, 0.62, 0.60])
    worse, rope, better = fieldtools.bayes_signed_rank(reference + 0.03, reference, 0.005, samples=2000)
    assert better > 0.9 and worse < 0.05 and worse + rope + better == pytest.approx(1.0)
    assert fieldtools.bayes_signed_rank(reference + 0.001, reference, 0.005, samples=2000)[1] > 0.9
    lower_better = fieldtools.bayes_signed_rank(reference + 0.03, reference, 0.005, higher_better=False, samples=2000)
    assert lower_better[0] > 0.9
    assert fieldtools.aso_epsilon(reference + 0.05, reference, iterations=50) < 0.2
    assert fieldtools.aso_epsilon(reference, reference + 0.05, iterations=50) > 0.8


def test_aso_is_deepsigs_number_without_its_side_effects():
    """The vectorised ASO returns exactly what ``deepsig.aso`` returns (ties, equal sets, few and unequal seed
    counts, both directions), and leaves NumPy's global RNG alone where deepsig reseeds it."""
    from joblib.externals.loky.backend import reduction

    pickler = reduction.get_loky_pickler_name()
    try:
        import deepsig  # it makes dill loky's pickler at import: restored below
    finally:
        reduction.set_loky_pickler(pickler)
    rng = np.random.default_rng(7)
    for case in range(24):
        a = rng.normal(0.60, 0.02, rng.integers(2, 8))
        b = rng.normal(0.60 + rng.normal(0, 0.02), 0.02, rng.integers(2, 8))
        if case % 6 == 0:
            b = a.copy()  # equal sets: deepsig's 0.5 branch
        if case % 4 == 1:
            a, b = np.round(a, 2), np.round(b, 2)  # ties
        seed, higher = int(rng.integers(0, 1000)), bool(case % 2)
        with warnings.catch_warnings():  # equal resamples: "Division by zero encountered in violation ratio"
            warnings.filterwarnings("ignore", message="Division by zero", category=UserWarning)
            expected = float(deepsig.aso(a if higher else -a, b if higher else -b, confidence_level=0.95,
                                         num_bootstrap_iterations=60, dt=0.02, show_progress=False, seed=seed))
        np.random.seed(123)
        assert fieldtools.aso_epsilon(a, b, higher, iterations=60, seed=seed) == expected, case
        assert np.random.randint(10**9) == np.random.RandomState(123).randint(10**9)


def test_t_interval():
    low, high = stats.t_interval(np.array([1.0, 2.0, 3.0]))
    assert (low, high) == pytest.approx((2 - 4.3027 / math.sqrt(3), 2 + 4.3027 / math.sqrt(3)), abs=1e-3)
    assert all(math.isnan(v) for v in stats.t_interval(np.array([1.0])))


# ---- verdicts on synthetic losses -------------------------------------------------------------------

def test_test_sample_noise_alone_is_never_called_better():
    """Many pairs of losses with the same error rate: on each test set one looks better by chance. Seeds alone
    call most of those gaps real; the two-level interval keeps them equivalent or undecided."""
    seeds_only_calls, two_level = 0, []
    for draw in range(12):
        table = comparison({"ref": {"error_rate": 0.25, "loss_seed": 100 + draw},
                            "same": {"error_rate": 0.25, "loss_seed": 200 + draw}}, replicates=1000)
        row = table.iloc[0]
        two_level.append(row["verdict"])
        seeds_only_calls += verdicts.verdict(row["mean_diff"], row["ci_low_seeds"], row["ci_high_seeds"],
                                             row["rope"]) in ("better", "worse")
        assert row["ci_high"] - row["ci_low"] >= row["ci_high_seeds"] - row["ci_low_seeds"]
    assert seeds_only_calls >= 8, "the fixture must hold gaps that seeds alone call real"
    assert set(two_level) <= {"equivalent", "undecided"}, two_level


def test_a_real_gap_is_better_and_kl_like_twins_are_identical():
    table = comparison({"ref": {"error_rate": 0.25, "loss_seed": 1}, "gain": {"error_rate": 0.12, "loss_seed": 2},
                        "twin": {"error_rate": 0.25, "loss_seed": 1}}).set_index("loss")
    assert table.loc["gain", "verdict"] == "better" and table.loc["gain", "ci_low"] > 0
    assert table.loc["twin", "verdict"] == "identical" and bool(table.loc["twin", "identical"])
    assert table.loc["twin", "ci_low"] == table.loc["twin", "ci_high"] == 0.0
    minority = comparison({"ref": {"error_rate": 0.25, "loss_seed": 1}, "gain": {"error_rate": 0.12, "loss_seed": 2}},
                          metric="test/f1_aggressive").set_index("loss")
    assert minority.loc["gain", "verdict"] == "better"
    worse = comparison({"ref": {"error_rate": 0.12, "loss_seed": 2}, "loss": {"error_rate": 0.25, "loss_seed": 1}})
    assert worse.iloc[0]["verdict"] == "worse"


@pytest.mark.parametrize("seed_level", ["t", "resample"])
def test_two_level_is_wider_than_seeds_only_and_splits_the_variance(seed_level):
    """A loss with a strong seed effect (each seed adds errors) and one with test-sample noise only."""
    losses = {"ref": {"error_rate": 0.25, "loss_seed": 1, "jitter": 0.0},
              "seedy": {"error_rate": 0.25, "loss_seed": 1, "jitter": 0.0, "shift": 0.02},
              "sampled": {"error_rate": 0.25, "loss_seed": 3, "jitter": 0.005}}
    table = comparison(losses, seed_level=seed_level, replicates=3000).set_index("loss")
    if seed_level == "t":  # the t level keeps the two-level interval at least as wide as the seeds-only one
        widths = table["ci_high"] - table["ci_low"]
        assert (widths >= table["ci_high_seeds"] - table["ci_low_seeds"]).all()
    assert table.loc["seedy", "share_seeds"] > 0.5 > table.loc["sampled", "share_seeds"]
    ratio = (table["ci_high"] - table["ci_low"]) / (table["ci_high_seeds"] - table["ci_low_seeds"])
    if seed_level == "t":  # seeds dominate: about the seeds-only interval; the test sample dominates: far wider
        assert ratio["seedy"] < 1.2 and ratio["sampled"] > 2


# ---- whole reports from a real store ---------------------------------------------------------------

def log_run(client: MlflowClient, experiment_id: str, files: Path, loss: str, seed: int, labels: np.ndarray,
            predicted: np.ndarray, parent: str, sweep_id: str, model: str = "") -> str:
    """A finished run as a training (or, with ``model``, the linear baseline) records it."""
    tags = {"loss": loss, "seed": str(seed), "device": "cpu", "dataset_md5": "md5", "sweep_id": sweep_id,
            "mlflow.parentRunId": parent, **({"model": model} if model else {})}
    run_id = client.create_run(experiment_id, run_name=f"{loss}-s{seed}", tags=tags).info.run_id
    p_aggressive = np.where(predicted == 1, 0.8, 0.2)
    values = scores(labels, predicted) | {"test/auroc": 0.7, "test/ece": 0.05, "test/nll": 0.6, "fit_seconds": 2.0}
    if not model:
        values["best_val/f1_macro"] = 0.7
    params = {"model.hidden": 16} if not model else {"baseline.C": 1.0, "baseline.class_weight": "balanced"}
    client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in values.items()],
                     params=[Param(k, str(v)) for k, v in params.items()])
    folder = files / run_id / "evaluation"
    folder.mkdir(parents=True)
    pd.DataFrame({"label": labels, "predicted": predicted, "p_calm": 1 - p_aggressive,
                  "p_aggressive": p_aggressive}).to_csv(folder / "test_predictions.csv", index=False)
    client.log_artifacts(run_id, str(folder), "evaluation")
    client.set_terminated(run_id, "FINISHED")
    return run_id


LOSSES = {"ce": {"error_rate": 0.25, "loss_seed": 1}, "kl": {"error_rate": 0.25, "loss_seed": 1},
          "noisy": {"error_rate": 0.25, "loss_seed": 107}, "gain": {"error_rate": 0.12, "loss_seed": 2},
          "linear-baseline": {"error_rate": 0.3, "loss_seed": 5}}


@pytest.fixture(scope="module")
def verdict_report(tmp_path_factory) -> tuple[Path, str, str]:
    tmp = tmp_path_factory.mktemp("verdict-store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("verdicts", artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(experiment_id, run_name="sweep-v", tags={"sweep_id": "v", "sweep_role": "parent"})
    parent_id = parent.info.run_id
    labels = make_labels()
    for loss, kwargs in LOSSES.items():
        for seed in SEEDS:
            log_run(client, experiment_id, tmp / "files", loss, seed, labels, predictions(labels, seed=seed, **kwargs),
                    parent_id, "v", model="linear-baseline" if loss == "linear-baseline" else "")
    client.set_terminated(parent_id, "FINISHED")
    out = write_report(uri, experiment="verdicts", reports_dir=tmp / "reports",
                       settings={"bootstrap": 4000, "bayes_samples": 1000, "aso_iterations": 50})
    return out, uri, parent_id


def test_report_verdicts_from_a_store(verdict_report):
    out, _, _ = verdict_report
    comparison = pd.read_csv(out / "comparison.csv")
    assert {"loss", "metric", "mean_diff", "ci_low", "ci_high", "ci_low_seeds", "ci_high_seeds", "verdict",
            "share_seeds", "mde", "seeds_needed", "p_bayes_rope", "aso_eps", "p_holm"} <= set(comparison)
    assert set(comparison["reference"]) == {"ce"} and set(comparison["verdict"]) <= set(verdicts.VERDICTS)
    by = comparison.set_index(["metric", "loss"])
    for metric in ("test/f1_macro", "test/f1_aggressive"):
        assert by.loc[(metric, "gain"), "verdict"] == "better"
        assert by.loc[(metric, "noisy"), "verdict"] in ("equivalent", "undecided")
        assert by.loc[(metric, "kl"), "verdict"] == "identical"
    # the noisy loss's gap on this test set is one seeds alone would call real
    noisy = by.loc[("test/f1_macro", "noisy")]
    assert verdicts.verdict(noisy["mean_diff"], noisy["ci_low_seeds"], noisy["ci_high_seeds"], 0.005) != "undecided"
    two_level = comparison[comparison["interval"] == "two-level"]
    assert len(two_level) >= 4 * 4
    assert ((two_level["ci_high"] - two_level["ci_low"]) >= (two_level["ci_high_seeds"] - two_level["ci_low_seeds"])
            - 1e-12).all()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["loss"]) == set(LOSSES) and set(summary["n"]) == {5}
    assert {"test/f1_macro|ci_low", "test/f1_macro|ci_high", "test/f1_macro|ci_low_seeds"} <= set(summary)


def test_report_opens_with_the_forest_plot_and_a_verdict_line_per_loss(verdict_report):
    out, uri, parent = verdict_report
    text = (out / "report.md").read_text()
    lines = [x for x in text.splitlines() if x.strip()]
    assert lines[1] == "![forest plot: every loss against the reference](forest_plot.png)"
    assert lines[2] == "![critical-difference diagram](critical_difference.png)"
    verdict_lines = text[text.index("## Verdicts against ce"):text.index("## Summary")]
    for loss in ("kl", "noisy", "gain", "linear-baseline"):
        assert f"- **{loss}**: " in verdict_lines, loss
    assert "- **gain**: macro-F1 +" in verdict_lines and "F1(aggressive) +" in verdict_lines
    assert "- **kl**: identical to ce" in verdict_lines
    assert text.index("## Verdicts") < text.index("## Per loss") < text.index("## Paired comparison")
    assert "**Where the spread comes from**" in text and "**Power**" in text and "## Linear baseline" in text
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert {"report/forest_plot.png", "report/critical_difference.png", "report/comparison.csv"} <= logged


@pytest.mark.parametrize("size", [200, 10_000])  # below and above the size where it brackets from a subsample
def test_mixture_quantile_is_the_quantile_of_the_t_mixture(size):
    from scipy import optimize, stats

    from losslab.report.bootstrap import mixture_quantile

    rng = np.random.default_rng(size)
    for df, q in [(1, 0.025), (4, 0.975), (4, 0.5), (9, 0.05)]:
        centers, scale = rng.normal(0.01, 0.008, size), rng.uniform(0.001, 0.02)
        found = mixture_quantile(centers, scale, df, q)
        assert abs(stats.t.cdf((found - centers) / scale, df).mean() - q) < 1e-7  # x to 1e-9, slope < 100
        reference = optimize.brentq(lambda x: stats.t.cdf((x - centers) / scale, df).mean() - q, -1, 1, xtol=1e-12)
        assert found == pytest.approx(reference, abs=1e-8)
