"""Statistics of a sweep over its seeds: mean ± std with t-intervals, paired tests against the reference, ranks.

These are the seeds-only statistics (the logged ``test/*`` metrics, one value per seed); the two-level
intervals that also resample the test examples are ``losslab.report.bootstrap``'s.
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


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean: mean ± t_{k-1} · sd / √k; ``(nan, nan)`` below 2 values."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size < 2:
        return math.nan, math.nan
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1)) * sd / math.sqrt(values.size)
    return mean - half, mean + half


def summarize(frame: pd.DataFrame, metrics: list[str], confidence: float = 0.95, group: str = "loss") -> pd.DataFrame:
    """One row per ``group`` value: ``n`` and, per metric, ``mean``, ``std`` (ddof 1) and the seeds-only
    t-interval ``ci_low_seeds``/``ci_high_seeds``."""
    rows = []
    for name, runs in frame.groupby(group, sort=False):
        row: dict[str, float | str | int] = {group: name, "n": len(runs)}
        for metric in metrics:
            values = runs[metric].to_numpy(dtype=float) if metric in runs else np.array([])
            values = values[~np.isnan(values)]
            row[f"{metric}|mean"] = float(values.mean()) if values.size else math.nan
            row[f"{metric}|std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
            row[f"{metric}|ci_low_seeds"], row[f"{metric}|ci_high_seeds"] = t_interval(values, confidence)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class Paired:
    """A loss against the reference over the seeds both have (the logged metrics)."""

    n: int
    mean_diff: float           # mean of (loss − reference)
    ci_low: float              # t-interval of the mean difference (seeds only)
    ci_high: float
    p_wilcoxon: float          # two-sided exact Wilcoxon signed-rank (nan below 2 pairs)
    rank_biserial: float       # matched-pairs rank-biserial correlation, −1…1
    cohen_dz: float            # mean diff / std of diffs
    wins: int
    ties: int
    losses: int
    identical: bool            # every difference exactly 0


def paired_comparison(values: pd.Series, reference: pd.Series, confidence: float = 0.95,
                      higher_better: bool = True) -> Paired:
    """Pair two per-seed series (index = seed) and compare them."""
    from scipy import stats

    both = pd.concat([values.rename("a"), reference.rename("b")], axis=1).dropna()
    diffs = (both["a"] - both["b"]).to_numpy(dtype=float)
    n = diffs.size
    if n == 0:
        return Paired(0, *(math.nan,) * 5, 0, 0, 0, False)
    better = (1.0 if higher_better else -1.0) * diffs
    identical = bool(np.all(diffs == 0))
    wins, ties, losses = int((better > 0).sum()), int((better == 0).sum()), int((better < 0).sum())
    low, high = t_interval(diffs, confidence)
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
    return Paired(n, float(diffs.mean()), low, high, p_value, rank_biserial, cohen_dz, wins, ties, losses, identical)


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon test can give with ``n`` pairs (2 / 2**n)."""
    return 2.0 / 2**n if n > 0 else math.nan


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
    scored = means.dropna(subset=[select_metric])
    best = scored.loc[scored.groupby(group)[select_metric].idxmax()]
    keep = set(zip(best[group], best["variant"]))
    # a group without the metric (the linear baseline has no best_val/*) keeps all its runs
    keep |= {(g, v) for g, v in zip(means[group], means["variant"]) if g not in set(scored[group])}
    return frame[[(g, v) in keep for g, v in zip(frame[group], frame["variant"])]]
