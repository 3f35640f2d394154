"""The report's "Why the losses differ" section: exact gradient curves against their formulas, the section built
from a synthetic store with known diag/* curves and label-noise runs, and from a real sweep."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from losslab.report import why
from losslab.report.build import write_report
from sweep_fixture import quick_sweep, run_sweep  # noqa: F401

P = np.array([1e-6, 1e-3, 0.01, 0.2, 0.5, 0.8, 0.99])


def expected(name: str, p: np.ndarray) -> np.ndarray:
    """|dL/dz_true| of one two-class row with p(true) = p, by hand (softmax: dp/dz_true = p(1-p); with two classes
    mse's row loss is ((1-p)^2 + (1-p)^2)/2 and the slide's ((1-p)^2 + (1-p)^2)/2 too)."""
    s = p * (1 - p)
    return {"ce": 1 - p, "kl": 1 - p, "mse": 2 * p * (1 - p) ** 2, "mse_lecture": 2 * p * (1 - p) ** 2,
            "kl_probs": s, "mae": 2 * s, "gce": p ** 0.7 * (1 - p), "sce": 0.1 * (1 - p) + 4.0 * s,
            "focal": np.abs((1 - p) ** 2 * (1 - p) - 2 * (1 - p) * s * np.log(p)),
            "bce": (1 - p) / 2}[name]  # bce: mean over the C = 2 per-class terms; only the true one moves z_true


@pytest.mark.parametrize("name", ["ce", "kl", "mse", "mse_lecture", "kl_probs", "mae", "gce", "sce", "focal", "bce"])
def test_exact_gradient_curves_match_their_formulas(name):
    curves, formulas, _ = why.exact_gradients([name], pd.DataFrame({"loss": []}))
    got = np.array([why.at(curves[name], p) for p in P])
    assert got == pytest.approx(expected(name, P), rel=2e-3, abs=1e-9)
    assert formulas[name].startswith("`" + name) or name in formulas[name]


def test_bce_probs_curve_shows_the_float32_saturation():
    curves, _, activations = why.exact_gradients(["bce_probs", "bce"], pd.DataFrame({"loss": []}))
    p, grad = curves["bce_probs"]
    stable = curves["bce"][1]
    assert activations["bce_probs"] == "sigmoid"
    mid = (p > 1e-6) & (p < 0.9)
    assert grad[mid] == pytest.approx(stable[mid], rel=1e-3)  # the same loss where sigmoid is exact
    tail = p < 1e-13  # sigmoid(z_true) < 1e-12: BCELoss divides by max(s(1-s), 1e-12), the sigmoid multiplies by s(1-s)
    assert grad[tail] == pytest.approx(p[tail] / 1e-12 / 2, rel=0.02) and (grad[tail] < 0.1 * stable[tail]).all()
    assert why.sigmoid_saturation() == pytest.approx(16.6, abs=0.2)


def test_run_parameters_reach_the_curve():
    runs = pd.DataFrame({"loss": ["gce"], "param:loss.q": ["0.3"]})
    curves, _, _ = why.exact_gradients(["gce"], runs)
    assert why.at(curves["gce"], 0.2) == pytest.approx(0.2 ** 0.3 * 0.8, rel=1e-3)


# --- a synthetic store: 4 losses × 2 noise levels × 2 seeds, diag/* curves with known values -------------

F1 = {"ce": (0.70, 0.55), "mse": (0.68, 0.60), "sce": (0.69, 0.66), "bce_probs": (0.60, 0.50)}
MAX_LOGIT = {"ce": [2, 4, 6], "mse": [1, 2, 3], "sce": [2, 3, 4], "bce_probs": [8, 15, 25]}
GRAD = {"ce": (0.97, 0.1), "mse": (0.004, 0.05), "sce": (0.5, 0.2), "bce_probs": (0.3, 0.05)}
INPUT_NORM = {"ce": 0.1, "mse": 0.005, "sce": 0.08, "bce_probs": 0.02}


def log_run(client: MlflowClient, experiment_id: str, parent: str, loss: str, seed: int, noise: float) -> None:
    tags = {"loss": loss, "seed": str(seed), "device": "cpu", "sweep_id": "why-test", "mlflow.parentRunId": parent}
    run_id = client.create_run(experiment_id, run_name=f"{loss}-s{seed}", tags=tags).info.run_id
    f1 = F1[loss][noise > 0] + 0.002 * seed
    params = {"loss.name": loss, "seed": seed, "data.label_noise": noise, "data.label_noise_type": "symmetric",
              "dataset.flipped_labels": int(noise * 1000)}
    metrics = [Metric(k, v, 0, 0) for k, v in {"test/f1_macro": f1, "test/f1_aggressive": f1 - 0.1,
                                                "test/f1_calm": f1 + 0.1, "test/accuracy": f1, "test/nll": 0.5,
                                                "test/ece": 0.05, "test/auroc": 0.8, "fit_seconds": 1.0,
                                                "best_val/f1_macro": f1, "train/loss": 0.3}.items()]
    scale = 1.0 if noise == 0 else 4.0  # noisy runs' diagnostics must not reach the comparison
    for epoch, value in enumerate(MAX_LOGIT[loss]):
        values = {"diag/max_abs_logit": value * scale, "diag/grad_logit_wrong": GRAD[loss][0],
                  "diag/grad_logit_correct": GRAD[loss][1], "diag/p_true_wrong": 0.02, "diag/p_true_correct": 0.9,
                  "diag/saturated_right": 0.1 * epoch, "diag/confident_wrong": 0.01, "diag/margin_mean": epoch,
                  "diag/grad_norm_input": INPUT_NORM[loss] / (1 + epoch), "diag/grad_norm_output": 0.05,
                  "diag/dead_units": 0.0, "diag/prelu_slope_mean": 0.25 + 0.01 * epoch}
        metrics += [Metric(k, v, 0, epoch) for k, v in values.items()]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(run_id, "FINISHED")


@pytest.fixture(scope="module")
def noise_report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("why-store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("why", artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(experiment_id, run_name="sweep-why-test",
                               tags={"sweep_id": "why-test", "sweep_role": "parent"}).info.run_id
    client.set_terminated(parent, "FINISHED")
    for seed in (0, 1):
        for noise in (0.0, 0.4):
            for loss in F1:
                log_run(client, experiment_id, parent, loss, seed, noise)
    return write_report(uri, experiment="why", reports_dir=tmp / "reports", log_to_parent=False)


@pytest.mark.slow
def test_why_section_explains_from_the_numbers(noise_report):
    text = (noise_report / "report.md").read_text()
    section = text[text.index("## Why the losses differ"):]
    for name in ("why_diagnostics.png", "why_gradients.png", "why_noise.png"):
        assert (noise_report / name).stat().st_size > 0 and name in section, name
    # diagnostics come from the clean (noise 0) runs only: bce_probs' max |logit| 25, not 100
    assert "Largest |logit| at the last epoch: `bce_probs` 25 (epoch 1: 8), smallest `mse` 3." in section
    assert "`bce_probs` went past 16.6, where a float32 sigmoid is exactly 1.0" in section
    assert "`ce` 0.97 vs 0.1 (9.7×)" in section and "`mse` 0.004 vs 0.05 (0.08×)" in section
    assert "`mse` pushed its confident mistakes *less*" in section
    assert "Exact push on the true logit of a row the model gives p(true) = 0.01: `ce` 0.99, `bce_probs` 0.495, " \
           "`sce` 0.139, `mse` 0.0196" in section
    assert ("Input-layer gradient norm at the last epoch: largest `ce` 0.0333, smallest `mse` 0.00167 (20× smaller: "
            "its first layer barely learns any more).") in section
    assert "Rows saturated right (p(true) > 0.99) at the last epoch: 20.0 % for all;" in section
    assert "No hidden unit was dead under any loss; mean PReLU slopes ended between 0.27 and 0.27" in section
    assert "| bce_probs | 25 | 0.2 | 0.01 | 2 | 0.3 | 0.05 | 0.00667 | 0 |" in section


@pytest.mark.slow
def test_why_section_ranks_the_losses_by_their_drop_under_label_noise(noise_report):
    text = (noise_report / "report.md").read_text()
    section = text[text.index("### Robustness to label noise"):]
    drops = {loss: F1[loss][0] - F1[loss][1] for loss in F1}
    order = sorted(drops, key=drops.get)
    assert order == ["sce", "mse", "bce_probs", "ce"]
    assert ("test/f1_macro from 0 to 0.4 of the training labels flipped (symmetric): degrade least `sce` (-0.030), "
            "`mse` (-0.080), `bce_probs` (-0.100); degrade most `ce` (-0.150).") in section
    assert "At 0.4 noise the best test/f1_macro is `sce`'s (0.661); at 0 it is `ce`'s (0.701)." in section
    assert "Labels flipped per run (dataset.flipped_labels, mean): 0 → 0, 0.4 → 400." in section
    assert ("Seed spread (std) at 0.4 noise: 0.001–0.001 with 2 seed(s) per loss; the drops span 0.120, more than "
            "the largest spread.") in section
    assert f"| sce | {np.mean([0.69, 0.692]):.4f} | {np.mean([0.66, 0.662]):.4f} | 0.0300 |" in section


@pytest.mark.slow
def test_a_real_sweep_report_has_the_why_section(quick_sweep):  # noqa: F811
    (out,) = [p for p in quick_sweep.reports.iterdir() if p.is_dir()]
    text = (out / "report.md").read_text()
    section = text[text.index("## Why the losses differ"):]
    assert (out / "why_diagnostics.png").stat().st_size > 0 and (out / "why_gradients.png").stat().st_size > 0
    assert "why_noise.png" not in section  # the quick sweep does not vary data.label_noise
    for loss in ("mse", "bce", "ce", "kl"):
        assert f"| {loss} |" in section, loss
    push = section[section.index("Exact push"):].split("\n")[0]
    assert math.isfinite(float(push.split("`ce` ")[1].split(",")[0]))


@pytest.mark.slow
def test_the_noise_sweep_reports_robustness_per_loss(tmp_path):
    """``make sweep SWEEP=noise`` on tiny data, cut to 2 losses × 2 seeds (× the sweep's 3 noise levels)."""
    done = run_sweep(tmp_path, "noise", 1, "trainer.max_epochs=2", "seed=0,1", "loss=ce,mae")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("FINISHED  ") == 12 and "data.label_noise=0.4" in done.stdout
    (out,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir()]
    text = (out / "report.md").read_text()
    section = text[text.index("### Robustness to label noise"):]
    assert (out / "why_noise.png").stat().st_size > 0
    assert "| loss | noise 0 | noise 0.2 | noise 0.4 | drop 0 → 0.4 |" in section
    assert "| ce |" in section and "| mae |" in section and "degrade least `" in section
    flipped = section[section.index("Labels flipped per run"):].split("\n")[0]
    assert "0 → 0, 0.2 → " in flipped and ", 0.4 → " in flipped


def test_the_gradient_stack_a_sweep_imports_ahead_shares_no_module_with_the_baselines_phase():
    """``finish_sweep`` imports it in a thread while its own thread trains the baseline (scikit-learn, scipy): two
    threads importing one module at once could deadlock, so the two sets must stay apart."""
    import subprocess
    import sys

    probe = ("import sys; from losslab.report.why import import_gradient_stack; before = set(sys.modules); "
             "import_gradient_stack(); new = set(sys.modules) - before; "
             "print(sorted({m.split('.')[0] for m in new}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    packages = set(eval(done.stdout.strip().splitlines()[-1]))  # noqa: S307 - our own printed list
    assert {"torch", "losslab"} <= packages
    assert not packages & {"sklearn", "scipy", "threadpoolctl", "pyarrow", "narwhals"}
