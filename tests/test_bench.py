"""``bench/run.py`` end to end on tiny synthetic data: it runs and writes every required figure (no timing asserts)."""

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, data_overrides

REQUIRED = ("featurize_tweets_per_s", "lightning_samples_per_s", "plain_samples_per_s", "lightning_vs_plain_ratio",
            "epoch_seconds", "train_wall_seconds", "quick_sweep_seconds", "peak_rss_mb", "predict_tweets_per_s",
            "sklearn_fit_seconds")


@pytest.mark.slow
def test_bench_writes_every_figure(tiny_binary, tmp_path):
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--repeats", "1", "--fits", "1", "--epochs", "2",
           "--runs", "1", "--sweeps", "1", "--output", str(out), *data_overrides(tiny_binary),
           "trainer.max_epochs=2", "model.hidden=16", "data.batch_size=32"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    for key in REQUIRED:
        assert isinstance(results[key], (int, float)) and math.isfinite(results[key]) and results[key] > 0, key
    assert results["quick_sweep_runs"] == 8  # 4 losses x 2 seeds, all FINISHED
    assert results["fused_vs_separate_max_abs_diff"] <= 1e-5  # fused members = separate trainings (0.0: bitwise)
    assert results["losses_sweep_trainings_seconds"] < results["losses_sweep_seconds"]
    assert results["sweep_jobs"] == "auto" and results["logging_seconds"] == results["sweep_run_logging_seconds"] > 0
    assert math.isfinite(results["train_store_seconds"])  # opening the store: its own phase of make train
    assert results["machine"]["cores"] >= 1 and results["machine"]["torch"]
    assert "Lightning / plain" in done.stdout and "make train" in done.stdout  # the table is printed
