"""The figures of the report's "Why the losses differ" section: diagnostics curves, gradient vs confidence,
test score vs label noise."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

# diag/* curves drawn per loss, with their panel titles
CURVE_PANELS = [
    ("diag/max_abs_logit", "largest |logit|"),
    ("diag/saturated_right", "share saturated right (p(true) > 0.99)"),
    ("diag/confident_wrong", "share confidently wrong (p(true) < 0.05)"),
    ("diag/margin_mean", "mean margin (true − best other logit)"),
    ("diag/grad_logit_wrong", "|∂L/∂z_true|, confidently wrong rows"),
    ("diag/grad_logit_correct", "|∂L/∂z_true|, rows predicted right"),
    ("diag/grad_norm_input", "gradient norm, input layer"),
    ("diag/grad_norm_output", "gradient norm, output layer"),
    ("diag/dead_units", "share of dead hidden units"),
    ("diag/prelu_slope_mean", "mean PReLU slope"),
]
LOG_SCALE = {"diag/grad_logit_wrong", "diag/grad_logit_correct", "diag/grad_norm_input", "diag/grad_norm_output"}


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(i: int, loss: str) -> dict[str, object]:
    """A colour per loss and a dashed line for the lecture's pitfalls (``*_probs``)."""
    return {"color": f"C{i % 10}", "ls": "--" if loss.endswith("_probs") else "-"}


def diagnostics_curves(curves: Mapping[str, Mapping[str, Sequence[pd.Series]]], losses: Sequence[str],
                       path: Path) -> Path | None:
    """``curves[key][loss]`` = one Series per seed (index = epoch): mean over seeds, one line per loss and panel."""
    panels = [(key, title) for key, title in CURVE_PANELS if any(curves.get(key, {}).get(loss) for loss in losses)]
    if not panels:
        return None
    plt = _pyplot()
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.7 * rows), dpi=100, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (key, title) in zip(axes.flat, panels):
        for i, loss in enumerate(losses):
            series = [s for s in curves.get(key, {}).get(loss, []) if len(s)]
            if not series:
                continue
            mean = pd.concat(series, axis=1).sort_index().mean(axis=1)
            positive = mean[mean > 0] if key in LOG_SCALE else mean
            ax.plot(positive.index.to_numpy() + 1, positive.to_numpy(), label=loss, lw=1.5, **_style(i, loss))
        if key in LOG_SCALE:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=8.5)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.suptitle("Diagnostics on a fixed sample of training rows, end of each epoch (mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def gradient_vs_confidence(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                           measured: Mapping[str, Sequence[tuple[float, float, str]]], path: Path) -> Path:
    """Exact per-row |∂L/∂z_true| against p(true class) for each loss (lines), with the measured group means
    ``measured[loss] = [(p_true, grad, "wrong" | "correct"), …]`` as markers (× confidently wrong, ○ right)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.2, 4.6), dpi=100)
    for i, (loss, (p, g)) in enumerate(curves.items()):
        keep = g > 0
        ax.plot(p[keep], g[keep], label=loss, lw=1.6, **_style(i, loss))
        for p_true, grad, group in measured.get(loss, []):
            if p_true > 0 and grad > 0 and math.isfinite(p_true) and math.isfinite(grad):
                ax.plot([p_true], [grad], "x" if group == "wrong" else "o", ms=8 if group == "wrong" else 6,
                        mfc="none", mew=1.8, color=_style(i, loss)["color"])
    ax.set_xscale("logit")
    ax.set_yscale("log")
    ax.set_xlabel("p(true class)  (logit scale: confident mistakes on the left, confident hits on the right)")
    ax.set_ylabel("|∂L/∂z_true| for one row")
    ax.axvspan(ax.get_xlim()[0], 0.05, color="C3", alpha=0.06, lw=0)
    ax.set_title("How hard each loss pushes the true logit, by confidence (two classes; lines: exact, "
                 "float32; × / ○: measured, last epoch)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def score_vs_noise(table: pd.DataFrame, metric: str, noise_type: str, path: Path) -> Path:
    """``table``: one row per run with ``loss``, ``noise`` and ``metric``: mean ± std over seeds per loss."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.6, 4.0), dpi=100)
    for i, (loss, runs) in enumerate(table.groupby("loss", sort=False)):
        by_noise = runs.groupby("noise")[metric]
        mean, std = by_noise.mean(), by_noise.std(ddof=1).fillna(0.0)
        ax.errorbar(mean.index, mean.to_numpy(), yerr=std.to_numpy(), marker="o", capsize=3, lw=1.5, label=loss,
                    **_style(i, str(loss)))
    ax.set_xlabel(f"share of training labels flipped ({noise_type}); validation and test labels clean")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs label noise (mean ± std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
