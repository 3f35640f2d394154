"""Run by importing it, in a sweep's fork server only (``losslab.sweeps.worker_server``): lower the server's priority
to the workers' (``WORKER_NICENESS``; its forks inherit it) and import the training stack once, for every worker
forked from it. While importing, Ctrl-C is left to the sweep's own process, and the server stops as soon as that
process is gone. An import that fails here is no error: each worker then imports what it needs itself, as before.
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import threading

PARENT_PID_ENV = "LOSSLAB_SWEEP_PID"  # the sweep's pid (worker_server.PARENT_PID_ENV)


def _exit_with(parent: int, done: threading.Event) -> None:
    while not done.wait(0.2):
        if os.getppid() != parent:
            os._exit(0)  # the sweep is gone (it failed before needing workers): nothing to serve


def preload() -> None:
    from losslab.sweeps.jobs import warm_up

    parent = int(os.environ.pop(PARENT_PID_ENV))  # popped: not inherited by the workers, nor by what they start
    # The server exits (SystemExit) when the sweep does; registered before the imports, this handler runs after theirs
    # and skips tearing down what they loaded (~2 s here, during which the server still held the console's pipe).
    # Its workers never run it: multiprocessing's children leave through os._exit.
    atexit.register(os._exit, 0)
    done = threading.Event()
    watch = threading.Thread(target=_exit_with, args=(parent, done), daemon=True)
    watch.start()
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # no traceback from here on Ctrl-C: the sweep reports it
    try:
        warm_up()
        gc.freeze()  # as train() does after these imports; here before any fork, so no worker's collections touch
        # (and copy) the pages of the ~1M objects it shares with this server
    except Exception:  # noqa: BLE001  (an optimisation only: the workers import on their own)
        pass
    finally:
        done.set()
        watch.join()  # no other thread left when the server starts forking
        signal.signal(signal.SIGINT, interrupt)


if PARENT_PID_ENV in os.environ:  # set for the fork server only (worker_server.start): anywhere else, a no-op
    preload()
