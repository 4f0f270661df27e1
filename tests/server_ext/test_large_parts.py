"""Large payloads in parts on the broker connection: arguments go to an endpoint that said it
takes parts as several frames, results may come as several frames and are stored (out of line)
as one payload; a bad part count is a malformed message and stores nothing. Blob files are
written in pieces, uploads read on while the last piece is written."""

from __future__ import annotations

import os
from contextlib import closing
from typing import Any

from fx_endpoint import protocol
from fx_jupyter.server_ext.blobs import WRITE_PIECE, BlobFiles

from .conftest import b64, register_endpoint, register_function, wait_for
from .test_payloads import blob_files, blob_rows, fetch_result, upload

#: Several parts, the last one short.
BIG = os.urandom(3 * protocol.PART_BYTES + 777)


async def test_arguments_go_in_parts_to_an_endpoint_that_takes_them(api, fx_service):
    _status, uploaded = await upload(api, BIG)
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    with closing(ep.peer()) as peer:
        welcome = await peer.hello(ep.endpoint_id, credit=10, **{protocol.PARTS_KEY: True})
        assert welcome.type == protocol.WELCOME and welcome.body[protocol.PARTS_KEY] is True
        task = {"endpoint_id": "laptop", "function_id": fid, "payload_ref": uploaded["payload_ref"]}
        await api("POST", "submit", {"tasks": [task]})
        msg = await peer.expect(protocol.TASKS)
        [header] = msg.body["tasks"]
        count = header[protocol.PARTS_KEY]
        pieces = msg.frames[header["args"] : header["args"] + count]
        assert count == 4 and len(msg.frames) == 1 + count
        assert all(len(p) <= protocol.PART_BYTES for p in pieces)
        assert b"".join(pieces) == BIG


async def test_a_result_in_parts_is_stored_as_one_payload(api, jp_fetch, fx_service):
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    async with ep.connected(credit=10) as peer:
        task = {"endpoint_id": "laptop", "function_id": fid, "payload": b64(b"args")}
        _status, body = await api("POST", "submit", {"tasks": [task, task]})
        big, small = body["task_ids"]
        await peer.tasks(2)
        pieces = protocol.parts(BIG)
        results = [
            {"task_id": big, "status": "success", protocol.PARTS_KEY: len(pieces)},
            {"task_id": small, "status": "success", protocol.PARTS_KEY: 2},
        ]
        await peer.send(protocol.RESULTS, {"results": results}, [*pieces, b"4", b"2"])
        ack = await peer.expect(protocol.RESULTS_ACK)
        assert ack.body["task_ids"] == [big, small]
    _status, record = await api("GET", f"tasks/{big}")
    assert record["status"] == "success" and record["result_size"] == len(BIG)
    assert await fetch_result(jp_fetch, big) == (200, BIG)
    _status, record = await api("GET", f"tasks/{small}")
    assert await fetch_result(jp_fetch, small) == (200, b"42") and "result_size" not in record
    assert [size for _, _, size in await blob_rows(fx_service)] == [len(BIG)]
    assert len(blob_files(fx_service)) == 1


async def test_a_bad_part_count_is_malformed_and_stores_nothing(api, fx_service):
    fid = await register_function(api)
    ep = await register_endpoint(api, "laptop")
    async with ep.connected(credit=10) as peer:
        task = {"endpoint_id": "laptop", "function_id": fid, "payload": b64(b"args")}
        _status, body = await api("POST", "submit", {"tasks": [task]})
        [task_id] = body["task_ids"]
        await peer.tasks(1)
        for parts, frames in ((0, [b"x"]), ("2", [b"x", b"y"]), (3, [b"x", b"y"]), (1, [b"x"] * 2)):
            result = {"task_id": task_id, "status": "success", protocol.PARTS_KEY: parts}
            await peer.send(protocol.RESULTS, {"results": [result]}, frames)

        async def all_counted() -> bool:
            return fx_service.broker.stats["malformed_messages"] == 4

        await wait_for(all_counted)
        await peer.nothing()
    _status, record = await api("GET", f"tasks/{task_id}")
    assert record["status"] != "success"
    assert blob_files(fx_service) == []


def test_blob_files_take_parts_and_write_in_pieces(tmp_path) -> None:
    files = BlobFiles(str(tmp_path), durable=False)
    try:
        files.prepare()
        assert len(BIG) > 2 * WRITE_PIECE
        whole = files.write(BIG)
        parted = files.write(protocol.parts(BIG))
        assert files.read(whole) == files.read(parted) == BIG
    finally:
        files.close()


async def test_an_upload_larger_than_several_write_batches_arrives_whole(api, fx_service):
    data = os.urandom(9 * 1024 * 1024 + 5)
    status, uploaded = await upload(api, data)
    assert status == 201 and uploaded["size"] == len(data)
    blob: Any = await fx_service.store.blobs.run(
        fx_service.store.blobs.read, uploaded["payload_ref"]
    )
    assert blob == data
