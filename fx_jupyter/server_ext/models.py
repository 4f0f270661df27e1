"""The JSON shapes the service answers with (docs/architecture.md, "REST API").

Kept apart from the handlers because the REST answers, the WebSocket events and the OpenAPI
document must agree on them.
"""

from __future__ import annotations

import base64
import json
import json.encoder
from typing import Any

from fx_endpoint.protocol import TaskState

from .records import EndpointRecord


def b64(data: Any) -> str:
    """Base64 text of bytes or any buffer (a ZeroMQ frame's memoryview) without copying it first."""
    return base64.b64encode(data).decode("ascii")


#: A task as read from the store: the columns of ``statements.TASK_COLUMNS_OUT`` (transitions
#: as JSON text), the result payload (None in listings, or when there is none), and optionally
#: the size of a result stored out of line (``data`` is None then).
TaskRow = tuple[Any, ...]

_string = json.encoder.encode_basestring_ascii


def task_json(row: TaskRow) -> str:
    """funcX's Task shape (docs/architecture.md) as JSON text.

    Written directly from the row rather than through a dict per task: a ``batch_status`` of
    20,000 tasks would otherwise build 80,000 containers, and the garbage collector's passes
    over them cost more than the rest. ``result`` (success) or ``exception`` (failed) carry the
    payload when the row has one; a payload stored out of line is never base64'd into JSON:
    ``result_size`` (or ``exception_size``) says how many bytes ``GET tasks/{id}/result``
    answers instead.
    """
    (
        task_id,
        status,
        endpoint_id,
        function_id,
        created,
        transitions,
        retries,
        walltime,
        completion_t,
        exception_text,
        stdout,
        stderr,
        data,
        *out_of_line,
    ) = row
    pending = "false" if status in TaskState.TERMINAL else "true"
    head = (
        f'{{"task_id":{_string(task_id)},"status":{_string(status)},"pending":{pending},'
        f'"completion_t":{_number(completion_t)}'
    )
    out = [head]
    if status == TaskState.SUCCESS and data is not None:
        out.append(f',"result":"{b64(data)}"')
    elif status == TaskState.FAILED and data:
        out.append(f',"exception":"{b64(data)}"')
    elif out_of_line and out_of_line[0] is not None and status != TaskState.CANCELLED:
        key = "result_size" if status == TaskState.SUCCESS else "exception_size"
        out.append(f',"{key}":{int(out_of_line[0])}')
    if status in (TaskState.FAILED, TaskState.CANCELLED) and exception_text:
        out.append(f',"exception_text":{_string(exception_text)}')
    out.append(
        f',"details":{{"endpoint_id":{_string(endpoint_id)},'
        f'"function_id":{_string(function_id)},"created":{_number(created)},'
        f'"task_transitions":{transitions},"retries":{int(retries)},'
        f'"stdout":{_text(stdout)},"stderr":{_text(stderr)},"walltime":{_number(walltime)}}}}}'
    )
    return "".join(out)


def _number(value: float | None) -> str:
    return "null" if value is None else repr(float(value))


def _text(value: str | None) -> str:
    return "null" if value is None else _string(value)


def endpoint_status(
    record: EndpointRecord,
    connection: dict[str, Any] | None,
    counters: dict[str, int],
    task_counts: dict[str, int],
) -> dict[str, Any]:
    """The EndpointStatus shape.

    ``connection`` is the broker's live view of a connected endpoint (None when offline): what it
    said in ``hello``, its last heartbeat's engine status, its credit and tasks in flight.
    ``counters`` (malformed messages, duplicate results...) are kept across connections.
    """
    live = connection or {}
    hello = live.get("hello") or record.info.get("hello") or {}
    return {
        "endpoint_id": record.endpoint_id,
        "name": record.name,
        "display_name": record.info.get("display_name"),
        "status": "online" if connection is not None else "offline",
        "last_heartbeat": live.get("last_heartbeat", record.last_heartbeat),
        "fx_version": hello.get("fx_version"),
        "python": hello.get("python"),
        "hostname": hello.get("hostname"),
        "details": live.get("status") or record.info.get("status") or {},
        "tasks": task_counts,
        "broker": {**live.get("broker", {}), **counters},
        "created": record.created,
    }


def deleted_endpoint(endpoint_id: str, name: str) -> dict[str, Any]:
    """The endpoints event of a deleted endpoint."""
    return {"endpoint_id": endpoint_id, "name": name, "status": "deleted"}
