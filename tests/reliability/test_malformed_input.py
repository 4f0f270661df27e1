"""Malformed input against a live service (real Jupyter server, real HTTP and WebSocket): a clear
error, nothing stored, and the service keeps serving. The per-field validation, the WebSocket and
the ZeroMQ garbage cases are covered in-process by tests/server_ext/test_handlers.py and
tests/server_ext/test_broker.py; these check the same surfaces across a real network hop,
including Tornado's own body handling."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket
from support.databases import Databases
from tornado.ioloop import IOLoop

from fx_jupyter.testing import FxStack

LIMIT = 4096


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, databases: Databases, db_backend: str
) -> Iterator[FxStack]:
    root = tmp_path_factory.mktemp("malformed")
    stack = FxStack(
        root=root,
        extra_server_args=[f"--FxService.max_request_size={LIMIT}"],
        db_url=databases.new(db_backend, root),
    )
    try:
        stack.start_server()
        stack.endpoint_id = stack.configure_endpoint("target", max_workers=1)
        yield stack
    finally:
        stack.teardown()


def snapshot(stack: FxStack) -> tuple[Any, ...]:
    """What a bad request must not change: tasks by state, endpoints, their ids."""
    stats = stack.get("stats")
    endpoints = sorted(e["endpoint_id"] for e in stack.get("endpoints")["endpoints"])
    return stats["store"]["tasks"], endpoints


def a_function(stack: FxStack) -> str:
    status, body = stack.request(
        "POST",
        "functions",
        {"function_name": "f", "function_code": base64.b64encode(b"code").decode()},
    )
    assert status == 200, body
    return body["function_id"]


def test_a_body_over_the_limit_is_413_naming_both_sizes(stack: FxStack) -> None:
    before = snapshot(stack)
    payload = base64.b64encode(b"x" * LIMIT).decode()
    body = {
        "tasks": [
            {"endpoint_id": stack.endpoint_id, "function_id": a_function(stack), "payload": payload}
        ]
    }
    size = len(json.dumps(body).encode())
    status, answer = stack.request("POST", "submit", body)
    assert status == 413, answer
    assert str(LIMIT) in answer["message"] and str(size) in answer["message"], answer
    assert snapshot(stack) == before


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "submit", b"{not json", 400, "json"),
        ("POST", "submit", b"\xff\xfe", 400, "json"),
        ("POST", "submit", [1, 2], 400, "object"),
        ("POST", "submit", {"tasks": "all of them"}, 400, "tasks"),
        ("POST", "submit", {}, 400, "tasks"),
        ("POST", "submit", {"tasks": [{"endpoint_id": 5}]}, 400, "tasks[0]"),
        ("POST", "endpoints", {"name": "x", "public_key": "not z85"}, 400, "public_key"),
        ("POST", "batch_status", {"task_ids": [None]}, 400, "task_ids"),
        ("GET", "tasks/00000000-0000-0000-0000-000000000000", None, 404, "task"),
        ("DELETE", "tasks/not-an-id", None, 404, "task"),
        ("GET", "endpoints/nobody", None, 404, "endpoint"),
        ("DELETE", "endpoints/nobody", None, 404, "endpoint"),
        ("GET", "functions/nothing", None, 404, "function"),
    ],
)
def test_bad_requests_get_a_clear_error_and_change_nothing(
    stack: FxStack, method: str, path: str, body: Any, status: int, words: str
) -> None:
    before = snapshot(stack)
    got, answer = stack.request(method, path, body)
    assert got == status, answer
    assert isinstance(answer, dict) and words in answer["message"].lower(), answer
    assert snapshot(stack) == before


def test_garbage_on_the_event_stream_does_not_break_it(stack: FxStack) -> None:
    async def scenario() -> dict[str, Any]:
        url = stack.base_url.replace("http", "ws") + "fx/api/v2/events"
        request = tornado.httpclient.HTTPRequest(
            url, headers={"Authorization": f"token {stack.token}"}
        )
        ws = await tornado.websocket.websocket_connect(request)
        try:
            for junk in ("{not json", b"\x00\xff" * 1000, json.dumps({"op": "drop_tables"}), ""):
                await ws.write_message(junk, binary=isinstance(junk, bytes))
            payload = base64.b64encode(b"args").decode()
            status, answer = stack.request(
                "POST",
                "submit",
                {
                    "tasks": [
                        {
                            "endpoint_id": stack.endpoint_id,
                            "function_id": a_function(stack),
                            "payload": payload,
                        }
                    ]
                },
            )
            assert status == 200, answer
            while True:
                message = await ws.read_message()
                assert message is not None, "the server closed the stream"
                if answer["task_ids"][0] in message:
                    return json.loads(message)
        finally:
            ws.close()

    event = IOLoop.current().run_sync(scenario, timeout=20)
    assert event
    assert stack.get("version")["api"] == "v2"
