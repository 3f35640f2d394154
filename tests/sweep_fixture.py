"""One real parallel sweep per test session, shared by test_sweep, test_report and test_browser.

``make sweep SWEEP=quick SWEEP_JOBS=2`` on tiny synthetic data: ``python -m losslab.sweeps quick --jobs 2``
(Hydra multirun, joblib launcher, 2 worker processes) into a fresh sqlite store in a temp dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import synthetic_rows, write_table

EXPERIMENT = "sweep-test"
LOSSES = ["mse", "bce", "ce", "kl"]
SEEDS = [0, 1]


@dataclass
class SweepStore:
    uri: str
    root: Path
    reports: Path
    result: subprocess.CompletedProcess


def tiny_data(directory: Path) -> list[str]:
    """Two-class synthetic tweets (string labels) and the overrides that use them with a tiny model."""
    train = write_table(directory / "train.csv", synthetic_rows(160, ["calm", "aggressive"], seed=1), "csv")
    test = write_table(directory / "test.csv", synthetic_rows(60, ["calm", "aggressive"], seed=2), "csv")
    return ["data=custom", f"data.train_path={train}", f"data.test_path={test}", "features.word.min_df=1",
            "model.hidden=16", "optimizer.lr=0.01", "data.batch_size=32", "trainer.accelerator=cpu"]


def run_sweep(root: Path, name: str, jobs: int, *extra: str, timeout: int = 400,
              env: dict[str, str] | None = None, data: list[str] | None = None,
              baseline_cache: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m losslab.sweeps <name> --jobs <jobs>`` (what ``make sweep`` runs) on tiny data in ``root``
    (``data``: other data overrides; ``baseline_cache``: the baseline's cache folder, default
    ``root/baseline-cache``), the console as a user sees it: without ``$LOSSLAB_VERBOSE`` unless ``env`` sets it."""
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "LOSSLAB_DEBUG", "LOSSLAB_VERBOSE")} | (env or {})
    command = [sys.executable, "-m", "losslab.sweeps", name, "--jobs", str(jobs),
               *(tiny_data(root) if data is None else data),
               f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"tracking.experiment={EXPERIMENT}",
               f"sweep.reports_dir={root / 'reports'}", f"hydra.sweep.dir={root / 'multirun'}",
               f"sweep.baseline.cache_dir={baseline_cache or root / 'baseline-cache'}", *extra]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


_DONE: list[SweepStore] = []


@pytest.fixture(scope="session")
def quick_sweep(tmp_path_factory: pytest.TempPathFactory) -> SweepStore:
    """Imported by several test modules (each gets its own fixture definition): the sweep runs once."""
    if not _DONE:
        root = tmp_path_factory.mktemp("quick-sweep")
        result = run_sweep(root, "quick", 2)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        _DONE.append(SweepStore(f"sqlite:///{root / 'mlflow.db'}", root, root / "reports", result))
    return _DONE[0]
