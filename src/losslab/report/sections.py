"""The report's sections, each written into a ``Document`` from the sweep's runs and statistics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from losslab.report import collect, stats
from losslab.report.verdicts import per_seed
from losslab.training.baseline import BASELINE
from losslab.report.render import Document, fmt


def cell(row: pd.Series, metric: str, ci: bool = True) -> str:
    """mean ± std [two-level CI] (seeds-only CI); either interval left out where it is missing."""
    mean, std = row[f"{metric}|mean"], row[f"{metric}|std"]
    if math.isnan(mean):
        return "–"
    digits = 2 if metric == "fit_seconds" else 4
    text = f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")
    if not ci:
        return text
    low, high = row.get(f"{metric}|ci_low", math.nan), row.get(f"{metric}|ci_high", math.nan)
    seeds = row.get(f"{metric}|ci_low_seeds", math.nan), row.get(f"{metric}|ci_high_seeds", math.nan)
    if not math.isnan(low):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    if not math.isnan(seeds[0]):
        text += f" ({seeds[0]:.{digits}f}, {seeds[1]:.{digits}f})"
    return text


def reference_fallback(reference: str, s: Mapping[str, Any]) -> str:
    """A note when the configured reference (``sweep.report.reference``) had no run and another loss stands in."""
    configured = str(s["reference"])
    if reference == configured:
        return ""
    return (f"The configured reference `{configured}` (sweep.report.reference) has no finished run in this sweep: "
            f"every loss is compared with **{reference}** instead (the loss with the lowest mean "
            f"{s['primary_metric']}).")


def header(doc: Document, sweep: collect.Sweep, runs: pd.DataFrame, selected: pd.DataFrame, reference: str,
           s: Mapping[str, Any]) -> None:
    trainings = selected[selected["model"] != BASELINE] if "model" in selected else selected

    def values(column: str, frame: pd.DataFrame = trainings) -> str:
        col = f"param:{column}" if f"param:{column}" in frame else column
        return ", ".join(sorted({str(v) for v in frame[col].dropna()})) if col in frame else "?"

    status = ", ".join(f"{n} {k}" for k, n in runs["status"].value_counts().items())
    parent = sweep.parent.info.run_id if sweep.parent is not None else "none found (runs matched by tag)"
    seconds = sweep.parent.data.metrics.get("sweep_seconds") if sweep.parent is not None else None
    items = [f"Experiment **{sweep.experiment_name}** (id {sweep.experiment_id}) in `{sweep.uri}`; parent run "
             f"`{parent}`; tag `sweep_id={sweep.sweep_id}`.",
             f"Runs: {len(runs)} ({status}); {len(trainings)} finished trainings compared"
             + (f" and {len(selected) - len(trainings)} linear-baseline runs" if len(selected) > len(trainings) else "")
             + (f", {int((runs['phase'] == 'search').sum())} search trials not counted"
                if (runs["phase"] == "search").any()
                else "") + (f"; sweep wall time {seconds / 60:.1f} min" if seconds else "") + ".",
             f"Losses: {values('loss')}; seeds: {', '.join(map(str, sorted(selected['seed'].dropna().unique())))}.",
             f"Data `{values('data.name')}` (md5 {values('dataset_md5')}), features `{values('features.weighting')}`; "
             f"model hidden {values('model.hidden')}, depth {values('model.depth')}, "
             f"dropout {values('model.dropout')}; "
             f"lr {values('optimizer.lr')}, batch {values('data.batch_size')}, epochs {values('trainer.max_epochs')} "
             "(test metrics at the best-validation-macro-F1 epoch).",
             f"Devices: {values('device', selected)} ({values('device_name', selected)}); git commit(s) "
             f"{', '.join(sorted({str(c)[:10] for c in selected['git_commit']}))}.",
             f"Every loss is compared with **{reference}**; intervals are {float(s['confidence']):.0%}: two-level "
             f"(seeds × test examples, {int(s['bootstrap'])} replicates, seed {s['rng_seed']}) in brackets, "
             "seeds-only (Student t over the per-seed values) in parentheses."]
    fallback = reference_fallback(reference, s)
    doc.bullets(items + ([f"Note: {fallback}"] if fallback else []))


def headline(doc: Document, summary: pd.DataFrame, comparison: pd.DataFrame, losses: list[str], reference: str,
             primary: str, friedman_p: float, s: Mapping[str, Any]) -> None:
    doc.heading("Summary")
    best = summary.iloc[0]
    by_loss = comparison.set_index("loss") if len(comparison) else pd.DataFrame()
    text = f"Best mean {primary}: **{best['loss']}** with {cell(best, primary)}"
    if best["loss"] == reference:
        others = [x for x in summary["loss"] if x != reference and not by_loss.loc[x, "identical"]]
        text += " — the reference itself."
        if others:
            row = by_loss.loc[others[0]]
            text += (f" Runner-up: {others[0]}, {row['mean_diff']:+.4f} (95% two-level interval [{row['ci_low']:+.4f}, "
                     f"{row['ci_high']:+.4f}], {row['verdict']}); {reference} is ahead on {row['losses']} of "
                     f"{row['n']} seeds.")
    else:
        row = by_loss.loc[best["loss"]]
        text += (f", {row['mean_diff']:+.4f} vs {reference} (95% two-level interval [{row['ci_low']:+.4f}, "
                 f"{row['ci_high']:+.4f}], seeds-only [{row['ci_low_seeds']:+.4f}, {row['ci_high_seeds']:+.4f}], "
                 f"better on {row['wins']} of {row['n']} seeds): verdict **{row['verdict']}** against {reference}.")
    if reference != str(s["reference"]):
        text += f" ({reference} stands in for the configured reference {s['reference']}, which has no run here.)"
    doc.paragraph(text)
    worst = summary.iloc[-1]
    spread = best[f"{primary}|mean"] - worst[f"{primary}|mean"]
    doc.paragraph(f"Worst: **{worst['loss']}** ({cell(worst, primary, ci=False)}); best − worst = {spread:.4f}. "
                  f"Friedman test across all {len(losses)} losses over the seeds: p = {fmt(friedman_p, 4)}.")
    per_class = [c for c in summary.columns if c.startswith("test/f1_") and c.endswith("|mean")
                 and not c.startswith(f"{primary}|")]
    if per_class:
        doc.bullets([f"Best {c[:-5]}: **{summary.loc[summary[c].idxmax(), 'loss']}** "
                     f"({summary[c].max():.4f}; {reference} {summary.set_index('loss').loc[reference, c]:.4f})"
                     for c in per_class if reference in set(summary["loss"])])


def per_loss(doc: Document, summary: pd.DataFrame, metrics: list[str], s: Mapping[str, Any]) -> None:
    doc.heading("Per loss: test metrics over seeds")
    doc.paragraph("mean ± std over seeds [95% two-level interval: seeds × test examples] (95% seeds-only "
                  "t-interval); sorted by the first column. The two-level interval needs the runs' test predictions: "
                  "AUROC, ECE and fit time have the seeds-only one. ECE, NLL and fit time: lower is better.",
                  note=True)
    quality = [m for m in metrics if m not in ("test/ece", "test/nll", "fit_seconds")]
    cost = [m for m in metrics if m in ("test/ece", "test/nll", "fit_seconds")]
    for group in (quality, cost):
        doc.table(["loss", "n", *group], [[r["loss"], int(r["n"]), *(cell(r, m) for m in group)]
                                          for _, r in summary.iterrows()])


def paired(doc: Document, comparisons: Mapping[str, pd.DataFrame], reference: str, s: Mapping[str, Any]) -> None:
    doc.heading(f"Paired comparison with {reference} (same seeds)")
    n = max((int(t["n"].max()) for t in comparisons.values() if len(t)), default=0)
    fallback = reference_fallback(reference, s)
    if fallback:
        doc.paragraph(fallback, note=True)
    doc.paragraph(f"Δ = loss − {reference} on the same seed (same split, same initialisation seed). Two-level: the 95% "
                  "interval over seeds and test examples (seeds-only where the metric is not computable from the "
                  "predictions); seeds: the t-interval over the per-seed differences; ROPE ±r and the verdict "
                  "(rule above); from seeds: the seeds' share of the variance of Δ; p boot: two-level bootstrap "
                  "p-value of Δ = 0, Holm-adjusted over the losses; Bayes (verdict metrics only): baycomp's Bayesian "
                  f"signed-rank test over the seeds with the same ROPE, P({reference} better / within ROPE / loss "
                  "better; it sees the seeds only, not the test sample); ASO (verdict metrics only): deepsig's "
                  "Almost Stochastic Order ε_min, an upper bound on how far \"the loss's seed scores dominate the "
                  "reference's\" is violated (< 0.2, deepsig's suggested threshold: the loss almost stochastically "
                  "dominates; near 1: it does not; it compares the two sets of scores, not pairs); Wilcoxon: "
                  f"exact signed-rank p, Holm-adjusted; W/T/L: seeds better/tied/worse. With {n} pairs the "
                  f"exact Wilcoxon test cannot go below p = {stats.wilcoxon_floor(n):.4f}.", note=True)
    for metric, table in comparisons.items():
        if table.empty:
            continue
        doc.heading(metric, level=3)
        doc.table(["loss", "n", "mean Δ", "two-level 95%", "seeds 95%", "ROPE", "verdict", "from seeds",
                   "p boot (Holm)", "Bayes P(ref/rope/loss)", "ASO ε", "Wilcoxon p (Holm)", "W/T/L"],
                  [[r["loss"], int(r["n"]), f"{r['mean_diff']:+.4f}",
                    f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" + ("" if r["interval"] == "two-level" else " (seeds)"),
                    f"[{r['ci_low_seeds']:+.4f}, {r['ci_high_seeds']:+.4f}]", fmt(r["rope"], 3), r["verdict"],
                    "–" if math.isnan(r["share_seeds"]) else f"{r['share_seeds']:.0%}",
                    f"{fmt(r['p_boot'], 3)} ({fmt(r['p_boot_holm'], 3)})",
                    f"{fmt(r['p_bayes_worse'], 2)}/{fmt(r['p_bayes_rope'], 2)}/{fmt(r['p_bayes_better'], 2)}",
                    fmt(r["aso_eps"], 2), f"{fmt(r['p_wilcoxon'], 3)} ({fmt(r['p_holm'], 3)})",
                    f"{r['wins']}/{r['ties']}/{r['losses']}"] for _, r in table.iterrows()])


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
    mine = set(selected["device"]) & {"cpu", "cuda"}
    # only the runs that can pair with this sweep's: those on the other device (a store holds thousands of runs)
    others = [collect.experiment_frame(sweep.uri, sweep.experiment_id, device) for device in ("cpu", "cuda")
              if mine - {device}]
    newest: dict[tuple, pd.Series] = {}
    for frame in (f for f in others if not f.empty):
        for _, row in frame.sort_values("start_time").iterrows():
            newest[(collect.signature(row), row["device"])] = row  # the newest run of each (config, device)
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


def notes(doc: Document, selected: pd.DataFrame, losses: list[str], reference: str, metrics: list[str],
          s: Mapping[str, Any], extra: list[str] | None = None) -> None:
    doc.heading("Notes")
    fallback = reference_fallback(reference, s)
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
              "same for all runs. The two-level intervals add the variability of a new test sample (the test "
              "examples resampled); the seeds-only ones cover training variability alone.",
              "Intervals and verdicts are per comparison at 95%, not adjusted for the number of losses (the Holm "
              "columns are); with several losses, expect an occasional verdict from chance alone.",
              "Test metrics are taken at the epoch with the best validation macro-F1 (tag best_epoch). AUROC is "
              "macro one-vs-rest; ECE is top-label with 15 bins (the diagrams use fewer bins).",
              "Everything here is read back from the MLflow store (metrics, tags, params and each run's "
              "evaluation/test_predictions.csv): `make report SWEEP_ID=<id>` rebuilds it.", *(extra or [])]
    doc.bullets(items)
