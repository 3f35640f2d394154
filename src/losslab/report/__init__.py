"""The sweep comparison report, built from the MLflow store alone.

    python -m losslab.report [--experiment mex-a3t] [--sweep-id <id>]   # or: make report SWEEP_ID=<id>

``collect`` reads the runs back, ``stats`` computes intervals, paired tests and ranks, ``plots``
draws the figures, ``sections`` writes them into a ``render.Document`` (Markdown + HTML), and
``build.write_report`` puts it all in ``reports/<sweep_id>/`` and logs it on the sweep's parent run.
"""

from __future__ import annotations

from typing import Any


def write_report(*args: Any, **kwargs: Any) -> Any:
    """See ``losslab.report.build.write_report`` (imported lazily: pandas/matplotlib are heavy)."""
    from losslab.report.build import write_report as build

    return build(*args, **kwargs)
