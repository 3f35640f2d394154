"""Sweeps: many trainings as children of one MLflow parent run, then the comparison report.

    python -m losslab.sweeps losses              # or: make sweep            (7 losses × seeds 0-4)
    python -m losslab.sweeps quick --jobs 2      # or: make sweep SWEEP=quick SWEEP_JOBS=2
    python -m losslab.sweeps grid trainer.max_epochs=5        # extra overrides go to every job

``losses``, ``quick`` and ``grid`` are Hydra multiruns of ``losslab.training.train`` (``conf/sweep/<name>.yaml``,
also runnable as ``python -m losslab.train +sweep=<name>``); their parent run is opened and closed
by ``losslab.sweeps.callbacks.SweepParentRun``. ``search`` is an Optuna search per loss
(``losslab.sweeps.search``). ``--jobs 1`` runs every job in this process (imports and featurizing are
paid once); ``--jobs N`` uses Hydra's joblib launcher with N worker processes, each with cores/N torch threads;
``--jobs auto`` (the default) is one worker per usable core up to ``MAX_AUTO_JOBS`` on CPU, 1 where CUDA is
available (the GPU is shared; the losses train fused there). With ``sweep.fused`` on
(auto: on CUDA), the losses of a sweep train fused: one job per seed, one MLflow run per loss (``fused_overrides``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from losslab.console import ignore_warning, verbose
from losslab.errors import ConfigError, friendly_exit
from losslab.paths import config_dir
from losslab.sweeps.jobs import MAX_AUTO_JOBS, cuda_available, launcher_given, resolve_jobs

def available_sweeps() -> list[str]:
    """Names of the sweeps in ``conf/sweep/`` (files starting with ``_`` are shared parts)."""
    return sorted(p.stem for p in (config_dir() / "sweep").glob("*.yaml") if not p.stem.startswith("_"))


def hydra_argv(name: str, jobs: int, overrides: Sequence[str]) -> list[str]:
    """The ``losslab.training.train`` command line of a Hydra sweep."""
    argv = ["--multirun", f"+sweep={name}"]
    if jobs > 1:
        argv += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    return argv + list(overrides)


def _override(overrides: Sequence[str], key: str) -> str | None:
    """The value of ``key=...`` (or ``+key=``/``++key=``) on the command line, the last one winning."""
    found = None
    for item in overrides:
        name, sep, value = item.partition("=")
        if sep and name.lstrip("+") == key:
            found = value
    return found


def fused_on(setting: object) -> bool:
    """``sweep.fused``: true / false, or auto = on when CUDA is available (fused is slower on CPU, README)."""
    text = str(setting).strip().lower()
    if text in ("auto", "none", "null", ""):
        return cuda_available()
    if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ConfigError(f"sweep.fused={setting}: choose auto, true or false.")
    return text in ("true", "1", "yes", "on")


def fused_overrides(name: str, overrides: Sequence[str]) -> list[str]:
    """The overrides of sweep ``name`` with ``sweep.fused`` applied: a sweep over several losses becomes one fused
    job per remaining combination (usually per seed) — the loss sweep turns into ``fused.losses=[...]`` —
    unless fused is off (then ``overrides`` as given)."""
    from omegaconf import OmegaConf

    folder = config_dir() / "sweep"
    setting = _override(overrides, "sweep.fused")
    if setting is None:
        setting = OmegaConf.select(OmegaConf.load(folder / f"{name}.yaml"), "sweep.fused", default=None)
    if setting is None:
        setting = OmegaConf.select(OmegaConf.load(folder / "_common.yaml"), "sweep.fused", default="auto")
    losses = _override(overrides, "loss")
    if losses is None:
        losses = OmegaConf.select(OmegaConf.load(folder / f"{name}.yaml"), "hydra.sweeper.params.loss", default=None)
    names = [x.strip() for x in str(losses or "").split(",") if x.strip()]
    if len(names) < 2 or _override(overrides, "fused.losses") or not fused_on(setting):
        return list(overrides)
    kept = [o for o in overrides if o.partition("=")[0].lstrip("+") != "loss"]
    return [*kept, "~hydra.sweeper.params.loss", f"fused.losses=[{','.join(names)}]",
            "hydra.sweep.subdir=${hydra.job.num}-fused-s${seed}"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m losslab.sweeps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default="losses", help="a file of conf/sweep/ (default: losses)")
    parser.add_argument("--jobs", default="auto",
                        help="parallel worker processes: a number (1 = in this process) or auto (default: one per "
                             f"usable core up to {MAX_AUTO_JOBS} on CPU, 1 with CUDA)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job, e.g. trainer.max_epochs=5")
    return parser.parse_intermixed_args(argv)


@friendly_exit
def main(argv: Sequence[str] | None = None, worker_server: bool = False) -> None:
    """``worker_server``: fork a Hydra sweep's joblib workers from one server that imports the training stack once,
    starting now (``losslab.sweeps.worker_server``; a choice for the whole process: ``python -m losslab.sweeps``)."""
    args = parse_args(argv)
    names = available_sweeps()
    if args.name not in names:
        raise ConfigError(f"unknown sweep '{args.name}': choose one of {', '.join(names)} (files in conf/sweep/).")
    args.jobs = 1 if launcher_given(args.overrides) else resolve_jobs(args.jobs)
    if args.name == "search":
        from losslab.sweeps.search import run_search

        run_search(args.overrides, jobs=args.jobs)
        return
    if args.name == "tune":  # make tune: the search, then conf/experiment/<data.name>_best.yaml
        from losslab.sweeps.tune import run_tune

        run_tune(args.overrides, jobs=args.jobs)
        return
    if worker_server and args.jobs > 1:
        from losslab.sweeps import worker_server as server

        server.start(args.jobs)
    from losslab.training import train
    from losslab.sweeps.callbacks import close_open_sweeps

    if not verbose():
        # conf/hydra/launcher/submitit_*.yaml keep the plugin's config names on purpose, so that Hydra
        # validates them against the plugin's schema; Hydra says so on every composition.
        ignore_warning(r"\s*'hydra/launcher/submitit_(local|slurm)' is validated against ConfigStore schema",
                       UserWarning)
    overrides = fused_overrides(args.name, args.overrides)
    saved, sys.argv = sys.argv, [sys.argv[0], *hydra_argv(args.name, args.jobs, overrides)]
    try:
        train.main()  # Hydra parses sys.argv
    except BaseException as exc:
        close_open_sweeps(f"the multirun stopped: {type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
