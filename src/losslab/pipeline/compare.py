"""Stage ``compare``: one table of every loss's test metrics.

    python -m losslab.pipeline.compare --metrics-dir metrics/test --train-metrics-dir metrics/train \
        --curves-dir metrics/curves --data metrics/data.json --summary metrics/summary.json \
        --report reports/losses.md --plot reports/val_f1_macro.png

Per loss it reads the test metrics of ``evaluate@<loss>`` (``metrics/test/<loss>.json``) and the
validation results of ``train@<loss>`` (``metrics/train/<loss>.json``: best validation macro-F1,
its epoch).

Reads from ``params.yaml`` the loss keys (``losses``) and ``loss.name``, the reference loss
every other one is compared with (default ``ce``; ``dvc exp run -S loss=kl`` changes it).
The ranking uses the best *validation* macro-F1, never the test set; the test columns are
reported as they are.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from losslab.errors import DataError, friendly_exit
from losslab.pipeline.common import PARAMS_FILE, load_params, read_json, write_json

HEADLINE = ("test/f1_macro", "test/accuracy", "test/auroc", "test/ece", "test/nll")
RANK_BY = "best_val/f1_macro"
KL_CE_TOLERANCE = 0.01


def loss_settings(loss_cfg: Any) -> str:
    """``gamma=2.0`` etc.: a loss's own parameters (not its name, nor Hydra's ``_target_``/``_partial_``)."""
    items = {k: v for k, v in dict(loss_cfg).items() if k != "name" and not str(k).startswith("_")}
    return ", ".join(f"{k}={v}" for k, v in items.items()) or "—"


def collect(params: Any, metrics_dir: Path, train_metrics_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """Per loss: its test metrics (evaluate@<loss>) and, from ``train_metrics_dir``, its validation results."""
    results = {}
    for key in params.losses:
        result: dict[str, float] = {}
        for folder, stage in ((metrics_dir, "evaluate"), (train_metrics_dir, "train")):
            if folder is None:
                continue
            path = folder / f"{key}.json"
            if not path.is_file():
                raise DataError(f"{path}: missing; stage {stage}@{key} has not run (run `dvc repro`).")
            result |= read_json(path)
        results[str(key)] = result
    return results


def class_columns(results: dict[str, dict[str, float]]) -> list[str]:
    first = next(iter(results.values()))
    return sorted(k for k in first if k.startswith("test/f1_") and k != "test/f1_macro")


def kl_ce_note(params: Any, results: dict[str, dict[str, float]]) -> tuple[str, float | None]:
    """Say plainly how kl relates to ce here (equal with one-hot targets)."""
    if not {"kl", "ce"} <= set(results):
        return "", None
    smoothing = float(params.losses.kl.get("smoothing", 0.0) or 0.0)
    keys = [k for k in results["ce"] if k.startswith("test/")]
    gap = max(abs(results["kl"][k] - results["ce"][k]) for k in keys)
    if smoothing > 0:
        return (f"**kl vs ce**: kl uses smoothed targets here (losses.kl.smoothing={smoothing}), so it differs "
                f"from ce by design (largest test-metric gap {gap:.4f})."), gap
    note = ("**kl equals ce** with one-hot targets (losses.kl.smoothing=0): the target's entropy is 0, so "
            "KL(t‖softmax(z)) = −log softmax(z)[y], the cross-entropy — same loss values, same gradients. "
            f"Largest test-metric gap between the two rows: {gap:.4f}")
    if gap == 0:
        return note + " (identical, as expected).", gap
    if gap < KL_CE_TOLERANCE:
        return note + " (floating-point summation order in the two loss kernels, not a real difference).", gap
    return note + ": larger than rounding can explain — check that the two stages share their params.", gap


def summarize(params: Any, results: dict[str, dict[str, float]]) -> dict[str, Any]:
    reference = str(params.loss.name) if params.get("loss") else "ce"
    ranked = sorted(results, key=lambda k: results[k].get(RANK_BY, float("-inf")), reverse=True)
    summary: dict[str, Any] = {}
    if reference in results:
        summary["reference"] = {"loss": reference, **{k: results[reference][k] for k in HEADLINE
                                                       if k in results[reference]}}
    best = ranked[0]
    summary["best"] = {"loss": best, RANK_BY: results[best].get(RANK_BY),
                       **{k: results[best][k] for k in HEADLINE if k in results[best]}}
    summary["losses"] = {}
    for rank, key in enumerate(ranked, start=1):
        row = {"rank": rank, **{k: results[key][k] for k in HEADLINE if k in results[key]}}
        if reference in results:
            row["delta_f1_macro"] = round(results[key]["test/f1_macro"] - results[reference]["test/f1_macro"], 6)
        summary["losses"][key] = row
    _, gap = kl_ce_note(params, results)
    if gap is not None:
        summary["kl_ce_max_abs_gap"] = round(gap, 6)
    return summary


def report_markdown(params: Any, results: dict[str, dict[str, float]], summary: dict[str, Any],
                    data: dict[str, Any] | None, plot: Path | None, report: Path) -> str:
    classes = class_columns(results)
    reference = summary.get("reference", {}).get("loss")
    lines = ["# Loss functions compared (DVC stage `compare`)", ""]
    if data:
        splits = data.get("splits", {})
        lines += ["Rows: " + ", ".join(f"{k} {v['rows']}" for k, v in splits.items()) +
                  f" (details in `reports/data.md`). Model: PReLU MLP, hidden {params.model.hidden}, "
                  f"depth {params.model.depth}, dropout {params.model.dropout}; seed {params.seed}; "
                  f"{_epochs(params.trainer.max_epochs)}, test metrics from the best validation macro-F1 epoch.", ""]
        shares = class_shares(splits)
        if shares:
            lines += [f"Class shares: {shares}. A prior that differs between train and test moves the "
                      "per-class F1 of every loss; compare the rows with each other.", ""]
    head = ["rank", "loss", "settings", "val macro-F1", "macro-F1", *(c.replace("test/f1_", "F1 ") for c in classes),
            "accuracy", "AUROC", "ECE", "NLL", "best epoch"]
    if reference:
        head.append(f"Δ macro-F1 vs {reference}")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for key, row in summary["losses"].items():
        r = results[key]
        cells = [str(row["rank"]), f"`{key}`", loss_settings(params.losses[key]), _f(r.get(RANK_BY)),
                 _f(r.get("test/f1_macro")), *(_f(r.get(c)) for c in classes), _f(r.get("test/accuracy")),
                 _f(r.get("test/auroc")), _f(r.get("test/ece")), _f(r.get("test/nll")), str(r.get("best_epoch", ""))]
        if reference:
            cells.append(f"{row['delta_f1_macro']:+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Ranked by the best validation macro-F1 (`{RANK_BY}`, train@<loss>: `metrics/train/<loss>.json`); "
              "every other column is the test split (evaluate@<loss>: `metrics/test/<loss>.json`), which is only "
              "reported, never used to choose.",
              f"Reference loss: `{reference}` (`loss.name` in params.yaml; `dvc exp run -S loss=<name>` changes it)."
              if reference else "The reference loss (`loss.name`) is not among the trained losses.", ""]
    note, _ = kl_ce_note(params, results)
    if note:
        lines += [note, ""]
    if plot is not None:
        lines += [f"![validation macro-F1 per epoch]({_relative(plot, report)})", ""]
    return "\n".join(lines)


def class_shares(splits: dict[str, dict[str, int]]) -> str:
    """``train: aggressive 35.5%, …; test: …`` from the prepare stage's counts."""
    parts = []
    for name in ("train", "test"):
        counts = {k: v for k, v in splits.get(name, {}).items() if k != "rows"}
        total = sum(counts.values())
        if total:
            parts.append(f"{name} " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in counts.items()))
    return "; ".join(parts)


def _relative(target: Path, report: Path) -> str:
    import os

    return os.path.relpath(target, report.parent)


def _f(value: Any) -> str:
    return "—" if value is None else f"{float(value):.4f}"


def plot_curves(curves_dir: Path, keys: list[str], out: Path, metric: str = "val/f1_macro") -> Path:
    """Validation macro-F1 per epoch, one line per loss (PNG, also a `dvc plots` image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    styles = ("-", "--", ":", "-.")  # equal curves (kl = ce with one-hot targets) stay visible
    for i, key in enumerate(keys):
        with (curves_dir / f"{key}.csv").open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get(metric)]
        ax.plot([int(r["epoch"]) for r in rows], [float(r[metric]) for r in rows], marker="o", ms=3,
                linestyle=styles[i % len(styles)], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title("validation macro-F1 per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return out


def compare(params: Any, args: argparse.Namespace) -> dict[str, Any]:
    results = collect(params, args.metrics_dir, args.train_metrics_dir)
    summary = summarize(params, results)
    write_json(args.summary, summary)
    plot = plot_curves(args.curves_dir, list(results), args.plot) if args.plot else None
    data = read_json(args.data) if args.data and args.data.is_file() else None
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report_markdown(params, results, summary, data, plot, args.report), encoding="utf-8")
    return summary


@friendly_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DVC stage compare: one table of all losses.")
    parser.add_argument("--params", default=PARAMS_FILE)
    parser.add_argument("--metrics-dir", type=Path, default=Path("metrics/test"), help="evaluate@<loss>'s metrics")
    parser.add_argument("--train-metrics-dir", type=Path, default=Path("metrics/train"),
                        help="train@<loss>'s validation results")
    parser.add_argument("--curves-dir", type=Path, default=Path("metrics/curves"))
    parser.add_argument("--data", type=Path, default=Path("metrics/data.json"))
    parser.add_argument("--summary", type=Path, default=Path("metrics/summary.json"))
    parser.add_argument("--report", type=Path, default=Path("reports/losses.md"))
    parser.add_argument("--plot", type=Path, default=Path("reports/val_f1_macro.png"))
    args = parser.parse_args(argv)
    summary = compare(load_params(args.params), args)
    print(f"compare: {len(summary['losses'])} losses, best by validation macro-F1: {summary['best']['loss']} "
          f"-> {args.report}")
    return 0


def _epochs(value: object) -> str:
    """``10 epochs``, or for ``auto`` the rule (training/build.py: from the training-set size; 10 on MEX-A3T)."""
    return "epochs from the training-set size (auto)" if str(value) == "auto" else f"{value} epochs"


if __name__ == "__main__":
    sys.exit(main())
