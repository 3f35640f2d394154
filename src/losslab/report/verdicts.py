"""Verdicts: every loss against the reference on one metric — intervals, practical equivalence, power.

The rule (also written into the report, ``RULE``): with Δ = loss − reference (sign flipped for metrics
where lower is better, so that Δ > 0 always means "the loss is better"), its 95% interval [lo, hi]
(two-level where the test predictions allow it, else seeds-only) and the metric's region of practical
equivalence ±r (``sweep.report.rope``):

- ``identical``: every seed's test predictions equal the reference's (kl ≡ ce with one-hot targets);
- ``equivalent``: −r ≤ lo and hi ≤ r — the whole interval inside the ROPE;
- ``better``: lo > 0 and mean Δ > r — the interval excludes 0 and the estimate is a practical gain;
- ``worse``: hi < 0 and mean Δ < −r;
- ``undecided``: anything else (the interval straddles 0 or the ROPE's edge, or the gain is real but its
  estimate is inside the ROPE).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from losslab.report import bootstrap, fieldtools, stats

VERDICTS = ("better", "worse", "equivalent", "undecided", "identical")
RULE = ("Verdict rule, with Δ = loss − reference oriented so that Δ > 0 means the loss is better, [lo, hi] its 95% "
        "interval (two-level unless marked seeds-only) and ±r the metric's region of practical equivalence "
        "(ROPE): **identical** — every seed's test predictions equal the reference's; **equivalent** — "
        "−r ≤ lo and hi ≤ r (the whole interval inside the ROPE); **better** — lo > 0 and mean Δ > r (the "
        "interval excludes 0 and the estimate is a practical gain); **worse** — hi < 0 and mean Δ < −r; "
        "**undecided** — anything else.")


def rope_for(metric: str, ropes: Mapping[str, Any]) -> float:
    """The ROPE half-width of ``test/<name>``: ``ropes[name]``, per-class F1 ``ropes["f1_class"]``; nan if none."""
    name = metric.split("/", 1)[-1]
    if name in ropes:
        return float(ropes[name])
    if name.startswith("f1_") and name != "f1_macro" and "f1_class" in ropes:
        return float(ropes["f1_class"])
    return math.nan


def verdict(mean: float, low: float, high: float, rope: float, higher_better: bool = True,
            identical: bool = False) -> str:
    """See the module docstring (a nan ROPE counts as 0: no equivalence, better/worse by the interval alone)."""
    if identical:
        return "identical"
    if any(math.isnan(v) for v in (mean, low, high)):
        return "undecided"
    if not higher_better:
        mean, low, high = -mean, -high, -low
    r = 0.0 if math.isnan(rope) else rope
    if r > 0 and -r <= low and high <= r:
        return "equivalent"
    if low > 0 and mean > r:
        return "better"
    if high < 0 and mean < -r:
        return "worse"
    return "undecided"


def power_factor(power: float = 0.8, alpha: float = 0.05) -> float:
    """z_{1−α/2} + z_power: a true gap this many standard errors wide is found with probability ``power``."""
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2) + norm.ppf(power))


def seeds_needed(gap: float, s: float, var_test: float, power: float = 0.8, alpha: float = 0.05) -> str:
    """Seeds for ``gap`` to be detected (two-sided α, ``power``) when the seed mean's variance is s²/k and the test
    sample adds ``var_test`` (held fixed: conservative, it shrinks a little with more seeds)."""
    if any(math.isnan(v) for v in (gap, s)) or gap == 0:
        return "–"
    target = (abs(gap) / power_factor(power, alpha)) ** 2
    var_test = 0.0 if math.isnan(var_test) else var_test
    if target <= var_test:
        return "not reachable with this test set"
    return str(max(2, math.ceil(s * s / (target - var_test))))


def per_seed(frame: pd.DataFrame, loss: str, metric: str) -> pd.Series:
    if metric not in frame:
        return pd.Series()
    return frame.loc[frame["loss"] == loss, ["seed", metric]].groupby("seed")[metric].mean()  # 2 columns, not all


def compare(frame: pd.DataFrame, reps: bootstrap.Replicates | None, losses: Sequence[str], reference: str,
            metric: str, s: Mapping[str, Any], identical: Mapping[str, bool], tests: bool = False) -> pd.DataFrame:
    """One row per loss (reference excluded) on ``metric``: Δ, both intervals, verdict, power; with ``tests`` also
    baycomp's and deepsig's (slow: the report runs them on the verdict metrics only)."""
    higher = stats.higher_is_better(metric)
    confidence, seed = float(s["confidence"]), int(s["rng_seed"])
    rope = rope_for(metric, s.get("rope") or {})
    factor = power_factor(float(s.get("power", 0.8)), 1 - confidence)
    rows = []
    for loss in [x for x in losses if x != reference]:
        mine, theirs = per_seed(frame, loss, metric), per_seed(frame, reference, metric)
        paired = stats.paired_comparison(mine, theirs, confidence, higher)
        both = pd.concat([mine.rename("a"), theirs.rename("b")], axis=1).dropna()
        same = bool(identical.get(loss, False))
        interval = (bootstrap.paired(reps, metric, loss, reference, confidence, seed)
                    if reps is not None and metric in reps.values and reps.rows(loss) and reps.rows(reference)
                    else None)
        if interval is not None and interval.k >= 1 and not math.isnan(interval.low):
            low, high, kind = interval.low, interval.high, "two-level"
            se, var_test, share, spread = interval.se, interval.var_test, interval.share_seeds, interval.s
            p_boot = interval.p_value if not same else 1.0
        else:
            low, high, kind = paired.ci_low, paired.ci_high, "seeds only"
            spread = float((both["a"] - both["b"]).std(ddof=1)) if len(both) > 1 else math.nan
            se, var_test, share, p_boot = spread / math.sqrt(max(len(both), 1)), math.nan, math.nan, math.nan
        worse, in_rope, better, eps = (math.nan,) * 4
        if tests:
            worse, in_rope, better = fieldtools.bayes_signed_rank(
                both["a"].to_numpy(), both["b"].to_numpy(), rope, higher, int(s.get("bayes_samples", 5000)), seed)
            eps = 0.5 if same else fieldtools.aso_epsilon(both["a"].to_numpy(), both["b"].to_numpy(), higher,
                                                          int(s.get("aso_iterations", 200)), seed, confidence)
        rows.append({
            "loss": loss, "metric": metric, "reference": reference, "n": paired.n, "mean_diff": paired.mean_diff,
            "ci_low": low, "ci_high": high, "ci_low_seeds": paired.ci_low, "ci_high_seeds": paired.ci_high,
            "interval": kind, "rope": rope,
            "verdict": verdict(paired.mean_diff, low, high, rope, higher, same),
            "share_seeds": share, "se": se, "mde": factor * se,
            "seeds_needed": seeds_needed(paired.mean_diff, spread, var_test, float(s.get("power", 0.8)),
                                         1 - confidence) if not same else "–",
            "p_boot": p_boot, "p_wilcoxon": paired.p_wilcoxon, "p_bayes_worse": worse, "p_bayes_rope": in_rope,
            "p_bayes_better": better, "aso_eps": eps, "rank_biserial": paired.rank_biserial,
            "cohen_dz": paired.cohen_dz, "wins": paired.wins, "ties": paired.ties, "losses": paired.losses,
            "identical": same})
    table = pd.DataFrame(rows)
    if not table.empty:
        table.insert(table.columns.get_loc("p_boot") + 1, "p_boot_holm", fieldtools.holm(list(table["p_boot"])))
        table.insert(table.columns.get_loc("p_wilcoxon") + 1, "p_holm", fieldtools.holm(list(table["p_wilcoxon"])))
    return table
