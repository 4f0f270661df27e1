"""Every REST route: the happy path, malformed input (clear error, nothing stored), other users."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from fx_endpoint import protocol
from fx_endpoint.protocol import TaskState
from fx_endpoint.version import PROTOCOL_VERSION, __version__

from .conftest import BOB, b64, register_endpoint, register_function, submit
from .peer import keypair


async def test_version(api):
    status, body = await api("GET", "version")
    assert status == 200
    assert body == {
        "api": "v2",
        "fx_version": __version__,
        "protocol": PROTOCOL_VERSION,
        "min_sdk_version": __version__,
        "limits": {
            "max_tasks_per_submit": 100_000,
            "max_ids_per_request": 100_000,
            "max_request_bytes": 512 * 1024 * 1024,
        },
    }


async def test_incompatible_sdk_protocol_is_refused_naming_both_versions(api):
    headers = {"X-FX-SDK-Version": "9.9.9", "X-FX-Protocol": str(PROTOCOL_VERSION + 1)}
    status, body = await api("GET", "endpoints", headers=headers)
    assert status == 400 and body["error"] == "version_mismatch"
    assert "9.9.9" in body["message"] and __version__ in body["message"]
    assert f"protocol {PROTOCOL_VERSION + 1}" in body["message"]
    assert f"protocol {PROTOCOL_VERSION})" in body["message"]
    ok = {"X-FX-SDK-Version": __version__, "X-FX-Protocol": str(PROTOCOL_VERSION)}
    assert (await api("GET", "endpoints", headers=ok))[0] == 200


async def test_unauthenticated_requests_are_refused_with_json(api):
    status, body = await api("GET", "version", user="wrong-token")
    assert status == 403
    assert body["error"] == "forbidden" and "token" in body["message"]


async def test_unknown_route_and_method_answer_json(api):
    status, body = await api("GET", "no/such/thing")
    assert status == 404 and "no fx API route" in body["message"]
    status, body = await api("PUT", "submit", raw=b"{}")
    assert status == 405 and body["error"] == "method_not_allowed"


# --- functions -------------------------------------------------------------------------------


async def test_register_and_get_function(api):
    fid = await register_function(api, b"code", source="def f(): pass", description="d")
    assert await register_function(api, b"code") == fid  # same owner + bytes → same id
    assert await register_function(api, b"code", user=BOB) != fid  # another owner
    status, body = await api("GET", f"functions/{fid}")
    assert status == 200
    assert body["function_id"] == fid and body["function_name"] == "f"
    assert body["public"] is False and body["owned"] is True
    assert "function_code" not in body


async def test_function_of_another_user_is_404_unless_public(api):
    private = await register_function(api, b"private")
    public = await register_function(api, b"public", public=True)
    unknown = await api("GET", "functions/00000000-0000-4000-8000-000000000000", user=BOB)
    other = await api("GET", f"functions/{private}", user=BOB)
    assert unknown[0] == other[0] == 404
    assert other[1]["error"] == unknown[1]["error"] == "not_found"
    status, body = await api("GET", f"functions/{public}", user=BOB)
    assert status == 200 and body["owned"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"function_code": b64(b"x")}, "function_name"),
        ({"function_name": "f"}, "function_code"),
        ({"function_name": "f", "function_code": "not base64!"}, "function_code"),
        ({"function_name": "f", "function_code": ""}, "function_code"),
        ({"function_name": 3, "function_code": b64(b"x")}, "function_name"),
        ({"function_name": "f", "function_code": b64(b"x"), "public": "yes"}, "public"),
        ({"function_name": "f", "function_code": b64(b"x"), "source": 1}, "source"),
        ({"function_name": "f", "function_code": b64(b"x"), "colour": "red"}, "colour"),
    ],
)
async def test_register_function_rejects_bad_fields(api, body, field):
    status, answer = await api("POST", "functions", body)
    assert status == 400 and answer["error"] == "bad_request"
    assert field in answer["message"]


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
async def test_bodies_that_are_not_json_objects(api, raw):
    for path in ("functions", "endpoints", "submit", "batch_status"):
        status, answer = await api("POST", path, raw=raw)
        assert status == 400, path
        assert "JSON" in answer["message"] or "body" in answer["message"]


# --- endpoints -------------------------------------------------------------------------------


async def test_register_list_get_endpoint(api, fx_service):
    ep = await register_endpoint(api, "laptop")
    assert ep.broker_url == fx_service.broker.url and ep.server_key == fx_service.broker.public_key
    status, body = await api("GET", "endpoints")
    assert status == 200 and [e["name"] for e in body["endpoints"]] == ["laptop"]
    for ref in (ep.endpoint_id, "laptop"):
        for path in (f"endpoints/{ref}", f"endpoints/{ref}/status"):
            status, body = await api("GET", path)
            assert status == 200, path
            assert body["endpoint_id"] == ep.endpoint_id and body["status"] == "offline"
            assert body["tasks"] == {}


async def test_reregistering_a_name_keeps_the_id_and_replaces_the_key(api, fx_service):
    first = await register_endpoint(api, "laptop")
    second = await register_endpoint(api, "laptop")
    assert second.endpoint_id == first.endpoint_id
    assert fx_service.registry.by_key(first.public.decode()) is None
    assert fx_service.registry.by_key(second.public.decode()).endpoint_id == first.endpoint_id


async def test_a_key_of_another_endpoint_is_a_conflict(api):
    ep = await register_endpoint(api, "laptop")
    status, body = await api(
        "POST", "endpoints", {"name": "other", "public_key": ep.public.decode()}, user=BOB
    )
    assert status == 409 and body["error"] == "conflict" and "public_key" in body["message"]
    assert (await api("GET", "endpoints", user=BOB))[1]["endpoints"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"public_key": keypair()[0].decode()}, "name"),
        ({"name": "../etc", "public_key": keypair()[0].decode()}, "name"),
        ({"name": "x" * 65, "public_key": keypair()[0].decode()}, "name"),
        ({"name": "ep"}, "public_key"),
        ({"name": "ep", "public_key": "short"}, "public_key"),
        ({"name": "ep", "public_key": keypair()[0].decode(), "display_name": 5}, "display_name"),
        ({"name": "ep", "public_key": keypair()[0].decode(), "owner": "bob"}, "owner"),
    ],
)
async def test_register_endpoint_rejects_bad_fields(api, body, field):
    status, answer = await api("POST", "endpoints", body)
    assert status == 400 and field in answer["message"]
    assert (await api("GET", "endpoints"))[1]["endpoints"] == []


async def test_endpoints_of_another_user_are_404(api):
    ep = await register_endpoint(api, "laptop")
    for method, path in (
        ("GET", f"endpoints/{ep.endpoint_id}"),
        ("GET", "endpoints/laptop/status"),
        ("DELETE", f"endpoints/{ep.endpoint_id}"),
    ):
        status, body = await api(method, path, user=BOB)
        assert status == 404 and body["error"] == "not_found", path
    assert (await api("GET", "endpoints", user=BOB))[1]["endpoints"] == []
    assert (await api("GET", "endpoints/laptop"))[0] == 200


async def test_delete_endpoint_cancels_its_queued_tasks(api, fx_service):
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    ids = await submit(api, "laptop", fid, n=2)
    status, body = await api("DELETE", "endpoints/laptop")
    assert status == 200 and body == {
        "endpoint_id": ep.endpoint_id,
        "deleted": True,
        "cancelled_tasks": 2,
    }
    assert fx_service.registry.by_key(ep.public.decode()) is None
    assert (await api("GET", "endpoints/laptop"))[0] == 404
    status, task = await api("GET", f"tasks/{ids[0]}")
    assert task["status"] == TaskState.CANCELLED and task["pending"] is False
    assert "deleted" in task["exception_text"]


# --- submit ----------------------------------------------------------------------------------


async def test_submit_stores_tasks_waiting_for_their_endpoint(api):
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    tasks = [
        {"endpoint_id": ep.endpoint_id, "function_id": fid, "payload": b64(b"a"), "walltime": 2.5},
        {"endpoint_id": "laptop", "function_id": fid, "payload": b64(b"b"), "memoize": False},
    ]
    status, body = await api("POST", "submit", {"tasks": tasks, "task_group_id": "group-1"})
    assert status == 200 and body["task_group_id"] == "group-1" and len(body["task_ids"]) == 2
    status, task = await api("GET", f"tasks/{body['task_ids'][0]}")
    assert task["status"] == TaskState.WAITING_FOR_EP and task["pending"] is True
    assert task["details"]["endpoint_id"] == ep.endpoint_id
    assert task["details"]["function_id"] == fid and task["details"]["walltime"] == 2.5
    assert list(task["details"]["task_transitions"]) == [TaskState.WAITING_FOR_EP]
    assert task["completion_t"] is None and "result" not in task


def _task(**fields):
    base = {"endpoint_id": "laptop", "function_id": "FID", "payload": b64(b"args")}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        (None, "tasks"),
        ([], "tasks"),
        ("all", "tasks"),
        ([_task(), "task"], "tasks[1]"),
        ([_task(), _task(endpoint_id=None)], "tasks[1].endpoint_id"),
        ([_task(function_id=7)], "tasks[0].function_id"),
        ([_task(payload="%%%")], "tasks[0].payload"),
        ([_task(payload="")], "tasks[0].payload"),
        ([_task(), _task(), _task(walltime=-1)], "tasks[2].walltime"),
        ([_task(walltime="1s")], "tasks[0].walltime"),
        ([_task(memoize="yes")], "tasks[0].memoize"),
        ([_task(priority=1)], "tasks[0].unknown field 'priority'"),
        ([_task(), _task(endpoint_id="nowhere")], "tasks[1].endpoint_id: no endpoint 'nowhere'"),
        ([_task(), _task(function_id="nothing")], "tasks[1].function_id: no function 'nothing'"),
    ],
)
async def test_submit_rejects_bad_tasks_and_stores_nothing(api, tasks, expected):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    if isinstance(tasks, list):
        tasks = [
            dict(t, function_id=fid) if isinstance(t, dict) and t.get("function_id") == "FID" else t
            for t in tasks
        ]
    status, body = await api("POST", "submit", {"tasks": tasks} if tasks is not None else {})
    assert status == 400 and body["error"] == "bad_request"
    assert expected in body["message"], body["message"]
    assert (await api("GET", "tasks"))[1]["tasks"] == []


async def test_submit_cannot_use_other_users_endpoints_or_private_functions(api):
    mine = await register_function(api, b"mine")
    shared = await register_function(api, b"shared", public=True)
    await register_endpoint(api, "laptop")
    await register_endpoint(api, "bobs", user=BOB)
    task = {"endpoint_id": "laptop", "function_id": shared, "payload": b64(b"x")}
    status, body = await api("POST", "submit", {"tasks": [task]}, user=BOB)
    assert status == 400 and "tasks[0].endpoint_id" in body["message"]
    task = {"endpoint_id": "bobs", "function_id": mine, "payload": b64(b"x")}
    status, body = await api("POST", "submit", {"tasks": [task]}, user=BOB)
    assert status == 400 and "tasks[0].function_id" in body["message"]
    task["function_id"] = shared  # a public function may be run by anyone
    assert (await api("POST", "submit", {"tasks": [task]}, user=BOB))[0] == 200


@pytest.mark.parametrize("fx_config", [{"max_request_size": 2048, "max_tasks_per_request": 3}])
async def test_request_limits(api, fx_config):
    limits = (await api("GET", "version"))[1]["limits"]
    assert limits == {
        "max_tasks_per_submit": 3,
        "max_ids_per_request": 3,
        "max_request_bytes": 2048,
    }
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    big = {"endpoint_id": "laptop", "function_id": fid, "payload": b64(b"x" * 4000)}
    status, body = await api("POST", "submit", {"tasks": [big]})
    assert status == 413 and body["error"] == "too_large"
    assert "2048" in body["message"] and "max_request_size" in body["message"]
    size = int(body["message"].split("is ")[1].split(" bytes")[0])
    assert size > 2048
    small = {"endpoint_id": "laptop", "function_id": fid, "payload": b64(b"x")}
    status, body = await api("POST", "submit", {"tasks": [small] * 4})
    assert status == 400 and "limit of 3" in body["message"]
    assert (await api("GET", "tasks"))[1]["tasks"] == []


async def test_memoized_task_reuses_an_earlier_result(api, fx_service):
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    task = {"endpoint_id": "laptop", "function_id": fid, "payload": b64(b"same"), "memoize": True}
    first = (await api("POST", "submit", {"tasks": [task]}))[1]["task_ids"][0]
    # No earlier result yet: the first one is queued like any task.
    assert (await api("GET", f"tasks/{first}"))[1]["status"] == TaskState.WAITING_FOR_EP
    async with ep.connected(credit=1) as peer:
        await peer.tasks(1)
        await peer.send(
            protocol.RESULTS, {"results": [{"task_id": first, "status": "success"}]}, [b"42"]
        )
        await peer.expect(protocol.RESULTS_ACK)
    second = (await api("POST", "submit", {"tasks": [task]}))[1]["task_ids"][0]
    _status, body = await api("GET", f"tasks/{second}")
    assert body["status"] == TaskState.SUCCESS and body["result"] == b64(b"42")


# --- tasks -----------------------------------------------------------------------------------


async def test_get_task_unknown_and_other_users_answer_the_same_404(api):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    (task_id,) = await submit(api, "laptop", fid)
    unknown = await api("GET", "tasks/00000000-0000-4000-8000-000000000000")
    other = await api("GET", f"tasks/{task_id}", user=BOB)
    assert unknown[0] == other[0] == 404
    assert unknown[1]["error"] == other[1]["error"] == "not_found"
    assert (await api("DELETE", f"tasks/{task_id}", user=BOB))[0] == 404
    assert (await api("GET", f"tasks/{task_id}"))[1]["status"] == TaskState.WAITING_FOR_EP


async def test_cancel_a_queued_task(api):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    (task_id,) = await submit(api, "laptop", fid)
    status, task = await api("DELETE", f"tasks/{task_id}")
    assert status == 200 and task["status"] == TaskState.CANCELLED and task["pending"] is False
    assert "cancelled by the user" in task["exception_text"]
    assert task["completion_t"] is not None
    again = await api("DELETE", f"tasks/{task_id}")  # idempotent
    assert again[0] == 200 and again[1]["completion_t"] == task["completion_t"]


async def test_list_recent_tasks(api):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    await register_endpoint(api, "server")
    first = await submit(api, "laptop", fid, n=3)
    other = await submit(api, "server", fid, n=1)
    await api("DELETE", f"tasks/{first[0]}")
    status, body = await api("GET", "tasks")
    assert status == 200
    assert [t["task_id"] for t in body["tasks"]] == [*other, *reversed(first)]
    assert all("result" not in t for t in body["tasks"])
    status, body = await api("GET", "tasks", params={"limit": "2"})
    assert len(body["tasks"]) == 2
    status, body = await api("GET", "tasks", params={"endpoint_id": "server"})
    assert [t["task_id"] for t in body["tasks"]] == other
    status, body = await api("GET", "tasks", params={"status": "cancelled"})
    assert [t["task_id"] for t in body["tasks"]] == [first[0]]
    assert (await api("GET", "tasks", user=BOB))[1]["tasks"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"limit": "5000"}, "limit"),
        ({"status": "done"}, "status"),
    ],
)
async def test_list_tasks_rejects_bad_parameters(api, params, field):
    status, body = await api("GET", "tasks", params=params)
    assert status == 400 and body["message"].startswith(field)


async def test_batch_status(api):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    await register_endpoint(api, "laptop", user=BOB)
    mine = await submit(api, "laptop", fid, n=2)
    bob_fid = await register_function(api, user=BOB)
    bobs = await submit(api, "laptop", bob_fid, n=1, user=BOB)
    status, body = await api("POST", "batch_status", {"task_ids": [*mine, *bobs, "nope"]})
    assert status == 200
    assert set(body["results"]) == set(mine)
    assert body["unknown"] == [*bobs, "nope"]
    assert body["results"][mine[0]]["status"] == TaskState.WAITING_FOR_EP


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "task_ids"),
        ({"task_ids": []}, "task_ids"),
        ({"task_ids": "x"}, "task_ids"),
        ({"task_ids": ["a", 3]}, "task_ids[1]"),
        ({"task_ids": ["a"], "more": 1}, "more"),
    ],
)
async def test_batch_status_rejects_bad_bodies(api, body, field):
    status, answer = await api("POST", "batch_status", body)
    assert status == 400 and field in answer["message"]


# --- stats, events ---------------------------------------------------------------------------


async def test_stats(api, db_backend):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    ids = await submit(api, "laptop", fid, n=3)
    await api("DELETE", f"tasks/{ids[0]}")
    status, body = await api("GET", "stats")
    assert status == 200
    assert body["store"]["backend"] == db_backend and body["store"]["size_bytes"] > 0
    assert body["store"]["tasks"] == {TaskState.WAITING_FOR_EP: 2, TaskState.CANCELLED: 1}
    assert body["store"]["transactions"] >= 1
    assert body["broker"]["malformed_messages"] == 0 and body["dispatch"]["duplicate_results"] == 0
    assert body["events"]["subscribers"] == 0
    assert (await api("GET", "stats", user=BOB))[1]["store"]["tasks"] == {}


async def test_events_websocket_requires_authentication(jp_ws_fetch):
    with pytest.raises(HTTPClientError) as info:
        await jp_ws_fetch("fx", "api", "v2", "events", headers={"Authorization": "token nobody"})
    assert info.value.code == 403


async def test_events_websocket_refuses_an_incompatible_sdk(jp_ws_fetch):
    with pytest.raises(HTTPClientError) as info:
        await jp_ws_fetch("fx", "api", "v2", "events", headers={"X-FX-Protocol": "99"})
    assert info.value.code == 400


async def test_events_carry_only_the_users_own_tasks(api, jp_ws_fetch):
    fid = await register_function(api, public=True)
    await register_endpoint(api, "laptop")
    await register_endpoint(api, "laptop", user=BOB)
    alice_ws = await jp_ws_fetch("fx", "api", "v2", "events")
    bob_ws = await jp_ws_fetch(
        "fx", "api", "v2", "events", headers={"Authorization": f"token {BOB}"}
    )
    bobs = await submit(api, "laptop", fid, n=1, user=BOB)
    mine = await submit(api, "laptop", fid, n=2)
    msg = json.loads(await alice_ws.read_message())
    assert msg["type"] == "tasks"
    assert {e["task_id"] for e in msg["tasks"]} == set(mine)
    assert all(e["status"] == TaskState.WAITING_FOR_EP for e in msg["tasks"])
    msg = json.loads(await bob_ws.read_message())
    assert [e["task_id"] for e in msg["tasks"]] == bobs
    alice_ws.close()
    bob_ws.close()

