"""Seed ensembles at the end of a sweep: per loss, its seeds' models as ONE model that averages probabilities.

For each loss (its best variant by ``sweep.report.select_metric`` in grid/search sweeps) with two or
more FINISHED seeds, one child run of the sweep's parent, tagged ``ensemble=seeds`` and
``sweep_role=ensemble``: ``test/*`` of the mean of the seeds' test probabilities (their
``evaluation/test_predictions.csv``), ``test_tuned/*`` under a rule chosen on validation only, and ``model/``
= an ensemble bundle (each member keeps its own featurizer: a seed's vocabulary is fitted on its own split).
The report's per-seed comparisons and the champion leave these runs out (``report.collect``,
``serving.registry.best_child``).

Validation. Each seed has its own validation split (the split is seeded), so the members' validation
rows differ and their probabilities cannot be averaged row by row over all members. The rule is chosen
on out-of-bag (OOB) predictions instead: every row of any member's validation split gets the mean
probability of the members that held it out (that row in its validation split and its text not in its
training split), from the ``evaluation/val_predictions.csv`` each training saves; rows are matched by
(normalised text, label) after rebuilding each seed's split from its logged ``config.yaml``. No member
scores a row it trained on, and the test split chooses nothing. The OOB mean averages fewer members per
row (about ``k · val_fraction``, at least 1) than the full ensemble, so its probabilities are a little
less smoothed than the ensemble's; ``val/oob_members_mean`` says how many.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

ENSEMBLE_TAG, SEEDS, ROLE = "ensemble", "seeds", "ensemble"


@dataclass
class Member:
    """One seed's training run as an ensemble member."""

    run: Any
    seed: int
    test_y: np.ndarray
    test_probs: np.ndarray
    val_keys: list[tuple[str, int]]
    val_probs: np.ndarray
    train_texts: set[str]
    class_names: list[str]
    config: dict[str, Any]


def seed_groups(uri: str, sweep_id: str, experiment_id: str, select_metric: str) -> dict[str, list[Any]]:
    """``{loss: [run ids]}``: FINISHED single-model trainings (no search trials, baseline or k-fold ensembles) of
    each loss's selected variant, one run per seed, for losses with at least two seeds."""
    from losslab.report import collect, stats
    from losslab.training.baseline import BASELINE

    frame = collect.load_sweep(uri, sweep_id, experiment_id=experiment_id).runs
    runs = frame[(frame["status"] == "FINISHED") & (frame["phase"] != "search") & (frame["model"] != BASELINE)
                 & frame["seed"].notna()]
    if "param:ensemble.folds" in runs:  # a k-fold run is an ensemble already: not a member
        runs = runs[runs["param:ensemble.folds"].isna() | (runs["param:ensemble.folds"] == "0")]
    if runs.empty:
        return {}
    runs = stats.select_variants(runs, select_metric) if select_metric in runs else runs
    groups = {}
    for loss, group in runs.groupby("loss", sort=True):
        one_per_seed = group.sort_values("start_time").drop_duplicates("seed", keep="last")
        if len(one_per_seed) >= 2:
            groups[str(loss)] = list(one_per_seed["run_id"])
    return groups


def _text(artifact_uri: str, path: str) -> str:
    import mlflow.artifacts

    return mlflow.artifacts.load_text(f"{artifact_uri.rstrip('/')}/{path}")


_SPLITS: dict[str, Any] = {}


def _split_of(data_cfg: Mapping[str, Any], seed: int) -> Any:
    """The seed's dataset exactly as its training built it (memoised: the losses of a sweep share seeds)."""
    from omegaconf import OmegaConf

    from losslab.data.dataset import load_dataset

    key = json.dumps([data_cfg, seed], sort_keys=True, default=str)
    if key not in _SPLITS:
        _SPLITS[key] = load_dataset(OmegaConf.create(dict(data_cfg)), int(seed))
    return _SPLITS[key]


def load_member(run: Any) -> Member:
    """A member's test and validation predictions, its validation rows as (text, label) keys, its training texts."""
    import yaml

    uri = run.info.artifact_uri
    config = yaml.safe_load(_text(uri, "config.yaml"))  # its operating_point settings choose the ensemble's rule
    seed = int(config["seed"])
    dataset = _split_of(config["data"], seed)
    test = pd.read_csv(io.StringIO(_text(uri, "evaluation/test_predictions.csv")))
    val = pd.read_csv(io.StringIO(_text(uri, "evaluation/val_predictions.csv")))
    columns = [c for c in test.columns if c.startswith("p_")]
    if len(val) != len(dataset.val) or not np.array_equal(val["label"].to_numpy(), dataset.val.y):
        raise ValueError(f"run {run.info.run_id}: its val_predictions.csv does not match seed {seed}'s rebuilt "
                         "validation split (the data changed since?)")
    return Member(run, seed, test["label"].to_numpy(np.int64, copy=True), test[columns].to_numpy(np.float32, copy=True),
                  list(zip(dataset.val.texts, dataset.val.y.tolist())), val[columns].to_numpy(np.float32, copy=True),
                  set(dataset.train.texts), [c[2:] for c in columns], config)


def out_of_bag(members: list[Member]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probabilities, labels, members per row)`` of every validation row of any member, averaged over the
    members that held it out (see the module docstring)."""
    pooled: dict[tuple[str, int], list[np.ndarray]] = {}
    for member in members:
        seen: set[tuple[str, int]] = set()
        for key, probs in zip(member.val_keys, member.val_probs):
            if key in seen or key[0] in member.train_texts:
                continue  # a duplicate row, or a text this member also trained on
            seen.add(key)
            pooled.setdefault(key, []).append(probs)
    keys = list(pooled)
    probs = np.array([np.mean(pooled[k], axis=0) for k in keys], dtype=np.float32)
    return probs, np.array([k[1] for k in keys], dtype=np.int64), np.array([len(pooled[k]) for k in keys])


def build_one(uri: str, experiment_id: str, parent_run_id: str, sweep_id: str, loss: str, runs: list[Any],
              workdir: Path) -> tuple[str, dict[str, float]]:
    """The seed ensemble of ``runs`` (one loss) as a FINISHED child run of the parent; ``(run id, metrics)``."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from losslab.serving.bundle import combine_bundles, download_bundle, mean_probabilities
    from losslab.tracking.runs import git_state
    from losslab.training.ensemble import ensemble_metrics, tune_rule
    from losslab.training.evaluation import write_predictions, write_test_artifacts

    members = sorted((load_member(r) for r in runs), key=lambda m: m.seed)
    first = members[0]
    if any(not np.array_equal(m.test_y, first.test_y) for m in members):
        raise ValueError("the seeds' test splits differ (data.test_fraction splits by seed): nothing to average")
    oob, oob_y, counts = out_of_bag(members)
    config = OmegaConf.create(first.config)
    rule = tune_rule(config, oob, oob_y, first.class_names)  # validation (out-of-bag) only
    probs = mean_probabilities([m.test_probs for m in members])
    metrics = ensemble_metrics(probs, first.test_y, rule, oob, oob_y, first.class_names)
    metrics |= {"val/oob_rows": float(len(oob_y)), "val/oob_members_mean": float(counts.mean())}
    seeds = [m.seed for m in members]
    client = MlflowClient(uri)
    commit, dirty = git_state()
    tags = {"mlflow.parentRunId": parent_run_id, "sweep_id": sweep_id, "loss": loss, ENSEMBLE_TAG: SEEDS,
            "sweep_role": ROLE, "ensemble_members": str(len(members)), "ensemble_seeds": ",".join(map(str, seeds)),
            "ensemble_member_runs": ",".join(m.run.info.run_id for m in members),
            **{k: first.run.data.tags.get(k, "") for k in ("dataset_md5", "dataset")},
            "git_commit": commit, "git_dirty": str(dirty).lower()}
    run_id = client.create_run(experiment_id, run_name=f"{loss}-seeds{len(members)}", tags=tags).info.run_id
    try:
        shared = {k: v for k, v in first.run.data.params.items() if k != "seed" and not k.startswith("dataset.")
                  and all(m.run.data.params.get(k) == v for m in members)}
        params = shared | {"ensemble.members": str(len(members)), "ensemble.seeds": ",".join(map(str, seeds)),
                           "ensemble.validation": "out-of-bag"}
        batch = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(batch), 100):
            client.log_batch(run_id, params=batch[start:start + 100])
        client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items() if np.isfinite(v)],
                         tags=[RunTag("best_epoch", ",".join(m.run.data.tags.get("best_epoch", "?") for m in members))])
        folder = workdir / loss
        png = bool(OmegaConf.select(config, "tracking.confusion_matrix_png", default=True))  # as its members
        write_test_artifacts(folder / "evaluation", probs, first.test_y, first.class_names,
                             title=f"{loss}: {len(members)}-seed ensemble — test", rule=rule, png=png)
        write_predictions(folder / "evaluation" / "val_predictions.csv", oob, oob_y, first.class_names)
        combine_bundles([download_bundle(m.run.info.run_id, uri) for m in members], folder / "model", rule,
                        {"ensemble": SEEDS, "seeds": seeds, "member_runs": [m.run.info.run_id for m in members]})
        client.log_artifacts(run_id, str(folder / "evaluation"), "evaluation")
        client.log_artifacts(run_id, str(folder / "model"), "model")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id, metrics


def ensemble_line(uri: str, experiment_id: str, parent_run_id: str, sweep_id: str, loss: str, run_ids: list[str],
                  primary_metric: str) -> tuple[bool, str]:
    """Build ``loss``'s seed ensemble from its seeds' runs; ``(True, console line)``, or ``(False, warning)`` when it
    cannot be built. Runs in the sweep's process or in one of its joblib workers."""
    import os

    from mlflow.tracking import MlflowClient

    from losslab.sweeps.progress import metric_label

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars on the sweep console
    client = MlflowClient(uri)
    runs = [client.get_run(r) for r in run_ids]
    try:
        with tempfile.TemporaryDirectory(prefix="losslab-ensembles-") as tmp:
            run_id, metrics = build_one(uri, experiment_id, parent_run_id, sweep_id, loss, runs, Path(tmp))
    except Exception as exc:  # noqa: BLE001 - the trainings and the report stand without it
        return False, f"warning: no seed ensemble for {loss}: {type(exc).__name__}: {exc}"
    seeds_mean = float(np.mean([r.data.metrics.get(primary_metric, np.nan) for r in runs]))
    return True, (f"seed ensemble {loss}: {len(runs)} seeds, {metric_label(primary_metric)} "
                  f"{metrics.get(primary_metric, float('nan')):.4f} (seeds' mean {seeds_mean:.4f}); run {run_id}")


def build_seed_ensembles(uri: str, experiment_id: str, parent_run_id: str, sweep_id: str,
                         select_metric: str = "best_val/f1_macro", primary_metric: str = "test/f1_macro",
                         pool: Mapping[str, Any] | None = None) -> int:
    """A seed ensemble per loss of the sweep (one console line each, in loss order); a loss that cannot have one is
    a warning. ``pool``: ``joblib.Parallel`` arguments to build the losses' ensembles in parallel (the sweep's own
    workers, ``sweeps.jobs.worker_pool``); None: one after the other here. Returns how many were logged."""
    from losslab.sweeps.progress import duration

    started = time.perf_counter()
    groups = seed_groups(uri, sweep_id, experiment_id, select_metric)
    args = [(uri, experiment_id, parent_run_id, sweep_id, loss, run_ids, primary_metric)
            for loss, run_ids in groups.items()]
    if pool and len(args) > 1:
        from joblib import Parallel, delayed

        results = Parallel(**{**pool, "return_as": "generator"})(delayed(ensemble_line)(*a) for a in args)
    else:
        results = (ensemble_line(*a) for a in args)
    done = 0
    for ok, line in results:  # in loss order, each as soon as it (and those before it) is built
        (sys.stdout if ok else sys.stderr).write(line + "\n")  # one write: other threads may print too
        (sys.stdout if ok else sys.stderr).flush()
        done += ok
    if done:
        print(f"seed ensembles: {done} in {duration(time.perf_counter() - started)}", flush=True)
    return done
