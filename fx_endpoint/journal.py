"""The endpoint's local journal: accepted tasks, and results the service has not acknowledged.

It is what makes "nothing acknowledged is ever lost" hold across a crash of the endpoint or of
the network. A task is written here before the endpoint acknowledges it, and leaves only when
the service acknowledges its result. A result lives in memory while the service acknowledges it
promptly (the common case: milliseconds); one that stays unacknowledged (the service is slow or
gone, the endpoint stops) is written here too, *stored*, so it survives a restart and is sent
again. Should the endpoint crash between a result and its acknowledgement, the task is still
here and runs again: delivery is at-least-once, and the service keeps the first result.

SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives the process dying, and costs
no fsync. Writes are buffered by the daemon's loop and committed in one transaction per loop
turn, so a task costs two rows in batched statements (one insert, one delete), never a commit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .engines.base import Task

_SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    function_id TEXT PRIMARY KEY,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    args BLOB NOT NULL,
    walltime REAL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_function ON tasks (function_id);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    header TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""


def _blob(value: Any) -> Any:
    """A zmq Frame as a buffer sqlite3 can store without copying it first."""
    return value.buffer if hasattr(value, "buffer") else value


class Journal:
    """Buffered writes, committed together by :meth:`commit`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._functions: list[tuple[str, Any]] = []
        self._tasks: list[tuple[Any, ...]] = []
        self._stored: list[tuple[str, str, Any]] = []
        self._forgotten: list[tuple[str]] = []
        #: Function ids stored (or about to be), so a payload is written once, not per task.
        self._stored_functions: set[str] = set()

    # --- buffered writes ----------------------------------------------------------------------

    def accept(self, task: Task, received: float) -> None:
        """Record a task the endpoint received (before acknowledging it)."""
        if task.function_id not in self._stored_functions:
            self._stored_functions.add(task.function_id)
            self._functions.append((task.function_id, _blob(task.function)))
        self._tasks.append(
            (task.task_id, task.function_id, _blob(task.args), task.walltime, received)
        )

    def store_result(self, header: dict[str, Any], payload: Any) -> None:
        """Keep a result that is not acknowledged yet; its task no longer needs to run."""
        self._stored.append((header["task_id"], json.dumps(header), _blob(payload)))

    def forget(self, task_ids: list[str]) -> None:
        """The service acknowledged these results: drop their tasks and stored results."""
        self._forgotten.extend((task_id,) for task_id in task_ids)

    def commit(self) -> None:
        """Apply every buffered write in one transaction."""
        if not (self._tasks or self._stored or self._forgotten):
            return
        db = self._db
        db.execute("BEGIN")
        try:
            if self._functions:
                db.executemany("INSERT OR IGNORE INTO functions VALUES (?, ?)", self._functions)
            if self._tasks:
                db.executemany("INSERT OR IGNORE INTO tasks VALUES (?, ?, ?, ?, ?)", self._tasks)
            if self._stored:
                db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", self._stored)
                db.executemany(
                    "DELETE FROM tasks WHERE task_id = ?", [(row[0],) for row in self._stored]
                )
            if self._forgotten:
                db.executemany("DELETE FROM tasks WHERE task_id = ?", self._forgotten)
                db.executemany("DELETE FROM results WHERE task_id = ?", self._forgotten)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._functions, self._tasks, self._stored, self._forgotten = [], [], [], []

    # --- reads (at start, on reconnect) -------------------------------------------------------

    def pending_tasks(self) -> list[tuple[Task, float]]:
        """Accepted tasks without a stored result, oldest first, with their time of receipt."""
        rows = self._db.execute(
            "SELECT t.task_id, t.function_id, f.payload, t.args, t.walltime, t.received "
            "FROM tasks t JOIN functions f USING (function_id) ORDER BY t.rowid"
        )
        return [
            (Task(tid, fid, fn, args, walltime), received)
            for tid, fid, fn, args, walltime, received in rows
        ]

    def stored_ids(self) -> list[str]:
        """Ids of the stored (unacknowledged) results."""
        return [row[0] for row in self._db.execute("SELECT task_id FROM results ORDER BY rowid")]

    def results(self, task_ids: list[str]) -> Iterator[tuple[dict[str, Any], bytes]]:
        """The stored results of ``task_ids`` (those still there), as they were sent."""
        for task_id in task_ids:
            row = self._db.execute(
                "SELECT header, payload FROM results WHERE task_id = ?", (task_id,)
            ).fetchone()
            if row is not None:
                yield json.loads(row[0]), row[1]

    def collect_garbage(self) -> None:
        """Drop function payloads no pending task needs any more."""
        self.commit()
        self._stored_functions.clear()
        self._db.execute(
            "DELETE FROM functions WHERE function_id NOT IN (SELECT function_id FROM tasks)"
        )

    def close(self) -> None:
        self.commit()
        self._db.close()
