"""The store's single writer thread with group commit.

Every write of the service goes through one thread (DESIGN.md invariant 4: never on the event
loop). Callers enqueue an operation — a function of an open SQLAlchemy connection — and await a
future. The thread takes everything queued when it wakes up, applies it in ONE transaction, commits
once, and then resolves all the futures; while it commits, new operations pile up for the next
transaction. Under load a single fsync-free WAL commit thus covers many requests, results messages
and heartbeats (invariant 3), and an idle system still commits each write at once.

Each operation runs inside its own savepoint, so one that fails (a constraint, a bug) is rolled
back alone and its caller gets the exception while the others in the group still commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

T = TypeVar("T")
Operation = Callable[[sa.Connection], T]

_STOP = object()


class WriterStopped(RuntimeError):
    """The writer was stopped; the operation was not applied."""


class GroupCommitWriter:
    """Applies queued operations in group transactions on one dedicated thread."""

    def __init__(
        self,
        engine: Engine,
        log: logging.Logger,
        max_group: int = 10_000,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._log = log
        self._max_group = max_group
        self._after_commit = after_commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        #: Committed (or failed) transactions and the operations they carried; read by `stats`.
        self.transactions = 0
        self.operations = 0
        self.failed_transactions = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="fx-store-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Operation[T]) -> asyncio.Future[T]:
        """Queue ``op``; the future resolves on the calling loop once its transaction commits."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._stopped:
            future.set_exception(WriterStopped("the fx store is shut down"))
            return future
        self._queue.put((op, future, loop))
        return future

    def stop(self, timeout: float = 10.0) -> None:
        """Apply what is queued, then end the thread (blocking: call it off the event loop)."""
        self._stopped = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        conn: sa.Connection | None = None
        stop = False
        while not stop:
            group, stop = self._take_group()
            if not group:
                continue
            try:
                if conn is None:
                    conn = self._engine.connect()
            except Exception as e:  # noqa: BLE001 - unreachable database: fail the group, retry
                self._log.error("fx store: cannot connect to the database: %s", e)
                self._resolve_group(group, [(False, e)] * len(group))
                continue
            if not self._apply(conn, group):
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _take_group(self) -> tuple[list[Any], bool]:
        """Block for one operation, then take all others already queued (up to max_group)."""
        item = self._queue.get()
        if item is _STOP:
            return [], True
        group = [item]
        while len(group) < self._max_group:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return group, True
            group.append(item)
        return group, False

    def _apply(self, conn: sa.Connection, group: list[Any]) -> bool:
        """Run ``group`` in one transaction; False when the transaction itself failed."""
        try:
            transaction = conn.begin()
            if len(group) == 1:
                # Alone in its transaction, an operation needs no savepoint: if it fails, the
                # transaction is rolled back instead.
                try:
                    outcomes: list[tuple[bool, Any]] = [(True, group[0][0](conn))]
                except Exception as e:  # noqa: BLE001 - the caller gets it
                    transaction.rollback()
                    self._resolve_group(group, [(False, e)])
                    return True
            else:
                outcomes = [self._run_in_savepoint(conn, op) for op, _future, _loop in group]
            transaction.commit()
        except Exception as e:  # noqa: BLE001 - BEGIN or COMMIT failed: the group is not applied
            self._log.exception("fx store: a group transaction of %d operations failed", len(group))
            self.failed_transactions += 1
            self._resolve_group(group, [(False, e)] * len(group))
            return False
        self.transactions += 1
        self.operations += len(group)
        if self._after_commit is not None:
            self._after_commit()
        self._resolve_group(group, outcomes)
        return True

    @staticmethod
    def _run_in_savepoint(conn: sa.Connection, op: Operation[Any]) -> tuple[bool, Any]:
        savepoint = conn.begin_nested()
        try:
            value = op(conn)
        except Exception as e:  # noqa: BLE001 - the caller gets it
            savepoint.rollback()
            return False, e
        savepoint.commit()
        return True, value

    @staticmethod
    def _resolve_group(group: list[Any], outcomes: list[tuple[bool, Any]]) -> None:
        """Hand the outcomes to each caller's loop: one wake-up per loop, not per operation."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_op, future, loop), (ok, value) in zip(group, outcomes):
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, loop_outcomes in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, loop_outcomes)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass


def _resolve(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.done():  # the caller gave up (cancelled)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
