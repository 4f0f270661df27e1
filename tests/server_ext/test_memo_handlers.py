"""Memoization through ``POST submit``: what feeds the memo, what reuses it, and whose it is.

A memoized task (``"memoize": true``) whose function and argument bytes equal those of an earlier
*successful memoized* task of the *same user* is stored ``success`` with a copy of that result and
never dispatched. The endpoint here is a protocol peer, so the tests see exactly what is sent.
"""

from __future__ import annotations

from typing import Any

import pytest

from fx_endpoint import protocol
from fx_endpoint.protocol import TaskState

from .conftest import ALICE, BOB, Api, Registered, b64, register_endpoint, register_function


def task(function_id: str, payload: bytes = b"same", **options: Any) -> dict[str, Any]:
    return {"endpoint_id": "laptop", "function_id": function_id, "payload": b64(payload), **options}


async def submit_one(api: Api, item: dict[str, Any], user: str = ALICE) -> str:
    status, body = await api("POST", "submit", {"tasks": [item]}, user=user)
    assert status == 200, body
    return body["task_ids"][0]


async def run_at_endpoint(
    ep: Registered, task_ids: list[str], status: str = "success", data: bytes = b"42"
) -> None:
    """Connect as the endpoint, receive exactly ``task_ids``, and report them ``status``."""
    async with ep.connected(credit=len(task_ids) + 1) as peer:
        received = await peer.tasks(len(task_ids))
        assert sorted(h["task_id"] for h, _, _ in received) == sorted(task_ids)
        await peer.nothing(0.2)  # and nothing else: memo hits are never dispatched
        extra = {"exception_text": "ValueError: boom"} if status == "failed" else {}
        await peer.send(
            protocol.RESULTS,
            {"results": [{"task_id": t, "status": status, **extra} for t in task_ids]},
            [data] * len(task_ids),
        )
        await peer.expect(protocol.RESULTS_ACK)


async def state(api: Api, task_id: str, user: str = ALICE) -> dict[str, Any]:
    status, body = await api("GET", f"tasks/{task_id}", user=user)
    assert status == 200, body
    return body


async def test_another_users_identical_call_is_not_answered_from_my_memo(api):
    fid = await register_function(api, public=True)
    mine = await register_endpoint(api, "laptop")
    await register_endpoint(api, "laptop", user=BOB)
    first = await submit_one(api, task(fid, memoize=True))
    await run_at_endpoint(mine, [first])

    # Bob runs alice's public function with the very same argument bytes: it is his own call.
    bobs = await submit_one(api, task(fid, memoize=True), user=BOB)
    body = await state(api, bobs, user=BOB)
    assert body["status"] == TaskState.WAITING_FOR_EP and "result" not in body
    assert (await api("GET", f"tasks/{first}", user=BOB))[0] == 404

    again = await submit_one(api, task(fid, memoize=True))
    body = await state(api, again)
    assert body["status"] == TaskState.SUCCESS and body["result"] == b64(b"42")


async def test_a_failed_task_is_not_memoized(api):
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    first = await submit_one(api, task(fid, memoize=True))
    await run_at_endpoint(ep, [first], status="failed", data=b"error")
    assert (await state(api, first))["status"] == TaskState.FAILED

    second = await submit_one(api, task(fid, memoize=True))
    assert (await state(api, second))["status"] == TaskState.WAITING_FOR_EP
    await run_at_endpoint(ep, [second], data=b"ok")

    third = await submit_one(api, task(fid, memoize=True))
    body = await state(api, third)
    assert body["status"] == TaskState.SUCCESS and body["result"] == b64(b"ok")
    assert set(body["details"]["task_transitions"]) == {TaskState.WAITING_FOR_EP, TaskState.SUCCESS}


async def test_only_memoized_tasks_feed_and_use_the_memo(api):
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    plain = await submit_one(api, task(fid))
    await run_at_endpoint(ep, [plain])
    # An earlier success without memoize does not answer a memoized call...
    memoized = await submit_one(api, task(fid, memoize=True))
    assert (await state(api, memoized))["status"] == TaskState.WAITING_FOR_EP
    await run_at_endpoint(ep, [memoized])
    # ...and a call without memoize (or memoize false) runs even when a memo exists.
    status, body = await api("POST", "submit", {"tasks": [task(fid), task(fid, memoize=False)]})
    assert status == 200, body
    await run_at_endpoint(ep, body["task_ids"])


async def test_a_batch_mixes_hits_and_misses_and_dispatches_only_the_misses(api):
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    await run_at_endpoint(ep, [await submit_one(api, task(fid, b"a", memoize=True))])

    items = [task(fid, b"a", memoize=True), task(fid, b"b", memoize=True)] * 2
    status, body = await api("POST", "submit", {"tasks": items})
    assert status == 200, body
    hit1, miss1, hit2, miss2 = body["task_ids"]
    for hit in (hit1, hit2):
        assert (await state(api, hit))["status"] == TaskState.SUCCESS
    # Identical calls in one request have no earlier result yet: both run.
    await run_at_endpoint(ep, [miss1, miss2], data=b"b-result")


@pytest.mark.parametrize("value", ["true", 1, None, [True]])
async def test_malformed_memoize_is_refused_and_nothing_is_stored(api, value):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    items = [task(fid, memoize=True), task(fid, memoize=value)]
    status, body = await api("POST", "submit", {"tasks": items})
    assert status == 400 and body["error"] == "bad_request"
    assert body["message"].startswith("tasks[1].memoize: expected true or false")
    assert (await api("GET", "tasks"))[1]["tasks"] == []
