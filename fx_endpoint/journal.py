"""The endpoint's local journal: accepted tasks, and results the service has not acknowledged.

It is what makes "nothing acknowledged is ever lost" hold across a crash of the endpoint or of
the network. A task is written here before the endpoint acknowledges it, and leaves only when
the service acknowledges its result. A result lives in memory while the service acknowledges it
promptly (the common case: milliseconds); one that stays unacknowledged (the service is slow or
gone, the endpoint stops) is written here too, *stored*, so it survives a restart and is sent
again. Should the endpoint crash between a result and its acknowledgement, the task is still
here and runs again: delivery is at-least-once, and the service keeps the first result.

SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives the process dying, and costs
no fsync. Arguments and results over :data:`FILE_BYTES` are files of ``journal-payloads/``
instead (the row holds a marker): SQLite would write each byte twice (log, then database) and
refuses blobs over 1 GB. A file is written before the commit that refers to it (with the same
durability: no fsync) and unlinked after the one that forgets it; files no row names, left by
a crash in between, go at the next start (:meth:`Journal.collect_garbage`). The file work runs
on a thread of the journal's own, begun as soon as a payload is buffered: writing 10 MB cost the
daemon's loop 10-30 ms at the commit, right when the task's result was on its way to the
service; begun at once, it overlaps the task's run, and the commit only waits for a write that
is not done yet. Writes are buffered by the daemon's loop and committed in one transaction at most
20 ms after the first of them (and before the daemon acknowledges tasks), so a task costs two rows
in batched statements (one insert, one delete), never a commit; and a task whose result is
acknowledged before its acceptance was committed costs none (:meth:`Journal.forget`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


#: Payloads larger than this are journal files rather than rows.
FILE_BYTES = 1024 * 1024
#: Most bytes one ``write`` call takes: on the 2-core VM this was tuned on, a new 10 MB file
#: took 21-31 ms to write in calls of 2 MiB or more, 2.5 ms in calls of 1 MiB.
WRITE_PIECE = 1024 * 1024
#: What a row holds instead of a payload kept in a file (no pickle starts with a NUL byte).
_IN_FILE = b"\0fx-journal-file"


def _blob(value: Any) -> Any:
    """A zmq Frame as a buffer sqlite3 can store without copying it first."""
    return value.buffer if hasattr(value, "buffer") else value


def _file_name(task_id: str, kind: str) -> str:
    """A file name for a task's payload (task ids come from the network: never a path)."""
    return f"{hashlib.sha256(task_id.encode()).hexdigest()[:32]}.{kind}"


class Journal:
    """Buffered writes, committed together by :meth:`commit`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._functions: list[tuple[str, Any]] = []
        #: Accepted tasks not committed yet, by id (see :meth:`forget`).
        self._tasks: dict[str, tuple[Any, ...]] = {}
        self._stored: list[tuple[str, str, Any]] = []
        self._forgotten: list[tuple[str]] = []
        #: Function ids stored (or about to be), so a payload is written once, not per task.
        self._stored_functions: set[str] = set()
        self._files = path.parent / "journal-payloads"
        self._files.mkdir(mode=0o700, exist_ok=True)
        #: Ids of tasks with payload files, so forgetting the others costs no unlink, with the
        #: write of the last one (None: written by an earlier run).
        self._with_files: dict[str, Future[None] | None] = {}
        #: The file thread: one, so that its jobs run in order (an unlink after its write).
        self._file_thread = ThreadPoolExecutor(1, thread_name_prefix="fx-journal-files")
        #: Writes of files that buffered rows name, to finish before those rows commit.
        self._writing: list[Future[None]] = []

    # --- buffered writes ----------------------------------------------------------------------

    def accept(self, task: Task, received: float) -> None:
        """Record a task the endpoint received (before acknowledging it)."""
        if task.function_id not in self._stored_functions:
            self._stored_functions.add(task.function_id)
            self._functions.append((task.function_id, _blob(task.function)))
        self._tasks[task.task_id] = (
            task.task_id,
            task.function_id,
            self._payload(task.task_id, "args", _blob(task.args)),
            task.walltime,
            received,
        )

    def store_result(self, header: dict[str, Any], payload: Any) -> None:
        """Keep a result that is not acknowledged yet; its task no longer needs to run."""
        task_id = header["task_id"]
        self._stored.append(
            (task_id, json.dumps(header), self._payload(task_id, "result", _blob(payload)))
        )

    def forget(self, task_ids: list[str]) -> None:
        """The service acknowledged these results: drop their tasks and stored results.

        A task whose acceptance is not committed yet just leaves the buffer: a task that comes
        and goes between two commits costs no write at all.
        """
        for task_id in task_ids:
            if self._tasks.pop(task_id, None) is None or self._stored:
                self._forgotten.append((task_id,))
            else:
                self._unlink_files([task_id])  # any file was for a row that never committed

    def commit(self) -> None:
        """Apply every buffered write in one transaction (once the files it names are)."""
        if not (self._tasks or self._stored or self._forgotten):
            self._writing = []  # no buffered row names those files: the sweep takes them
            return
        for write in self._writing:
            write.result()  # raises what the write raised (and again at the next commit)
        self._writing = []
        db = self._db
        db.execute("BEGIN")
        try:
            if self._functions:
                db.executemany("INSERT OR IGNORE INTO functions VALUES (?, ?)", self._functions)
            if self._tasks:
                db.executemany(
                    "INSERT OR IGNORE INTO tasks VALUES (?, ?, ?, ?, ?)", self._tasks.values()
                )
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
        if self._with_files and self._forgotten:
            self._unlink_files([row[0] for row in self._forgotten])
        self._functions, self._tasks, self._stored, self._forgotten = [], {}, [], []

    def _payload(self, task_id: str, kind: str, payload: Any) -> Any:
        """What a row holds for ``payload``: itself, or the marker of a file the file thread
        begins to write now."""
        if len(payload) <= FILE_BYTES:
            return payload
        name = _file_name(task_id, kind)
        write = self._file_thread.submit(_write_file, self._files / name, payload)
        self._writing.append(write)
        self._with_files[task_id] = write
        return _IN_FILE + name.encode()

    def _from_file(self, value: bytes) -> bytes:
        """A payload column's bytes: the value itself, or the file it names."""
        if value[: len(_IN_FILE)] != _IN_FILE:
            return value
        return (self._files / self._from_name(value)).read_bytes()

    def _unlink_files(self, task_ids: list[str]) -> None:
        """Remove the files of ``task_ids``: now when they are written, else on the file thread
        once they are (its jobs run in order). One left behind is swept at the next start."""
        later = []
        for task_id in task_ids:
            if task_id not in self._with_files:
                continue
            write = self._with_files.pop(task_id)
            paths = [self._files / _file_name(task_id, kind) for kind in ("args", "result")]
            if write is None or write.done():
                _unlink_all(paths)
            else:
                later += paths
        if later:
            self._file_thread.submit(_unlink_all, later)

    # --- reads (at start, on reconnect) -------------------------------------------------------

    def pending_tasks(self) -> list[tuple[Task, float]]:
        """Accepted tasks without a stored result, oldest first, with their time of receipt."""
        rows = self._db.execute(
            "SELECT t.task_id, t.function_id, f.payload, t.args, t.walltime, t.received "
            "FROM tasks t JOIN functions f USING (function_id) ORDER BY t.rowid"
        )
        return [
            (Task(tid, fid, fn, self._from_file(args), walltime), received)
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
                yield json.loads(row[0]), self._from_file(row[1])

    def collect_garbage(self) -> None:
        """Drop function payloads no pending task needs any more, and payload files no row
        names (a crash between writing one and committing, or committing and unlinking)."""
        self.commit()
        self._stored_functions.clear()
        self._db.execute(
            "DELETE FROM functions WHERE function_id NOT IN (SELECT function_id FROM tasks)"
        )
        named = {
            self._from_name(value): task_id
            for query in ("SELECT task_id, args FROM tasks", "SELECT task_id, payload FROM results")
            for task_id, value in self._db.execute(query)
            if value[: len(_IN_FILE)] == _IN_FILE
        }
        self._with_files = dict.fromkeys(named.values())
        for name in os.listdir(self._files):
            if name not in named:
                os.unlink(self._files / name)

    @staticmethod
    def _from_name(value: bytes) -> str:
        return value[len(_IN_FILE) :].decode()

    def close(self) -> None:
        """Commit what is buffered, finish the file work and stop its thread."""
        try:
            self.commit()
        finally:
            self._file_thread.shutdown(wait=True)
            self._db.close()


def _write_file(path: Path, payload: Any) -> None:
    """A payload file (on the file thread), in writes of at most :data:`WRITE_PIECE` bytes.

    Written under another name and renamed: a file of that name that a committed row names
    (a task sent again before the commit that forgets it) is never seen half rewritten.
    """
    view = memoryview(payload).cast("B")
    temp = path.with_name(path.name + ".partial")
    with open(temp, "wb", buffering=0) as f:
        start = 0
        while start < view.nbytes:
            start += f.write(view[start : start + WRITE_PIECE])
    os.replace(temp, path)


def _unlink_all(paths: list[Path]) -> None:
    """Remove payload files (on the file thread); already gone is fine."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
