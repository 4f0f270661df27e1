"""The JSON shapes the service answers with (docs/architecture.md, "REST API").

Kept apart from the handlers because the REST answers, the WebSocket events and the OpenAPI
document must agree on them.
"""

from __future__ import annotations

import base64
from typing import Any

from fx_endpoint.protocol import TaskState

from .store import EndpointRecord


def b64(data: Any) -> str:
    """Base64 text of bytes or any buffer (a ZeroMQ frame's memoryview) without copying it first."""
    return base64.b64encode(data).decode("ascii")


def task_model(row: dict[str, Any]) -> dict[str, Any]:
    """funcX's Task shape from a joined tasks/results row.

    ``result`` (success) or ``exception`` (failed) carry the payload when the row has a ``data``
    column; listings leave it out.
    """
    status = row["status"]
    model: dict[str, Any] = {
        "task_id": row["task_id"],
        "status": status,
        "pending": status not in TaskState.TERMINAL,
        "completion_t": row["completion_t"],
        "details": {
            "endpoint_id": row["endpoint_id"],
            "function_id": row["function_id"],
            "created": row["created"],
            "task_transitions": row["transitions"],
            "retries": row["retries"],
            "stdout": row["stdout"],
            "stderr": row["stderr"],
            "walltime": row["walltime"],
        },
    }
    data = row.get("data")
    if status == TaskState.SUCCESS and data is not None:
        model["result"] = b64(data)
    elif status == TaskState.FAILED and data:
        model["exception"] = b64(data)
    if status in (TaskState.FAILED, TaskState.CANCELLED) and row["exception_text"]:
        model["exception_text"] = row["exception_text"]
    return model


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
