"""Errors a user can act on, and the CLI wrapper that prints them as one clear message."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class LosslabError(Exception):
    """A problem with the user's data, config or paths: the message names what and how to fix it."""


class DataError(LosslabError):
    """The dataset cannot be used as configured."""


class ConfigError(LosslabError):
    """A config value is missing or impossible."""


class TrainingInterrupted(Exception):
    """A signal (SIGINT/SIGTERM, a cluster's SIGUSR1/2) stopped training at an epoch boundary; a checkpoint
    was saved to resume from."""

    def __init__(self, message: str, run_id: str = "", signal_name: str = "") -> None:
        super().__init__(message)
        self.run_id = run_id
        self.signal_name = signal_name


def debug_enabled() -> bool:
    """``LOSSLAB_DEBUG=1`` shows full tracebacks instead of one-line messages."""
    return os.environ.get("LOSSLAB_DEBUG", "") not in ("", "0", "false")


def friendly_exit(func: Callable[..., T]) -> Callable[..., T]:
    """Run a CLI entry point: a ``LosslabError`` prints ``error: …`` and exits 2 (no traceback);
    ``TrainingInterrupted`` prints ``interrupted: …`` (how to resume) and exits 130.

    Inside a submitit job (a cluster launcher's job, ``$SUBMITIT_FOLDER`` set) both propagate
    instead: Hydra records them as the job's result and the submitting sweep reports the message
    (an exit would leave no result, and the sweep waiting for one)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return func(*args, **kwargs)
        except LosslabError as exc:
            if debug_enabled() or os.environ.get("SUBMITIT_FOLDER"):
                raise
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except TrainingInterrupted as exc:
            if os.environ.get("SUBMITIT_FOLDER"):
                raise
            print(f"interrupted: {exc}", file=sys.stderr)
            sys.exit(130)

    return wrapper
