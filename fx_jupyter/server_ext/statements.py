"""The store's statements and the row-level steps its write operations share.

Everything here runs inside the writer's transactions (or a reader's), on one connection. The
hot statements are built once at import: constructing and cache-keying a statement costs more
than running it on SQLite. The task-id IN lists are added by :func:`.dbapi.select_by_task_ids`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from fx_endpoint.protocol import TaskState

from . import dbapi
from .records import Change, NewTask
from .schema import blobs, results, tasks

T = TypeVar("T")

TASK_COLUMNS = (
    "task_id",
    "seq",
    "owner",
    "endpoint_id",
    "function_id",
    "status",
    "payload",
    "created",
    "transitions",
    "retries",
    "walltime",
    "completion_t",
    "memo_key",
    "payload_blob",
)
RESULT_COLUMNS = (
    "task_id",
    "status",
    "data",
    "exception_text",
    "stdout",
    "stderr",
    "created",
    "data_blob",
)
#: Bound parameters per IN list: far below SQLite's 32,766 and PostgreSQL's 65,535.
CHUNK = 500
NON_TERMINAL = tuple(s for s in TaskState.ALL if s not in TaskState.TERMINAL)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices short enough for one IN list."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def unix_now() -> float:
    """The time stored in timestamps: Unix seconds."""
    return time.time()


def memo_key_of(task: NewTask) -> str:
    """What makes two tasks the same call: the function and the argument bytes."""
    h = hashlib.sha256(task.function_id.encode())
    h.update(b"\0")
    h.update(task.payload)
    return h.hexdigest()


def memo_results(conn: sa.Connection, owner: str, keys: set[str]) -> dict[str, dict[str, Any]]:
    """memo_key -> the result row of an earlier successful task of the owner with that key."""
    hits: dict[str, dict[str, Any]] = {}
    for chunk in chunks(sorted(keys)):
        stmt = (
            sa.select(tasks.c.memo_key, results)
            .select_from(tasks.join(results, results.c.task_id == tasks.c.task_id))
            .where(
                tasks.c.owner == owner,
                tasks.c.memo_key.in_(chunk),
                tasks.c.status == TaskState.SUCCESS,
            )
        )
        for row in conn.execute(stmt).mappings():
            result = dict(row)
            hits.setdefault(result.pop("memo_key"), result)
    return hits


def select_task_states(
    conn: sa.Connection, endpoint_id: str, ids: set[str]
) -> dict[str, dict[str, Any]]:
    """Mutable copies of the state of the endpoint's tasks among ``ids``.

    Looked up by primary key, the endpoint checked here: given "endpoint_id = ? AND task_id IN
    (...)", SQLite would walk the endpoint's index over all its tasks instead.
    """
    found: dict[str, dict[str, Any]] = {}
    for chunk in chunks(list(ids)):
        rows = dbapi.select_by_task_ids(conn, SELECT_STATE, {}, chunk)
        for task_id, owner, endpoint, status, transitions, retries, completion_t in rows:
            if endpoint != endpoint_id:
                continue
            found[task_id] = {
                "task_id": task_id,
                "owner": owner,
                "status": status,
                "transitions": json.loads(transitions),
                "retries": retries,
                "completion_t": completion_t,
            }
    return found


UPDATE_NAMES = ("b_status", "b_transitions", "b_retries", "b_completion_t", "b_task_id")


def update_task_states(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Write back status, transitions, retries and completion time of ``rows`` (executemany)."""
    if rows:
        params = [
            (
                r["status"],
                json.dumps(r["transitions"]),
                r["retries"],
                r["completion_t"],
                r["task_id"],
            )
            for r in rows
        ]
        dbapi.execute(conn, UPDATE_STATE, UPDATE_NAMES, params)


def cancel_rows(
    conn: sa.Connection, rows: Sequence[Any], endpoint_id: str, reason: str
) -> list[Change]:
    """Mark ``(task_id, owner, transitions)`` rows cancelled, with a result saying why."""
    now = unix_now()
    changes = []
    updates = []
    for task_id, owner, transitions, *_ in rows:
        transitions = dict(transitions)
        transitions[TaskState.CANCELLED] = now
        updates.append(
            {
                "b_task_id": task_id,
                "status": TaskState.CANCELLED,
                "transitions": transitions,
                "completion_t": now,
            }
        )
        changes.append(Change(task_id, owner, endpoint_id, TaskState.CANCELLED, now))
    if updates:
        conn.execute(tasks.update().where(tasks.c.task_id == sa.bindparam("b_task_id")), updates)
        conn.execute(
            results.insert(),
            [
                {
                    "task_id": c.task_id,
                    "status": TaskState.CANCELLED,
                    "data": None,
                    "exception_text": f"task {c.task_id} was {reason}",
                    "stdout": None,
                    "stderr": None,
                    "created": now,
                }
                for c in changes
            ],
        )
    return changes


def collect_blobs(conn: sa.Connection, candidates: Sequence[str]) -> list[str]:
    """Delete the ``blobs`` rows among ``candidates`` that no task or result refers to any
    more; returns their ids, whose files the caller unlinks once the transaction commits."""
    doomed: list[str] = []
    for chunk in chunks(candidates):
        unreferenced = sa.and_(
            blobs.c.blob_id.in_(chunk),
            ~sa.exists().where(tasks.c.payload_blob == blobs.c.blob_id),
            ~sa.exists().where(results.c.data_blob == blobs.c.blob_id),
        )
        ids = list(conn.execute(sa.select(blobs.c.blob_id).where(unreferenced)).scalars())
        if ids:
            conn.execute(blobs.delete().where(blobs.c.blob_id.in_(ids)))
            doomed.extend(ids)
    return doomed


SELECT_STATE = sa.select(
    tasks.c.task_id,
    tasks.c.owner,
    tasks.c.endpoint_id,
    tasks.c.status,
    tasks.c.transitions,
    tasks.c.retries,
    tasks.c.completion_t,
)

UPDATE_STATE = (
    tasks.update()
    .where(tasks.c.task_id == sa.bindparam("b_task_id"))
    .values(
        status=sa.bindparam("b_status"),
        transitions=sa.bindparam("b_transitions"),
        retries=sa.bindparam("b_retries"),
        completion_t=sa.bindparam("b_completion_t"),
    )
)

#: The columns of a models.TaskRow (``transitions`` as its JSON text), before ``data``.
TASK_COLUMNS_OUT = (
    tasks.c.task_id,
    tasks.c.status,
    tasks.c.endpoint_id,
    tasks.c.function_id,
    tasks.c.created,
    sa.type_coerce(tasks.c.transitions, sa.Text).label("transitions"),
    tasks.c.retries,
    tasks.c.walltime,
    tasks.c.completion_t,
    results.c.exception_text,
    results.c.stdout,
    results.c.stderr,
)
WITH_RESULTS = tasks.outerjoin(results, results.c.task_id == tasks.c.task_id)

#: Task rows with the result payload, and the size of a result stored out of line (then
#: ``data`` is NULL: the answer says how large it is and where to fetch it).
GET_TASKS = (
    sa.select(*TASK_COLUMNS_OUT, results.c.data, blobs.c.size)
    .select_from(WITH_RESULTS.outerjoin(blobs, blobs.c.blob_id == results.c.data_blob))
    .where(tasks.c.owner == sa.bindparam("owner"))
)

BACKLOG = (
    sa.select(
        tasks.c.seq,
        tasks.c.task_id,
        tasks.c.function_id,
        tasks.c.payload,
        tasks.c.walltime,
        tasks.c.retries,
        tasks.c.payload_blob,
    )
    .where(
        tasks.c.endpoint_id == sa.bindparam("endpoint_id"),
        tasks.c.status == TaskState.WAITING_FOR_EP,
        tasks.c.seq > sa.bindparam("after"),
        tasks.c.seq <= sa.bindparam("until"),
    )
    .order_by(tasks.c.seq)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
