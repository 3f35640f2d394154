"""Statistics of a sweep: mean ± std with bootstrap intervals (``scipy.stats.bootstrap``, BCa), paired tests
against a baseline, ranks.

Every function takes plain arrays / frames and a ``numpy.random.Generator`` so the same store
always gives the same report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Metrics where smaller is better (everything else: larger is better).
LOWER_IS_BETTER = ("test/ece", "test/nll", "test/loss", "fit_seconds")


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def bootstrap_mean(values: np.ndarray, rng: np.random.Generator, resamples: int = 10000,
                   confidence: float = 0.95) -> tuple[float, float, np.ndarray]:
    """``scipy.stats.bootstrap`` of the mean (resampling the seeds): the BCa interval and the resampled means.

    Values that are all equal give the point interval ``(v, v)``; where BCa is undefined for another
    reason (a degenerate jackknife), the percentile interval of the same resamples is used.
    ``(nan, nan, [])`` below 2 values.
    """
    import warnings

    from scipy import stats

    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size < 2:
        return math.nan, math.nan, np.array([])
    if np.all(values == values[0]):
        return float(values[0]), float(values[0]), np.full(resamples, values[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (RuntimeWarning, stats.DegenerateDataWarning))
        result = stats.bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                 method="BCa", vectorized=True, rng=rng)
        low, high = result.confidence_interval
        if math.isnan(low) or math.isnan(high):
            result = stats.bootstrap((values,), np.mean, n_resamples=0, confidence_level=confidence,
                                     method="percentile", vectorized=True, bootstrap_result=result, rng=rng)
            low, high = result.confidence_interval
    return float(low), float(high), np.asarray(result.bootstrap_distribution)


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, resamples: int = 10000,
                 confidence: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap interval of the mean over seeds (``bootstrap_mean``); ``(nan, nan)`` below 2 values."""
    low, high, _ = bootstrap_mean(values, rng, resamples, confidence)
    return low, high


def summarize(frame: pd.DataFrame, metrics: list[str], rng: np.random.Generator, resamples: int = 10000,
              confidence: float = 0.95, group: str = "loss") -> pd.DataFrame:
    """One row per ``group`` value: ``n`` and, per metric, ``mean``, ``std`` (ddof 1), ``lo``, ``hi``."""
    rows = []
    for name, runs in frame.groupby(group, sort=False):
        row: dict[str, float | str | int] = {group: name, "n": len(runs)}
        for metric in metrics:
            values = runs[metric].to_numpy(dtype=float) if metric in runs else np.array([])
            values = values[~np.isnan(values)]
            row[f"{metric}|mean"] = float(values.mean()) if values.size else math.nan
            row[f"{metric}|std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
            row[f"{metric}|lo"], row[f"{metric}|hi"] = bootstrap_ci(values, rng, resamples, confidence)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class Paired:
    """A loss against the baseline over the seeds both have."""

    n: int
    mean_diff: float           # mean of (loss − baseline)
    ci_low: float
    ci_high: float
    p_wilcoxon: float          # two-sided exact Wilcoxon signed-rank (nan below 2 pairs)
    rank_biserial: float       # matched-pairs rank-biserial correlation, −1…1
    cohen_dz: float            # mean diff / std of diffs
    p_better: float            # share of bootstrap resamples where the loss beats the baseline
    wins: int
    ties: int
    losses: int
    identical: bool            # every difference exactly 0


def paired_comparison(values: pd.Series, baseline: pd.Series, rng: np.random.Generator, resamples: int = 10000,
                      confidence: float = 0.95, higher_better: bool = True) -> Paired:
    """Pair two per-seed series (index = seed) and compare them."""
    from scipy import stats

    both = pd.concat([values.rename("a"), baseline.rename("b")], axis=1).dropna()
    diffs = (both["a"] - both["b"]).to_numpy(dtype=float)
    n = diffs.size
    if n == 0:
        return Paired(0, *(math.nan,) * 6, 0, 0, 0, False)
    sign = 1.0 if higher_better else -1.0
    better = sign * diffs
    identical = bool(np.all(diffs == 0))
    wins, ties, losses = int((better > 0).sum()), int((better == 0).sum()), int((better < 0).sum())
    # the paired bootstrap: resample the per-seed differences (seeds stay paired)
    low, high, boot = bootstrap_mean(diffs, rng, resamples, confidence)
    boot = sign * boot
    p_better = float((boot > 0).mean() + 0.5 * (boot == 0).mean()) if boot.size else math.nan
    nonzero = diffs[diffs != 0]
    if identical:
        p_value, rank_biserial = 1.0, 0.0
    elif nonzero.size >= 1 and n >= 2:
        p_value = float(stats.wilcoxon(diffs, zero_method="wilcox", alternative="two-sided").pvalue)
        ranks = stats.rankdata(np.abs(nonzero))
        rank_biserial = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())
    else:
        p_value, rank_biserial = math.nan, math.nan
    std = diffs.std(ddof=1) if n > 1 else math.nan
    cohen_dz = float(diffs.mean() / std) if n > 1 and std > 0 else (0.0 if identical else math.nan)
    return Paired(n, float(diffs.mean()), low, high, p_value, rank_biserial, cohen_dz, p_better, wins, ties, losses,
                  identical)


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon test can give with ``n`` pairs (2 / 2**n)."""
    return 2.0 / 2**n if n > 0 else math.nan


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (nan stays nan)."""
    indexed = [(p, i) for i, p in enumerate(pvalues) if not math.isnan(p)]
    indexed.sort()
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    m = len(indexed)
    for k, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted


def rank_table(frame: pd.DataFrame, metric: str, group: str = "loss") -> tuple[pd.DataFrame, float]:
    """Per seed, rank the losses on ``metric`` (1 = best, ties averaged); mean rank per loss and the
    Friedman test's p-value over the seeds every loss has (nan with < 3 losses or < 2 seeds)."""
    from scipy import stats

    table = frame.pivot_table(index="seed", columns=group, values=metric, aggfunc="mean").dropna()
    if table.empty:
        return pd.DataFrame(columns=[group, "mean_rank", "best_on"]), math.nan
    ranks = table.rank(axis=1, ascending=not higher_is_better(metric), method="average")
    out = pd.DataFrame({group: ranks.columns, "mean_rank": ranks.mean().to_numpy(),
                        "best_on": (ranks == 1).sum().to_numpy()})
    p_value = math.nan
    if table.shape[1] >= 3 and table.shape[0] >= 2 and not np.allclose(table.to_numpy(), table.to_numpy()[:, :1]):
        p_value = float(stats.friedmanchisquare(*[table[c].to_numpy() for c in table.columns]).pvalue)
    return out.sort_values("mean_rank").reset_index(drop=True), p_value


def select_variants(frame: pd.DataFrame, select_metric: str, group: str = "loss") -> pd.DataFrame:
    """Per loss, keep the runs of the variant (hyperparameters) with the best mean ``select_metric``."""
    if frame["variant"].nunique() <= 1:
        return frame
    means = frame.groupby([group, "variant"])[select_metric].mean().reset_index()
    best = means.loc[means.groupby(group)[select_metric].idxmax()]
    keep = set(zip(best[group], best["variant"]))
    return frame[[(g, v) in keep for g, v in zip(frame[group], frame["variant"])]]
