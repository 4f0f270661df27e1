"""Large arguments and results end to end through the shared ``fx_stack`` (a real service and
endpoint): uploaded as raw bytes, stored out of line, sent as their own ZeroMQ frames, and
fetched back raw — 10 MB, and a few hundred MB. And the client's choice of path, against a
canned-answer HTTP peer: only large tasks are uploaded, and arguments over the service's limit
fail before anything is sent."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest

from fx_jupyter import Executor
from fx_jupyter.sdk.batch import LargeTask, encode_args, encode_task
from fx_jupyter.sdk.errors import FxAPIError, FxError

from .conftest import COMPATIBLE_VERSION, Peer


def digest_and_echo(data: bytes) -> tuple[str, bytes]:
    """The worker's view of the argument (its hash), and the argument back."""
    import hashlib

    return hashlib.sha256(data).hexdigest(), data


def make(size: int) -> bytes:
    return b"\xab" * size


def fail_with(size: int) -> None:
    """Raise an exception whose pickle is too large for an event (stored out of line)."""
    raise ValueError("x" * size)


@pytest.fixture
def executor(fx_stack: Any) -> Any:
    client = fx_stack.client()
    with Executor(fx_stack.endpoint_id, client) as ex:
        yield ex
    client.close()


def test_ten_megabytes_each_way(executor: Executor, monkeypatch: pytest.MonkeyPatch) -> None:
    # The terminal event names the result's size: the future fetches the raw bytes with one
    # GET tasks/{id}/result, never the Task record first.
    records: list[str] = []
    monkeypatch.setattr(executor.client, "get_task_record", records.append)
    data = os.urandom(10_000_000)
    remote_hash, back = executor.submit(digest_and_echo, data).result(timeout=60)
    assert remote_hash == hashlib.sha256(data).hexdigest()
    assert back == data
    assert records == []


def test_a_result_too_large_for_an_event_but_stored_inline_is_fetched_raw_too(
    executor: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    records: list[str] = []
    monkeypatch.setattr(executor.client, "get_task_record", records.append)
    assert executor.submit(make, 500_000).result(timeout=60) == make(500_000)
    assert records == []


def test_a_large_exception_is_fetched_raw_with_its_type(executor: Executor) -> None:
    future = executor.submit(fail_with, 2_000_000)
    with pytest.raises(ValueError, match="x" * 100) as caught:
        future.result(timeout=60)
    assert len(str(caught.value)) >= 2_000_000


@pytest.mark.timeout(60)
def test_hundreds_of_megabytes_each_way(executor: Executor) -> None:
    size = 200 * 1024 * 1024
    future = executor.submit(make, size)
    result = future.result(timeout=50)
    assert len(result) == size and result[:1] == result[-1:] == b"\xab"
    # ... and back as an argument: the worker sees every byte.
    remote_hash, _ = executor.submit(digest_and_echo, result).result(timeout=50)
    assert remote_hash == hashlib.sha256(result).hexdigest()


def test_client_calls_fetch_a_large_result_raw(fx_stack: Any) -> None:
    client = fx_stack.client()
    try:
        function_id = client.register_function(make)
        with Executor(fx_stack.endpoint_id, client) as ex:
            task_id = ex.submit_to_registered_function(function_id, (3_000_000,)).task_id
            ex.get_futures([task_id])[0].result(timeout=60)
        record = client.get(f"tasks/{task_id}").data
        assert record["result_size"] > 3_000_000 and "result" not in record
        assert client.get_result(task_id) == make(3_000_000)
        assert client.get_batch_result([task_id])[task_id]["result"] == make(3_000_000)
    finally:
        client.close()


def test_an_unknown_payload_reference_is_a_clear_error(fx_stack: Any) -> None:
    client = fx_stack.client()
    try:
        function_id = client.register_function(make)
        task = (
            f'{{"endpoint_id":"{fx_stack.endpoint_id}","function_id":"{function_id}",'
            '"payload_ref":"00000000-0000-4000-8000-000000000000"}'
        )
        with pytest.raises(FxAPIError) as caught:
            next(client.submit_encoded([task]))
        assert caught.value.http_status == 404
        assert "payload_ref" in str(caught.value) and "POST payloads" in str(caught.value)
    finally:
        client.close()


def test_arguments_over_the_service_limit_fail_before_anything_is_sent(
    connect: Any, peer: Peer
) -> None:
    limits = {
        "max_tasks_per_submit": 100,
        "max_ids_per_request": 100,
        "max_request_bytes": 2_000_000,
    }
    peer.version(doc={**COMPATIBLE_VERSION, "limits": limits})
    client = connect(peer.url + "fx/api/v2/", "t")
    task = encode_task("ep", "fn", encode_args((b"x" * 3_000_000,), {}))
    with pytest.raises(
        FxError, match=r"3000\d+ bytes, larger than the fx service's limit of 2000000"
    ):
        next(client.submit_encoded([task]))
    assert peer.count("POST", "/fx/api/v2/payloads") == 0
    assert peer.count("POST", "/fx/api/v2/submit") == 0


def test_only_large_tasks_are_uploaded_as_their_raw_pickled_arguments(
    connect: Any, peer: Peer
) -> None:
    peer.version()
    uploads: list[bytes] = []
    submits: list[bytes] = []

    def upload(handler: Any) -> tuple[int, Any]:
        uploads.append(handler.request.body)
        return 201, {"payload_ref": "ref-1", "size": len(handler.request.body)}

    def submit(handler: Any) -> tuple[int, Any]:
        submits.append(handler.request.body)
        return 200, {"task_group_id": "g", "task_ids": ["a", "b"]}

    peer.routes[("POST", "/fx/api/v2/payloads")] = upload
    peer.routes[("POST", "/fx/api/v2/submit")] = submit
    client = connect(peer.url + "fx/api/v2/", "t")
    small = encode_task("ep", "fn", encode_args((1,), {}), walltime=5)
    arguments = encode_args((b"y" * 2_000_000,), {})
    large = encode_task("ep", "fn", arguments, walltime=5, memoize=True)
    assert isinstance(small, str) and isinstance(large, LargeTask)
    assert next(client.submit_encoded([small, large])) == ["a", "b"]
    [(_m, _p, headers)] = [r for r in peer.requests if r[1].endswith("/payloads")]
    assert headers["Content-Type"] == "application/octet-stream"
    assert uploads == [arguments]  # the pickle itself, never base64
    [body] = submits
    sent = json.loads(body)["tasks"]
    assert "payload" in sent[0] and "payload_ref" not in sent[0]
    assert sent[1] == {
        "endpoint_id": "ep",
        "function_id": "fn",
        "payload_ref": "ref-1",
        "walltime": 5.0,
        "memoize": True,
    }
