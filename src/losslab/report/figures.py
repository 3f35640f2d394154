"""The report's first figures: the forest plot (every loss against the reference, both intervals, the ROPE)
and the critical-difference diagram (``fieldtools.critical_difference``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import pandas as pd

from losslab.report import stats

COLORS = {"better": "#1a9641", "worse": "#d7191c", "equivalent": "#2c7bb6", "undecided": "0.45",
          "identical": "0.1"}


def forest_plot(comparisons: Mapping[str, pd.DataFrame], reference: str, path: Path) -> Path:
    """One panel per metric: per loss, mean Δ (dot), the two-level interval (thin, wide) and the seeds-only
    t-interval (thick), the ROPE as a grey band around 0, the verdict on the right."""
    from losslab.report.plots import _pyplot

    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = [(m, t) for m, t in comparisons.items() if len(t)]
    rows = max((len(t) for _, t in panels), default=1)
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6.0 * max(len(panels), 1), 0.55 * rows + 1.6),
                             dpi=100, squeeze=False)
    for ax, (metric, table) in zip(axes[0], panels):
        table = table.iloc[::-1].reset_index(drop=True)  # the first loss on top
        rope = float(table["rope"].iloc[0]) if "rope" in table else math.nan
        if not math.isnan(rope):
            ax.axvspan(-rope, rope, color="0.88", zorder=0)
            ax.text(rope, len(table) - 0.35, f" ROPE ±{rope:g}", fontsize=7, color="0.4", va="top")
        ax.axvline(0, color="0.3", lw=0.8, zorder=1)
        for y, row in table.iterrows():
            color = COLORS.get(str(row["verdict"]), "0.45")
            if not math.isnan(row["ci_low"]):
                ax.plot([row["ci_low"], row["ci_high"]], [y, y], color=color, lw=1.4, zorder=2)
            if not math.isnan(row["ci_low_seeds"]):
                ax.plot([row["ci_low_seeds"], row["ci_high_seeds"]], [y + 0.18, y + 0.18], color=color, lw=4,
                        alpha=0.45, solid_capstyle="butt", zorder=2)
            ax.plot([row["mean_diff"]], [y], "o", color=color, ms=6, zorder=3)
        ax.set_yticks(range(len(table)), list(table["loss"]))
        ax.set_ylim(-0.7, len(table) - 0.3)
        labels = ax.secondary_yaxis("right")
        labels.set_yticks(range(len(table)), list(table["verdict"]))
        for tick, verdict in zip(labels.get_yticklabels(), table["verdict"]):
            tick.set_color(COLORS.get(str(verdict), "0.45"))
        better = "right" if stats.higher_is_better(metric) else "left"
        ax.set_xlabel(f"Δ {metric} vs {reference} (loss − {reference}; better → {better})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(6))
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color="0.2", marker="o", lw=1.4, label="mean Δ, two-level 95% (seeds × test examples)"),
               Line2D([], [], color="0.2", lw=4, alpha=0.45, label="seeds-only 95% (Student t)"),
               Patch(color="0.88", label="region of practical equivalence")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Every loss against {reference}: mean Δ over seeds, 95% intervals, region of practical equivalence",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
