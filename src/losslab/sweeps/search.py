"""``make sweep SWEEP=search``: an Optuna search per loss, then the best trial re-run on several seeds.

Optuna is used directly (in-memory study per loss, TPE sampler): the Hydra Optuna sweeper pins
optuna<3, its sqlite storage fails with SQLAlchemy 2, and it runs one study per multirun, not one
per loss followed by re-runs. Each trial is a ``losslab.training.train.train`` call on a config composed from
``conf/`` with the sampled overrides, a child of the sweep's parent run (tag ``sweep_phase``), and
one progress line (``losslab.sweeps.progress``). With ``--jobs N`` the losses are searched in N
worker processes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from losslab.errors import ConfigError
from losslab.paths import config_dir
from losslab.sweeps.progress import Progress


def compose(overrides: Sequence[str], sweep: str = "search") -> DictConfig:
    """The search's config (``+sweep=<sweep>``: search or tune) with ``overrides``, as Hydra composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[f"+sweep={sweep}", *overrides])


def suggest(trial: Any, space: DictConfig) -> list[str]:
    """Sample one value per key of ``space``; returned as Hydra overrides."""
    overrides = []
    for key, spec in space.items():
        if "choices" in spec:
            value = trial.suggest_categorical(key, list(spec.choices))
        elif spec.get("int", False):
            value = trial.suggest_int(key, int(spec.low), int(spec.high), log=bool(spec.get("log", False)))
        elif "low" in spec and "high" in spec:
            value = trial.suggest_float(key, float(spec.low), float(spec.high), log=bool(spec.get("log", False)))
        else:
            raise ConfigError(f"sweep.search.space.{key} in conf/sweep/search.yaml needs {{low, high}} or {{choices}}.")
        overrides.append(f"{key}={value}")
    return overrides


def run_one(overrides: Sequence[str], output_dir: Path, progress: Progress | None = None, detail: str = "",
            sweep: str = "search") -> float:
    """Compose and train once (one progress line); the value of the search objective."""
    from losslab.training.train import train

    cfg = compose(overrides, sweep)
    started = time.perf_counter()
    try:
        result = train(cfg, output_dir)
    except Exception as exc:
        if progress is not None:
            progress.job_done(str(cfg.loss.name), cfg.seed, "FAILED", time.perf_counter() - started, {}, detail,
                              f"{type(exc).__name__}: {exc}"[:300])
        raise
    from mlflow.tracking import MlflowClient

    metrics = MlflowClient(result.tracking_uri).get_run(result.run_id).data.metrics
    if progress is not None:
        progress.job_done(str(cfg.loss.name), cfg.seed, "FINISHED", time.perf_counter() - started, metrics, detail)
    return float(metrics[str(cfg.sweep.search.objective)])


def trial_seeds(search: DictConfig) -> list[int]:
    """The seeds each trial trains on: ``search.seeds`` (its objective is their mean), else ``[search.seed]``."""
    return [int(s) for s in (search.get("seeds") or [search.seed])]


def search_loss(loss: str, base: Sequence[str], output_dir: Path, progress: Progress | None = None,
                sweep: str = "search") -> dict[str, Any]:
    """Search one loss, then re-run its best trial on the final seeds. Returns a summary."""
    import optuna

    cfg = compose([*base, f"loss={loss}"], sweep)
    search = cfg.sweep.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", study_name=f"{loss}",
                                sampler=optuna.samplers.TPESampler(seed=int(search.seed)))

    seeds = trial_seeds(search)

    def objective(trial: Any) -> float:
        sampled = suggest(trial, search.space)
        tags = ["+tracking.tags.sweep_phase=search", f"+tracking.tags.trial={trial.number}"]
        values = [run_one([*base, f"loss={loss}", f"seed={seed}", *sampled, *tags,
                           f"tracking.run_name={loss}-trial{trial.number}" + (f"-s{seed}" if len(seeds) > 1 else "")],
                          output_dir / f"{loss}-trial{trial.number}-s{seed}", progress, f"trial {trial.number}", sweep)
                  for seed in seeds]
        return sum(values) / len(values)  # several seeds: the mean (a split's luck does not pick the trial)

    study.optimize(objective, n_trials=int(search.trials))
    best = [f"{k}={v}" for k, v in study.best_params.items()]
    shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in study.best_params.items())
    print(f"search {loss}: best {search.objective}={study.best_value:.4f} with {shown}", flush=True)
    finals = {}
    for seed in search.final_seeds:
        finals[int(seed)] = run_one([*base, f"loss={loss}", f"seed={seed}", *best, "+tracking.tags.sweep_phase=final",
                                     f"+tracking.tags.best_trial={study.best_trial.number}"],
                                    output_dir / f"{loss}-final-s{seed}", progress, "final", sweep)
    return {"loss": loss, "best_value": study.best_value, "best_params": study.best_params, "finals": finals}


def run_search(overrides: Sequence[str], jobs: int = 1, sweep: str = "search") -> list[dict[str, Any]]:
    """The whole search sweep (``conf/sweep/<sweep>.yaml``) under one parent run; the report at the end (when the
    sweep re-runs finals: ``make tune`` only searches)."""
    from losslab.sweeps.finish import finish_sweep
    from losslab.tracking.store import tracking_uri
    from losslab.tracking.sweep_runs import start_parent

    cfg = compose(overrides, sweep)
    search = cfg.sweep.search
    jobs = max(1, min(jobs, len(search.losses)))  # one search per loss: more workers would idle
    uri = tracking_uri(cfg.tracking)
    params = {"sweep.losses": ",".join(search.losses), "sweep.trials": search.trials,
              "sweep.final_seeds": ",".join(map(str, search.final_seeds)), "sweep.objective": search.objective,
              "sweep.space": OmegaConf.to_yaml(search.space), "sweep.overrides": " ".join(overrides),
              "sweep.n_jobs": jobs}
    parent = start_parent(uri, str(cfg.tracking.experiment), str(cfg.sweep.name), params)
    base = [*overrides, f"tracking.parent_run_id={parent.run_id}",
            f"tracking.tags.sweep_id={parent.sweep_id}"]
    output_dir = Path("outputs") / str(cfg.sweep.name) / f"{time.strftime('%Y-%m-%d')}" / parent.sweep_id
    trainings = int(search.trials) * len(trial_seeds(search)) + len(search.final_seeds)
    progress = Progress.start(output_dir, len(search.losses) * trainings,
                              metrics=(str(search.objective), str(cfg.sweep.report.primary_metric)),
                              loss_width=max(map(len, search.losses)))
    failed = None
    results: list[dict[str, Any]] = []
    try:
        if jobs > 1:
            from joblib import Parallel, delayed

            results = Parallel(n_jobs=jobs)(delayed(search_loss)(loss, base, output_dir, progress, sweep)
                                            for loss in search.losses)
        else:
            results = [search_loss(loss, base, output_dir, progress, sweep) for loss in search.losses]
        for result in results:
            result["sweep_id"] = parent.sweep_id
    except BaseException as exc:
        failed = f"{type(exc).__name__}: {exc}"[:500]
        raise
    finally:
        finish_sweep(parent, report=bool(cfg.sweep.report.enabled) and failed is None and bool(search.final_seeds),
                     reports_dir=cfg.sweep.reports_dir, failed=failed, register=bool(cfg.sweep.register),
                     settings=OmegaConf.to_container(cfg.sweep.report, resolve=True),
                     baseline=OmegaConf.to_container(cfg.sweep.baseline, resolve=True), jobs=jobs)
    return results
