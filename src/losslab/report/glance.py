"""The report's first screen and its reading guide: the forest plot, the critical-difference diagram, one
verdict line per loss; then how to read them (rule, ROPE, intervals, where the spread comes from, power)
and the linear baseline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from losslab.report import verdicts
from losslab.report.render import Document, fmt
from losslab.training.baseline import BASELINE


def label(metric: str) -> str:
    """``test/f1_macro`` → macro-F1, ``test/f1_<class>`` → F1(<class>), else the metric's name."""
    name = metric.split("/", 1)[-1]
    if name == "f1_macro":
        return "macro-F1"
    if name.startswith("f1_"):
        return f"F1({name[3:]})"
    return name


def _one(row: pd.Series, metric: str) -> str:
    if row["verdict"] == "identical":
        return f"{label(metric)} identical"
    seeds_only = " seeds-only" if row["interval"] != "two-level" else ""
    return (f"{label(metric)} {row['mean_diff']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]{seeds_only} → "
            f"**{row['verdict']}**")


def first_screen(doc: Document, figures: Mapping[str, Path], cd_text: str, comparisons: Mapping[str, pd.DataFrame],
                 verdict_metrics: Sequence[str], reference: str, losses: Sequence[str]) -> None:
    """The forest plot, the critical-difference diagram and one verdict line per loss."""
    if "forest" in figures:
        doc.image(figures["forest"], "forest plot: every loss against the reference")
    if "cd" in figures:
        doc.image(figures["cd"], "critical-difference diagram")
    doc.paragraph(cd_text, note=True)
    doc.heading(f"Verdicts against {reference}")
    lines = []
    for loss in losses:
        if loss == reference:
            continue
        parts = [_one(comparisons[m].set_index("loss").loc[loss], m) for m in verdict_metrics
                 if len(comparisons.get(m, ())) and loss in set(comparisons[m]["loss"])]
        if parts and all(p.endswith("identical") for p in parts):
            lines.append(f"**{loss}**: identical to {reference} — the same test predictions on every seed")
        elif parts:
            lines.append(f"**{loss}**: " + "; ".join(parts))
    doc.bullets(lines)


def reading_guide(doc: Document, comparisons: Mapping[str, pd.DataFrame], verdict_metrics: Sequence[str],
                  s: Mapping[str, Any], seeds: int, test_size: int, test_sets: int) -> None:
    """The verdict rule, the ROPE, both intervals, the variance shares and the power of this sweep."""
    ropes = ", ".join(f"±{verdicts.rope_for(m, s.get('rope') or {}):g} {label(m)}" for m in verdict_metrics)
    doc.paragraph(f"Δ = loss − reference, mean over the {seeds} paired seeds; [lo, hi] is the 95% two-level interval. "
                  f"Two-level: {int(s['bootstrap'])} bootstrap replicates, each resampling the {test_size} test "
                  f"examples (the same resample for both losses and every seed, so the pairing holds example by "
                  f"example{'' if test_sets == 1 else f'; {test_sets} test sets, one per seed'}) and drawing the "
                  "seed mean from its Student-t (sd of the per-seed differences / √k, k − 1 degrees of freedom) — "
                  "so it is never narrower than the seeds-only t-interval (the thick bar in the plot), which "
                  "ignores that another sample of test tweets would give other scores. ROPE (region of practical "
                  f"equivalence, `sweep.report.rope`): {ropes}.", note=True)
    doc.paragraph(verdicts.RULE, note=True)
    primary = verdict_metrics[0]
    table = comparisons.get(primary, pd.DataFrame())
    live = table[~table["identical"].astype(bool)] if len(table) else table
    if len(live) and live["share_seeds"].notna().any():
        shares = live["share_seeds"].dropna()
        doc.paragraph(f"**Where the spread comes from** ({label(primary)}, Δ vs the reference): seeds "
                      f"{shares.median():.0%} of the variance, the test sample {1 - shares.median():.0%} (median over "
                      f"the losses; range {shares.min():.0%}–{shares.max():.0%} from seeds). Seeds: var of the seed "
                      "mean on the real test set (s²/k); test sample: var of the seed mean over test resamples, seeds "
                      "held fixed.")
    power = float(s.get("power", 0.8))
    texts = []
    for metric in verdict_metrics:
        rows = comparisons.get(metric, pd.DataFrame())
        rows = rows[~rows["identical"].astype(bool)] if len(rows) else rows
        if len(rows) and rows["mde"].notna().any():
            texts.append(f"{label(metric)} ≈ {rows['mde'].median():.4f}")
    if texts:
        doc.paragraph(f"**Power**: with {seeds} seeds and {test_size} test examples the smallest difference this "
                      f"sweep detects with {power:.0%} power (two-sided 5%) is {' and '.join(texts)} (median over "
                      f"the losses; {verdicts.power_factor(power):.2f} × the standard error of Δ). The seeds each "
                      "observed gap would need are in the section *Power and seeds needed*.")


def power_table(doc: Document, comparisons: Mapping[str, pd.DataFrame], verdict_metrics: Sequence[str],
                s: Mapping[str, Any]) -> None:
    doc.heading("Power and seeds needed")
    doc.paragraph(f"Per loss: the observed gap, the standard error of Δ (seeds and test sample), the smallest "
                  f"difference detectable with {float(s.get('power', 0.8)):.0%} power at this sweep's size, the share "
                  "of the variance from the seeds, and the seeds the observed gap would need to be detected (the "
                  "test sample's variance held fixed: \"not reachable with this test set\" when that alone is "
                  "larger than the gap allows).", note=True)
    for metric in verdict_metrics:
        table = comparisons.get(metric, pd.DataFrame())
        if table.empty:
            continue
        doc.heading(label(metric), level=3)
        doc.table(["loss", "gap", "SE", "detectable", "from seeds", "seeds needed", "verdict"],
                  [[r["loss"], f"{r['mean_diff']:+.4f}", fmt(r["se"]), fmt(r["mde"]),
                    "–" if math.isnan(r["share_seeds"]) else f"{r['share_seeds']:.0%}", r["seeds_needed"],
                    r["verdict"]] for _, r in table.iterrows()])


def baseline_section(doc: Document, selected: pd.DataFrame, summary: pd.DataFrame,
                     comparisons: Mapping[str, pd.DataFrame], verdict_metrics: Sequence[str], reference: str) -> None:
    """The linear baseline: its scores against the reference and the MLP's best, its choice of C, its cost."""
    doc.heading("Linear baseline")
    runs = selected[selected["model"] == BASELINE] if "model" in selected else selected.iloc[0:0]
    if runs.empty:
        doc.paragraph("This sweep has no linear-baseline run (it ran with `sweep.baseline.enabled=false`, the "
                      "baseline failed — the sweep's console says why — or the sweep predates it): the MLP's gain "
                      "over a linear model is not measured here.")
        return
    by_loss = summary.set_index("loss")
    mlp = summary[summary["loss"] != BASELINE]
    primary = verdict_metrics[0]
    best = mlp.sort_values(f"{primary}|mean", ascending=False).iloc[0]
    parts = []
    for metric in verdict_metrics:
        table = comparisons.get(metric, pd.DataFrame())
        if len(table) and BASELINE in set(table["loss"]):
            row = table.set_index("loss").loc[BASELINE]
            parts.append(f"{label(metric)} {by_loss.loc[BASELINE, f'{metric}|mean']:.4f} vs {reference} "
                         f"{by_loss.loc[reference, f'{metric}|mean']:.4f} (Δ {row['mean_diff']:+.4f}, "
                         f"{row['verdict']})")
    chosen = [f"seed {int(r['seed'])}: C={r.get('param:baseline.C', '?')}"
              + (f", {r['param:baseline.class_weight']}" if str(r.get("param:baseline.class_weight")) not in
                 ("None", "nan") else "") for _, r in runs.sort_values("seed").iterrows()]
    seconds = runs["baseline_seconds"].mean() if "baseline_seconds" in runs else math.nan
    mlp_fit = selected.loc[selected["model"] != BASELINE, "fit_seconds"].mean()
    doc.bullets([
        "TF-IDF word (1–2) + character (2–5) n-grams and scikit-learn's LogisticRegression, on the same seeded "
        "split as the trainings; C and the class weights chosen per seed on the validation split's macro-F1 (never "
        "test; the candidates and their validation scores are the run's `baseline/candidates.csv`).",
        "Scores: " + "; ".join(parts) + f". Best MLP loss on {label(primary)}: {best['loss']} "
        f"({best[f'{primary}|mean']:.4f}).",
        "Chosen: " + "; ".join(chosen) + ".",
        f"Cost: {seconds:.1f} s per seed on CPU (featurizing + every candidate's fit + scoring), against "
        f"{mlp_fit:.1f} s for one MLP training's fit.",
    ])


def prediction_check(observed: Mapping[str, np.ndarray], frame: pd.DataFrame, keys: Sequence[tuple[str, int]],
                     tolerance: float = 1e-4) -> str:
    """A note when a metric recomputed from the test predictions differs from the logged one."""
    index = {(row["loss"], int(row["seed"])): i for i, row in frame.reset_index(drop=True).iterrows()}
    worst = {}
    for metric, values in observed.items():
        if metric not in frame or metric == "test/nll":
            continue
        gaps = [abs(values[i] - frame[metric].iloc[index[key]]) for i, key in enumerate(keys) if key in index]
        gaps = [g for g in gaps if not math.isnan(g)]
        if gaps and max(gaps) > tolerance:
            worst[metric] = max(gaps)
    if not worst:
        return ""
    return ("Metrics recomputed from the runs' test_predictions.csv differ from the logged ones by up to "
            + ", ".join(f"{v:.4g} ({k})" for k, v in worst.items())
            + ": the two-level intervals come from the predictions, the means from the logged metrics.")
