"""Start the MLflow UI on the project's tracking store (loopback by default).

    python -m losslab.ops.ui [--host 127.0.0.1] [--port 5000]        # or: make ui PORT=5001
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from losslab.paths import default_tracking_uri
from losslab.tracking.store import artifact_root_for


def ui_command(host: str, port: int, uri: str | None = None) -> list[str]:
    """The ``mlflow ui`` command line for ``uri`` (default: the project store), one lean worker."""
    uri = uri or default_tracking_uri()
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
               "--workers", "1"]
    root = artifact_root_for(uri)
    if root:
        command += ["--default-artifact-root", root]
    return command


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m losslab.ops.ui`` (``--host`` defaults to loopback)."""
    parser = argparse.ArgumentParser(prog="python -m losslab.ops.ui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    parser.add_argument("--port", type=int, default=5000)
    return parser.parse_args(argv)


def cli_command(argv: Sequence[str] | None = None, uri: str | None = None) -> list[str]:
    """The command ``main(argv)`` executes: the parsed CLI turned into ``ui_command``."""
    args = parse_args(argv)
    return ui_command(args.host, args.port, uri)


def main(argv: Sequence[str] | None = None) -> None:
    from losslab.tracking.liveness import close_dead_runs

    command = cli_command(argv)
    host, port = command[command.index("--host") + 1], command[command.index("--port") + 1]
    close_dead_runs(command[command.index("--backend-store-uri") + 1])  # no run shown RUNNING for a dead process
    print(f"MLflow UI on http://{host}:{port}  (store: {command[command.index('--backend-store-uri') + 1]})")
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
