"""What a sweep prints: one line per finished job, and the table of the losses at the end.

    [ 7/35] ce_weighted  seed 1  val macro-F1 0.741  test macro-F1 0.602  FINISHED  12.3 s  ETA 1 min 40 s

A job may finish in this process or in a launcher's worker (joblib, submitit): each appends its
line to the sweep's progress log (``<sweep dir>/progress.log``) under a file lock, so ``k`` counts
the jobs finished anywhere, once each. The ETA is the wall time since the sweep started per
finished job × the jobs left (parallel workers included). The loss table is built from the MLflow
store the way the report builds its summary (same runs, same variant selection, same metric).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

LOG_NAME = "progress.log"
LOSS_WIDTH = 11  # len("ce_weighted"): the widest loss name in conf/loss/


def duration(seconds: float) -> str:
    """``12.3 s``, ``1 min 40 s``, ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def metric_label(metric: str) -> str:
    """``best_val/f1_macro`` → ``val macro-F1``, ``test/f1_aggressive`` → ``test F1 aggressive``."""
    split, _, name = metric.rpartition("/")
    split = split.removeprefix("best_")
    name = "macro-F1" if name == "f1_macro" else f"F1 {name[3:]}" if name.startswith("f1_") else name
    return f"{split} {name}".strip()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[Any]:
    """``path`` opened for appending under an exclusive lock (every process of the sweep takes it)."""
    import fcntl

    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Progress:
    """A sweep's job counter; pickled into launcher workers with the sweep's callbacks."""

    log: Path                     # one line per finished job; its length is k
    total: int | None             # None when the sweeper does not say (the line then shows k/?)
    metrics: Sequence[str] = ("best_val/f1_macro", "test/f1_macro")
    loss_width: int = LOSS_WIDTH
    started: float = field(default_factory=time.time)  # wall clock: comparable across processes

    @classmethod
    def start(cls, directory: str | Path, total: int | None, **kwargs: Any) -> "Progress":
        """A new counter whose log is ``<directory>/progress.log`` (emptied)."""
        log = Path(directory).resolve() / LOG_NAME
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("", encoding="utf-8")
        return cls(log, total, **kwargs)

    def job_done(self, loss: str, seed: Any, status: str, seconds: float, metrics: Mapping[str, float],
                 detail: str = "", error: str = "") -> str:
        """Count one finished job, print its line and return it (printed under the lock: lines come in k order)."""
        with _locked(self.log) as handle:
            handle.seek(0)
            k = sum(1 for _ in handle) + 1
            line = self.line(k, loss, seed, status, seconds, metrics, detail, error)
            handle.write(line + "\n")
            print(line, flush=True)
        return line

    def line(self, k: int, loss: str, seed: Any, status: str, seconds: float, metrics: Mapping[str, float],
             detail: str = "", error: str = "") -> str:
        total = str(self.total) if self.total else "?"
        parts = [f"[{k:>{len(total)}}/{total}] {loss:<{self.loss_width}}", f"seed {seed}"]
        parts += [detail] if detail else []
        parts += [f"{metric_label(m)} {metrics[m]:.3f}" for m in self.metrics
                  if m in metrics and math.isfinite(metrics[m])]
        parts += [status, duration(seconds)]
        if self.total and k < self.total:
            parts.append(f"ETA {duration((time.time() - self.started) / k * (self.total - k))}")
        return "  ".join(parts) + (f"  ({error})" if error else "")


def _mean_sd(values: Any) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" if len(values) > 1 else f"{values.mean():.4f}"


def loss_table(uri: str, sweep_id: str, experiment_id: str) -> list[str]:
    """One row per loss, best first: runs, mean ± sd of the report's primary metric and of the F1 of the
    class the losses find hardest (the lowest mean per-class F1: on MEX-A3T the minority class).

    The runs are those the report compares: FINISHED, no search trials, and in grid/search sweeps
    each loss's variant with the best validation score (``sweep.report.select_metric``).
    """
    from losslab.report import collect, stats
    from losslab.report.build import load_settings

    settings = load_settings()
    primary, select = str(settings["primary_metric"]), str(settings["select_metric"])
    sweep = collect.load_sweep(uri, sweep_id, experiment_id=experiment_id)
    runs = sweep.runs
    finished = runs[(runs["status"] == "FINISHED") & (runs["phase"] != "search")]
    if finished.empty or primary not in finished:
        return []
    selected = stats.select_variants(finished, select) if select in finished else finished
    per_class = [c for c in selected.columns if c.startswith("test/f1_") and c != primary
                 and c != "test/f1_macro" and selected[c].notna().any()]
    columns = [primary] + ([min(per_class, key=lambda c: selected[c].mean())] if per_class else [])
    groups = selected.groupby("loss", sort=False)
    order = groups[primary].mean().sort_values(ascending=not stats.higher_is_better(primary), kind="stable").index
    variants = bool(sweep.variant_keys)  # grid/search: which hyperparameters each loss's row stands for
    rows = []
    for loss in order:
        group = groups.get_group(loss)
        rows.append([str(loss), str(len(group)), *(_mean_sd(group[c]) for c in columns)]
                    + ([str(group["variant"].iloc[0])] if variants else []))
    header = ["loss", "runs", *(metric_label(c) for c in columns)] + (["variant"] if variants else [])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {1}  # runs

    def fmt(row: list[str]) -> str:
        return "  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in
                         enumerate(zip(row, widths))).rstrip()

    return [fmt(header), *(fmt(r) for r in rows)]
