"""The two-level paired bootstrap: uncertainty from the seeds *and* from the test sample, vectorised.

Test level (nonparametric): replicate ``b`` resamples the ``n`` test examples with replacement, as a
weight vector ``W[b]`` (how often each example is drawn). One ``W`` is drawn per replicate and shared
by every run evaluated on that test set — both losses of a comparison and every seed — so the
comparison stays paired example by example. A run's confusion matrix on the resample is
``W @ onehot(label * C + predicted)`` and its summed NLL ``W @ -log p(label)``: accuracy, every
per-class F1, macro-F1 and NLL are exact functions of those, for all replicates and runs in one
matrix product.

Seed level: the runs are paired by seed (same split, same initialisation seed). With a handful of
seeds, resampling them with replacement gives intervals that are too narrow (the bootstrap
variance of a mean of ``k`` values is ``(k-1)/k`` of the unbiased one, and its percentiles are
normal ones where Student's t belongs). So by default (``seed_level="t"``) the seed level of
replicate ``b`` is Student's t: ``Δ* = mean_seeds D(W_b) + s/√k · T``, ``T ~ t(k-1)``, with ``s`` the sd
of the per-seed differences on the real test set, and the two-level distribution is the mixture of
those t's over the replicates — its quantiles and its mass below 0 are computed exactly (no draws of
``T``). Without test-sample noise this is exactly the seeds-only t-interval; test-sample noise can
only widen it (Anderson's inequality: shifting a symmetric unimodal t never raises the mass of an
interval of a given length above the centred one's), so the two-level interval is never narrower
than the seeds-only one. ``seed_level="resample"`` resamples the seeds with replacement instead.

Variance shares: ``V_seeds = s²/k`` (the seed mean's variance on the real test set) and
``V_test = var_b mean_seeds D(W_b)`` (the test sample's, seeds held fixed).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

NLL_FLOOR = 1e-12  # as losslab.model.metrics.NegativeLogLikelihood


@dataclass
class RunPredictions:
    """One run's test predictions (``evaluation/test_predictions.csv``)."""

    labels: np.ndarray
    predicted: np.ndarray
    probs: np.ndarray
    class_names: list[str]

    def test_set(self) -> str:
        """Which test set the run was scored on: a digest of its labels in order."""
        return hashlib.sha1(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes()).hexdigest()

    def same_as(self, other: "RunPredictions") -> bool:
        return (np.array_equal(self.labels, other.labels) and np.array_equal(self.predicted, other.predicted)
                and np.array_equal(self.probs, other.probs))


def metric_names(class_keys: Sequence[str]) -> list[str]:
    """The metrics the two-level bootstrap gives (``class_keys`` as in ``test/f1_<key>``)."""
    return ["test/f1_macro", *(f"test/f1_{k}" for k in class_keys), "test/accuracy", "test/nll"]


def metrics_from_counts(confusion: np.ndarray, nll_sum: np.ndarray, class_keys: Sequence[str]) -> dict[str, np.ndarray]:
    """``confusion[..., true, predicted]`` (weighted counts) and the summed NLL → the metrics, elementwise.

    F1 of a class is 2TP / (2TP + FP + FN), 0 when that is 0/0; macro-F1 averages the classes that
    occur (in the labels or the predictions), as torchmetrics does for the logged ``test/f1_macro``.
    """
    total = confusion.sum(axis=(-2, -1))
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    fp = confusion.sum(axis=-2) - tp
    fn = confusion.sum(axis=-1) - tp
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)
        present = denominator > 0
        out = {"test/f1_macro": (f1 * present).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)}
        out.update({f"test/f1_{k}": f1[..., i] for i, k in enumerate(class_keys)})
        out["test/accuracy"] = tp.sum(axis=-1) / np.maximum(total, 1)
        out["test/nll"] = nll_sum / np.maximum(total, 1)
    return out


def _design(run: RunPredictions, classes: int) -> np.ndarray:
    """``n × (C² + 1)``: one-hot of the (label, predicted) cell, then ``-log p(label)``."""
    n = run.labels.size
    cells = np.zeros((n, classes * classes + 1), dtype=np.float32)
    cells[np.arange(n), run.labels * classes + run.predicted] = 1.0
    picked = run.probs[np.arange(n), run.labels] if run.probs.size else np.full(n, np.nan)
    cells[:, -1] = -np.log(np.maximum(picked, NLL_FLOOR))
    return cells


def example_weights(n: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """``replicates × n`` multinomial counts: each row a resample of the ``n`` examples with replacement."""
    draws = rng.integers(0, n, size=(replicates, n)) + (np.arange(replicates) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=replicates * n).reshape(replicates, n).astype(np.float32)


@dataclass
class Replicates:
    """Per-run metric values: on the real test set (``observed[metric][run]``) and on each example
    resample (``values[metric][run, b]``); runs on one test set share every resample."""

    keys: list[tuple[str, int]]                 # (loss, seed) of each run, in row order
    observed: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    replicates: int
    seed_draws: dict[int, np.ndarray] = field(default_factory=dict)   # seed_level="resample": counts per k
    seed_level: str = "t"
    test_sets: int = 1

    def rows(self, loss: str) -> dict[int, int]:
        """``{seed: row}`` of ``loss``'s runs."""
        return {seed: i for i, (name, seed) in enumerate(self.keys) if name == loss}


def replicate(runs: dict[tuple[str, int], RunPredictions], class_keys: Sequence[str], replicates: int,
              rng: np.random.Generator, seed_level: str = "t", chunk: int = 500) -> Replicates:
    """Draw the test-level resamples (one per replicate and test set) and score every run on them."""
    keys = sorted(runs)
    classes = len(class_keys)
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(runs[key].test_set(), []).append(i)
    names = metric_names(class_keys)
    values = {m: np.empty((len(keys), replicates)) for m in names}
    observed = {m: np.empty(len(keys)) for m in names}
    designs = {g: np.concatenate([_design(runs[keys[i]], classes) for i in rows], axis=1) for g, rows in groups.items()}
    width = classes * classes + 1
    for group, rows in groups.items():
        design = designs[group]
        totals = design.sum(axis=0, dtype=np.float64).reshape(len(rows), width)
        for metric, value in _score(totals, classes, class_keys).items():
            observed[metric][rows] = value
    for start in range(0, replicates, chunk):
        size = min(chunk, replicates - start)
        for group, rows in groups.items():
            design = designs[group]
            counts = (example_weights(design.shape[0], size, rng) @ design).astype(np.float64)
            scored = _score(counts.reshape(size, len(rows), width), classes, class_keys)
            for metric, value in scored.items():
                values[metric][rows, start:start + size] = value.T
    return Replicates(keys, observed, values, replicates, seed_level=seed_level, test_sets=len(groups))


def _score(counts: np.ndarray, classes: int, class_keys: Sequence[str]) -> dict[str, np.ndarray]:
    confusion = counts[..., :-1].reshape(*counts.shape[:-1], classes, classes)
    return metrics_from_counts(confusion, counts[..., -1], class_keys)


@dataclass
class Interval:
    """The two-level interval of a mean (or a mean paired difference) and its variance components."""

    k: int                   # seeds
    center: float            # the mean over seeds on the real test set, from the predictions
    low: float
    high: float
    se: float                # sqrt(V_seeds + V_test)
    var_seeds: float         # s² / k
    var_test: float          # the seed mean's variance over test resamples
    s: float                 # sd over seeds (of the values or of the paired differences)
    p_value: float           # two-sided: twice the smaller mass of the two-level distribution on either side of 0

    @property
    def share_seeds(self) -> float:
        total = self.var_seeds + self.var_test
        return self.var_seeds / total if total > 0 else math.nan


def _seed_counts(reps: Replicates, k: int, rng_seed: int) -> np.ndarray:
    if k not in reps.seed_draws:
        rng = np.random.default_rng([rng_seed, k])
        reps.seed_draws[k] = rng.multinomial(k, np.full(k, 1.0 / k), size=reps.replicates).astype(float)
    return reps.seed_draws[k]


def mixture_quantile(centers: np.ndarray, scale: float, df: int, q: float) -> float:
    """The ``q`` quantile of the equal mixture of ``centers + scale · t(df)``."""
    from scipy import optimize, special, stats

    inner = float(stats.t.ppf(q, df)) * scale
    low, high = float(centers.min()) + inner, float(centers.max()) + inner  # F(low) <= q <= F(high)
    if high - low < 1e-15:
        return low

    def excess(x: float, points: np.ndarray = centers) -> float:
        return float(special.stdtr(df, (x - points) / scale).mean()) - q  # = stats.t.cdf, without its checks

    # Each evaluation over every center costs ~3 ms (B = 10k): bracket the root tightly first from 1 in 16 of the
    # sorted centers, then let brentq finish on all of them (same root, to xtol; about half the evaluations).
    sample = np.sort(centers)[::16]
    if len(sample) >= 64:
        guess = optimize.brentq(excess, low, high, args=(sample,), xtol=1e-7)
        step = (high - low) / len(sample)
        for _ in range(6):
            try:  # brentq refuses a bracket without a sign change: then a wider one
                return float(optimize.brentq(excess, max(low, guess - step), min(high, guess + step), xtol=1e-9))
            except ValueError:
                step *= 4
    return float(optimize.brentq(excess, low, high, xtol=1e-9))


def two_level(per_seed: np.ndarray, observed: np.ndarray, reps: Replicates, confidence: float = 0.95,
              rng_seed: int = 0) -> Interval:
    """``per_seed``: ``k × B`` values (or paired differences) on the resamples; ``observed``: the ``k``
    values on the real test set. The two-level interval of their mean (module docstring)."""
    from scipy import stats

    k = per_seed.shape[0]
    if k == 0:
        return Interval(0, *(math.nan,) * 7)
    test_only = per_seed.mean(axis=0)
    s = float(observed.std(ddof=1)) if k > 1 else math.nan
    var_seeds = s * s / k if k > 1 else math.nan
    alpha = (1 - confidence) / 2
    if k > 1 and reps.seed_level == "t" and s > 0:
        scale = s / math.sqrt(k)
        low, high = (mixture_quantile(test_only, scale, k - 1, q) for q in (alpha, 1 - alpha))
        below = float(stats.t.cdf(-test_only / scale, k - 1).mean())
        p_value = min(1.0, 2 * min(below, 1 - below))
    else:  # one seed (only the test sample varies), seeds that all agree, or the seeds resampled
        star = (_seed_counts(reps, k, rng_seed) * per_seed.T).sum(axis=1) / k if reps.seed_level == "resample" \
            else test_only
        low, high = (float(v) for v in np.quantile(star, [alpha, 1 - alpha]))
        p_value = float(min(1.0, 2 * min((star <= 0).mean(), (star >= 0).mean())))
    var_test = float(test_only.var(ddof=1))
    se = math.sqrt(var_test + (var_seeds if k > 1 else 0.0))
    return Interval(k, float(observed.mean()), float(low), float(high), se, var_seeds, var_test, s, p_value)


def paired(reps: Replicates, metric: str, loss: str, reference: str, confidence: float = 0.95,
           rng_seed: int = 0) -> Interval:
    """``loss − reference`` on the seeds both have predictions for."""
    mine, theirs = reps.rows(loss), reps.rows(reference)
    seeds = sorted(set(mine) & set(theirs))
    a, b = [mine[s] for s in seeds], [theirs[s] for s in seeds]
    values, observed = reps.values[metric], reps.observed[metric]
    return two_level(values[a] - values[b], observed[a] - observed[b], reps, confidence, rng_seed)


def single(reps: Replicates, metric: str, loss: str, confidence: float = 0.95, rng_seed: int = 0) -> Interval:
    """One loss's mean over its seeds."""
    rows = list(reps.rows(loss).values())
    return two_level(reps.values[metric][rows], reps.observed[metric][rows], reps, confidence, rng_seed)
