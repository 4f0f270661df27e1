"""Strings no database can hold — NUL characters (PostgreSQL refuses them in text) and lone
UTF-16 surrogates (valid in JSON, not encodable as UTF-8) — in every field that reaches the
store: a 400 naming the field on both backends, never a 500, and nothing stored."""

from __future__ import annotations

import pytest

from fx_endpoint import protocol

from .conftest import b64, register_endpoint, register_function, submit

BAD = ["nul\u0000inside", "lone\ud800surrogate"]


@pytest.mark.parametrize("bad", BAD)
async def test_function_fields(api, bad):
    for field in ("function_name", "description", "source"):
        body = {"function_name": "f", "function_code": b64(b"code"), field: bad}
        status, answer = await api("POST", "functions", body)
        assert status == 400, (field, answer)
        assert field in answer["message"]
    assert (await api("GET", "stats"))[1]["store"]["tasks"] == {}


@pytest.mark.parametrize("bad", BAD)
async def test_submission_fields(api, bad):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    task = {"endpoint_id": "laptop", "function_id": fid, "payload": b64(b"a")}
    for field in ("endpoint_id", "function_id"):
        status, answer = await api("POST", "submit", {"tasks": [{**task, field: bad}]})
        assert status in (400, 404), (field, answer)
        assert answer["error"] != "internal_error"
    status, answer = await api("POST", "submit", {"tasks": [task], "task_group_id": bad})
    assert status == 400 and "task_group_id" in answer["message"], answer
    assert (await api("GET", "stats"))[1]["store"]["tasks"] == {}


@pytest.mark.parametrize("bad", BAD)
async def test_lookups(api, bad):
    status, answer = await api("POST", "batch_status", {"task_ids": [bad]})
    assert status in (200, 400), answer
    status, answer = await api("POST", "endpoints", {"endpoint_name": bad, "public_key": "k" * 40})
    assert status == 400, answer


async def test_url_arguments(api):
    """Path and query arguments pass the same check (``FxHandler.decode_argument``)."""
    status, answer = await api("GET", "tasks", params={"endpoint_id": "nul\u0000inside"})
    assert status == 400 and "NUL" in answer["message"], answer


async def test_endpoint_reports_with_unstorable_text(api, fx_service):
    """From an endpoint: a task id with a NUL is a malformed message (dropped and counted, the
    link keeps serving); output with a NUL or a lone surrogate is stored with U+FFFD."""
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    (task_id,) = await submit(api, "laptop", fid, n=1)
    async with ep.connected(credit=1) as peer:
        await peer.tasks(1)
        bad_id = {"task_id": "nul\u0000id", "status": "success"}
        await peer.send(protocol.RESULTS, {"results": [bad_id]}, [b"x"])
        await peer.send(protocol.TASK_STATUS, {"updates": [["nul\u0000id", "running", 1.0]]})
        result = {
            "task_id": task_id,
            "status": "failed",
            "stdout": "a\u0000b",
            "stderr": "c\ud800d",
            "exception_text": "e\u0000f",
        }
        await peer.send(protocol.RESULTS, {"results": [result]}, [b"error payload"])
        assert (await peer.expect(protocol.RESULTS_ACK)).body["task_ids"] == [task_id]
    assert fx_service.broker.stats["malformed_messages"] == 2
    status, task = await api("GET", f"tasks/{task_id}")
    assert status == 200 and task["status"] == "failed", task
    assert task["exception_text"] == "e\ufffdf", task
    assert task["details"]["stdout"] == "a\ufffdb" and task["details"]["stderr"] == "c\ufffdd"
