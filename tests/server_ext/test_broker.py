"""The broker with a real Curve DEALER peer: hello, credit, tasks, reports, results, events."""

from __future__ import annotations

import json
import time
from contextlib import closing

from fx_endpoint import protocol
from fx_endpoint.protocol import TaskState
from fx_endpoint.version import PROTOCOL_VERSION, __version__

from .conftest import Api, Registered, b64, register_endpoint, register_function, submit, wait_for
from .peer import Peer, keypair


async def laptop_with_tasks(
    api: Api, n: int = 1, code: bytes = b"function bytes"
) -> tuple[Registered, list[str]]:
    """The endpoint "laptop", not connected, with ``n`` tasks queued (payloads ``args-i``)."""
    fid = await register_function(api, code)
    ep = await register_endpoint(api, "laptop")
    return ep, await submit(api, "laptop", fid, n=n)


async def test_task_round_trip(api, jp_ws_fetch):
    ws = await jp_ws_fetch("fx", "api", "v2", "events")
    ep, ids = await laptop_with_tasks(api, n=3, code=b"the function")
    _, task = await api("GET", f"tasks/{ids[0]}")
    assert task["status"] == TaskState.WAITING_FOR_EP and task["pending"] is True

    async with ep.connected(credit=2) as peer:
        got = await peer.tasks(2)
        assert [h["task_id"] for h, _, _ in got] == ids[:2]
        assert all(fn == b"the function" for _, fn, _ in got)
        assert [a for _, _, a in got] == [b"args-0", b"args-1"]
        await peer.nothing()  # no credit left for the third
        now = time.time()
        await peer.send(protocol.TASK_STATUS, {"updates": [[ids[0], TaskState.RUNNING, now]]})
        await peer.send(
            protocol.RESULTS,
            {
                "results": [{"task_id": ids[0], "status": "success", "ts": now, "stdout": "hi\n"}],
                "credit": 1,
            },
            [b"result bytes"],
        )
        ack = await peer.expect(protocol.RESULTS_ACK)
        assert ack.body["task_ids"] == [ids[0]]
        third = await peer.tasks(1)
        assert third[0][0]["task_id"] == ids[2]

    _status, task = await api("GET", f"tasks/{ids[0]}")
    assert task["status"] == "success" and task["result"] == b64(b"result bytes")
    assert task["details"]["stdout"] == "hi\n"
    assert set(task["details"]["task_transitions"]) >= {"waiting-for-ep", "running", "success"}

    seen = {}
    while ids[0] not in seen or seen[ids[0]]["status"] != "success":
        msg = json.loads(await ws.read_message())
        if msg["type"] == "tasks":
            for event in msg["tasks"]:
                seen[event["task_id"]] = event
    assert seen[ids[0]]["result"] == b64(b"result bytes")
    ws.close()


async def test_an_unregistered_key_is_refused_and_gets_nothing(api, fx_service):
    ep, _ = await laptop_with_tasks(api, n=2)
    public, secret = keypair()  # never registered
    with closing(Peer(ep.broker_url, ep.server_key, public, secret)) as intruder:
        await intruder.send(protocol.HELLO, {"endpoint_id": ep.endpoint_id, "credit": 10})
        await intruder.nothing(0.5)
    assert fx_service.broker.stats["refused_keys"] >= 1
    assert fx_service.dispatcher.links == {}
    assert fx_service.broker.stats["messages_in"] == 0


async def test_hello_for_another_endpoint_or_protocol_is_rejected(api, fx_service):
    ep = await register_endpoint(api, "laptop")
    other = await register_endpoint(api, "server")
    with closing(ep.peer()) as peer:
        reject = await peer.hello(other.endpoint_id, credit=1)
        assert reject.type == protocol.REJECT and ep.endpoint_id in reject.body["reason"]
        reject = await peer.hello(ep.endpoint_id, protocol=PROTOCOL_VERSION + 7, fx_version="9.0")
        assert reject.type == protocol.REJECT
        reason = reject.body["reason"]
        assert "9.0" in reason and __version__ in reason and str(PROTOCOL_VERSION + 7) in reason
    assert fx_service.broker.stats["rejected"] == 2 and fx_service.dispatcher.links == {}


GARBAGE = [
    [b"\x00\xffnot json at all"],
    [b"[1, 2, 3]"],
    [b'{"t": "tasks", "n": 0}'],  # a service-to-endpoint type
    [b'{"t": "launch-missiles", "n": 0}'],
    [
        b'{"t": "results", "n": 2, "results": [{"task_id": "a", "status": "success"}]}',
        b"x",
    ],  # truncated
    [b'{"t": "results", "n": 1, "results": [{"task_id": 5, "status": "success"}]}', b"x"],
    [b'{"t": "results", "n": 1, "results": [{"task_id": "a", "status": "running"}]}', b"x"],
    [b'{"t": "results", "n": 1, "results": "all of them"}', b"x"],
    [b'{"t": "task_status", "n": 0, "updates": [["a", "exploded", 1.0]]}'],
    [b'{"t": "task_status", "n": 0, "updates": [["a", "running"]]}'],
    [b'{"t": "heartbeat", "n": 0, "status": []}'],
    [b'{"t": "heartbeat", "n": 0, "credit": -5}'],
    [b'{"t": "heartbeat", "n": 0, "credit": "lots"}'],
]


async def test_malformed_messages_are_counted_and_dropped(api, fx_service):
    ep, (task_id,) = await laptop_with_tasks(api)
    async with ep.connected() as peer:
        for frames in GARBAGE:
            await peer.send_raw(frames)
        await peer.send(protocol.HEARTBEAT, {"status": {"workers": 1}, "credit": 1})
        await peer.expect(protocol.HEARTBEAT_ACK)
        (task,) = await peer.tasks(1)  # still serving, and the bad credits were not counted
        assert task[0]["task_id"] == task_id
        await peer.nothing()
    assert fx_service.broker.stats["malformed_messages"] == len(GARBAGE)
    _status, body = await api("GET", "endpoints/laptop/status")
    assert body["broker"]["malformed_messages"] == len(GARBAGE)
    assert body["details"] == {"workers": 1}
    assert (await api("GET", f"tasks/{task_id}"))[1]["status"] == TaskState.WAITING_FOR_EP


async def test_messages_before_hello_are_dropped(api, fx_service):
    ep = await register_endpoint(api, "laptop")
    with closing(ep.peer()) as peer:
        await peer.send(protocol.HEARTBEAT, {"credit": 5})
        await peer.nothing()
    assert fx_service.broker.stats["no_session_messages"] == 1


async def test_a_duplicate_result_is_counted_and_not_recorded(api, fx_service):
    ep, (task_id,) = await laptop_with_tasks(api)
    async with ep.connected(credit=1) as peer:
        await peer.tasks(1)
        first = {"task_id": task_id, "status": "success", "ts": time.time()}
        await peer.send(protocol.RESULTS, {"results": [first]}, [b"first"])
        assert (await peer.expect(protocol.RESULTS_ACK)).body["task_ids"] == [task_id]
        replay = {"task_id": task_id, "status": "failed", "exception_text": "late"}
        unknown = {"task_id": "not-a-task-of-this-endpoint", "status": "success"}
        await peer.send(protocol.RESULTS, {"results": [replay, unknown]}, [b"second", b"?"])
        ack = await peer.expect(protocol.RESULTS_ACK)
        assert ack.body["task_ids"] == [task_id, "not-a-task-of-this-endpoint"]
    _status, task = await api("GET", f"tasks/{task_id}")
    assert task["status"] == "success" and task["result"] == b64(b"first")
    assert "exception_text" not in task
    stats = (await api("GET", "stats"))[1]
    assert stats["dispatch"]["duplicate_results"] == 1 and stats["dispatch"]["unknown_results"] == 1


async def test_silent_endpoint_goes_offline_and_gets_its_tasks_again(api, fx_service, jp_ws_fetch):
    ep, ids = await laptop_with_tasks(api, n=2)
    ws = await jp_ws_fetch("fx", "api", "v2", "events")
    async with ep.connected(credit=2, heartbeat_threshold=0.3, heartbeat_period=0.1) as peer:
        assert {h["task_id"] for h, _, _ in await peer.tasks(2)} == set(ids)
        now = time.time()
        await peer.send(
            protocol.TASK_STATUS,
            {"updates": [[ids[0], "running", now], [ids[1], "waiting-for-launch", now]]},
        )

        async def offline() -> bool:
            return (await api("GET", "endpoints/laptop"))[1]["status"] == "offline"

        async def requeued() -> bool:
            tasks = [(await api("GET", f"tasks/{task_id}"))[1] for task_id in ids]
            return all(t["status"] == TaskState.WAITING_FOR_EP for t in tasks)

        # The status goes offline at once; the requeue is a store write that follows it.
        await wait_for(offline)
        await wait_for(requeued)
        for task_id in ids:
            assert (await api("GET", f"tasks/{task_id}"))[1]["details"]["retries"] == 0
        # Reconnecting (a new hello) gets both again.
        await peer.hello(ep.endpoint_id, credit=5)
        assert {h["task_id"] for h, _, _ in await peer.tasks(2)} == set(ids)
    statuses = []
    while "offline" not in statuses:
        msg = json.loads(await ws.read_message())
        if msg["type"] == "endpoints":
            statuses += [e["status"] for e in msg["endpoints"]]
    assert statuses[0] == "online"
    ws.close()


async def test_goodbye_requeues_at_once(api, fx_service):
    ep, (task_id,) = await laptop_with_tasks(api)
    async with ep.connected(credit=1) as peer:
        await peer.tasks(1)
        await peer.send(protocol.TASK_STATUS, {"updates": [[task_id, "running", time.time()]]})

        async def running() -> bool:
            return (await api("GET", f"tasks/{task_id}"))[1]["status"] == "running"

        await wait_for(running)
        await peer.send(protocol.GOODBYE, {})

        async def requeued() -> bool:
            return (await api("GET", f"tasks/{task_id}"))[1]["status"] == TaskState.WAITING_FOR_EP

        await wait_for(requeued)
    assert fx_service.dispatcher.links == {}


async def test_cancel_reaches_the_endpoint_holding_the_task(api, fx_service):
    ep, (task_id,) = await laptop_with_tasks(api)
    async with ep.connected(credit=1) as peer:
        await peer.tasks(1)
        _status, task = await api("DELETE", f"tasks/{task_id}")
        assert task["status"] == TaskState.CANCELLED
        cancel = await peer.expect(protocol.CANCEL)
        assert cancel.body["task_ids"] == [task_id]
        # The endpoint's own "cancelled" result arrives later: a duplicate, acknowledged.
        await peer.send(
            protocol.RESULTS, {"results": [{"task_id": task_id, "status": "cancelled"}]}, [b""]
        )
        await peer.expect(protocol.RESULTS_ACK)
    assert (await api("GET", f"tasks/{task_id}"))[1]["status"] == TaskState.CANCELLED


async def test_deleting_a_connected_endpoint_rejects_it(api, fx_service):
    ep = await register_endpoint(api, "laptop")
    async with ep.connected() as peer:
        await api("DELETE", "endpoints/laptop")
        reject = await peer.expect(protocol.REJECT)
        assert "deleted" in reject.body["reason"]
        await peer.send(protocol.HEARTBEAT, {})
        await peer.nothing()
    assert fx_service.broker.stats["unknown_key_messages"] == 1


async def test_heartbeat_updates_the_endpoint_status(api):
    ep = await register_endpoint(api, "laptop")
    async with ep.connected(credit=3) as peer:
        await peer.send(protocol.HEARTBEAT, {"status": {"workers": 4, "idle_workers": 3}})
        await peer.expect(protocol.HEARTBEAT_ACK)
        _status, body = await api("GET", "endpoints/laptop/status")
        assert body["status"] == "online" and body["details"] == {"workers": 4, "idle_workers": 3}
        assert body["hostname"] and body["fx_version"] == __version__ and body["python"] == "3.11.0"
        assert body["broker"]["credit"] == 3 and body["last_heartbeat"] > 0


async def test_registering_a_new_key_rejects_the_old_connection(api, fx_service):
    old, (task_id,) = await laptop_with_tasks(api)
    async with old.connected(credit=1) as peer:
        await peer.tasks(1)
        new = await register_endpoint(api, "laptop")
        assert new.endpoint_id == old.endpoint_id
        reject = await peer.expect(protocol.REJECT)
        assert "new key" in reject.body["reason"]
    async with new.connected(credit=1) as replacement:
        (task,) = await replacement.tasks(1)  # what the old connection held is sent again
        assert task[0]["task_id"] == task_id
