"""The end of a sweep: the table of the losses, the linear baseline (one child run per seed), the comparison
report (logged on the parent run), the parent closed, the champion registered.

The parent ends FINISHED when every child finished and the report was written, else FAILED
with a ``sweep_error`` tag saying why; only a FINISHED sweep registers a champion.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from losslab.console import ignore_warning, verbose
from losslab.sweeps.progress import duration, loss_table
from losslab.tracking.sweep_runs import SweepParent, child_runs, close_parent, status_counts, sweep_problem


def finish_sweep(parent: SweepParent, report: bool = True, reports_dir: str | Path | None = None,
                 failed: str | None = None, register: bool = False, model_name: str | None = None,
                 settings: Mapping[str, Any] | None = None, baseline: Mapping[str, Any] | None = None,
                 ensemble: Mapping[str, Any] | None = None, jobs: int = 1,
                 pool: Mapping[str, Any] | None = None) -> Path | None:
    """Print the loss table, train the linear baseline, log the seed ensembles (``ensemble``: ``sweep.ensemble``;
    None: as composed, see ``ensemble_settings``) and write the report (optional; ``baseline``: ``sweep.baseline``,
    ``settings``: ``sweep.report``), end ``parent``'s run, register the champion (optional); returns the report
    folder. ``jobs``: processes the baseline may fit its seeds in; ``pool``: the sweep's joblib workers
    (``sweeps.jobs.worker_pool``) — they fit (or read from the cache) and log the baseline's seeds, then build the
    seed ensembles while this process writes the report (the report leaves the ensembles out: neither waits)."""
    counts = status_counts(child_runs(parent.uri, parent.experiment_id, parent.run_id))
    problem = sweep_problem(counts, failed)
    out: Path | None = None
    finished = failed is None and bool(counts.get("FINISHED"))
    reporting = bool(report and counts.get("FINISHED"))
    background: threading.Thread | None = None
    if reporting and pool:  # while the workers train the baseline, this process would only wait
        _in_background(_prefetch_report_imports)
    try:
        if finished:
            print_loss_table(parent)
        with_baseline = reporting and (baseline is None or baseline.get("enabled", True))
        with_ensembles = finished and (ensemble if ensemble is not None else ensemble_settings(parent)).get(
            "enabled", True)
        if with_baseline:  # first, in the workers (fits and runs): a short step when its fits are cached
            train_baseline(parent, baseline or {}, jobs, pool)
        if with_ensembles and pool and reporting:  # the workers build them while the report is written
            background = _in_background(seed_ensembles, parent, settings or {}, pool)
        elif with_ensembles:
            seed_ensembles(parent, settings or {}, pool)
        if reporting:
            from losslab.report.build import write_report

            out = write_report(parent.uri, sweep_id=parent.sweep_id, experiment_id=parent.experiment_id,
                               reports_dir=reports_dir, log_to_parent=True, settings=settings)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        problem = problem or f"the report failed: {type(exc).__name__}: {exc}"[:500]
    finally:
        if background is not None:
            background.join()  # no child run may still be RUNNING when the parent closes
        close_parent(parent, counts, problem)
    runs = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no run"
    print(f"sweep {parent.sweep_id}: {runs} in {duration(time.perf_counter() - parent.started)}; "
          f"parent run {parent.run_id} {'FAILED: ' + problem if problem else 'FINISHED'}")
    if register and problem is None:
        register_champion(parent.uri, parent.sweep_id, parent.experiment or None, model_name)
    return out


def _in_background(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=target.__name__, daemon=True)
    thread.start()
    return thread


def _prefetch_report_imports() -> None:
    """The report's slowest imports, ahead of it (``report.why.import_gradient_stack``)."""
    from losslab.report.why import import_gradient_stack

    try:
        import_gradient_stack()
    except Exception:  # noqa: BLE001  (the report imports it again, and says what fails)
        pass


def baseline_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``sweep.baseline`` without its ``enabled`` switch (as composed; the defaults when none was passed)."""
    return {k: v for k, v in (settings or {}).items() if k != "enabled"} or default_baseline()


def train_baseline(parent: SweepParent, settings: Mapping[str, Any], jobs: int = 1,
                   pool: Mapping[str, Any] | None = None) -> None:
    """The linear baseline on every seed of the sweep (``losslab.training.baseline``; in ``pool``'s workers when
    given), one console line; a failure is a warning (the report then says the baseline is missing), not a failed
    sweep."""
    from losslab.training.baseline import cache_location, run_baselines

    started = time.perf_counter()
    try:
        done = run_baselines(parent.uri, parent.experiment_id, parent.run_id, parent.sweep_id,
                             baseline_settings(settings), jobs=jobs, pool=pool)
    except Exception as exc:  # noqa: BLE001 - the trainings and their report stand without it
        print(f"warning: no linear baseline for sweep {parent.sweep_id}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return
    if not done:
        return
    fits = [fit for _, fit in done]
    chosen = ", ".join(f"C={f.chosen.C:g}" + (f" {f.chosen.class_weight}" if f.chosen.class_weight else "")
                       for f in fits)
    cached = sum(f.cached for f in fits)
    print(f"linear baseline: {len(fits)} runs (seeds {', '.join(str(f.seed) for f in fits)}; chosen on validation: "
          f"{chosen}) in {duration(time.perf_counter() - started)}"
          + (f"; {cached} fit(s) reused from {_shown(cache_location(baseline_settings(settings)))}" if cached else ""),
          flush=True)


def _shown(path: Path | None) -> str:
    """``path`` relative to the working directory when it is below it."""
    if path is None:
        return "-"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def seed_ensembles(parent: SweepParent, settings: Mapping[str, Any], pool: Mapping[str, Any] | None = None) -> None:
    """Per loss, its seeds as one model (``losslab.sweeps.ensembles``; in ``pool``'s workers when given); a failure
    is a warning, not a failed sweep."""
    from losslab.sweeps.ensembles import build_seed_ensembles

    try:
        build_seed_ensembles(parent.uri, parent.experiment_id, parent.run_id, parent.sweep_id,
                             str(settings.get("select_metric", "best_val/f1_macro")),
                             str(settings.get("primary_metric", "test/f1_macro")), pool)
    except Exception as exc:  # noqa: BLE001 - the trainings and their report stand without them
        print(f"warning: no seed ensembles for sweep {parent.sweep_id}: {type(exc).__name__}: {exc}", file=sys.stderr)


def ensemble_settings(parent: SweepParent) -> dict[str, Any]:
    """``sweep.ensemble`` of ``conf/sweep/_common.yaml`` with the sweep's own ``sweep.ensemble.*`` overrides (the
    command line, recorded on the parent run as ``sweep.overrides``)."""
    import yaml
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from losslab.paths import config_dir

    node = OmegaConf.load(config_dir() / "sweep" / "_common.yaml").sweep.ensemble
    try:
        recorded = MlflowClient(parent.uri).get_run(parent.run_id).data.params.get("sweep.overrides", "")
    except Exception:  # noqa: BLE001 - the defaults stand
        recorded = ""
    for override in recorded.split():
        key, _, value = override.lstrip("+").partition("=")
        if key.startswith("sweep.ensemble."):
            OmegaConf.update(node, key[len("sweep.ensemble."):], yaml.safe_load(value), force_add=True)
    settings = OmegaConf.to_container(node, resolve=True)
    assert isinstance(settings, dict)
    return settings


def default_baseline() -> dict[str, Any]:
    """``sweep.baseline`` of ``conf/sweep/_common.yaml`` (when the caller passed none)."""
    from omegaconf import OmegaConf

    from losslab.paths import config_dir

    node = OmegaConf.load(config_dir() / "sweep" / "_common.yaml").sweep.baseline
    settings = OmegaConf.to_container(node, resolve=True)
    assert isinstance(settings, dict)
    return {k: v for k, v in settings.items() if k != "enabled"}


def print_loss_table(parent: SweepParent) -> None:
    """The losses, best first (``progress.loss_table``); a failure here is one line, not a failed sweep."""
    try:
        lines = loss_table(parent.uri, parent.sweep_id, parent.experiment_id)
    except Exception as exc:  # noqa: BLE001 - the report below says the same, at length
        print(f"(no loss table: {type(exc).__name__}: {exc})", file=sys.stderr)
        return
    if lines:
        print("\n" + "\n".join(lines) + "\n", flush=True)


def register_champion(uri: str, sweep_id: str, experiment: str | None, model_name: str | None = None) -> None:
    """Register a finished sweep's champion; a failure is a warning (the runs and the report stand)."""
    from losslab.serving.registry import describe, register_sweep

    try:
        with quiet_registration():
            champion = register_sweep(uri, sweep_id, experiment, model_name)
        print(describe(champion))
    except Exception as exc:  # noqa: BLE001 - the sweep's runs and report stand without it
        print(f"warning: champion of sweep {sweep_id} not registered: {type(exc).__name__}: {exc} "
              f"(retry: make register SWEEP_ID={sweep_id})", file=sys.stderr)


_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# What MLflow prints (eprint) when it registers a version; the champion line says the same.
_REGISTRY_LINES = (r"Successfully registered model '[^']*'\.$|Created version '[^']*' of model '[^']*'\.$"
                   r"|Registered model '[^']*' already exists\. Creating a new version of this model\.\.\.$")


class _WithoutLines:
    """A text stream writing to ``target`` every line except those ``pattern`` matches in full."""

    def __init__(self, target: Any, pattern: str) -> None:
        self.target, self.pattern, self.pending = target, re.compile(pattern), ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if not self.pattern.match(line):
                self.target.write(line + "\n")
        return len(text)

    def close_line(self) -> None:
        if self.pending:
            self.target.write(self.pending)
            self.pending = ""

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding...
        return getattr(self.target, name)


@contextlib.contextmanager
def quiet_registration() -> Iterator[None]:
    """Registering logs the champion as an MLflow pyfunc: MLflow then draws download progress bars, warns
    that no input example was given (the model's signature is explicit) and prints "Successfully
    registered model" / "Created version" (the champion line says it). Unless ``LOSSLAB_VERBOSE=1``
    these are off for this call: the bars by MLflow's own switch, the warning by a filter on it, and
    exactly those printed lines; everything else MLflow writes still shows."""
    if verbose():
        yield
        return
    ignore_warning(r"(\x1b\[[\d;]*m)?An input example was not provided when logging the model", UserWarning,
                   "mlflow")
    saved_bar = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"
    stream = _WithoutLines(sys.stderr, _REGISTRY_LINES)
    try:
        with contextlib.redirect_stderr(stream):
            yield
    finally:
        stream.close_line()
        if saved_bar is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = saved_bar
