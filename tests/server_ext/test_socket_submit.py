"""Submits over the events WebSocket: stored and answered like ``POST submit``, the answer ahead
of the tasks' events; every malformed message gets a ``submit_error`` and changes nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from jupyter_server.auth.authorizer import Authorizer
from traitlets.config import Config

from fx_endpoint.protocol import TaskState
from fx_jupyter.server_ext.validation import OFF_LOOP_BYTES

from .conftest import ALICE, BOB, b64, register_endpoint, register_function, submit


def submit_message(request_id: Any, body: Any) -> str:
    return json.dumps({"type": "submit", "id": request_id, "body": body})


def task(endpoint: str, function_id: str, payload: bytes = b"args") -> dict[str, Any]:
    return {"endpoint_id": endpoint, "function_id": function_id, "payload": b64(payload)}


async def events_socket(jp_ws_fetch: Any, user: str = ALICE) -> Any:
    return await jp_ws_fetch(
        "fx", "api", "v2", "events", headers={"Authorization": f"token {user}"}
    )


async def test_a_submit_is_stored_and_answered_ahead_of_its_events(api, jp_ws_fetch):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    ws = await events_socket(jp_ws_fetch)
    body = {"tasks": [task("laptop", fid), task("laptop", fid)], "task_group_id": "g1"}
    await ws.write_message(submit_message(7, body))

    answer = json.loads(await ws.read_message())
    assert answer["type"] == "submitted" and answer["id"] == 7
    assert answer["task_group_id"] == "g1" and len(answer["task_ids"]) == 2
    submitted = {}
    for task_id in answer["task_ids"]:
        status, record = await api("GET", f"tasks/{task_id}")
        assert status == 200 and record["status"] == TaskState.WAITING_FOR_EP
        submitted[task_id] = record["details"]["task_transitions"][TaskState.WAITING_FOR_EP]
    events = json.loads(await ws.read_message())
    assert events["type"] == "tasks"
    # Each event is dated as the store dates the state (what widgets order states by).
    assert {e["task_id"]: e["ts"] for e in events["tasks"]} == submitted
    ws.close()


async def test_malformed_submits_get_an_error_and_change_nothing(api, jp_ws_fetch):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    ws = await events_socket(jp_ws_fetch)
    ref = str(uuid.uuid4())
    cases: list[tuple[str, Any, int, str]] = [
        (json.dumps({"type": "submit", "body": {}}), None, 400, "id: expected an integer"),
        (json.dumps({"type": "submit", "id": "7"}), None, 400, "id: expected an integer"),
        (submit_message(2, "tasks"), 2, 400, "body: expected a submit body"),
        (submit_message(3, {"tasks": []}), 3, 400, "non-empty list"),
        (submit_message(4, {"tasks": [task("nowhere", fid)]}), 4, 400, "no endpoint 'nowhere'"),
        (submit_message(5, {"tasks": [task("laptop", "no-such-fn")]}), 5, 400, "no function"),
        (submit_message(6, {"tasks": [task("lap\x00top", fid)]}), 6, 400, "NUL"),
        (
            submit_message(
                8, {"tasks": [{"endpoint_id": "laptop", "function_id": fid, "payload_ref": ref}]}
            ),
            8,
            400,
            "POST submit",
        ),
        (submit_message(9, {"tasks": [task("laptop", fid)], "extra": 1}), 9, 400, "extra"),
    ]
    for message, request_id, status, words in cases:
        await ws.write_message(message)
        answer = json.loads(await ws.read_message())
        assert answer["type"] == "submit_error", (message, answer)
        assert answer["id"] == request_id and answer["status"] == status, (message, answer)
        assert words in answer["message"], (message, answer)

    status, listing = await api("GET", "tasks")
    assert status == 200 and listing["tasks"] == []
    await ws.write_message(submit_message(10, {"tasks": [task("laptop", fid)]}))
    answer = json.loads(await ws.read_message())  # the socket still works
    assert answer["type"] == "submitted" and answer["id"] == 10
    ws.close()


async def test_other_client_messages_are_ignored(api, jp_ws_fetch):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    ws = await events_socket(jp_ws_fetch)
    for message in ("not json {", "[1, 2]", json.dumps({"type": "subscribe", "id": 1})):
        await ws.write_message(message)
    await ws.write_message(b"\x00\xff", binary=True)
    (task_id,) = await submit(api, "laptop", fid)
    msg = json.loads(await ws.read_message())  # nothing answered them: the next is an event
    assert msg["type"] == "tasks" and msg["tasks"][0]["task_id"] == task_id
    ws.close()


async def test_a_submit_is_the_users_own(api, jp_ws_fetch):
    fid = await register_function(api, public=True)
    await register_endpoint(api, "laptop")
    bob = await events_socket(jp_ws_fetch, BOB)
    await bob.write_message(submit_message(1, {"tasks": [task("laptop", fid)]}))
    answer = json.loads(await bob.read_message())
    assert answer["type"] == "submit_error" and "no endpoint 'laptop'" in answer["message"]

    await register_endpoint(api, "laptop", user=BOB)
    await bob.write_message(submit_message(2, {"tasks": [task("laptop", fid)]}))
    answer = json.loads(await bob.read_message())
    (task_id,) = answer["task_ids"]
    assert (await api("GET", f"tasks/{task_id}", user=BOB))[0] == 200
    assert (await api("GET", f"tasks/{task_id}"))[0] == 404  # not Alice's
    bob.close()


class ReadOnlyBob(Authorizer):
    """Bob may follow events (execute) but not submit (write)."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return not (user.username == "bob" and action == "write")


@pytest.fixture
def read_only_bob(jp_server_config: Config) -> Config:
    """The server of the test uses :class:`ReadOnlyBob` (ask for it before ``api``)."""
    jp_server_config["ServerApp"]["authorizer_class"] = ReadOnlyBob
    return jp_server_config


async def test_a_submit_needs_the_write_permission(read_only_bob, api, jp_ws_fetch):
    fid = await register_function(api, public=True)
    bob = await events_socket(jp_ws_fetch, BOB)  # following events needs only "execute"
    await bob.write_message(submit_message(1, {"tasks": [task("laptop", fid)]}))
    answer = json.loads(await bob.read_message())
    assert answer["type"] == "submit_error" and answer["status"] == 403
    assert "not authorized to write" in answer["message"]
    status, _ = await api("POST", "submit", {"tasks": [task("laptop", fid)]}, user=BOB)
    assert status == 403  # the same rule as over HTTP
    bob.close()


async def test_large_submits_are_checked_off_the_loop_alike(api, jp_ws_fetch):
    """Bodies over OFF_LOOP_BYTES are parsed and checked on a worker thread, over HTTP and on
    the socket: same answers, same errors naming the task."""
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    tasks = [task("laptop", fid, b"x" * 120) for _ in range(2500)]
    assert len(json.dumps({"tasks": tasks})) > OFF_LOOP_BYTES
    bad = [*tasks[:-1], {**tasks[-1], "walltime": "soon"}]

    status, body = await api("POST", "submit", {"tasks": tasks})
    assert status == 200 and len(body["task_ids"]) == 2500
    status, body = await api("POST", "submit", {"tasks": bad})
    assert status == 400 and "tasks[2499].walltime" in body["message"]

    ws = await events_socket(jp_ws_fetch)
    await ws.write_message(submit_message(1, {"tasks": bad}))
    answer = json.loads(await ws.read_message())
    assert answer["type"] == "submit_error" and "tasks[2499].walltime" in answer["message"]
    await ws.write_message(submit_message(2, {"tasks": tasks}))
    while (answer := json.loads(await ws.read_message()))["type"] == "tasks":
        pass  # events of the first batch
    assert answer["type"] == "submitted" and len(answer["task_ids"]) == 2500
    status, stats = await api("GET", "stats")
    assert status == 200 and stats["store"]["tasks"] == {TaskState.WAITING_FOR_EP: 5000}
    ws.close()
