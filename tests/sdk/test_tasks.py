"""Round trips through the service's task shapes: results, remote exceptions, cancellations."""

from __future__ import annotations

import base64
import pickle
from typing import Any

import pytest

from fx_endpoint.errors import TaskExecutionFailed
from fx_endpoint.serialize import DeserializationError, serialize_exception, serialize_result
from fx_jupyter.sdk.tasks import decode_payload_fields, outcome_of, remote_exception, task_document


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def record(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "task_id": "t1",
        "status": status,
        "pending": status not in ("success", "failed", "cancelled"),
        "completion_t": 12.5 if status in ("success", "failed", "cancelled") else None,
        "details": {
            "endpoint_id": "e1",
            "task_transitions": {"waiting-for-ep": 1.0},
            "stdout": "hi\n",
        },
        **extra,
    }


def raise_and_pack(exc: BaseException) -> bytes:
    try:
        raise exc
    except BaseException as e:  # noqa: BLE001 - packing whatever was raised
        return serialize_exception(e)


def test_success_document_has_the_value() -> None:
    doc = task_document(record("success", result=b64(serialize_result({"a": [1, 2]}))))
    assert doc["result"] == {"a": [1, 2]} and "exception" not in doc
    assert doc["pending"] is False and doc["completion_t"] == 12.5
    assert doc["details"]["stdout"] == "hi\n"


def test_success_without_inline_payload_has_no_result_key() -> None:
    doc = task_document(record("success"))
    assert "result" not in doc and "exception" not in doc


def test_remote_exception_keeps_its_type_and_traceback() -> None:
    doc = task_document(record("failed", exception=b64(raise_and_pack(ZeroDivisionError("boom")))))
    exc = doc["exception"]
    assert isinstance(exc, ZeroDivisionError)
    text = str(exc)
    assert text.startswith("boom") and "Remote traceback" in text and "raise_and_pack" in text


class Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("no")


def test_exception_whose_class_cannot_be_rebuilt() -> None:
    exc = remote_exception(raise_and_pack(Unpicklable("weird")))
    assert isinstance(exc, TaskExecutionFailed)
    assert exc.type_name == "Unpicklable" and "weird" in str(exc)


def test_failure_with_only_a_text() -> None:
    exc = task_document(record("failed", exception_text="WorkerLost: worker died"))["exception"]
    assert isinstance(exc, TaskExecutionFailed) and "worker died" in str(exc)


def test_cancelled_document_has_neither_result_nor_exception() -> None:
    doc = task_document(record("cancelled"))
    assert doc["status"] == "cancelled" and "result" not in doc and "exception" not in doc


def test_pending_document() -> None:
    doc = task_document(record("waiting-for-ep"))
    assert doc["pending"] is True and doc["status"] == "waiting-for-ep"
    assert outcome_of(decode_payload_fields(record("running"))) is None


def test_result_that_cannot_be_loaded_here() -> None:
    payload = pickle.dumps(1)[:-1] + b"garbage"
    doc = task_document(record("success", result=b64(payload)))
    assert isinstance(doc["exception"], DeserializationError)


def test_malformed_base64_is_an_error_not_a_crash() -> None:
    event = decode_payload_fields({"task_id": "t", "status": "success", "result": "!!not b64!!"})
    assert "result" not in event and "base64" in event["payload_error"]
    doc = task_document(record("success", result="@@@"))
    assert isinstance(doc["exception"], DeserializationError)


@pytest.mark.parametrize("value", [None, 0, "", b"\x00" * 10, list(range(100)), {"nested": {1: 2}}])
def test_event_outcomes_round_trip(value: Any) -> None:
    event = decode_payload_fields(
        {"task_id": "t", "status": "success", "result": b64(serialize_result(value))}
    )
    outcome = outcome_of(event)
    assert outcome is not None and outcome.value == value and outcome.exception is None
