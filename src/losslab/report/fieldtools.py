"""The field's own tools, called quietly: baycomp (Bayesian signed-rank test with a ROPE), deepsig (Almost
Stochastic Order), autorank (critical-difference diagram) and statsmodels (Holm).

Each library is imported on first use. What they print or warn on the way is switched off where it
arises — autorank's "forcing nonparametric tests" line (stdout of that call only), deepsig's
"Division by zero encountered in violation ratio" warning (equal score sets), its tqdm bars
(``show_progress=False``) and the joblib pickler it swaps in at import (restored) — never by muting
warnings as a whole.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

_ASO_WARNING = r"Division by zero encountered in violation ratio"


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (``statsmodels.stats.multitest.multipletests``); nan stays nan."""
    from statsmodels.stats.multitest import multipletests

    values = np.asarray(pvalues, dtype=float)
    adjusted = np.full(values.shape, math.nan)
    valid = ~np.isnan(values)
    if valid.any():
        adjusted[valid] = multipletests(values[valid], method="holm")[1]
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


_DEEPSIG: list[Any] = []


def _deepsig() -> Any:
    """``import deepsig`` without its side effect on joblib (it makes dill loky's pickler at import)."""
    if not _DEEPSIG:
        from joblib.externals.loky.backend import reduction

        before = reduction.get_loky_pickler_name()
        try:
            import deepsig
        finally:
            reduction.set_loky_pickler(before)
        _DEEPSIG.append(deepsig)
    return _DEEPSIG[0]


def aso_epsilon(loss: np.ndarray, reference: np.ndarray, higher_better: bool = True, iterations: int = 200,
                seed: int = 0, confidence: float = 0.95) -> float:
    """deepsig's ASO ε_min for "``loss``'s scores (over seeds) stochastically dominate ``reference``'s": an upper
    bound on the violation of that order — near 0: ``loss`` almost stochastically dominates (deepsig suggests
    ε_min < 0.2); near 1: it does not (the reference may)."""
    a, b = np.asarray(loss, dtype=float), np.asarray(reference, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan
    if not higher_better:
        a, b = -a, -b
    deepsig = _deepsig()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_ASO_WARNING, category=UserWarning)
        # dt = 0.02 (49 points): the quantile functions of a few seeds are step functions with few steps
        return float(deepsig.aso(a, b, confidence_level=confidence, num_bootstrap_iterations=int(iterations),
                                 dt=0.02, show_progress=False, seed=int(seed)))


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
