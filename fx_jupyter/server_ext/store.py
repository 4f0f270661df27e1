"""The task store: functions, endpoints, tasks, results and service state.

Writes go through the :class:`~.writer.GroupCommitWriter` (one thread, group commit): a write
method queues its operation at once and returns a future, so operations apply in the order they
were called, and callers that need not wait (heartbeats) need not. Reads are coroutines run in a
small thread pool. The event loop never touches the database itself (DESIGN.md invariant 4).
Operations take and return batches — ``executemany`` for inserts and updates, chunked ``IN``
lists for lookups — so a 20,000-task submission or a results message costs a handful of
statements, not one per task (invariant 3). The statements and row-level steps are in
:mod:`.statements`, the record types in :mod:`.records`.

Payload columns hold opaque bytes; the store never interprets them (invariant 1). Payloads
larger than :data:`.blobs.OUT_OF_LINE_BYTES` are files of the blob directory instead
(:mod:`.blobs`): a row names them, the file is written (as durably as the store commits)
before that row commits, and a file is unlinked only after the commit that dropped its last
reference.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa

from fx_endpoint.protocol import TaskState

from . import dbapi, migrate
from .blobs import OUT_OF_LINE_BYTES, Blob, BlobFiles
from .models import TaskRow
from .records import (
    Change,
    EndpointRecord,
    FunctionRecord,
    NewTask,
    Reports,
    ResultIn,
    StoreConflict,
    new_id,
)
from .schema import (
    blobs,
    create_engine,
    endpoints,
    functions,
    is_sqlite,
    results,
    service_state,
    store_url,
    tasks,
)
from .statements import (
    BACKLOG,
    GET_TASKS,
    NON_TERMINAL,
    RESULT_COLUMNS,
    TASK_COLUMNS,
    TASK_COLUMNS_OUT,
    WITH_RESULTS,
    cancel_rows,
    chunks,
    collect_blobs,
    memo_key_of,
    memo_results,
    select_task_states,
    unix_now,
    update_task_states,
)
from .writer import GroupCommitWriter

T = TypeVar("T")


class TaskStore:
    """All persistent state of the service, behind batch-oriented async methods."""

    def __init__(
        self, url: str, log: logging.Logger, read_threads: int = 4, blob_dir: str | None = None
    ) -> None:
        self.url = url
        self.log = log
        #: Out-of-line payloads: ``blob_dir``, by default ``blobs/`` beside an SQLite database
        #: (or in the Jupyter data dir for a server database).
        #: Files are fsync'd only for a store whose commits are (not SQLite's NORMAL mode).
        self.blobs = BlobFiles(blob_dir or _default_blob_dir(url), durable=not is_sqlite(url))
        self.backend = store_url(url).get_backend_name()
        self._write_engine = create_engine(url, writer=True)
        self._read_engine = create_engine(url, writer=False, pool_size=read_threads)
        self._reads = ThreadPoolExecutor(read_threads, thread_name_prefix="fx-store-read")
        self.writer = GroupCommitWriter(self._write_engine, log, after_commit=self._on_commit)
        self._next_seq = 1  # owned by the writer thread
        #: Highest task ``seq`` whose transaction has committed: every task at or below it is
        #: visible to a read that starts now. The dispatcher uses it to split store backlog from
        #: tasks it is handed in memory.
        self.committed_seq = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Create or upgrade the schema, find the last task sequence number, start the writer."""
        if is_sqlite(self.url):
            path = sa.make_url(self.url).database
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        last = await self._run_read(self._open_sync)
        self._next_seq = last + 1
        self.committed_seq = last
        await self.blobs.run(self.blobs.prepare)
        swept = await self.blobs.run(self.blobs.sweep, self._known_blobs)
        if swept:
            self.log.info("fx store: removed %d unreferenced payload files", swept)
        self.writer.start()

    def _known_blobs(self, ids: list[str]) -> set[str]:
        with self._read_engine.connect() as conn:
            found: set[str] = set()
            for chunk in chunks(ids):
                stmt = sa.select(blobs.c.blob_id).where(blobs.c.blob_id.in_(chunk))
                found.update(conn.execute(stmt).scalars())
            return found

    def _open_sync(self) -> int:
        before, after = migrate.upgrade(self._write_engine)
        if before != after:
            self.log.info("fx store schema upgraded from %s to %s", before or "nothing", after)
        with self._read_engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(tasks.c.seq))).scalar() or 0)

    async def close(self) -> None:
        """Apply pending writes, then release threads and connections."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.writer.stop)
        self._reads.shutdown(wait=True)
        self.blobs.close()
        self._write_engine.dispose()
        self._read_engine.dispose()

    def _on_commit(self) -> None:
        self.committed_seq = self._next_seq - 1

    # -- plumbing -----------------------------------------------------------------------------

    def write(self, op: Callable[[sa.Connection], T]) -> asyncio.Future[T]:
        """Queue a write operation for the next group transaction."""
        return self.writer.submit(op)

    async def _run_read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reads, fn, *args)

    async def read(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn(connection)`` in the read pool."""

        def run() -> T:
            with self._read_engine.connect() as conn:
                return fn(conn)

        return await self._run_read(run)

    # -- service state ------------------------------------------------------------------------

    async def get_state(self) -> dict[str, str]:
        """All ``service_state`` entries (broker port, Curve keys)."""

        def q(conn: sa.Connection) -> dict[str, str]:
            return {
                k: v for k, v in conn.execute(sa.select(service_state.c.key, service_state.c.value))
            }

        return await self.read(q)

    def set_state(self, values: dict[str, str]) -> asyncio.Future[None]:
        """Insert or replace ``service_state`` entries."""

        def op(conn: sa.Connection) -> None:
            keys = list(values)
            conn.execute(service_state.delete().where(service_state.c.key.in_(keys)))
            conn.execute(service_state.insert(), [{"key": k, "value": values[k]} for k in keys])

        return self.write(op)

    # -- functions ----------------------------------------------------------------------------

    def register_function(
        self,
        owner: str,
        name: str,
        payload: bytes,
        source: str | None,
        python_version: str | None,
        description: str,
        public: bool,
    ) -> asyncio.Future[str]:
        """Store a function; the same owner and payload bytes give the same id.

        Registering known code again keeps its id and takes the new name, description, source
        and ``public`` flag (the code is the identity; the rest is metadata).
        """

        def op(conn: sa.Connection) -> str:
            code_hash = hashlib.sha256(payload).hexdigest()
            meta = {
                "name": name,
                "description": description,
                "public": public,
                "source": source,
                "python_version": python_version,
            }
            existing = conn.execute(
                sa.select(functions.c.function_id).where(
                    functions.c.owner == owner, functions.c.code_hash == code_hash
                )
            ).scalar()
            if existing is not None:
                conn.execute(
                    functions.update().where(functions.c.function_id == existing).values(**meta)
                )
                return str(existing)
            function_id = new_id()
            conn.execute(
                functions.insert().values(
                    function_id=function_id,
                    owner=owner,
                    payload=payload,
                    code_hash=code_hash,
                    created=unix_now(),
                    **meta,
                )
            )
            return function_id

        return self.write(op)

    async def get_functions(
        self, function_ids: Iterable[str], with_payload: bool = False
    ) -> dict[str, FunctionRecord]:
        """Functions by id (any owner: callers check visibility)."""
        ids = list(dict.fromkeys(function_ids))
        cols = [
            functions.c.function_id,
            functions.c.owner,
            functions.c.name,
            functions.c.description,
            functions.c.public,
            functions.c.source,
            functions.c.python_version,
            functions.c.created,
        ]
        if with_payload:
            cols.append(functions.c.payload)

        def q(conn: sa.Connection) -> dict[str, FunctionRecord]:
            found: dict[str, FunctionRecord] = {}
            for chunk in chunks(ids):
                for row in conn.execute(sa.select(*cols).where(functions.c.function_id.in_(chunk))):
                    found[row.function_id] = FunctionRecord(*row)
            return found

        return await self.read(q) if ids else {}

    # -- endpoints ----------------------------------------------------------------------------

    async def load_endpoints(self) -> list[EndpointRecord]:
        """Every registered endpoint (the broker's allowed keys are built from these)."""

        def q(conn: sa.Connection) -> list[EndpointRecord]:
            cols = [
                endpoints.c.endpoint_id,
                endpoints.c.owner,
                endpoints.c.name,
                endpoints.c.public_key,
                endpoints.c.created,
                endpoints.c.last_heartbeat,
                endpoints.c.info,
            ]
            return [EndpointRecord(*row) for row in conn.execute(sa.select(*cols))]

        return await self.read(q)

    def register_endpoint(
        self, owner: str, name: str, public_key: str, display_name: str | None
    ) -> asyncio.Future[tuple[EndpointRecord, str | None]]:
        """Create the endpoint, or replace the key of the owner's endpoint of that name.

        Returns the record and the replaced public key (None when new or unchanged). Raises
        :class:`StoreConflict` when the key belongs to another endpoint.
        """

        def op(conn: sa.Connection) -> tuple[EndpointRecord, str | None]:
            holder = conn.execute(
                sa.select(endpoints.c.owner, endpoints.c.name).where(
                    endpoints.c.public_key == public_key
                )
            ).first()
            if holder is not None and (holder.owner, holder.name) != (owner, name):
                raise StoreConflict(
                    "this public key is already registered for another endpoint; run "
                    "`fx-endpoint configure` to make a new keypair for this one"
                )
            row = conn.execute(
                sa.select(endpoints).where(endpoints.c.owner == owner, endpoints.c.name == name)
            ).first()
            if row is None:
                record = EndpointRecord(
                    new_id(),
                    owner,
                    name,
                    public_key,
                    unix_now(),
                    None,
                    {"display_name": display_name},
                )
                conn.execute(endpoints.insert().values(**record.__dict__))
                return record, None
            info = dict(row.info or {})
            if display_name is not None:
                info["display_name"] = display_name
            conn.execute(
                endpoints.update()
                .where(endpoints.c.endpoint_id == row.endpoint_id)
                .values(public_key=public_key, info=info)
            )
            record = EndpointRecord(
                row.endpoint_id, owner, name, public_key, row.created, row.last_heartbeat, info
            )
            return record, (row.public_key if row.public_key != public_key else None)

        return self.write(op)

    async def delete_endpoint(self, endpoint_id: str) -> list[Change]:
        """Remove an endpoint; its unfinished tasks end ``cancelled``, and the out-of-line
        arguments they will never need go (files unlinked after the commit)."""

        def op(conn: sa.Connection) -> tuple[list[Change], list[str]]:
            conn.execute(endpoints.delete().where(endpoints.c.endpoint_id == endpoint_id))
            rows = conn.execute(
                sa.select(
                    tasks.c.task_id, tasks.c.owner, tasks.c.transitions, tasks.c.payload_blob
                ).where(tasks.c.endpoint_id == endpoint_id, tasks.c.status.in_(NON_TERMINAL))
            ).all()
            changes = cancel_rows(conn, rows, endpoint_id, "its endpoint was deleted")
            freed = {row.payload_blob for row in rows if row.payload_blob is not None}
            if not freed:
                return changes, []
            dropped = [row.task_id for row in rows if row.payload_blob is not None]
            for chunk in chunks(dropped):
                conn.execute(
                    tasks.update().where(tasks.c.task_id.in_(chunk)).values(payload_blob=None)
                )
            return changes, collect_blobs(conn, sorted(freed))

        changes, doomed = await self.write(op)
        await self._unlink(doomed)
        return changes

    async def _unlink(self, blob_ids: list[str]) -> None:
        """Remove the files of blobs whose rows a committed transaction deleted."""
        if blob_ids:
            await self.blobs.run(self.blobs.remove, blob_ids)

    def endpoint_seen(
        self, endpoint_id: str, last_heartbeat: float, info: dict[str, Any]
    ) -> asyncio.Future[None]:
        """Record an endpoint's last heartbeat and what it said about itself."""

        def op(conn: sa.Connection) -> None:
            conn.execute(
                endpoints.update()
                .where(endpoints.c.endpoint_id == endpoint_id)
                .values(last_heartbeat=last_heartbeat, info=info)
            )

        return self.write(op)

    # -- tasks: writes ------------------------------------------------------------------------

    def insert_tasks(
        self, owner: str, new: list[NewTask], submitted: float | None = None
    ) -> asyncio.Future[tuple[list[int], dict[str, tuple[Change, dict[str, Any]]]]]:
        """Store a submission in one operation, ``waiting-for-ep`` since ``submitted`` (now).

        Returns each task's ``seq`` (request order) and, for memoized tasks whose result already
        exists, the ``success`` change they were stored with and the copied result row (they
        are not dispatched).
        """

        def op(conn: sa.Connection) -> tuple[list[int], dict[str, tuple[Change, dict[str, Any]]]]:
            now = unix_now() if submitted is None else submitted
            memo_keys = {t.task_id: memo_key_of(t) for t in new if t.memoize}
            hits = memo_results(conn, owner, set(memo_keys.values())) if memo_keys else {}
            first = self._next_seq
            self._next_seq += len(new)
            seqs = list(range(first, first + len(new)))
            waiting = TaskState.WAITING_FOR_EP
            queued = json.dumps({waiting: now})  # the same for every task: serialized once
            memoized = json.dumps({waiting: now, TaskState.SUCCESS: now})
            rows = []
            done: dict[str, tuple[Change, dict[str, Any]]] = {}
            for seq, t in zip(seqs, new):
                memo = memo_keys.get(t.task_id)
                hit = hits.get(memo) if memo is not None else None
                if hit is None:
                    status, transitions, completion_t = waiting, queued, None
                else:
                    status, transitions, completion_t = TaskState.SUCCESS, memoized, now
                    change = Change(t.task_id, owner, t.endpoint_id, status, now)
                    done[t.task_id] = (change, {**hit, "task_id": t.task_id, "created": now})
                payload, blob_id = t.payload, None
                if type(payload) is Blob:
                    payload, blob_id = b"", payload.blob_id
                rows.append(
                    (t.task_id, seq, owner, t.endpoint_id, t.function_id, status, payload,
                     now, transitions, 0, t.walltime, completion_t, memo, blob_id)
                )  # fmt: skip
            dbapi.bulk_insert(conn, tasks, TASK_COLUMNS, rows)
            if done:
                conn.execute(results.insert(), [result for _, result in done.values()])
            return seqs, done

        return self.write(op)

    def cancel_task(self, owner: str, task_id: str) -> asyncio.Future[Change | None]:
        """End an unfinished task ``cancelled``; None when it had already finished."""

        def op(conn: sa.Connection) -> Change | None:
            row = conn.execute(
                sa.select(tasks.c.task_id, tasks.c.owner, tasks.c.transitions, tasks.c.endpoint_id)
                .where(tasks.c.task_id == task_id, tasks.c.owner == owner)
                .where(tasks.c.status.in_(NON_TERMINAL))
            ).first()
            if row is None:
                return None
            return cancel_rows(conn, [row], row.endpoint_id, "cancelled by the user")[0]

        return self.write(op)

    def record_reports(
        self, endpoint_id: str, updates: list[tuple[str, str, float]], batch: list[ResultIn]
    ) -> asyncio.Future[Reports]:
        """Apply what an endpoint reported: state changes, then results, in one operation.

        Only tasks assigned to that endpoint and not yet finished change; a finished task keeps
        its final state whatever arrives late. The first result of a task wins: another result
        for a finished task (or a second one in the same batch) is a duplicate; one for a task
        that is not assigned to this endpoint is unknown. Neither changes anything.

        Results over :data:`.blobs.OUT_OF_LINE_BYTES` (those that came in parts hold a list of
        buffers) are written to blob files first (in the blob threads, so the writer keeps
        committing others' work meanwhile); the operation then refers to them, and the files of
        duplicates are unlinked after its commit.
        """
        large = [r for r in batch if type(r.data) is list or _is_large(r.data)]
        if large:
            return asyncio.ensure_future(self._record_large(endpoint_id, updates, batch, large))
        return self.write(self._record_op(endpoint_id, updates, batch, {}, set()))

    async def _record_large(
        self,
        endpoint_id: str,
        updates: list[tuple[str, str, float]],
        batch: list[ResultIn],
        large: list[ResultIn],
    ) -> Reports:
        written: dict[int, tuple[str, int]] = {}
        try:
            for r in large:
                blob_id = await self.blobs.run(self.blobs.write, r.data)
                if type(r.data) is list:  # parts: from now on, the file they made
                    r.data = await self.blobs.run(self.blobs.open, blob_id)
                written[id(r)] = (blob_id, len(r.data))
        except BaseException:
            await self._unlink([blob_id for blob_id, _ in written.values()])
            raise
        unused = {blob_id for blob_id, _ in written.values()}
        try:
            reports = await self.write(
                self._record_op(endpoint_id, updates, batch, written, unused)
            )
        except BaseException:
            await self._unlink([blob_id for blob_id, _ in written.values()])
            raise
        await self._unlink(sorted(unused))
        return reports

    def _record_op(
        self,
        endpoint_id: str,
        updates: list[tuple[str, str, float]],
        batch: list[ResultIn],
        written: dict[int, tuple[str, int]],
        unused: set[str],
    ) -> Callable[[sa.Connection], Reports]:
        """The write operation of :meth:`record_reports`. ``written`` maps ``id(result)`` to
        the blob (id, size) its payload was written to; the operation takes the blobs of the
        results it records out of ``unused``, leaving those of duplicates for unlinking."""

        def op(conn: sa.Connection) -> Reports:
            new_blobs = []
            ids = {u[0] for u in updates}
            ids.update(r.task_id for r in batch)
            current = select_task_states(conn, endpoint_id, ids)
            out = Reports([], [], [], [])
            for task_id, state, ts in updates:
                row = current.get(task_id)
                if row is None or row["status"] in TaskState.TERMINAL:
                    continue
                row["status"] = state
                row["transitions"][state] = ts
                row["dirty"] = True
                out.changes.append(Change(task_id, row["owner"], endpoint_id, state, ts))
            rows = []
            for r in batch:
                row = current.get(r.task_id)
                if row is None:
                    out.unknown.append(r.task_id)
                    continue
                if row["status"] in TaskState.TERMINAL:
                    out.duplicates.append(r.task_id)
                    continue
                row.update(status=r.status, completion_t=r.ts, dirty=True)
                row["transitions"].update(r.transitions)
                row["transitions"][r.status] = r.ts
                if r.retries is not None:
                    row["retries"] = r.retries
                data, blob_id = r.data, None
                if written:
                    blob = written.get(id(r))
                    if blob is not None:
                        data, blob_id = None, blob[0]
                        unused.discard(blob_id)
                        new_blobs.append(
                            {"blob_id": blob_id, "owner": row["owner"], "size": blob[1],
                             "created": r.ts}
                        )  # fmt: skip
                rows.append(
                    (r.task_id, r.status, data, r.exception_text, r.stdout, r.stderr, r.ts,
                     blob_id)
                )  # fmt: skip
                out.recorded.append(Change(r.task_id, row["owner"], endpoint_id, r.status, r.ts))
            if new_blobs:
                conn.execute(blobs.insert(), new_blobs)
            if rows:
                dbapi.bulk_insert(conn, results, RESULT_COLUMNS, rows)
            update_task_states(conn, [r for r in current.values() if r.get("dirty")])
            return out

        return op

    def requeue(self, endpoint_id: str) -> asyncio.Future[list[Change]]:
        """Return an offline endpoint's unfinished tasks to ``waiting-for-ep`` (retries kept)."""

        def op(conn: sa.Connection) -> list[Change]:
            now = unix_now()
            at_endpoint = [s for s in NON_TERMINAL if s != TaskState.WAITING_FOR_EP]
            rows = conn.execute(
                sa.select(tasks.c.task_id, tasks.c.owner, tasks.c.transitions).where(
                    tasks.c.endpoint_id == endpoint_id, tasks.c.status.in_(at_endpoint)
                )
            ).all()
            changes = []
            updates = []
            for task_id, owner, transitions in rows:
                transitions = dict(transitions)
                transitions[TaskState.WAITING_FOR_EP] = now
                updates.append(
                    {
                        "b_task_id": task_id,
                        "status": TaskState.WAITING_FOR_EP,
                        "transitions": transitions,
                    }
                )
                changes.append(Change(task_id, owner, endpoint_id, TaskState.WAITING_FOR_EP, now))
            if updates:
                conn.execute(
                    tasks.update().where(tasks.c.task_id == sa.bindparam("b_task_id")), updates
                )
            return changes

        return self.write(op)

    async def purge_results(self, cutoff: float) -> int:
        """Delete finished tasks completed before ``cutoff`` (Unix seconds) and their results:
        one DELETE per table, so a purge is one short write however many rows expire. Returns
        how many tasks went; unfinished tasks are never touched.

        Out-of-line payloads created before ``cutoff`` that nothing refers to any more go too —
        those of the purged rows, and uploads no task ever used — their files unlinked after
        the commit."""

        def op(conn: sa.Connection) -> tuple[int, list[str]]:
            expired = sa.and_(
                tasks.c.status.in_(sorted(TaskState.TERMINAL)), tasks.c.completion_t < cutoff
            )
            conn.execute(
                results.delete().where(
                    results.c.task_id.in_(sa.select(tasks.c.task_id).where(expired))
                )
            )
            count = int(conn.execute(tasks.delete().where(expired)).rowcount)
            old = conn.execute(sa.select(blobs.c.blob_id).where(blobs.c.created < cutoff))
            return count, collect_blobs(conn, list(old.scalars()))

        count, doomed = await self.write(op)
        await self._unlink(doomed)
        return count

    # -- out-of-line payloads -----------------------------------------------------------------

    def add_blob(self, owner: str, blob_id: str, size: int) -> asyncio.Future[None]:
        """Record an uploaded payload (its file is durable already) as ``owner``'s."""

        def op(conn: sa.Connection) -> None:
            conn.execute(
                blobs.insert().values(blob_id=blob_id, owner=owner, size=size, created=unix_now())
            )

        return self.write(op)

    async def open_blobs(self, owner: str, blob_ids: Iterable[str]) -> dict[str, Blob]:
        """Maps of ``owner``'s uploaded payloads among ``blob_ids``; others (unknown, purged,
        another user's) are absent."""
        ids = list(dict.fromkeys(blob_ids))

        def q(conn: sa.Connection) -> list[str]:
            found: list[str] = []
            for chunk in chunks(ids):
                stmt = sa.select(blobs.c.blob_id).where(
                    blobs.c.blob_id.in_(chunk), blobs.c.owner == owner
                )
                found.extend(conn.execute(stmt).scalars())
            return found

        def open_all(found: list[str]) -> dict[str, Blob]:
            opened = {}
            for blob_id in found:
                try:
                    opened[blob_id] = self.blobs.open(blob_id)
                except FileNotFoundError:  # purged between the query and here
                    continue
            return opened

        return await self.blobs.run(open_all, await self.read(q))

    async def result_blob(self, owner: str, task_id: str) -> tuple[str, Any] | None:
        """``(status, payload)`` of the owner's finished task: a :class:`Blob` when stored out
        of line, bytes (or None) otherwise; None for an unknown task (or another user's)."""

        def q(conn: sa.Connection) -> tuple[str, Any, str | None] | None:
            stmt = (
                sa.select(tasks.c.status, results.c.data, results.c.data_blob)
                .select_from(WITH_RESULTS)
                .where(tasks.c.task_id == task_id, tasks.c.owner == owner)
            )
            row = conn.execute(stmt).first()
            return None if row is None else (row[0], row[1], row[2])

        found = await self.read(q)
        if found is None:
            return None
        status, data, blob_id = found
        if blob_id is not None:
            try:
                return status, await self.blobs.run(self.blobs.open, blob_id)
            except FileNotFoundError:  # purged meanwhile
                return None
        return status, data

    # -- tasks: reads -------------------------------------------------------------------------

    async def get_tasks(self, owner: str, task_ids: Iterable[str]) -> dict[str, TaskRow]:
        """The owner's tasks among ``task_ids``, with their results; others are simply absent."""
        ids = list(dict.fromkeys(task_ids))

        def q(conn: sa.Connection) -> dict[str, TaskRow]:
            found: dict[str, TaskRow] = {}
            for chunk in chunks(ids):
                for row in dbapi.select_by_task_ids(conn, GET_TASKS, {"owner": owner}, chunk):
                    found[row[0]] = row
            return found

        return await self.read(q) if ids else {}

    async def list_tasks(
        self, owner: str, limit: int, endpoint_id: str | None, status: str | None
    ) -> list[TaskRow]:
        """The owner's newest tasks first, without result payloads."""

        def q(conn: sa.Connection) -> list[TaskRow]:
            stmt = sa.select(*TASK_COLUMNS_OUT).select_from(WITH_RESULTS)
            stmt = stmt.where(tasks.c.owner == owner)
            if endpoint_id is not None:
                stmt = stmt.where(tasks.c.endpoint_id == endpoint_id)
            if status is not None:
                stmt = stmt.where(tasks.c.status == status)
            stmt = stmt.order_by(tasks.c.seq.desc()).limit(limit)
            return [(*row, None) for row in conn.execute(stmt)]

        return await self.read(q)

    async def fetch_backlog(
        self, endpoint_id: str, after_seq: int, until_seq: int, limit: int
    ) -> list[tuple[int, str, str, bytes, float | None, int]]:
        """Tasks waiting for an endpoint, oldest first, in the ``seq`` window (after, until].

        Rows are ``(seq, task_id, function_id, payload, walltime, retries)``.
        """

        def q(conn: sa.Connection) -> list[tuple[int, str, str, bytes, float | None, int]]:
            params = {
                "endpoint_id": endpoint_id,
                "after": after_seq,
                "until": until_seq,
                "limit": limit,
            }
            return [
                (seq, task_id, function_id, self.blobs.read(blob) if blob else payload, w, r)
                for seq, task_id, function_id, payload, w, r, blob in conn.execute(BACKLOG, params)
            ]

        return await self.read(q)

    async def task_counts(
        self,
        owner: str | None = None,
        endpoint_ids: Sequence[str] | None = None,
        active_only: bool = False,
    ) -> dict[str, dict[str, int]]:
        """Task counts by state, keyed by endpoint id (or ``"*"`` when not split by endpoint)."""

        def q(conn: sa.Connection) -> dict[str, dict[str, int]]:
            by_endpoint = endpoint_ids is not None
            key = tasks.c.endpoint_id if by_endpoint else sa.literal("*")
            stmt = sa.select(key, tasks.c.status, sa.func.count()).group_by(key, tasks.c.status)
            if owner is not None:
                stmt = stmt.where(tasks.c.owner == owner)
            if active_only:
                stmt = stmt.where(tasks.c.status.in_(NON_TERMINAL))
            counts: dict[str, dict[str, int]] = {}
            if by_endpoint:
                for chunk in chunks(list(endpoint_ids or ())):
                    for ep, state, n in conn.execute(stmt.where(tasks.c.endpoint_id.in_(chunk))):
                        counts.setdefault(ep, {})[state] = n
            else:
                for ep, state, n in conn.execute(stmt):
                    counts.setdefault(ep, {})[state] = n
            return counts

        return await self.read(q)

    async def size_bytes(self) -> int | None:
        """Bytes the database occupies: the SQLite file and its WAL, or PostgreSQL's database."""
        if is_sqlite(self.url):
            path = sa.make_url(self.url).database or ""
            return sum(os.path.getsize(p) for p in (path, path + "-wal") if p and os.path.exists(p))
        if self.backend == "postgresql":
            return await self.read(
                lambda conn: conn.execute(
                    sa.text("SELECT pg_database_size(current_database())")
                ).scalar()
            )
        return None


def _is_large(data: Any) -> bool:
    """Whether a result payload (a buffer, or None) is stored out of line."""
    return data is not None and len(data) > OUT_OF_LINE_BYTES


def _default_blob_dir(url: str) -> str:
    """``blobs/`` beside an SQLite database file, else ``{jupyter_data_dir}/fx/blobs``."""
    parsed = store_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return os.path.join(os.path.dirname(os.path.abspath(parsed.database)), "blobs")
    from jupyter_core.paths import jupyter_data_dir

    return os.path.join(jupyter_data_dir(), "fx", "blobs")
