"""Submitted tasks are followed by the client's event stream until claimed: ``get_futures`` of a
``batch_run`` completes from the events the stream kept, and asks the service only about the
tasks whose events it may have missed (too many followed, or a disconnect since the submit)."""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from fx_jupyter import Executor
from fx_jupyter.sdk import events as events_module

from .conftest import wait_for


def double(x):  # type: ignore[no-untyped-def]
    return 2 * x


def _away_endpoint(stack: Any, name: str) -> str:
    """An endpoint that never connects: its tasks stay waiting."""
    public, _ = zmq.curve_keypair()
    status, body = stack.request("POST", "endpoints", {"name": name, "public_key": public.decode()})
    assert status == 200, body
    return str(body["endpoint_id"])


def _batch(client: Any, endpoint_id: str, function_id: str, items: range) -> list[str]:
    batch = client.create_batch()
    for item in items:
        batch.add(item, endpoint_id=endpoint_id, function_id=function_id)
    return list(client.batch_run(batch))


def test_ended_tasks_are_kept_until_claimed(fx_stack: Any) -> None:
    client = fx_stack.client()
    try:
        stream = client.events
        assert stream.wait_connected(10)
        ended: set[str] = set()
        stream.add_listener(lambda e: ended.add(e["task_id"]) if e["status"] == "success" else None)
        function_id = client.register_function(double)
        task_ids = _batch(client, fx_stack.endpoint_id, function_id, range(20))
        wait_for(lambda: ended >= set(task_ids))  # all ended before anyone claims them

        followed, event = stream.claim(task_ids[0])
        assert followed and event is not None and event["status"] == "success"
        assert stream.claim(task_ids[0]) == (False, None)  # a claim takes it

        with Executor(fx_stack.endpoint_id, client) as ex:
            futures = ex.get_futures(task_ids[1:])
            assert all(f.done() for f in futures)  # from the kept events, at once
            assert [f.result() for f in futures] == [2 * i for i in range(1, 20)]
    finally:
        client.close()


def test_waiting_tasks_are_followed_and_complete_by_their_events(fx_private_stack: Any) -> None:
    stack = fx_private_stack
    client = stack.client()
    try:
        endpoint_id = _away_endpoint(stack, "away")
        assert client.events.wait_connected(10)
        task_ids = _batch(client, endpoint_id, client.register_function(double), range(3))
        assert client.events.claim(task_ids[0]) == (True, None)  # followed, not ended

        with Executor(endpoint_id, client) as ex:
            futures = ex.get_futures(task_ids)
            assert not any(f.done() for f in futures)
            for task_id in task_ids:
                status, _ = stack.request("DELETE", f"tasks/{task_id}")
                assert status == 200
            wait_for(lambda: all(f.cancelled() for f in futures))
    finally:
        client.close()


def test_following_is_bounded_and_the_forgotten_are_asked_about(
    fx_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "FOLLOW_MAX_TASKS", 3)
    client = fx_stack.client()
    try:
        assert client.events.wait_connected(10)
        function_id = client.register_function(double)
        task_ids = _batch(client, fx_stack.endpoint_id, function_id, range(5))
        assert len(client.events._followed) <= 3
        assert client.events.claim(task_ids[0]) == (False, None)  # the oldest were forgotten

        with Executor(fx_stack.endpoint_id, client) as ex:
            futures = ex.get_futures(task_ids)
            assert [f.result(timeout=30) for f in futures] == [0, 2, 4, 6, 8]
    finally:
        client.close()


def test_a_disconnect_forgets_tasks_whose_end_may_be_lost(fx_private_stack: Any) -> None:
    stack = fx_private_stack
    endpoint_id = _away_endpoint(stack, "away")
    client = stack.client()
    try:
        stream = client.events
        assert stream.wait_connected(10)
        task_ids = _batch(client, endpoint_id, client.register_function(double), range(2))

        stack.kill_server()
        wait_for(lambda: not stream.connected)
        assert stream.claim(task_ids[0]) == (False, None)  # events may be lost: ask the service

        stack.start_server()
        assert stream.wait_connected(30)
        status, _ = stack.request("DELETE", f"tasks/{task_ids[1]}")
        assert status == 200
        with Executor(endpoint_id, client) as ex:
            (future,) = ex.get_futures(task_ids[1:])
            wait_for(future.cancelled)  # known from the service, not from a lost event
    finally:
        client.close()
