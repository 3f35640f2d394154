"""Leave a finished command without the interpreter's teardown.

After a command's last line CPython runs its exit handlers (joblib stops its workers, logging and
MLflow flush, ...), then tears every module down and collects the whole heap. After a sweep that
teardown alone took ~1.6 s of the ~2.2 s between its last line and the shell prompt here (2 cores,
``make sweep SWEEP=quick``). ``install()``, called by a ``python -m`` entry point before anything can
register an exit handler, registers one that therefore runs after all the others; once the command
has said ``finished()``, that handler flushes stdout and stderr and ends the process there
(``os._exit``) — everything any library asked to run at exit has run, only the teardown is skipped.
An error, an interruption or a non-zero exit takes the usual way out.

Only ``__main__`` modules call these (never a function that tests or other programs import and call:
their process must end its own way). ``LOSSLAB_FULL_EXIT=1`` keeps the full teardown, and so does a process
where something registered an exit handler before ``install()`` (a tool such as ``coverage run``).
"""

from __future__ import annotations

import atexit
import os
import sys

_status: int | None = None  # set by finished(): the exit status to leave with
_installed = False


def _leave() -> None:
    """The last exit handler: end the process now if the command finished, else let the teardown run."""
    if _status is None:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stream: the normal exit reports it
        return
    os._exit(_status)


def install() -> None:
    """Register the last exit handler (first registered, last run). A no-op with ``LOSSLAB_FULL_EXIT=1``, and when
    some exit handler is registered already (e.g. ``coverage run`` saving its data at exit): that one would run
    after this one, so never."""
    global _installed
    if _installed or os.environ.get("LOSSLAB_FULL_EXIT", "").strip().lower() in ("1", "true", "yes"):
        return
    count = getattr(atexit, "_ncallbacks", None)  # CPython's; without it, nothing can be known: keep the teardown
    if count is None or count() > 0:
        return
    atexit.register(_leave)
    _installed = True


def finished(status: int = 0) -> None:
    """The command ended normally: once every other exit handler has run, leave with ``status``."""
    global _status
    _status = status
