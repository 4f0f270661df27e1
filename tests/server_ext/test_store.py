"""The task store on both backends (SQLite, PostgreSQL): batches, first-wins, requeue, order."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fx_endpoint.protocol import TaskState
from fx_jupyter.server_ext.records import NewTask, ResultIn, StoreConflict, new_id
from fx_jupyter.server_ext.statements import TASK_COLUMNS_OUT
from fx_jupyter.server_ext.store import TaskStore

LOG = logging.getLogger("test-store")


@pytest.fixture
def store(db_url: str, jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[TaskStore]:
    store = TaskStore(db_url, LOG)
    jp_asyncio_loop.run_until_complete(store.open())
    yield store
    jp_asyncio_loop.run_until_complete(store.close())


ROW_NAMES = [c.name for c in TASK_COLUMNS_OUT] + ["data"]


async def tasks_of(store: TaskStore, owner: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """``get_tasks`` rows as dicts, transitions parsed."""
    found = {}
    for task_id, row in (await store.get_tasks(owner, ids)).items():
        task = dict(zip(ROW_NAMES, row))
        task["transitions"] = json.loads(task["transitions"])
        found[task_id] = task
    return found


def tasks_for(endpoint_id: str, n: int, memoize: bool = False) -> list[NewTask]:
    return [NewTask(new_id(), endpoint_id, "fn", b"args-%d" % i, None, memoize) for i in range(n)]


def result(task_id: str, status: str = "success", data: bytes = b"r", ts: float = 1.0) -> ResultIn:
    """A result as the broker makes it: the payload is a buffer over the received frame."""
    return ResultIn(
        task_id, status, memoryview(data), None, "out", None, ts, None, {"running": 0.5}
    )


async def test_backlog_is_read_oldest_first_within_the_window(store):
    new = tasks_for("ep", 5) + tasks_for("other", 2)
    seqs, memo = await store.insert_tasks("alice", new)
    assert seqs == sorted(seqs) and memo == {}
    assert store.committed_seq == seqs[-1]
    rows = await store.fetch_backlog("ep", 0, seqs[-1], 3)
    assert [r[1] for r in rows] == [t.task_id for t in new[:3]]
    assert rows[0][2:] == ("fn", b"args-0", None, 0)
    rows = await store.fetch_backlog("ep", rows[-1][0], seqs[3], 10)
    assert [r[1] for r in rows] == [new[3].task_id]


async def test_results_first_wins_and_only_from_the_tasks_endpoint(store):
    new = tasks_for("ep", 2)
    await store.insert_tasks("alice", new)
    a, b = (t.task_id for t in new)
    outcome = await store.record_reports("ep", [], [result(a), result(a, "failed", b"again")])
    assert [c.task_id for c in outcome.recorded] == [a] and outcome.duplicates == [a]
    outcome = await store.record_reports("elsewhere", [], [result(b)])
    assert outcome.unknown == [b] and outcome.recorded == []
    rows = await tasks_of(store, "alice", [a, b])
    assert rows[a]["status"] == "success" and bytes(rows[a]["data"]) == b"r"
    assert rows[a]["transitions"]["running"] == 0.5 and rows[a]["completion_t"] == 1.0
    assert rows[a]["stdout"] == "out"
    assert rows[b]["status"] == TaskState.WAITING_FOR_EP
    assert await tasks_of(store, "bob", [a]) == {}


async def test_status_reports_never_move_a_finished_task(store):
    new = tasks_for("ep", 2)
    await store.insert_tasks("alice", new)
    a, b = (t.task_id for t in new)
    await store.record_reports("ep", [], [result(a)])
    reports = await store.record_reports(
        "ep", [(a, "running", 2.0), (b, "waiting-for-launch", 2.0), (b, "running", 3.0)], []
    )
    changes = reports.changes
    assert [(c.task_id, c.status) for c in changes] == [(b, "waiting-for-launch"), (b, "running")]
    rows = await tasks_of(store, "alice", [a, b])
    assert rows[a]["status"] == "success" and rows[b]["status"] == "running"
    assert rows[b]["transitions"]["waiting-for-launch"] == 2.0


async def test_requeue_returns_tasks_at_the_endpoint_and_keeps_retries(store):
    new = tasks_for("ep", 3)
    await store.insert_tasks("alice", new)
    a, b, c = (t.task_id for t in new)
    await store.record_reports("ep", [(a, "running", 2.0)], [])
    await store.record_reports("ep", [], [result(b)])
    changes = await store.requeue("ep")
    assert [ch.task_id for ch in changes] == [a]
    rows = await tasks_of(store, "alice", [a, b, c])
    assert rows[a]["status"] == TaskState.WAITING_FOR_EP and rows[a]["retries"] == 0
    assert rows[b]["status"] == "success"
    assert [r[1] for r in await store.fetch_backlog("ep", 0, store.committed_seq, 10)] == [a, c]


async def test_cancel_only_unfinished_tasks_of_the_owner(store):
    new = tasks_for("ep", 2)
    await store.insert_tasks("alice", new)
    a, b = (t.task_id for t in new)
    assert await store.cancel_task("bob", a) is None
    change = await store.cancel_task("alice", a)
    assert change is not None and change.status == TaskState.CANCELLED
    assert await store.cancel_task("alice", a) is None
    await store.record_reports("ep", [], [result(b)])
    assert await store.cancel_task("alice", b) is None
    rows = await tasks_of(store, "alice", [a])
    assert (
        rows[a]["status"] == TaskState.CANCELLED
        and "cancelled by the user" in rows[a]["exception_text"]
    )


async def test_memoized_submission_copies_an_earlier_success(store):
    (first,) = tasks_for("ep", 1, memoize=True)
    await store.insert_tasks("alice", [first])
    await store.record_reports("ep", [], [result(first.task_id, data=b"42")])
    again = NewTask(new_id(), "ep", "fn", first.payload, None, True)
    other_owner = NewTask(new_id(), "ep", "fn", first.payload, None, True)
    _, memo = await store.insert_tasks("alice", [again])
    assert list(memo) == [again.task_id]
    _, memo = await store.insert_tasks("bob", [other_owner])
    assert memo == {}
    rows = await tasks_of(store, "alice", [again.task_id])
    assert (
        rows[again.task_id]["status"] == "success" and bytes(rows[again.task_id]["data"]) == b"42"
    )


async def test_functions_and_endpoints(store):
    fid = await store.register_function("alice", "f", b"code", "src", "3.11", "", False)
    assert await store.register_function("alice", "g", b"code", None, None, "new", True) == fid
    assert await store.register_function("bob", "f", b"code", None, None, "", False) != fid
    record = (await store.get_functions([fid], with_payload=True))[fid]
    assert (record.name, record.public, record.payload) == ("g", True, b"code")
    ep, replaced = await store.register_endpoint("alice", "laptop", "K" * 40, None)
    again, replaced = await store.register_endpoint("alice", "laptop", "L" * 40, "Laptop")
    assert again.endpoint_id == ep.endpoint_id and replaced == "K" * 40
    with pytest.raises(StoreConflict):
        await store.register_endpoint("bob", "laptop", "L" * 40, None)
    [loaded] = await store.load_endpoints()
    assert loaded.public_key == "L" * 40 and loaded.info == {"display_name": "Laptop"}


async def test_sequence_continues_after_reopening(db_url):
    first = TaskStore(db_url, LOG)
    await first.open()
    seqs, _ = await first.insert_tasks("alice", tasks_for("ep", 3))
    await first.set_state({"broker_port": "1234"})
    await first.close()
    second = TaskStore(db_url, LOG)
    await second.open()
    try:
        assert second.committed_seq == seqs[-1]
        more, _ = await second.insert_tasks("alice", tasks_for("ep", 1))
        assert more[0] > seqs[-1]
        assert (await second.get_state())["broker_port"] == "1234"
        assert await second.size_bytes() > 0
    finally:
        await second.close()


async def test_counts(store):
    new = tasks_for("ep", 3) + tasks_for("other", 1)
    await store.insert_tasks("alice", new)
    await store.record_reports("ep", [], [result(new[0].task_id)])
    assert await store.task_counts(owner="alice") == {"*": {"waiting-for-ep": 3, "success": 1}}
    by_ep = await store.task_counts(endpoint_ids=["ep", "nope"], active_only=True)
    assert by_ep == {"ep": {"waiting-for-ep": 2}}
