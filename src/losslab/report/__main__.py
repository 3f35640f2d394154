"""``python -m losslab.report``: (re)build a sweep's comparison report from the MLflow store."""

from __future__ import annotations

import argparse
from typing import Sequence

from losslab import quick_exit
from losslab.errors import friendly_exit
from losslab.paths import default_tracking_uri


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m losslab.report", description=__doc__)
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: tracking.experiment in conf/)")
    parser.add_argument("--sweep-id", default=None, help="the sweep to report (default: the latest in the experiment)")
    parser.add_argument("--tracking-uri", default=None,
                        help="store (default: $MLFLOW_TRACKING_URI, else the project's)")
    parser.add_argument("--output", default=None, help="reports folder (default: <project>/reports)")
    parser.add_argument("--reference", "--baseline", dest="reference", default=None,
                        help="loss every other is compared with (default: sweep.report.reference, ce)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report on the parent run")
    return parser.parse_args(argv)


@friendly_exit
def main(argv: Sequence[str] | None = None) -> None:
    from losslab.report.build import write_report
    from losslab.tracking.liveness import close_dead_runs

    args = parse_args(argv)
    settings = {"reference": args.reference} if args.reference else None
    close_dead_runs(args.tracking_uri or default_tracking_uri())  # a dead job's run is KILLED, not RUNNING, in it
    out = write_report(args.tracking_uri or default_tracking_uri(), sweep_id=args.sweep_id, experiment=args.experiment,
                       reports_dir=args.output, log_to_parent=not args.no_log, settings=settings)
    print(f"open {out / 'report.html'}")


if __name__ == "__main__":
    quick_exit.install()  # no exit handler is registered yet: the heavy imports come in main()
    main()
    quick_exit.finished()
