"""A few daemon threads that run the Executor's occasional blocking calls off the event thread.

Fetching a result too large for an event, or cancelling remote tasks, is an HTTP request: it
must not stall the thread that reads events. ``ThreadPoolExecutor`` would do, but its threads
are joined at interpreter exit, so a request stuck on an unreachable service would hold up the
exit of a notebook kernel or a script; these threads are daemons and never do.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class BackgroundWorkers:
    """Run callables on up to ``size`` daemon threads, in submission order, started lazily."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; its exceptions are logged (the callables report their own)."""
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"{self.name} workers are stopped")
            if len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._run, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        self._queue.put((fn, args))

    def stop(self) -> None:
        """Let the threads finish what is queued, then end (does not wait for them)."""
        with self._lock:
            self._stopped = True
            count = len(self._threads)
        for _ in range(count):
            self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # a worker thread must outlive any one job
                log.exception("fx background job %r failed", fn)
