"""Dispatch by credit: batching, order, the in-memory hot queue and its spill to the store."""

from __future__ import annotations

import pytest

from fx_endpoint import protocol
from fx_jupyter.server_ext import dispatch

from .conftest import b64, register_endpoint, register_function, submit


async def test_a_batch_for_a_connected_endpoint_goes_out_in_one_message(api):
    f1 = await register_function(api, b"one")
    f2 = await register_function(api, b"two")
    ep = await register_endpoint(api, "laptop")
    async with ep.connected(credit=100) as peer:
        tasks = [
            {"endpoint_id": "laptop", "function_id": (f1, f2)[i % 2], "payload": b64(b"%d" % i)}
            for i in range(50)
        ]
        _status, body = await api("POST", "submit", {"tasks": tasks})
        msg = await peer.expect(protocol.TASKS)
        assert [h["task_id"] for h in msg.body["tasks"]] == body["task_ids"]
        functions = [bytes(msg.frames[h["function"]]) for h in msg.body["tasks"]]
        assert functions == [(b"one", b"two")[i % 2] for i in range(50)]
        assert len(msg.frames) == 2 + 50  # each function once, then one frame per task
        assert [bytes(msg.frames[h["args"]]) for h in msg.body["tasks"]] == [
            b"%d" % i for i in range(50)
        ]
        await peer.nothing()


async def test_backlog_first_then_new_tasks_in_submission_order(api, fx_service):
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    old = await submit(api, "laptop", fid, n=5)
    async with ep.connected(credit=0) as peer:
        new = await submit(api, "laptop", fid, n=5)
        await peer.nothing()
        await peer.send(protocol.HEARTBEAT, {"credit": 3})
        first = await peer.tasks(3)
        await peer.send(protocol.HEARTBEAT, {"credit": 20})
        rest = await peer.tasks(7)
        assert [h["task_id"] for h, _, _ in first + rest] == old + new
        await peer.nothing()
        link = fx_service.dispatcher.links[ep.endpoint_id]
        assert link.credit == 13 and len(link.inflight) == 10


async def test_a_full_hot_queue_spills_to_the_store_without_losing_or_repeating(api, monkeypatch):
    monkeypatch.setattr(dispatch, "HOT_LIMIT_TASKS", 3)
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    async with ep.connected(credit=2) as peer:
        ids = await submit(api, "laptop", fid, n=4)  # 2 go out, then the queue spills
        got = await peer.tasks(2)
        ids += await submit(api, "laptop", fid, n=6)
        await peer.send(protocol.HEARTBEAT, {"credit": 100})
        got += await peer.tasks(8)
        ids += await submit(api, "laptop", fid, n=2)
        got += await peer.tasks(2)
        await peer.nothing()
    assert [h["task_id"] for h, _, _ in got] == ids


@pytest.mark.parametrize("fx_config", [{"dispatch_batch_size": 4}])
async def test_messages_hold_at_most_the_batch_size_and_byte_bound(api, monkeypatch, fx_config):
    monkeypatch.setattr(dispatch, "MAX_MESSAGE_BYTES", 100)
    fid = await register_function(api, b"f")
    ep = await register_endpoint(api, "laptop")
    ids = await submit(api, "laptop", fid, n=6)
    tasks = [{"endpoint_id": "laptop", "function_id": fid, "payload": b64(b"x" * 80)}] * 2
    ids += (await api("POST", "submit", {"tasks": tasks}))[1]["task_ids"]
    async with ep.connected(credit=10) as peer:
        messages = []
        got = []
        while len(got) < 8:
            msg = await peer.expect(protocol.TASKS)
            messages.append(msg)
            got += [h["task_id"] for h in msg.body["tasks"]]
    assert got == ids
    assert all(len(m.body["tasks"]) <= 4 for m in messages)
    assert all(sum(len(f) for f in m.frames) <= 100 for m in messages)
    assert len(messages) == 3  # 4 | 2 small + 1 big | 1 big
