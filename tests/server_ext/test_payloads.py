"""Large payloads out of line: ``POST payloads`` (streamed raw upload), submit by
``payload_ref``, results over the blob threshold stored as files and served raw by
``GET tasks/{id}/result``; malformed uploads and references refused with nothing stored; blob
files removed by the result purge and by endpoint deletion. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import pytest
import sqlalchemy as sa
from tornado.httpclient import HTTPClientError

from fx_endpoint import protocol
from fx_jupyter.server_ext.blobs import OUT_OF_LINE_BYTES, BlobFiles
from fx_jupyter.server_ext.schema import blobs

from .conftest import ALICE, BOB, b64, register_endpoint, register_function, wait_for

LARGE = OUT_OF_LINE_BYTES + 12_345


async def upload(api: Any, data: bytes, user: str = ALICE) -> tuple[int, Any]:
    return await api(
        "POST",
        "payloads",
        raw=data,
        user=user,
        headers={"Content-Type": "application/octet-stream"},
    )


async def fetch_result(jp_fetch: Any, task_id: str, user: str = ALICE) -> tuple[int, Any]:
    """``GET tasks/{id}/result``: (status, raw bytes) or (status, error body)."""
    try:
        response = await jp_fetch(
            "fx", "api", "v2", "tasks", task_id, "result",
            headers={"Authorization": f"token {user}"},
        )  # fmt: skip
    except HTTPClientError as e:
        assert e.response is not None
        return e.code, e.response.body
    assert response.headers["Content-Type"] == "application/octet-stream"
    return response.code, response.body


def blob_files(fx_service: Any) -> list[str]:
    return sorted(os.listdir(fx_service.store.blobs.directory))


async def blob_rows(fx_service: Any) -> list[tuple[str, str, int]]:
    def q(conn: sa.Connection) -> list[tuple[str, str, int]]:
        stmt = sa.select(blobs.c.blob_id, blobs.c.owner, blobs.c.size).order_by(blobs.c.blob_id)
        return [tuple(row) for row in conn.execute(stmt)]

    return await fx_service.store.read(q)


async def task_count(api: Any) -> int:
    _status, stats = await api("GET", "stats")
    return sum(stats["store"]["tasks"].values())


async def test_an_uploaded_argument_and_a_large_result_travel_out_of_line(
    api, jp_fetch, fx_service
):
    args, value = os.urandom(LARGE), os.urandom(LARGE + 1)
    status, uploaded = await upload(api, args)
    assert status == 201 and uploaded["size"] == LARGE, uploaded
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    async with ep.connected(credit=10) as peer:
        task = {"endpoint_id": "laptop", "function_id": fid, "payload_ref": uploaded["payload_ref"]}
        status, body = await api("POST", "submit", {"tasks": [task]})
        assert status == 200, body
        [task_id] = body["task_ids"]
        [(header, _function, sent)] = await peer.tasks(1)
        assert header["task_id"] == task_id and bytes(sent) == args
        results = {"results": [{"task_id": task_id, "status": "success"}]}
        await peer.send(protocol.RESULTS, results, [value])
        assert (await peer.expect(protocol.RESULTS_ACK)).body["task_ids"] == [task_id]
    status, record = await api("GET", f"tasks/{task_id}")
    assert record["status"] == "success" and record["result_size"] == len(value)
    assert "result" not in record  # never base64'd into JSON
    assert await fetch_result(jp_fetch, task_id) == (200, value)
    assert (await fetch_result(jp_fetch, task_id, user=BOB))[0] == 404
    rows = await blob_rows(fx_service)
    assert sorted(size for _, _, size in rows) == [LARGE, LARGE + 1]
    assert {owner for _, owner, _ in rows} == {"alice"}
    assert blob_files(fx_service) == sorted(blob_id for blob_id, _, _ in rows)


async def test_small_results_stay_inline_and_are_served_raw_too(api, jp_fetch, fx_service):
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    async with ep.connected(credit=10) as peer:
        task = {"endpoint_id": "laptop", "function_id": fid, "payload": b64(b"args")}
        _status, body = await api("POST", "submit", {"tasks": [task, task]})
        first, second = body["task_ids"]
        await peer.tasks(2)
        await peer.send(
            protocol.RESULTS, {"results": [{"task_id": first, "status": "success"}]}, [b"42"]
        )
        await peer.expect(protocol.RESULTS_ACK)
    _status, record = await api("GET", f"tasks/{first}")
    assert record["result"] == b64(b"42") and "result_size" not in record
    assert await fetch_result(jp_fetch, first) == (200, b"42")
    status, error = await fetch_result(jp_fetch, second)
    assert status == 409 and b"no result yet" in error
    assert blob_files(fx_service) == []


@pytest.mark.parametrize(
    ("task", "status", "message"),
    [
        ({"payload_ref": "not-a-reference"}, 400, "tasks[1].payload_ref: expected a payload"),
        ({"payload_ref": 42}, 400, "tasks[1].payload_ref: expected a payload reference"),
        ({"payload_ref": "REF", "payload": b64(b"x")}, 400, "not both"),
        ({"payload_ref": "00000000-0000-4000-8000-000000000000"}, 404, "tasks[1].payload_ref"),
        ({"payload_ref": "BOBS"}, 404, "not yours"),
    ],
)
async def test_bad_payload_references_are_refused_and_nothing_is_stored(
    api, fx_service, task, status, message
):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    _s, mine = await upload(api, b"m" * 100)
    _s, bobs = await upload(api, b"b" * 100, user=BOB)
    refs = {"REF": mine["payload_ref"], "BOBS": bobs["payload_ref"]}
    if task.get("payload_ref") in refs:
        task = {**task, "payload_ref": refs[task["payload_ref"]]}
    good = {"endpoint_id": "laptop", "function_id": fid, "payload_ref": mine["payload_ref"]}
    bad = {"endpoint_id": "laptop", "function_id": fid, **task}
    got, body = await api("POST", "submit", {"tasks": [good, bad]})
    assert got == status and message in body["message"], body
    assert await task_count(api) == 0


async def test_an_upload_over_the_limit_is_413_naming_both_sizes(api, fx_service, fx_config):
    fx_service.max_request_size = 1000
    status, body = await upload(api, b"x" * 5000)
    assert status == 413 and body["error"] == "too_large"
    assert "5000 bytes" in body["message"] and "1000 bytes" in body["message"]
    assert blob_files(fx_service) == [] and await blob_rows(fx_service) == []


async def test_an_empty_or_unauthenticated_upload_is_refused(api, jp_fetch, fx_service):
    status, body = await upload(api, b"")
    assert status == 400 and "no body" in body["message"]
    status, body = await upload(api, b"data", user="nobody")
    assert status == 403
    assert blob_files(fx_service) == [] and await blob_rows(fx_service) == []


async def test_a_truncated_upload_leaves_nothing_behind(
    fx_service, jp_fetch, jp_http_port, jp_base_url
):
    loop = asyncio.get_running_loop()
    request = (
        f"POST {jp_base_url}fx/api/v2/payloads HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: token {ALICE}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {20 * 1024 * 1024}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", jp_http_port), timeout=5) as sock:
        sock.setblocking(False)
        await loop.sock_sendall(sock, request + b"x" * (6 * 1024 * 1024))

        async def writing() -> bool:  # part of it is in a temporary file by now
            return len(blob_files(fx_service)) == 1

        await wait_for(writing)

    async def cleaned() -> bool:
        return blob_files(fx_service) == []

    await wait_for(cleaned)
    assert await blob_rows(fx_service) == []


async def test_purging_results_removes_their_blob_files_and_stale_uploads(api, fx_service):
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    _s, used = await upload(api, os.urandom(LARGE))
    await upload(api, os.urandom(LARGE))  # never submitted
    async with ep.connected(credit=10) as peer:
        task = {"endpoint_id": "laptop", "function_id": fid, "payload_ref": used["payload_ref"]}
        _status, body = await api("POST", "submit", {"tasks": [task]})
        [task_id] = body["task_ids"]
        await peer.tasks(1)
        results = {"results": [{"task_id": task_id, "status": "failed"}]}
        await peer.send(protocol.RESULTS, results, [os.urandom(LARGE)])
        await peer.expect(protocol.RESULTS_ACK)
    _status, record = await api("GET", f"tasks/{task_id}")
    assert record["status"] == "failed" and record["exception_size"] == LARGE
    assert len(blob_files(fx_service)) == 3
    assert await fx_service.store.purge_results(time.time() + 1) == 1
    assert blob_files(fx_service) == [] and await blob_rows(fx_service) == []


async def test_deleting_an_endpoint_removes_the_arguments_of_its_cancelled_tasks(api, fx_service):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    _s, uploaded = await upload(api, os.urandom(LARGE))
    task = {"endpoint_id": "laptop", "function_id": fid, "payload_ref": uploaded["payload_ref"]}
    _status, body = await api("POST", "submit", {"tasks": [task, task]})
    assert len(blob_files(fx_service)) == 1  # one upload, two tasks
    status, deleted = await api("DELETE", "endpoints/laptop")
    assert status == 200 and deleted["cancelled_tasks"] == 2
    assert blob_files(fx_service) == [] and await blob_rows(fx_service) == []
    _status, record = await api("GET", f"tasks/{body['task_ids'][0]}")
    assert record["status"] == "cancelled"


@pytest.mark.parametrize("durable", [False, True])
def test_blob_files_are_fsynced_only_for_a_store_whose_commits_are(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    """SQLite (synchronous=NORMAL) commits are not fsync'd: neither are its payload files.
    PostgreSQL's are, and so the file and the directory entry of its rename."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    files = BlobFiles(str(tmp_path), durable=durable)
    try:
        files.prepare()
        blob_id = files.write(b"payload" * 1000)
        assert files.read(blob_id) == b"payload" * 1000
    finally:
        files.close()
    assert len(synced) == (2 if durable else 0)
    assert os.listdir(tmp_path) == [blob_id]


async def test_payload_files_are_as_durable_as_the_store_commits(fx_service):
    store = fx_service.store
    assert store.blobs.durable is (store.backend != "sqlite")
