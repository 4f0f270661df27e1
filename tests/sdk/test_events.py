"""The event stream across a service restart: it reconnects by itself, and futures waiting
through the outage still complete."""

from __future__ import annotations

import time
from concurrent.futures import wait
from typing import Any

import zmq

from fx_jupyter import Executor
from fx_jupyter.sdk.events import event_from_task, websocket_url

from .conftest import Peer, wait_for


def idle(x):  # type: ignore[no-untyped-def]
    return x


def test_websocket_url() -> None:
    assert websocket_url("http://h:1/a/fx/api/v2/") == "ws://h:1/a/fx/api/v2/events"
    assert websocket_url("https://h/fx/api/v2/") == "wss://h/fx/api/v2/events"


def test_a_resynced_state_is_dated_when_it_was_entered() -> None:
    """A widget that learns "running" from a resync must not date it at the question (its
    running time would shrink to the time left)."""
    details = {"endpoint_id": "e", "task_transitions": {"waiting-for-ep": 1.0, "running": 2.5}}
    running = {"task_id": "t", "status": "running", "completion_t": None, "details": details}
    assert event_from_task(running)["ts"] == 2.5
    done = {**running, "status": "success", "completion_t": 3.0}
    assert event_from_task(done)["ts"] == 3.0
    assert event_from_task({"task_id": "t", "status": "running"})["ts"] is None


def test_stream_reconnects_and_futures_survive_a_restart(fx_private_stack: Any) -> None:
    stack = fx_private_stack
    public, _ = zmq.curve_keypair()
    status, body = stack.request(
        "POST", "endpoints", {"name": "away", "public_key": public.decode()}
    )
    assert status == 200, body
    client = stack.client()
    stream = client.events
    assert stream.wait_connected(10)
    first = stream.generation
    ex = Executor("away", client)
    future = ex.submit(idle, 1)
    task_id = wait_for(lambda: future.task_id)

    stack.kill_server()
    wait_for(lambda: not stream.connected)
    stack.start_server()  # same port, same store: the task is still there
    status, _ = stack.request("DELETE", f"tasks/{task_id}")
    assert status == 200
    wait([future], timeout=30)  # by the event, or by the resync after reconnecting
    assert future.cancelled()
    wait_for(lambda: stream.generation is not None and stream.generation > first)
    ex.shutdown()
    client.close()
    assert not stream.connected


def test_a_dropped_client_closes_its_stream(service: Any) -> None:
    import gc

    client = service.client()
    stream = client.events
    assert stream.wait_connected(10)
    thread = stream._thread
    del client
    gc.collect()
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive() and not stream.connected


def test_malformed_messages_are_dropped(peer: Peer) -> None:
    import json

    from fx_jupyter import Client

    good = {"task_id": "t1", "status": "success", "result": "gAVLAS4="}  # pickle of 1
    peer.ws_messages = [
        "not json",
        b"\x00\x01binary garbage",
        json.dumps(["a", "list"]),
        json.dumps({"type": "tasks", "tasks": "not a list"}),
        json.dumps(
            {
                "type": "tasks",
                "tasks": [17, None, {"task_id": "t0", "status": "success", "result": "%%"}],
            }
        ),
        json.dumps({"type": "unknown-kind"}),
        json.dumps({"type": "endpoints", "endpoints": [{"endpoint_id": "e", "status": "online"}]}),
        json.dumps({"type": "tasks", "tasks": [good]}),
    ]
    client = Client(peer.url + "fx/api/v2/", "tok")
    tasks: list[dict[str, Any]] = []
    endpoints: list[dict[str, Any]] = []
    client.events.add_listener(tasks.append)
    client.events.add_listener(endpoints.append, kind="endpoints")
    messages: list[list[dict[str, Any]]] = []
    client.events.add_listener(messages.append, batch=True)
    wait_for(lambda: len(messages) == 2 and len(endpoints) == 1, timeout=10)
    bad, ok = tasks
    assert bad["task_id"] == "t0" and "result" not in bad and "base64" in bad["payload_error"]
    assert ok["result"] == b"\x80\x05K\x01." and endpoints == [
        {"endpoint_id": "e", "status": "online"}
    ]
    assert [[e["task_id"] for e in m] for m in messages] == [["t0"], ["t1"]]  # one call a message
    ws = [h for m, p, h in peer.requests if m == "WS"]
    assert ws and ws[0]["Authorization"] == "Bearer tok"
    client.close()


def test_an_unreachable_service_is_logged_once_then_quietly(caplog: Any, clean_env: Any) -> None:
    """A script whose service went away first gets one warning, through logging; retries are
    debug records; a closed client stops retrying at once and never starts again."""
    import logging

    from fx_jupyter import Client
    from fx_jupyter.testing import free_port

    def attempts() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "cannot connect" in r.getMessage()]

    caplog.set_level(logging.DEBUG, logger="fx_jupyter.sdk.events")
    client = Client(f"http://127.0.0.1:{free_port()}/fx/api/v2/", "tok")
    stream = client.events
    wait_for(lambda: len(attempts()) >= 3, timeout=10)
    levels = [r.levelno for r in attempts()]
    assert levels[0] == logging.WARNING and set(levels[1:]) == {logging.DEBUG}
    client.close()
    assert stream._thread is not None and not stream._thread.is_alive()
    seen = len(attempts())
    again = client.events  # a late listener of a closed client (a widget finishing)
    handle = again.add_listener(print)
    again.remove_listener(handle)
    time.sleep(0.5)
    assert again is stream and len(attempts()) == seen and not again.connected
