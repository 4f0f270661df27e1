"""Turning the service's task records and events into Python values.

The service ships results and exceptions as base64 strings of opaque payloads (it never
unpickles them, DESIGN.md invariant 1). This module is the one place in the SDK that opens them:
a success payload is the pickled value, a failure payload a pickled
:class:`fx_endpoint.serialize.RemoteError` that rebuilds the remote exception with the remote
traceback in its message.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from fx_endpoint.errors import TaskExecutionFailed
from fx_endpoint.protocol import TaskState
from fx_endpoint.serialize import DeserializationError, RemoteError, deserialize_result

#: Fields of a task record or event that hold base64 payloads.
PAYLOAD_FIELDS = ("result", "exception")
#: Fields that say a payload is not inline but fetched raw with ``GET tasks/{id}/result``
#: (their value is its size in bytes), and the payload field each stands for.
OUT_OF_LINE_FIELDS = {"result_size": "result", "exception_size": "exception"}


def out_of_line_field(record: dict[str, Any]) -> str | None:
    """The payload field (``result`` or ``exception``) of ``record`` that is to be fetched with
    ``GET tasks/{id}/result``, or None when the payload is inline (or there is none)."""
    for size_key, key in OUT_OF_LINE_FIELDS.items():
        if size_key in record and key not in record:
            return key
    return None


def b64decode(value: str) -> bytes:
    """Decode a payload field; a malformed one is a :class:`DeserializationError`."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError) as e:
        raise DeserializationError(f"payload is not valid base64: {e}") from None


def decode_payload_fields(record: dict[str, Any]) -> dict[str, Any]:
    """Replace the base64 payload fields of ``record`` by bytes, in place; returns it.

    A field that does not decode is dropped and its error kept in ``"payload_error"``, so one
    bad record cannot break an event stream.
    """
    for key in PAYLOAD_FIELDS:
        value = record.get(key)
        if isinstance(value, str):
            try:
                record[key] = b64decode(value)
            except DeserializationError as e:
                del record[key]
                record["payload_error"] = str(e)
    return record


def remote_exception(payload: bytes | None, text: str | None = None) -> BaseException:
    """The exception a failed task should raise here.

    The original type when its class can be rebuilt (with the remote traceback in ``str()``),
    else :class:`TaskExecutionFailed` carrying the remote type name, message and traceback.
    """
    if payload is None:
        return TaskExecutionFailed("TaskFailed", text or "the task failed", "")
    try:
        error = deserialize_result(payload)
    except DeserializationError as e:
        return TaskExecutionFailed("TaskFailed", text or str(e), "")
    if isinstance(error, RemoteError):
        return error.reraise_value()
    if isinstance(error, BaseException):
        return error
    return TaskExecutionFailed("TaskFailed", text or repr(error), "")


@dataclass
class Outcome:
    """How a finished task ended: a value, an exception, or a cancellation."""

    status: str
    value: Any = None
    exception: BaseException | None = None

    @property
    def cancelled(self) -> bool:
        return self.status == TaskState.CANCELLED


def outcome_of(record: dict[str, Any]) -> Outcome | None:
    """The outcome of a terminal task record whose payload fields are already bytes.

    ``None`` when the record is not terminal, or is terminal without its payload inline (results
    over the event size limit): the caller then fetches it, with ``GET tasks/{id}/result`` when
    the record names its size (:func:`out_of_line_field`), else ``GET tasks/{id}``.
    """
    status = record.get("status")
    if status == TaskState.CANCELLED:
        return Outcome(status)
    if status == TaskState.SUCCESS:
        if "result" not in record:
            return None
        try:
            return Outcome(status, value=deserialize_result(record["result"]))
        except DeserializationError as e:
            return Outcome(status, exception=e)
    if status == TaskState.FAILED:
        if "exception" not in record and (
            not record.get("exception_text") or "exception_size" in record
        ):
            return None
        return Outcome(
            status,
            exception=remote_exception(record.get("exception"), record.get("exception_text")),
        )
    return None


def task_document(raw: dict[str, Any]) -> dict[str, Any]:
    """funcX's ``get_task`` shape from a service Task, with ``result`` and ``exception`` opened.

    ``{task_id, status, pending, result | exception, completion_t, details}``; a result that
    cannot be deserialized here becomes ``exception`` (a DeserializationError saying why).
    """
    record = decode_payload_fields(dict(raw))
    status = record.get("status", "unknown")
    task: dict[str, Any] = {
        "task_id": record.get("task_id"),
        "status": status,
        "pending": bool(record.get("pending", status not in TaskState.TERMINAL)),
        "completion_t": record.get("completion_t"),
        "details": record.get("details") or {},
    }
    if record.get("payload_error"):
        task["exception"] = DeserializationError(record["payload_error"])
        return task
    outcome = outcome_of(record)
    if outcome is None:
        return task
    if outcome.exception is not None:
        task["exception"] = outcome.exception
    elif not outcome.cancelled:
        task["result"] = outcome.value
    return task
