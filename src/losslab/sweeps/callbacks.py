"""Hydra callbacks of every sweep (``conf/sweep/_common.yaml``): the parent run, and the champion.

``SweepParentRun`` wraps a multirun in one MLflow parent run.

At multirun start (main process, before any job): create the experiment once, open the parent
run, and hand its id and the ``sweep_id`` to every job through ``hydra.job.env_set`` (Hydra
sets those variables around each job, in whichever process runs it; the sweep config reads
them with ``${oc.env:...}``). At multirun end: write the report, log it on the parent, close
the parent. If the multirun dies first (a failed job, Ctrl-C), an ``atexit`` hook still closes
the parent as FAILED, so no run is left RUNNING (``losslab.sweeps.cli`` closes it at once, via
``close_open_sweeps``). ``RegisterChampion`` registers the best run when the multirun ends.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from losslab.sweeps.finish import finish_sweep, register_champion
from losslab.tracking.store import tracking_uri
from losslab.tracking.sweep_runs import PARENT_ENV, SWEEP_ID_ENV, SweepParent, start_parent


_OPEN: list["SweepParentRun"] = []


def close_open_sweeps(reason: str) -> None:
    """End every parent run this process opened and did not close yet (FAILED, with ``reason``)."""
    for callback in list(_OPEN):
        callback._close_if_open(reason)


class SweepParentRun(Callback):
    """See the module docstring; ``report`` and ``reports_dir`` come from ``sweep.*``."""

    def __init__(self, report: bool = True, reports_dir: str | None = None) -> None:
        self.report = report
        self.reports_dir = reports_dir
        self.parent: SweepParent | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        uri = tracking_uri(config.tracking)
        name = str(OmegaConf.select(config, "sweep.name", default="sweep"))
        params = {f"sweep.{k}": v for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()}
        params["sweep.overrides"] = " ".join(OmegaConf.to_container(config.hydra.overrides.task))
        params["sweep.launcher"] = str(OmegaConf.select(config, "hydra.launcher._target_"))
        params["sweep.n_jobs"] = str(OmegaConf.select(config, "hydra.launcher.n_jobs", default=1))
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
        finish_sweep(parent, report=self.report and failed is None, reports_dir=self.reports_dir, failed=failed)
        for key in (PARENT_ENV, SWEEP_ID_ENV):
            os.environ.pop(key, None)

    def __getstate__(self) -> dict[str, Any]:
        # The callback travels to launcher workers inside Hydra's context: they must not close the parent.
        return {"report": self.report, "reports_dir": self.reports_dir, "parent": None}



class RegisterChampion(Callback):
    """Register the sweep's best run as ``models:/<name>@champion`` when a multirun ends.

    Hydra calls ``on_multirun_end`` in reverse order, so this runs before ``SweepParentRun``
    closes the parent; it reads the sweep id that callback exported. Only after a multirun
    that ran to its end; a failure here is printed and does not fail the sweep.
    """

    def __init__(self, enabled: bool = True, model_name: str | None = None) -> None:
        self.enabled = enabled
        self.model_name = model_name

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_id = os.environ.get(SWEEP_ID_ENV)
        if self.enabled and sweep_id:
            register_champion(tracking_uri(config.tracking), sweep_id, str(config.tracking.experiment),
                              self.model_name)

