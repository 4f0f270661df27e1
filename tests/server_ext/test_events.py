"""The event hub: per-user delivery, coalescing, throttling, inline payloads."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fx_jupyter.server_ext.events import EventHub
from fx_jupyter.server_ext.records import Change

LOG = logging.getLogger("test-events")


class Sink:
    """A subscriber that keeps what it is sent (what the WebSocket handler would write)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.messages: list[dict[str, Any]] = []
        self.closed = False

    def push(self, text: str) -> None:
        self.messages.append(json.loads(text))

    def shutdown(self) -> None:
        self.closed = True


def change(task_id: str, status: str, owner: str = "alice") -> Change:
    return Change(task_id, owner, "ep", status, 1.0)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_changes_are_coalesced_per_task_and_kept_per_user():
    hub = EventHub(LOG, flush_interval=0.001, inline_limit=10)
    alice, bob = Sink("alice"), Sink("bob")
    hub.subscribe(alice)
    hub.subscribe(bob)
    hub.task_changes([change("t1", "waiting-for-launch"), change("t2", "running")])
    hub.task_changes([change("t1", "running")])
    hub.task_result(change("t1", "success"), b"small", None, "printed", None)
    hub.task_changes([change("b1", "running", owner="bob"), change("x", "running", owner="carol")])
    await settle()
    assert len(alice.messages) == 1
    (msg,) = alice.messages
    assert msg["type"] == "tasks"
    events = {e["task_id"]: e for e in msg["tasks"]}
    assert set(events) == {"t1", "t2"}
    assert events["t1"]["status"] == "success" and events["t1"]["stdout"] == "printed"
    assert events["t1"]["result"] == "c21hbGw=" and events["t1"]["endpoint_id"] == "ep"
    assert [e["task_id"] for e in bob.messages[0]["tasks"]] == ["b1"]


async def test_large_payloads_are_not_inlined_and_failures_carry_their_text():
    hub = EventHub(LOG, flush_interval=0.001, inline_limit=4)
    sink = Sink("alice")
    hub.subscribe(sink)
    hub.task_result(change("big", "success"), b"12345", None, None, None)
    hub.task_result(change("bigerr", "failed"), memoryview(b"123456"), "E: x", None, None)
    hub.task_result(change("bad", "failed"), b"err", "ValueError: no", None, "trace")
    hub.task_result(change("gone", "cancelled"), None, "cancelled by the user", None, None)
    await settle()
    events = {e["task_id"]: e for e in sink.messages[0]["tasks"]}
    # Too large to be inline: the size says so, and that GET tasks/{id}/result has the bytes.
    assert "result" not in events["big"] and events["big"]["status"] == "success"
    assert events["big"]["result_size"] == 5 and "exception_size" not in events["big"]
    assert events["bigerr"]["exception_size"] == 6 and "exception" not in events["bigerr"]
    assert not {"result_size", "exception_size"} & (events["bad"].keys() | events["gone"].keys())
    assert (
        events["bad"]["exception"] == "ZXJy" and events["bad"]["exception_text"] == "ValueError: no"
    )
    assert events["bad"]["stderr"] == "trace"


async def test_a_busy_stream_is_throttled_not_delayed_when_idle():
    hub = EventHub(LOG, flush_interval=0.2, inline_limit=10)
    sink = Sink("alice")
    hub.subscribe(sink)
    hub.task_changes([change("t1", "running")])
    await settle()
    assert len(sink.messages) == 1  # idle: sent on the next loop turn
    hub.task_changes([change("t2", "running")])
    hub.endpoint_changes("alice", [{"endpoint_id": "ep", "status": "online"}])
    await asyncio.sleep(0.02)
    assert len(sink.messages) == 1  # within the window: held back
    await asyncio.sleep(0.3)
    assert [m["type"] for m in sink.messages] == ["tasks", "tasks", "endpoints"]


async def test_nothing_is_built_without_subscribers_and_close_disconnects():
    hub = EventHub(LOG, flush_interval=0.001, inline_limit=10)
    hub.task_changes([change("t1", "running")])
    assert not hub.wants("alice")
    sink = Sink("alice")
    hub.subscribe(sink)
    await settle()
    assert sink.messages == [] and hub.subscriber_count == 1
    hub.close()
    assert sink.closed and hub.subscriber_count == 0


async def test_a_terminal_event_does_not_wait_for_the_window():
    hub = EventHub(LOG, flush_interval=5.0, inline_limit=10)
    sink = Sink("alice")
    hub.subscribe(sink)
    hub.task_changes([change("t1", "running")])
    await settle()
    hub.task_changes([change("t2", "running")])  # throttled: would wait 5 s
    hub.task_result(change("t1", "success"), b"r", None, None, None)
    await asyncio.sleep(0.05)  # at most URGENT_INTERVAL (1 ms) after the last flush
    assert len(sink.messages) == 2
    assert {e["task_id"]: e["status"] for e in sink.messages[1]["tasks"]} == {
        "t2": "running",
        "t1": "success",
    }
