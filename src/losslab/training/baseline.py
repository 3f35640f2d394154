"""The linear baseline of every sweep: TF-IDF word + char n-grams and scikit-learn's LogisticRegression.

For each seed of a sweep it rebuilds that seed's split exactly as the sweep's trainings did (the ``data``
section and ``seed`` of a child run's logged ``config.yaml``), fits the featurizer on the training split,
fits one model per candidate (``C`` × ``class_weight``), keeps the one with the best validation macro-F1
(the score the MLP's best epoch is chosen by) and only then featurizes and scores the test split — the
test split never takes part in the choice. Each seed becomes one MLflow child run of the sweep's parent,
tagged ``model=linear-baseline`` (and ``loss=linear-baseline``, ``seed``, ``dataset_md5``, ``sweep_id``), with
the same ``test/*`` metrics (the trainings' torchmetrics) and ``evaluation/test_predictions.csv`` as a
training, so the report compares it with the reference like any loss. It logs no ``best_val/*`` metric: the
champion (ranked by ``best_val/f1_macro``) stays an MLP.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

BASELINE = "linear-baseline"
CACHE_DIR = "outputs/cache/baseline"  # under the project root (git-ignored); sweep.baseline.cache_dir: elsewhere
CACHE_SETTINGS = ("cache", "cache_dir")  # whether and where fits are kept: not what a fit depends on
SELECTED_BY = "val/f1_macro"


@dataclass
class Candidate:
    """One hyperparameter setting and its validation scores (the only scores the choice sees)."""

    C: float
    class_weight: str | None
    val_f1_macro: float
    val_accuracy: float
    converged: bool = True


@dataclass
class BaselineFit:
    """One seed's baseline: the chosen candidate, all candidates, test probabilities and costs."""

    seed: int
    chosen: Candidate
    candidates: list[Candidate]
    val_probs: np.ndarray
    val_y: np.ndarray
    test_probs: np.ndarray
    test_y: np.ndarray
    class_names: list[str]
    dataset_md5: str
    sizes: dict[str, int]
    vocabulary_size: int
    seconds: dict[str, float] = field(default_factory=dict)
    cached: bool = False  # read back from the cache (``cached_fit``), not fitted by this process


def features_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings["features"]``: the name of a ``conf/features/`` file (``ngrams``) or a features mapping."""
    from omegaconf import OmegaConf

    from losslab.paths import config_dir

    chosen = settings.get("features", "ngrams")
    if isinstance(chosen, str):
        chosen = OmegaConf.load(config_dir() / "features" / f"{chosen}.yaml")
    plain = OmegaConf.to_container(chosen, resolve=True) if not isinstance(chosen, dict) else chosen
    assert isinstance(plain, dict)
    return plain


def _probabilities(model: Any, x: Any, classes: int) -> np.ndarray:
    """``predict_proba`` with one column per class id (a class missing from the training split gets 0)."""
    out = np.zeros((x.shape[0], classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def choose(candidates: Sequence[Candidate]) -> int:
    """The candidate with the best validation macro-F1 (ties: the first, i.e. the strongest regularisation)."""
    return max(range(len(candidates)), key=lambda i: (candidates[i].val_f1_macro, -i))


def fit_seed(data_cfg: Mapping[str, Any], seed: int, settings: Mapping[str, Any]) -> BaselineFit:
    """Rebuild ``seed``'s split from ``data_cfg``, choose the candidate on validation, then score test."""
    from omegaconf import OmegaConf
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from losslab.data.dataset import load_dataset
    from losslab.data.features import Featurizer

    started = time.perf_counter()
    dataset = load_dataset(OmegaConf.create(dict(data_cfg)), int(seed))
    featurizer = Featurizer.from_config(features_config(settings)).fit(dataset.train.texts)
    x_train, x_val = featurizer.transform(dataset.train.texts), featurizer.transform(dataset.val.texts)
    featurized = time.perf_counter()
    classes = dataset.num_classes
    candidates, models = [], []
    for class_weight in settings.get("class_weight", [None]) or [None]:
        # C ascending, each fit warm-started from the previous solution: half the iterations of cold fits
        model = LogisticRegression(class_weight=class_weight, max_iter=int(settings.get("max_iter", 2000)),
                                   warm_start=True)
        for c in sorted(float(c) for c in settings.get("C", [1.0])):
            model.set_params(C=c)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(x_train, dataset.train.y)
            predicted = _probabilities(model, x_val, classes).argmax(axis=1)
            candidates.append(Candidate(float(c), class_weight,
                                        float(f1_score(dataset.val.y, predicted, average="macro", zero_division=0)),
                                        float(accuracy_score(dataset.val.y, predicted)),
                                        not any(issubclass(w.category, ConvergenceWarning) for w in caught)))
            models.append(copy.deepcopy(model))
    best = choose(candidates)
    fitted = time.perf_counter()
    # the test split is featurized and scored only now, once, by the model the validation split chose
    test_probs = _probabilities(models[best], featurizer.transform(dataset.test.texts), classes)
    return BaselineFit(int(seed), candidates[best], candidates, _probabilities(models[best], x_val, classes),
                       dataset.val.y, test_probs, dataset.test.y, list(dataset.class_names), dataset.md5,
                       {"train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)},
                       featurizer.vocabulary_size,
                       {"featurize": featurized - started, "fit": fitted - featurized,
                        "total": time.perf_counter() - started})


CACHE_VERSION = 1


def cache_key(data_cfg: Mapping[str, Any], seed: int, settings: Mapping[str, Any]) -> str:
    """What a seed's fit depends on: the data settings, the data files (path, size, mtime), the seed, the baseline
    settings, scikit-learn's version and this module's code."""
    import hashlib
    import json

    import sklearn

    from losslab.paths import resolve_path

    files = []
    for key in ("train_path", "test_path"):
        if data_cfg.get(key):
            path = resolve_path(str(data_cfg[key]))
            stat = path.stat() if path.exists() else None
            files.append([str(path), stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1])
    fit_settings = {k: v for k, v in settings.items() if k not in CACHE_SETTINGS}
    blob = json.dumps({"data": data_cfg, "files": files, "seed": int(seed), "sklearn": sklearn.__version__,
                       "settings": fit_settings, "version": CACHE_VERSION,
                       "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cache_location(settings: Mapping[str, Any]) -> Path | None:
    """The folder of cached fits: ``cache_dir`` (relative: to the project root; null: ``CACHE_DIR``), or None when
    ``cache`` is false (every seed is fitted)."""
    if not settings.get("cache", True):
        return None
    from losslab.paths import project_root

    folder = Path(str(settings.get("cache_dir") or CACHE_DIR))
    return folder if folder.is_absolute() else project_root() / folder


def cache_path(cache_dir: Path, data_cfg: Mapping[str, Any], seed: int, settings: Mapping[str, Any]) -> Path:
    """Where ``cached_fit`` keeps this seed's fit."""
    return cache_dir / f"{cache_key(data_cfg, seed, settings)}.pkl"


def cached_fit(data_cfg: Mapping[str, Any], seed: int, settings: Mapping[str, Any],
               cache_dir: Path | None) -> BaselineFit:
    """``fit_seed``, or the same fit read back from ``cache_dir`` when nothing it depends on changed
    (``cache_key``); ``cache_dir=None`` always fits. The fit is deterministic, so a cached one is the same."""
    import pickle

    if cache_dir is None:
        return fit_seed(data_cfg, seed, settings)
    path = cache_path(cache_dir, data_cfg, seed, settings)
    if path.is_file():
        try:
            fit = pickle.loads(path.read_bytes())
            fit.cached = True
            return fit
        except Exception:  # noqa: BLE001 - an unreadable entry (older class layout, torn write) is refitted
            path.unlink(missing_ok=True)
    fit = fit_seed(data_cfg, seed, settings)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_bytes(pickle.dumps(fit))
    tmp.replace(path)
    return fit


def scores(probs: np.ndarray, y: np.ndarray, prefix: str, class_names: list[str]) -> dict[str, float]:
    """The trainings' metrics (``losslab.model.metrics``: accuracy, macro and per-class F1, AUROC, ECE, NLL)."""
    import torch

    from losslab.model.metrics import flatten, make_metrics

    metrics = make_metrics(len(class_names))
    metrics.update(torch.from_numpy(probs).float(), torch.from_numpy(np.asarray(y, dtype=np.int64)))
    return {k: float(v) for k, v in flatten(metrics.compute(), prefix, class_names).items()}


def log_fit(uri: str, experiment_id: str, parent_run_id: str, sweep_id: str, fit: BaselineFit,
            data_cfg: Mapping[str, Any], settings: Mapping[str, Any], workdir: Path) -> str:
    """One FINISHED child run of ``parent_run_id`` holding ``fit``; returns its id."""
    import pandas as pd
    import sklearn
    import torch
    import yaml
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from losslab.tracking.runs import device_tags, flatten_config, git_state
    from losslab.training.evaluation import write_test_artifacts

    client = MlflowClient(uri)
    commit, dirty = git_state()
    tags = {"mlflow.parentRunId": parent_run_id, "sweep_id": sweep_id, "model": BASELINE, "loss": BASELINE,
            "seed": str(fit.seed), "dataset_md5": fit.dataset_md5, "dataset": str(data_cfg.get("name", "")),
            **device_tags(torch.device("cpu")), "git_commit": commit,
            "git_dirty": str(dirty).lower(), "sklearn_version": sklearn.__version__}
    run_id = client.create_run(experiment_id, run_name=f"{BASELINE}-s{fit.seed}",
                               tags=tags).info.run_id
    chosen = fit.chosen
    config = {"seed": fit.seed, "data": dict(data_cfg), "features": features_config(settings),
              "baseline": {k: v for k, v in settings.items() if k != "features"}}
    params = {"seed": fit.seed, "baseline.C": chosen.C, "baseline.class_weight": chosen.class_weight,
              "baseline.selected_by": SELECTED_BY, "baseline.candidates": len(fit.candidates),
              "vocabulary_size": fit.vocabulary_size, **{f"dataset.{k}": v for k, v in fit.sizes.items()},
              **flatten_config({"features": config["features"], "data": config["data"]}),
              **flatten_config(config["baseline"], "baseline.grid.")}  # the candidates: C, class_weight, max_iter
    metrics = {**scores(fit.test_probs, fit.test_y, "test", fit.class_names),
               **scores(fit.val_probs, fit.val_y, "val", fit.class_names),
               "fit_seconds": fit.seconds["fit"], "featurize_seconds": fit.seconds["featurize"],
               "baseline_seconds": fit.seconds["total"]}
    entries = [Metric(k, v, 0, 0) for k, v in metrics.items() if math.isfinite(v)]
    entries += [Metric("baseline/candidate_val_f1_macro", c.val_f1_macro, 0, i) for i, c in enumerate(fit.candidates)]
    client.log_batch(run_id, metrics=entries, params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                     tags=[RunTag("baseline_converged", str(all(c.converged for c in fit.candidates)).lower())])
    folder = workdir / f"seed{fit.seed}"
    write_test_artifacts(folder / "evaluation", fit.test_probs, fit.test_y, fit.class_names,
                         title=f"{BASELINE}-s{fit.seed} — test")
    (folder / "baseline").mkdir(parents=True, exist_ok=True)
    pd.DataFrame([vars(c) for c in fit.candidates]).assign(chosen=[i == fit.candidates.index(chosen) for i in
                                                                 range(len(fit.candidates))]).to_csv(
        folder / "baseline" / "candidates.csv", index=False)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    client.log_artifacts(run_id, str(folder / "evaluation"), "evaluation")
    client.log_artifacts(run_id, str(folder / "baseline"), "baseline")
    client.log_artifact(run_id, str(folder / "config.yaml"))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def sweep_seeds(uri: str, experiment_id: str, parent_run_id: str) -> tuple[dict[int, dict[str, Any]], set[int]]:
    """``({seed: data config}, seeds that already have a FINISHED baseline)``, from the parent's children: the
    first finished training of each seed (search trials left out) gives the ``data`` section of its config."""
    import mlflow.artifacts
    import yaml

    from losslab.tracking.sweep_runs import child_runs

    children = child_runs(uri, experiment_id, parent_run_id)
    done = {int(r.data.tags["seed"]) for r in children
            if r.data.tags.get("model") == BASELINE and r.info.status == "FINISHED"}
    first: dict[int, Any] = {}
    for run in sorted(children, key=lambda r: r.info.start_time):
        tags = run.data.tags
        if (run.info.status == "FINISHED" and tags.get("model") != BASELINE and tags.get("sweep_phase") != "search"
                and str(tags.get("seed", "")).lstrip("-").isdigit()):
            first.setdefault(int(tags["seed"]), run)
    configs = {}
    for seed, run in sorted(first.items()):
        config = yaml.safe_load(mlflow.artifacts.load_text(f"{run.info.artifact_uri.rstrip('/')}/config.yaml"))
        configs[int(config.get("seed", seed))] = config["data"]
    return configs, done


@dataclass
class BaselinePlan:
    """What ``run_baselines`` will do for a sweep: the seeds without a FINISHED baseline run (``todo``: seed → its
    ``data`` config) and, of those, the ones with no cached fit (``fresh``: to fit now)."""

    todo: dict[int, dict[str, Any]]
    fresh: list[int]
    cache_dir: Path | None


def plan_baselines(uri: str, experiment_id: str, parent_run_id: str, settings: Mapping[str, Any]) -> BaselinePlan:
    """The sweep's seeds, read once from its runs: those without a baseline run, and which of them have no cached
    fit."""
    configs, done = sweep_seeds(uri, experiment_id, parent_run_id)
    cache_dir = cache_location(settings)
    todo = {seed: data_cfg for seed, data_cfg in configs.items() if seed not in done}
    fresh = [seed for seed, data_cfg in todo.items()
             if cache_dir is None or not cache_path(cache_dir, data_cfg, seed, settings).is_file()]
    return BaselinePlan(todo, fresh, cache_dir)


def run_baselines(uri: str, experiment_id: str, parent_run_id: str, sweep_id: str,
                  settings: Mapping[str, Any], jobs: int = 1,
                  pool: Mapping[str, Any] | None = None) -> list[tuple[str, BaselineFit]]:
    """A baseline run for every seed of the sweep that has none yet; ``[(run id, fit)]`` in seed order. ``pool``:
    the ``joblib.Parallel`` arguments of the workers that fit and log the seeds (a sweep passes its launcher's, so
    that its warm workers do it: torch and torchmetrics, which score the fits, are imported there already); else
    with ``jobs`` > 1 and more than one fit to make, that many new processes (each fit is single-threaded, ~9 s per
    MEX-A3T seed); else this process."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    plan = plan_baselines(uri, experiment_id, parent_run_id, settings)
    tasks = [(uri, experiment_id, parent_run_id, sweep_id, seed, data_cfg, settings, plan.cache_dir)
             for seed, data_cfg in plan.todo.items()]
    if tasks and (pool or (jobs > 1 and len(plan.fresh) > 1)):
        from joblib import Parallel, delayed

        return Parallel(**(pool or {"n_jobs": min(jobs, len(tasks))}))(delayed(fit_and_log)(*task) for task in tasks)
    return [fit_and_log(*task) for task in tasks]


def fit_and_log(uri: str, experiment_id: str, parent_run_id: str, sweep_id: str, seed: int,
                data_cfg: Mapping[str, Any], settings: Mapping[str, Any],
                cache_dir: Path | None) -> tuple[str, BaselineFit]:
    """One seed: its fit (``cached_fit``) and its FINISHED run (``log_fit``); ``(run id, fit)``."""
    import tempfile

    fit = cached_fit(data_cfg, seed, settings, cache_dir)
    with tempfile.TemporaryDirectory(prefix="losslab-baseline-") as tmp:
        return log_fit(uri, experiment_id, parent_run_id, sweep_id, fit, data_cfg, settings, Path(tmp)), fit
