"""The client submits on its event stream's socket when it is open, and over HTTP otherwise:
a refusal on the socket is raised exactly as the HTTP answer says, and large bodies, or a
client without a stream, use HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from fx_jupyter import Executor, FxAPIError
from fx_jupyter.sdk import client as client_module

from .conftest import wait_for


def square(x):  # type: ignore[no-untyped-def]
    return x * x


def test_executor_submits_on_the_socket(fx_stack: Any) -> None:
    client = fx_stack.client()
    try:
        assert client.events.wait_connected(10)
        with Executor(fx_stack.endpoint_id, client) as ex:
            assert [ex.submit(square, i).result(timeout=30) for i in range(5)] == [
                0,
                1,
                4,
                9,
                16,
            ]
        assert client.events.submits_answered == 5  # one-by-one: one submit each
    finally:
        client.close()


def test_a_refusal_on_the_socket_is_raised_as_over_http(fx_stack: Any) -> None:
    client = fx_stack.client()
    try:
        assert client.events.wait_connected(10)
        function_id = client.register_function(square)
        with pytest.raises(FxAPIError) as info:
            client.run(3, endpoint_id="no-such-endpoint", function_id=function_id)
        assert info.value.http_status == 400
        assert "no endpoint 'no-such-endpoint'" in str(info.value)
        assert client.events.submits_answered == 0
    finally:
        client.close()


def test_large_bodies_and_clients_without_a_stream_use_http(
    fx_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = fx_stack.client()
    try:
        function_id = client.register_function(square)
        task_id = client.run(4, endpoint_id=fx_stack.endpoint_id, function_id=function_id)
        assert client._events is None  # never started: HTTP only
        wait_for(lambda: client.get_task(task_id)["status"] == "success")
        assert client.get_result(task_id) == 16

        assert client.events.wait_connected(10)
        monkeypatch.setattr(client_module, "MAX_SOCKET_SUBMIT_BYTES", 10)
        batch = client.create_batch()
        for i in range(3):
            batch.add(i, endpoint_id=fx_stack.endpoint_id, function_id=function_id)
        task_ids = client.batch_run(batch)
        assert client.events.submits_answered == 0
        with Executor(fx_stack.endpoint_id, client) as ex:
            assert [f.result(timeout=30) for f in ex.get_futures(task_ids)] == [0, 1, 4]
    finally:
        client.close()
