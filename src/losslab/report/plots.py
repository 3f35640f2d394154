"""The report's figures (PNG): metric per loss, validation curves, reliability diagrams, confusion matrices."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, width: float = 3.0, height: float = 2.8):  # type: ignore[no-untyped-def]
    plt = _pyplot()
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), dpi=100, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, list(axes.flat[:n])


def metric_by_loss(frame: pd.DataFrame, summary: pd.DataFrame, metric: str, path: Path, title: str = "") -> Path:
    """One dot per seed and the mean with its two-level interval (else the seeds-only one), per loss."""
    plt = _pyplot()
    losses = list(summary["loss"])
    fig, ax = plt.subplots(figsize=(1.1 * len(losses) + 2, 3.4), dpi=100)
    for i, loss in enumerate(losses):
        values = frame.loc[frame["loss"] == loss, metric].dropna().to_numpy()
        ax.scatter(np.full(values.size, i) + np.linspace(-0.12, 0.12, values.size), values, s=14, color="0.55",
                   zorder=2)
        row = summary.iloc[i]
        mean, low, high = row[f"{metric}|mean"], row.get(f"{metric}|ci_low", math.nan), row.get(f"{metric}|ci_high",
                                                                                                 math.nan)
        if math.isnan(low):
            low, high = row.get(f"{metric}|ci_low_seeds", math.nan), row.get(f"{metric}|ci_high_seeds", math.nan)
        if not math.isnan(low):
            ax.errorbar([i], [mean], yerr=[[max(mean - low, 0.0)], [max(high - mean, 0.0)]], fmt="o", color="C3",
                        capsize=5, zorder=3)  # (an interval from predictions that disagree with the logged metric)
        else:
            ax.plot([i], [mean], "o", color="C3")
    ax.set_xticks(range(len(losses)), losses, rotation=20)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric}: seeds (grey), mean and 95% two-level interval (red)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def validation_curves(curves: Mapping[str, Mapping[str, Sequence[pd.Series]]], keys: Sequence[str],
                      path: Path) -> Path:
    """``curves[metric][loss]`` = one Series per seed (index = epoch): mean line and ±1 std band per loss."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.6), dpi=100, squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (loss, series) in enumerate(curves.get(key, {}).items()):
            if not series:
                continue
            table = pd.concat(list(series), axis=1).sort_index()
            mean, std = table.mean(axis=1), table.std(axis=1, ddof=1).fillna(0)
            epochs = table.index.to_numpy() + 1
            ax.plot(epochs, mean, label=loss, color=f"C{i}", lw=1.6)
            ax.fill_between(epochs, mean - std, mean + std, color=f"C{i}", alpha=0.15, lw=0)
        ax.set_xlabel("epoch")
        ax.set_title(f"{key} (mean over seeds ± 1 std)", fontsize=10)
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int) -> pd.DataFrame:
    """Top-label reliability: per confidence bin, the count, mean confidence and accuracy."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append({"low": edges[b], "high": edges[b + 1], "count": int(mask.sum()),
                     "confidence": float(confidence[mask].mean()) if mask.any() else math.nan,
                     "accuracy": float(correct[mask].mean()) if mask.any() else math.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(table: pd.DataFrame) -> float:
    total = table["count"].sum()
    filled = table[table["count"] > 0]
    return float((filled["count"] * (filled["confidence"] - filled["accuracy"]).abs()).sum() / max(total, 1))


def reliability_diagrams(pooled: Mapping[str, tuple[np.ndarray, np.ndarray]], bins: int, path: Path) -> Path:
    """One panel per loss (test predictions pooled over seeds): accuracy vs confidence per bin."""
    plt, fig, axes = _grid(len(pooled))
    for ax, (loss, (labels, probs)) in zip(axes, pooled.items()):
        table = reliability_bins(labels, probs, bins)
        width = 1.0 / bins
        ax.bar(table["low"], table["accuracy"].fillna(0), width=width, align="edge", color="C0", alpha=0.75,
               edgecolor="white", label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="0.4", lw=1)
        share = table["count"] / max(table["count"].sum(), 1)
        ax.bar(table["low"], share, width=width, align="edge", color="C1", alpha=0.35, label="share of rows")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{loss}  (ECE {expected_calibration_error(table):.3f})", fontsize=9)
        ax.set_xlabel("confidence (max probability)", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def confusion_matrices(pooled: Mapping[str, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str],
                       path: Path) -> Path:
    """One confusion matrix per loss (``training.evaluation.draw_confusion_matrix``), counts summed over seeds."""
    from losslab.training.evaluation import draw_confusion_matrix

    plt, fig, axes = _grid(len(pooled), width=3.0, height=2.9)
    for ax, (loss, (labels, probs)) in zip(axes, pooled.items()):
        draw_confusion_matrix(ax, labels, probs.argmax(axis=1), class_names, title=loss, fontsize=8)
    fig.supxlabel("predicted", fontsize=9)
    fig.supylabel("true", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
