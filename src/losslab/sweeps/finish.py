"""The end of a sweep: the comparison report (logged on the parent run), the parent closed, the champion.

The parent ends FINISHED when every child finished and the report was written, else FAILED
with a ``sweep_error`` tag saying why.
"""

from __future__ import annotations

import sys
from pathlib import Path

from losslab.tracking.sweep_runs import SweepParent, child_runs, close_parent, status_counts, sweep_problem


def finish_sweep(parent: SweepParent, report: bool = True, reports_dir: str | Path | None = None,
                 failed: str | None = None) -> Path | None:
    """Write the report (optional) for ``parent``'s sweep and end its parent run; returns the report folder."""
    counts = status_counts(child_runs(parent.uri, parent.experiment_id, parent.run_id))
    problem = sweep_problem(counts, failed)
    out: Path | None = None
    try:
        if report and counts.get("FINISHED"):
            from losslab.report.build import write_report

            out = write_report(parent.uri, sweep_id=parent.sweep_id, experiment_id=parent.experiment_id,
                               reports_dir=reports_dir, log_to_parent=True)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        problem = problem or f"the report failed: {type(exc).__name__}: {exc}"[:500]
    finally:
        close_parent(parent, counts, problem)
    print(f"sweep {parent.sweep_id}: {sum(counts.values())} runs ({counts}); parent {parent.run_id} "
          f"{'FAILED: ' + problem if problem else 'FINISHED'}")
    return out


def register_champion(uri: str, sweep_id: str, experiment: str, model_name: str | None = None) -> None:
    """Register a finished sweep's champion; a failure is a warning (the runs and the report stand)."""
    from losslab.serving.registry import describe, register_sweep

    try:
        print(describe(register_sweep(uri, sweep_id, experiment, model_name)))
    except Exception as exc:  # noqa: BLE001 - the sweep's runs and report stand without it
        print(f"warning: champion of sweep {sweep_id} not registered: {type(exc).__name__}: {exc} "
              f"(retry: make register SWEEP_ID={sweep_id})", file=sys.stderr)
