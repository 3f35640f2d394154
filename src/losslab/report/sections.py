"""The report's sections, each written into a ``Document`` from the sweep's runs and statistics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from losslab.report import collect, stats
from losslab.report.render import Document, fmt


def per_seed(frame: pd.DataFrame, loss: str, metric: str) -> pd.Series:
    return frame.loc[frame["loss"] == loss].groupby("seed")[metric].mean() if metric in frame else pd.Series()


def compare_all(frame: pd.DataFrame, losses: list[str], baseline: str, metric: str, rng: np.random.Generator,
                s: Mapping[str, Any]) -> pd.DataFrame:
    """Every loss against ``baseline`` on ``metric``, paired by seed; Holm-adjusted Wilcoxon p-values."""
    rows = []
    for loss in [x for x in losses if x != baseline]:
        result = stats.paired_comparison(per_seed(frame, loss, metric), per_seed(frame, baseline, metric), rng,
                                         int(s["bootstrap"]), float(s["confidence"]), stats.higher_is_better(metric))
        rows.append({"loss": loss, **vars(result)})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = stats.holm(list(table["p_wilcoxon"]))
    return table


def cell(row: pd.Series, metric: str, ci: bool = True) -> str:
    mean, std, low, high = (row[f"{metric}|{k}"] for k in ("mean", "std", "lo", "hi"))
    if math.isnan(mean):
        return "–"
    digits = 2 if metric == "fit_seconds" else 4
    text = f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")
    return text + (f" [{low:.{digits}f}, {high:.{digits}f}]" if ci and not math.isnan(low) else "")


def baseline_fallback(baseline: str, s: Mapping[str, Any]) -> str:
    """A note when the configured baseline (``sweep.report.baseline``) had no run and another loss stands in."""
    configured = str(s["baseline"])
    if baseline == configured:
        return ""
    return (f"The configured baseline `{configured}` (sweep.report.baseline) has no finished run in this sweep: "
            f"every loss is compared with **{baseline}** instead (the loss with the lowest mean "
            f"{s['primary_metric']}).")


def header(doc: Document, sweep: collect.Sweep, runs: pd.DataFrame, selected: pd.DataFrame, baseline: str,
           s: Mapping[str, Any]) -> None:
    def values(column: str) -> str:
        col = f"param:{column}" if f"param:{column}" in selected else column
        return ", ".join(sorted({str(v) for v in selected[col].dropna()})) if col in selected else "?"

    status = ", ".join(f"{n} {k}" for k, n in runs["status"].value_counts().items())
    parent = sweep.parent.info.run_id if sweep.parent is not None else "none found (runs matched by tag)"
    seconds = sweep.parent.data.metrics.get("sweep_seconds") if sweep.parent is not None else None
    items = [f"Experiment **{sweep.experiment_name}** (id {sweep.experiment_id}) in `{sweep.uri}`; parent run "
             f"`{parent}`; tag `sweep_id={sweep.sweep_id}`.",
             f"Runs: {len(runs)} ({status}); {len(selected)} finished trainings compared"
             + (f", {int((runs['phase'] == 'search').sum())} search trials not counted"
                if (runs["phase"] == "search").any()
                else "") + (f"; sweep wall time {seconds / 60:.1f} min" if seconds else "") + ".",
             f"Losses: {values('loss')}; seeds: {', '.join(map(str, sorted(selected['seed'].dropna().unique())))}.",
             f"Data `{values('data.name')}` (md5 {values('dataset_md5')}), features `{values('features.weighting')}`; "
             f"model hidden {values('model.hidden')}, depth {values('model.depth')}, "
             f"dropout {values('model.dropout')}; "
             f"lr {values('optimizer.lr')}, batch {values('data.batch_size')}, epochs {values('trainer.max_epochs')} "
             "(test metrics at the best-validation-macro-F1 epoch).",
             f"Devices: {values('device')} ({values('device_name')}); git commit(s) "
             f"{', '.join(sorted({str(c)[:10] for c in selected['git_commit']}))}.",
             f"Every loss is compared with **{baseline}**; intervals are {float(s['confidence']):.0%} BCa "
             f"bootstrap intervals of the mean over seeds (scipy.stats.bootstrap, {int(s['bootstrap'])} resamples, "
             f"seed {s['rng_seed']})."]
    fallback = baseline_fallback(baseline, s)
    doc.bullets(items + ([f"Note: {fallback}"] if fallback else []))


def headline(doc: Document, summary: pd.DataFrame, comparison: pd.DataFrame, losses: list[str], baseline: str,
             primary: str, friedman_p: float, s: Mapping[str, Any]) -> None:
    doc.heading("Summary")
    best = summary.iloc[0]
    by_loss = comparison.set_index("loss") if len(comparison) else pd.DataFrame()
    text = f"Best mean {primary}: **{best['loss']}** with {cell(best, primary)}"
    if best["loss"] == baseline:
        others = [x for x in summary["loss"] if x != baseline and not by_loss.loc[x, "identical"]]
        text += " — the baseline itself."
        if others:
            row = by_loss.loc[others[0]]
            text += (f" Runner-up: {others[0]}, {row['mean_diff']:+.4f} (95% CI [{row['ci_low']:+.4f}, "
                     f"{row['ci_high']:+.4f}]); {baseline} is ahead on {row['losses']} of {row['n']} seeds.")
    else:
        row = by_loss.loc[best["loss"]]
        sure = "clearly" if (row["ci_low"] > 0 or row["ci_high"] < 0) and row["p_better"] > 0.975 else "not clearly"
        text += (f", {row['mean_diff']:+.4f} vs {baseline} (95% CI [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}], "
                 f"better on {row['wins']} of {row['n']} seeds, bootstrap P(better) {row['p_better']:.2f}, "
                 f"Wilcoxon p {fmt(row['p_wilcoxon'], 3)}): {sure} better than {baseline} with {row['n']} seeds.")
    if baseline != str(s["baseline"]):
        text += f" ({baseline} stands in for the configured baseline {s['baseline']}, which has no run here.)"
    doc.paragraph(text)
    worst = summary.iloc[-1]
    spread = best[f"{primary}|mean"] - worst[f"{primary}|mean"]
    doc.paragraph(f"Worst: **{worst['loss']}** ({cell(worst, primary, ci=False)}); best − worst = {spread:.4f}. "
                  f"Friedman test across all {len(losses)} losses over the seeds: p = {fmt(friedman_p, 4)}.")
    per_class = [c for c in summary.columns if c.startswith("test/f1_") and c.endswith("|mean")
                 and not c.startswith(f"{primary}|")]
    if per_class:
        doc.bullets([f"Best {c[:-5]}: **{summary.loc[summary[c].idxmax(), 'loss']}** "
                     f"({summary[c].max():.4f}; {baseline} {summary.set_index('loss').loc[baseline, c]:.4f})"
                     for c in per_class if baseline in set(summary["loss"])])


def per_loss(doc: Document, summary: pd.DataFrame, metrics: list[str], s: Mapping[str, Any]) -> None:
    doc.heading("Per loss: test metrics over seeds")
    doc.paragraph("mean ± std over seeds [95% BCa bootstrap CI of the mean]; sorted by the first column. "
                  "ECE, NLL and fit time: lower is better.", note=True)
    quality = [m for m in metrics if m not in ("test/ece", "test/nll", "fit_seconds")]
    cost = [m for m in metrics if m in ("test/ece", "test/nll", "fit_seconds")]
    for group in (quality, cost):
        doc.table(["loss", "n", *group], [[r["loss"], int(r["n"]), *(cell(r, m) for m in group)]
                                          for _, r in summary.iterrows()])


def paired(doc: Document, comparisons: Mapping[str, pd.DataFrame], baseline: str, s: Mapping[str, Any]) -> None:
    doc.heading(f"Paired comparison with {baseline} (same seeds)")
    n = max((int(t["n"].max()) for t in comparisons.values() if len(t)), default=0)
    fallback = baseline_fallback(baseline, s)
    if fallback:
        doc.paragraph(fallback, note=True)
    doc.paragraph(f"Δ = loss − {baseline} on the same seed (same split, same initialisation seed). CI: paired BCa "
                  "bootstrap of the mean Δ (the per-seed differences resampled); P(better): share of bootstrap "
                  "resamples where the loss is better; Wilcoxon: two-sided signed-rank test, Holm-adjusted over the "
                  "losses; r: matched-pairs rank-biserial correlation (effect size, ±1 = every seed one way); d_z: "
                  f"mean Δ / sd Δ; W/T/L: seeds better/tied/worse. With {n} pairs "
                  f"the exact Wilcoxon test cannot go below p = {stats.wilcoxon_floor(n):.4f}, so read the CI and "
                  f"effect sizes, not only p.", note=True)
    for metric, table in comparisons.items():
        if table.empty:
            continue
        doc.heading(metric, level=3)
        doc.table(["loss", "n", "mean Δ", "95% CI", "P(better)", "Wilcoxon p", "Holm p", "r", "d_z", "W/T/L"],
                  [[r["loss"], int(r["n"]), f"{r['mean_diff']:+.4f}", f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
                    f"{r['p_better']:.2f}", fmt(r["p_wilcoxon"], 3), fmt(r["p_holm"], 3), fmt(r["rank_biserial"], 2),
                    fmt(r["cohen_dz"], 2), f"{r['wins']}/{r['ties']}/{r['losses']}"
                    + (" (identical)" if r["identical"] else "")] for _, r in table.iterrows()])


def ranking(doc: Document, ranks: pd.DataFrame, friedman_p: float, summary: pd.DataFrame, metrics: list[str],
            primary: str) -> None:
    doc.heading("Ranks")
    doc.paragraph(f"Per seed, the losses ranked on {primary} (1 = best, ties share the mean rank); Friedman test "
                  f"p = {fmt(friedman_p, 4)}.", note=True)
    doc.table(["loss", "mean rank", "best on (seeds)"], [[r["loss"], f"{r['mean_rank']:.2f}", int(r["best_on"])]
                                                        for _, r in ranks.iterrows()])
    table = pd.DataFrame({m: summary[f"{m}|mean"].rank(ascending=not stats.higher_is_better(m), method="min")
                          for m in metrics})
    table.insert(0, "loss", summary["loss"])
    doc.paragraph("Rank of each loss's mean on every metric (1 = best):", note=True)
    doc.table(["loss", *metrics], [[r["loss"], *(str(int(r[m])) if not math.isnan(r[m]) else "–" for m in metrics)]
                                   for _, r in table.iterrows()])


def figures(doc: Document, paths: Mapping[str, Path], primary: str, missing_predictions: int) -> None:
    doc.heading("Figures")
    for key, path in paths.items():
        if key.startswith("test/"):
            doc.image(path, f"{key} per loss")
    if "curves" in paths:
        doc.paragraph("Validation curves (macro-F1 and NLL, comparable across losses; each loss's own training "
                      "loss is not), mean over seeds with a ±1 std band:")
        doc.image(paths["curves"], "validation curves")
    if "reliability" in paths:
        doc.paragraph("Reliability diagrams: test predictions of all seeds pooled; bars = accuracy per confidence "
                      "bin (diagonal = perfectly calibrated), orange = share of predictions in the bin. For bce the "
                      "probabilities are the per-class sigmoids renormalised to sum to 1.")
        doc.image(paths["reliability"], "reliability diagrams")
        doc.paragraph("Confusion matrices (counts summed over seeds, shading = row share):")
        doc.image(paths["confusion"], "confusion matrices")
    if missing_predictions:
        doc.paragraph(f"{missing_predictions} runs had no evaluation/test_predictions.csv and are left out of the "
                      "reliability diagrams and confusion matrices.", note=True)


def variants(doc: Document, finished: pd.DataFrame, keys: list[str], selected: pd.DataFrame, select_metric: str,
             primary: str) -> None:
    if not keys:
        return
    doc.heading("Hyperparameter variants")
    doc.paragraph(f"The sweep varied {', '.join(keys)}. Each loss is represented above by its variant with the best "
                  f"mean {select_metric} (validation, never test); all variants:", note=True)
    table = finished.groupby(["loss", "variant"]).agg(n=("run_id", "size"), select=(select_metric, "mean"),
                                                      test=(primary, "mean")).reset_index()
    chosen = set(zip(selected["loss"], selected["variant"]))
    table = table.sort_values(["loss", "select"], ascending=[True, False])
    doc.table(["loss", "variant", "n", select_metric, primary, "chosen"],
              [[r["loss"], r["variant"], int(r["n"]), r["select"], r["test"],
                "✓" if (r["loss"], r["variant"]) in chosen else ""] for _, r in table.iterrows()])


def devices(doc: Document, sweep: collect.Sweep, selected: pd.DataFrame, metrics: list[str]) -> None:
    """Runs of the same loss, seed and config on CPU and on GPU (anywhere in the experiment)."""
    doc.heading("CPU vs GPU")
    everything = collect.experiment_frame(sweep.uri, sweep.experiment_id)
    everything = everything[everything["device"].isin(["cpu", "cuda"])]
    newest: dict[tuple, pd.Series] = {}
    for _, row in everything.sort_values("start_time").iterrows():
        newest[(collect.signature(row), row["device"])] = row
    rows = []
    for _, run in selected[selected["device"].isin(["cpu", "cuda"])].iterrows():
        other = newest.get((collect.signature(run), "cuda" if run["device"] == "cpu" else "cpu"))
        if other is None:
            continue
        cpu, gpu = (run, other) if run["device"] == "cpu" else (other, run)  # this sweep's own run on its device
        rows.append({"loss": run["loss"], "seed": run["seed"], "cpu_s": cpu["fit_seconds"],
                     "gpu_s": gpu["fit_seconds"], "gpu_name": gpu["device_name"], "cpu_name": cpu["device_name"],
                     **{m: gpu[m] - cpu[m] for m in metrics}})
    if not rows:
        present = ", ".join(f"{d} ({n} runs)" for d, n in selected["device"].value_counts().items())
        doc.paragraph(f"Only one device is present: this sweep's runs ran on {present}, and experiment "
                      f"'{sweep.experiment_name}' holds no run of the same loss, seed and configuration on the other "
                      "device, so there is no CPU-vs-GPU comparison. Run the same sweep with "
                      "`trainer.accelerator=gpu` on a CUDA machine into the same store to get one.")
        return
    pairs = pd.DataFrame(rows)
    doc.paragraph(f"{len(pairs)} (loss, seed) pairs ran on both {pairs['cpu_name'].iloc[0]} (cpu) and "
                  f"{pairs['gpu_name'].iloc[0]} (cuda) with identical configs. Δ = cuda − cpu (the same seed gives the "
                  "same result only on the same device; small deltas are floating-point, not a bug). Speed ratio = "
                  "cpu fit time / cuda fit time (> 1: the GPU is faster); fit times are as recorded, so they "
                  "include whatever else loaded each machine at the time.", note=True)
    out = []
    for loss, group in pairs.groupby("loss", sort=False):
        out.append([loss, len(group),
                    *(f"{group[m].mean():+.4f} (max |Δ| {group[m].abs().max():.4f})" for m in metrics),
                    f"{group['cpu_s'].mean():.2f}", f"{group['gpu_s'].mean():.2f}",
                    f"{group['cpu_s'].mean() / group['gpu_s'].mean():.2f}×"])
    doc.table(["loss", "pairs", *(f"Δ {m}" for m in metrics), "cpu fit s", "cuda fit s", "speed ratio"], out)


def notes(doc: Document, selected: pd.DataFrame, losses: list[str], baseline: str, metrics: list[str],
          s: Mapping[str, Any]) -> None:
    doc.heading("Notes")
    fallback = baseline_fallback(baseline, s)
    items = [fallback] if fallback else []
    if "kl" in losses and "ce" in losses:
        smoothing = {str(v) for v in selected.loc[selected["loss"] == "kl"].get("param:loss.smoothing", pd.Series())}
        diffs = [float((per_seed(selected, "kl", m) - per_seed(selected, "ce", m)).abs().max()) for m in metrics
                 if m != "fit_seconds"]
        biggest = max((d for d in diffs if not math.isnan(d)), default=math.nan)
        if smoothing <= {"0.0", "0"}:
            items.append("**kl == ce here.** With one-hot targets KL(t‖softmax(z)) = CE(z, y) − H(t) and H(t) = 0: "
                         "the same loss value and the same gradients, so kl and ce train identically seed by seed "
                         f"(largest test-metric difference over the seeds: {fmt(biggest, 6)}). They only differ with "
                         "`loss.smoothing` > 0. Count them as one loss when reading the ranks.")
        else:
            items.append(f"kl ran with loss.smoothing = {', '.join(sorted(smoothing))}, so it differs from ce.")
    items += ["Seeds change the validation split, the initialisation and the batch order; the test file is the "
              "same for all runs, so the intervals cover training variability, not the variability of a new test set.",
              "Test metrics are taken at the epoch with the best validation macro-F1 (tag best_epoch). AUROC is "
              "macro one-vs-rest; ECE is top-label with 15 bins (the diagrams use fewer bins).",
              "Everything here is read back from the MLflow store (metrics, tags, params and each run's "
              "evaluation/test_predictions.csv): `make report SWEEP_ID=<id>` rebuilds it."]
    doc.bullets(items)
