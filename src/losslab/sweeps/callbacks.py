"""Hydra callbacks of every sweep (``conf/sweep/_common.yaml``): the parent run, and the console.

``SweepParentRun`` wraps a multirun in one MLflow parent run.

At multirun start (main process, before any job): create the experiment once, open the parent
run, and hand its id and the ``sweep_id`` to every job through ``hydra.job.env_set`` (Hydra
sets those variables around each job, in whichever process runs it; the sweep config reads
them with ``${oc.env:...}``). At multirun end (``losslab.sweeps.finish.finish_sweep``): the table
of the losses, the report (logged on the parent), the parent closed, the champion registered.
If the multirun dies first (a failed job, Ctrl-C), an ``atexit`` hook still closes the parent as
FAILED, so no run is left RUNNING (``losslab.sweeps.cli`` closes it at once, via ``close_open_sweeps``).

``SweepProgress`` is the console of a multirun: one line per finished job (``losslab.sweeps.progress``),
counted across processes, out of the number of jobs the sweeper makes (a fused job, ``sweep.fused``: one line
per loss, each with 1/K of the job's time); Hydra's own INFO lines (the
launch banner, one line per job) are off unless ``LOSSLAB_VERBOSE=1``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from losslab.console import verbose
from losslab.sweeps.finish import finish_sweep
from losslab.sweeps.jobs import warm_workers, worker_pool
from losslab.sweeps.progress import LOSS_WIDTH, Progress
from losslab.tracking.store import tracking_uri
from losslab.tracking.sweep_runs import PARENT_ENV, SWEEP_ID_ENV, SweepParent, job_run, start_parent


_OPEN: list["SweepParentRun"] = []

# Loggers of Hydra and its launcher plugins: "Launching N jobs locally", "#3 : loss=ce seed=0", joblib's banner.
HYDRA_LOGGERS = ("hydra", "hydra_plugins")


def close_open_sweeps(reason: str) -> None:
    """End every parent run this process opened and did not close yet (FAILED, with ``reason``)."""
    for callback in list(_OPEN):
        callback._close_if_open(reason)


class SweepParentRun(Callback):
    """See the module docstring; the arguments come from ``sweep.*`` (``conf/sweep/_common.yaml``)."""

    def __init__(self, report: bool = True, reports_dir: str | None = None, register: bool = True,
                 model_name: str | None = None, settings: Any = None, baseline: Any = None,
                 ensemble: Any = None) -> None:
        self.report = report
        self.reports_dir = reports_dir
        self.register = register
        self.model_name = model_name
        self.settings = OmegaConf.to_container(settings, resolve=True) if settings is not None else None
        self.baseline = OmegaConf.to_container(baseline, resolve=True) if baseline is not None else None
        self.ensemble = OmegaConf.to_container(ensemble, resolve=True) if ensemble is not None else None
        self.parent: SweepParent | None = None
        self.jobs = 1  # the launcher's worker processes (joblib n_jobs): the baseline's seeds use as many
        self.pool: dict[str, Any] | None = None  # its joblib.Parallel arguments (sweeps.jobs.worker_pool)
        self.warming: threading.Thread | None = None  # the workers' start, begun before the launcher's (warm_workers)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        uri = tracking_uri(config.tracking)
        name = str(OmegaConf.select(config, "sweep.name", default="sweep"))
        params = {f"sweep.{k}": v for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()}
        params["sweep.overrides"] = " ".join(OmegaConf.to_container(config.hydra.overrides.task))
        params["sweep.launcher"] = str(OmegaConf.select(config, "hydra.launcher._target_"))
        params["sweep.n_jobs"] = str(OmegaConf.select(config, "hydra.launcher.n_jobs", default=1))
        self.jobs = max(1, int(OmegaConf.select(config, "hydra.launcher.n_jobs", default=1) or 1))
        launcher = OmegaConf.to_container(config.hydra.launcher, resolve=True)
        self.pool = worker_pool(launcher) if isinstance(launcher, dict) else None
        self.warming = warm_workers(self.pool)
        self.parent = start_parent(uri, str(config.tracking.experiment), name, params)
        os.environ[PARENT_ENV] = self.parent.run_id
        os.environ[SWEEP_ID_ENV] = self.parent.sweep_id
        # Every job's config is recomposed from hydra.overrides.hydra + its own overrides:
        # env_set entries there reach each job, in this process or a launcher's worker.
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.hydra.append(f"++hydra.job.env_set.{PARENT_ENV}={self.parent.run_id}")
            config.hydra.overrides.hydra.append(f"++hydra.job.env_set.{SWEEP_ID_ENV}={self.parent.sweep_id}")
        _OPEN.append(self)
        atexit.register(self._close_if_open, "the multirun stopped before its end (see the error above)")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close_if_open(None)

    def _close_if_open(self, failed: str | None) -> None:
        parent, self.parent = self.parent, None
        if self in _OPEN:
            _OPEN.remove(self)
        if parent is None:
            return
        if self.warming is not None:
            self.warming.join()  # long done by now: the sweep's jobs ran in those workers
        finish_sweep(parent, report=self.report and failed is None, reports_dir=self.reports_dir, failed=failed,
                     register=self.register, model_name=self.model_name, settings=self.settings,
                     baseline=self.baseline, ensemble=self.ensemble, jobs=self.jobs, pool=self.pool)
        for key in (PARENT_ENV, SWEEP_ID_ENV):
            os.environ.pop(key, None)

    def __getstate__(self) -> dict[str, Any]:
        # The callback travels to launcher workers inside Hydra's context: they must not close the parent.
        return {**self.__dict__, "parent": None, "warming": None}


BASIC_SWEEPERS = (".BasicSweeper", ".LosslabSweeper")  # Hydra's, and losslab's (its jobs are the same)


def planned_jobs(config: DictConfig) -> tuple[int | None, dict[str, list[str]]]:
    """How many jobs Hydra's basic sweeper makes of ``hydra.sweeper.params`` and the command line, and
    the swept keys with their values. Its arithmetic: a key given twice keeps its last value(s), and
    the jobs are the product of every key's values. ``(None, {})`` for another sweeper, or a sweep it
    cannot count (an interval, a glob)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).endswith(BASIC_SWEEPERS):
        return None, {}
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    values: dict[str, list[str]] = {}
    try:
        for override in OverridesParser.create().parse_overrides(arguments):
            key = override.get_key_element().lstrip("+~")
            if not override.is_sweep_override():
                values[key] = [override.get_value_element_as_str()]
            elif override.is_discrete_sweep():
                values[key] = list(override.sweep_string_iterator())
            else:
                return None, {}
    except Exception:  # noqa: BLE001 - the count is cosmetic; the sweeper reports a bad override itself
        return None, {}
    total = 1
    for choices in values.values():
        total *= len(choices)
    return total, {k: v for k, v in values.items() if len(v) > 1}


class SweepProgress(Callback):
    """See the module docstring; the progress log goes to the sweep's output folder (``hydra.sweep.dir``)."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.shown: list[str] = []       # swept keys a job line names besides loss and seed (grid: lr, width)
        self._levels: dict[str, int] = {}
        self._job_started: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not verbose():
            for name in HYDRA_LOGGERS:
                self._levels[name] = logging.getLogger(name).level
                logging.getLogger(name).setLevel(logging.WARNING)
        total, swept = planned_jobs(config)
        fused = [str(x) for x in OmegaConf.select(config, "fused.losses") or []]
        if fused:  # one job per seed trains every loss: one line per loss (its run)
            total, swept = (total * len(fused) if total is not None else None), {**swept, "loss": fused}
        self.shown = [k for k in swept if k not in ("loss", "seed", "fused.losses")]
        report = OmegaConf.select(config, "sweep.report") or {}
        metrics = tuple(str(report[k]) for k in ("select_metric", "primary_metric") if k in report)
        self.progress = Progress.start(config.hydra.sweep.dir, total, metrics=metrics or Progress.metrics,
                                       loss_width=max(map(len, swept.get("loss", [])), default=LOSS_WIDTH))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._levels.clear()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_started = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.progress is None:
            return
        from hydra.core.utils import JobStatus

        seconds = time.perf_counter() - self._job_started if self._job_started is not None else 0.0
        ok = job_return.status == JobStatus.COMPLETED
        if OmegaConf.select(config, "fused.losses"):
            self._fused_job_done(config, job_return, ok, seconds)
            return
        run = self._run_of(config)
        status = run.info.status if run is not None else "FINISHED" if ok else "FAILED"
        error = getattr(job_return, "_return_value", None) if not ok else None
        detail = " ".join(o for o in OmegaConf.to_container(config.hydra.overrides.task)
                          if o.split("=", 1)[0].lstrip("+~") in self.shown)
        self.progress.job_done(str(OmegaConf.select(config, "loss.name")), OmegaConf.select(config, "seed"), status,
                               seconds, run.data.metrics if run is not None else {}, detail,
                               f"{type(error).__name__}: {error}"[:300] if error is not None else "")

    def _fused_job_done(self, config: DictConfig, job_return: Any, ok: bool, seconds: float) -> None:
        """A fused job: one line per loss, from its member run (each shown with 1/K of the job's time)."""
        losses = [str(x) for x in OmegaConf.select(config, "fused.losses")]
        found = self._member_runs(config)
        error = getattr(job_return, "_return_value", None) if not ok else None
        detail = " ".join(o for o in OmegaConf.to_container(config.hydra.overrides.task)
                          if o.split("=", 1)[0].lstrip("+~") in self.shown)
        for loss in losses:
            run = found.get(loss)
            status = run.info.status if run is not None else "FINISHED" if ok else "FAILED"
            self.progress.job_done(loss, OmegaConf.select(config, "seed"), status, seconds / len(losses),
                                   run.data.metrics if run is not None else {}, detail,
                                   f"{type(error).__name__}: {error}"[:300] if error is not None else "")

    @staticmethod
    def _member_runs(config: DictConfig) -> dict[str, Any]:
        """A fused job's runs by loss: the parent's children recorded under ``<job output dir>/<loss>``."""
        from losslab.tracking.sweep_runs import child_runs

        parent = OmegaConf.select(config, f"hydra.job.env_set.{PARENT_ENV}")
        if not parent:
            return {}
        try:
            from mlflow.tracking import MlflowClient

            uri = tracking_uri(config.tracking)
            folder = Path(config.hydra.runtime.output_dir).resolve()
            experiment_id = MlflowClient(uri).get_run(str(parent)).info.experiment_id
            runs = [r for r in child_runs(uri, experiment_id, str(parent))
                    if Path(r.data.tags.get("output_dir", "/")).parent == folder]
        except Exception:  # noqa: BLE001 - the lines still show; a store problem fails the sweep elsewhere
            return {}
        return {r.data.tags.get("loss"): r for r in sorted(runs, key=lambda r: r.info.start_time)}

    @staticmethod
    def _run_of(config: DictConfig) -> Any | None:
        """This job's MLflow run (found by its output folder among the parent's children), or None."""
        parent = OmegaConf.select(config, f"hydra.job.env_set.{PARENT_ENV}")
        if not parent:
            return None
        try:
            return job_run(tracking_uri(config.tracking), str(parent), str(Path(config.hydra.runtime.output_dir)))
        except Exception:  # noqa: BLE001 - the line still shows; a store problem fails the sweep elsewhere
            return None
