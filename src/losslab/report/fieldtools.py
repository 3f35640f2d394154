"""The field's own tools, called quietly: baycomp (Bayesian signed-rank test with a ROPE), deepsig's Almost
Stochastic Order (vectorised here, checked equal to ``deepsig.aso``), autorank (critical-difference diagram) and
statsmodels (Holm).

Each library is imported on first use. What they print on the way is switched off where it arises — autorank's
"forcing nonparametric tests" line (stdout of that call only) — never by muting warnings as a whole.
"""

from __future__ import annotations

import contextlib
import gc
import io
import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (``statsmodels.stats.multitest.multipletests``); nan stays nan."""
    from statsmodels.stats.multitest import multipletests

    values = np.asarray(pvalues, dtype=float)
    adjusted = np.full(values.shape, math.nan)
    valid = ~np.isnan(values)
    if valid.any():
        gc.freeze()  # its Holm branch calls gc.collect(): ~0.25 s per call over the report's heap, ~1 ms frozen
        try:
            adjusted[valid] = multipletests(values[valid], method="holm")[1]
        finally:
            gc.unfreeze()
    return adjusted.tolist()


def bayes_signed_rank(loss: np.ndarray, reference: np.ndarray, rope: float, higher_better: bool = True,
                      samples: int = 5000, seed: int = 0) -> tuple[float, float, float]:
    """baycomp's Bayesian signed-rank test over paired per-seed scores: ``(P(worse), P(rope), P(better))`` of
    ``loss`` against ``reference`` (``rope`` = 0: no equivalence region)."""
    from baycomp import SignedRankTest

    sign = 1.0 if higher_better else -1.0
    x, y = sign * np.asarray(reference, dtype=float), sign * np.asarray(loss, dtype=float)
    if x.size < 2:
        return math.nan, math.nan, math.nan
    rope = 0.0 if not math.isfinite(rope) else float(rope)
    left, middle, right = SignedRankTest.probs(x, y, rope=rope, nsamples=int(samples), random_state=int(seed))
    return float(left), float(middle), float(right)


def aso_epsilon(loss: np.ndarray, reference: np.ndarray, higher_better: bool = True, iterations: int = 200,
                seed: int = 0, confidence: float = 0.95, dt: float = 0.02) -> float:
    """ASO ε_min (Dror et al. 2019) for "``loss``'s scores (over seeds) stochastically dominate ``reference``'s": an
    upper bound on the violation of that order — near 0: ``loss`` almost stochastically dominates (deepsig suggests
    ε_min < 0.2); near 1: it does not (the reference may).

    The number ``deepsig.aso(loss, reference, confidence_level=confidence, num_bootstrap_iterations=iterations,
    dt=dt, seed=seed)`` returns (``tests/test_verdicts.py`` checks it), computed with every bootstrap iteration at
    once: deepsig evaluates its quantile functions one point at a time (~0.5 s per pair here, ~5 s per report).
    Unlike deepsig, the global NumPy RNG is left alone. ``dt`` = 0.02 (49 points): the quantile functions of a few
    seeds are step functions with few steps.
    """
    a, b = np.asarray(loss, dtype=float), np.asarray(reference, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan
    if not higher_better:
        a, b = -a, -b
    from scipy.stats import norm

    t = np.arange(dt, 1, dt)
    observed = float(_violation_ratios(a[None], b[None], t, dt)[0])
    draws_a, draws_b = np.empty((iterations, a.size)), np.empty((iterations, b.size))
    for i in range(iterations):  # deepsig's draws: iteration i reseeds with seed + i + 1, then a's uniforms, b's
        state = np.random.RandomState(seed + i + 1)
        draws_a[i], draws_b[i] = state.uniform(0, 1, a.size), state.uniform(0, 1, b.size)
    samples = _violation_ratios(_quantiles(np.sort(a)[None], draws_a), _quantiles(np.sort(b)[None], draws_b), t, dt)
    const = math.sqrt(a.size * b.size / (a.size + b.size))
    sigma = np.std(const * (samples - observed))
    return float(np.clip(observed - (1 / const) * sigma * norm.ppf(1 - confidence), 0, 1))


def _quantiles(sorted_scores: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The empirical quantile function of each row of ``sorted_scores`` at ``p`` (rows broadcast), as deepsig's:
    ``cdf[clip(ceil(n·p) − 1, 0, n − 1)]``."""
    n = sorted_scores.shape[1]
    index = np.clip(np.ceil(n * p).astype(int) - 1, 0, n - 1)
    return np.take_along_axis(np.broadcast_to(sorted_scores, (index.shape[0], n)), index, axis=1)


def _violation_ratios(a: np.ndarray, b: np.ndarray, t: np.ndarray, dt: float) -> np.ndarray:
    """Per row pair: the share of the squared Wasserstein distance where ``a``'s quantiles fall below ``b``'s
    (deepsig's ``compute_violation_ratio``, 0.5 when the two are equal)."""
    f = _quantiles(np.sort(a, axis=1), np.broadcast_to(t, (a.shape[0], t.size)))
    g = _quantiles(np.sort(b, axis=1), np.broadcast_to(t, (b.shape[0], t.size)))
    diff = g - f
    distance = np.sum(diff ** 2 * dt, axis=1)
    diff[f >= g] = 0
    violation = np.sum(diff[:, 1:] ** 2 * dt, axis=1)  # t = 0 is left out, as deepsig does
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(distance == 0, 0.5, violation / np.where(distance == 0, 1, distance))


@contextlib.contextmanager
def _stdout_off() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def critical_difference(scores: pd.DataFrame, higher_better: bool, path: Path, alpha: float = 0.05,
                        ) -> tuple[Path | None, str, dict[str, float]]:
    """autorank's Friedman + Nemenyi test and its critical-difference diagram of ``scores`` (rows = seeds,
    columns = losses; complete rows only). Returns the PNG (None when it cannot be drawn), one sentence for
    the report, and the mean ranks (1 = best)."""
    table = scores.dropna()
    if table.shape[1] < 3 or table.shape[0] < 5:
        return None, (f"No critical-difference diagram: autorank needs at least 5 seeds (rows) and 3 losses; "
                      f"this sweep has {table.shape[0]} complete seed(s) × {table.shape[1]} losses."), {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from autorank import autorank, plot_stats

    with _stdout_off():
        result = autorank(table.rename_axis(None, axis=1).reset_index(drop=True), alpha=alpha, verbose=False,
                          order="descending" if higher_better else "ascending", force_mode="nonparametric")
    ranks = {str(k): float(v) for k, v in result.rankdf["meanrank"].items()}
    width = max(6.0, 0.9 * table.shape[1])
    ax = plot_stats(result, allow_insignificant=True, width=width)
    fig = ax.figure
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)
    text = (f"Friedman test over {table.shape[0]} seeds × {table.shape[1]} losses: p = {result.pvalue:.4f}; "
            f"Nemenyi critical difference {result.cd:.2f} ranks (losses joined by a bar are not told apart at "
            f"α = {alpha}).")
    return path, text, ranks
