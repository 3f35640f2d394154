"""Writes off the training loop: one background thread runs them in order, ``flush`` waits for all of them.

Per-epoch store writes (curves, the heartbeat tag) and the per-epoch ``last.ckpt`` are I/O — an
sqlite commit with its fsync, an HTTP round trip, a 17 MB file fsynced — during which the next
epoch can already compute (the writes release the GIL while they wait). Every path that ends a
run flushes first (``tracking.runs.mlflow_run``, the logger's ``finalize``, the checkpoint
callback's ``on_fit_end``), so a run never ends with a write still queued; a process killed with
``-9`` loses at most the writes of its last epoch, which the resumed run repeats from its checkpoint.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

_STOP = object()


class BackgroundWriter:
    """A FIFO of callables run by one daemon thread; ``flush`` blocks until the queue is empty and raises the
    first error a write raised since the last flush (so a failed write is not silently lost)."""

    def __init__(self, name: str = "losslab-writer") -> None:
        self.name = name
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)``; it runs after every write submitted before it."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
        self._queue.put((fn, args, kwargs))

    def flush(self) -> None:
        """Wait until every queued write ran; re-raise the first failure among them."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def pending(self) -> int:
        """Writes queued or running."""
        return self._queue.unfinished_tasks

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                fn, args, kwargs = item
                fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001  (kept for flush to re-raise in the caller's thread)
                if self._error is None:
                    self._error = exc
            finally:
                self._queue.task_done()


_WRITER = BackgroundWriter()


def writer() -> BackgroundWriter:
    """The process's writer (one thread, shared by the logger, the heartbeat and the last checkpoint)."""
    return _WRITER


def flush() -> None:
    """Flush the process's writer (see ``BackgroundWriter.flush``)."""
    _WRITER.flush()
