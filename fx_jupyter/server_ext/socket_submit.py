"""Task submission over the events WebSocket: the fast path of ``POST submit``.

A client that holds its events WebSocket open may send a submit through it instead of an HTTP
request::

    {"type": "submit", "id": 7, "body": {...a POST submit body...}}

The service checks and stores it exactly like ``POST submit`` (same validation, same limits,
the answer only after the commit) and answers on the same socket::

    {"type": "submitted", "id": 7, "task_group_id": "...", "task_ids": [...]}
    {"type": "submit_error", "id": 7, "status": 400, "error": "bad_request", "message": "..."}

Why: in a warm round trip of one task, most of the service's work was the HTTP request of its
submit — parsing, authenticating, logging — not the task. On the socket the user was
authenticated when it connected (and is authorized again here, per message), and the answer
travels ahead of the task's events on one ordered channel. Uploads (``payload_ref``) stay on
HTTP: a message naming one is refused, and the client sends it the regular way.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jupyter_core.utils import ensure_async

from . import validation as v
from .records import new_id

if TYPE_CHECKING:
    from .handlers import EventsHandler

#: The authorizer's action a submit needs on the handler's resource (that of ``POST submit``).
AUTH_ACTION = "write"


async def answer_message(handler: EventsHandler, message: str | bytes) -> str | None:
    """The answer to one client message on the events socket (JSON; never raises), or None
    for a message that is not a submit at all (not a JSON object of ``"type": "submit"``): the
    stream is otherwise one-way, and what else a client sends is ignored, as it always was."""
    raw = message.encode() if isinstance(message, str) else message
    try:
        doc = await v.off_loop(len(raw), json.loads, raw)
    except ValueError:  # UnicodeDecodeError included
        doc = None
    if not isinstance(doc, dict) or doc.get("type") != "submit":
        handler.log.debug("fx events: ignored a client message that is not a submit")
        return None
    request_id = doc.get("id")
    if type(request_id) is not int:
        return _error(None, v.bad_request(f"id: expected an integer, got {request_id!r}"))
    try:
        answer = await _submit(handler, raw, doc)
    except v.ApiError as e:
        return _error(request_id, e)
    except Exception as e:  # the store failed: the client retries over HTTP
        handler.log.exception("fx events: a submit over the socket failed")
        return _error(request_id, v.ApiError(503, "unavailable", f"the submit failed: {e}"))
    return json.dumps({"type": "submitted", "id": request_id, **answer}, separators=(",", ":"))


async def _submit(handler: EventsHandler, raw: bytes, doc: dict[str, Any]) -> dict[str, Any]:
    """Authorize, check (off the loop when large: one hop), store; the ``submitted`` fields."""
    resource = handler.auth_resource
    if not await ensure_async(
        handler.authorizer.is_authorized(handler, handler.current_user, AUTH_ACTION, resource)
    ):
        raise v.ApiError(
            403, "forbidden", f"not authorized to {AUTH_ACTION} on resource {resource}"
        )
    service = handler.service
    items, group = await v.off_loop(len(raw), _tasks_of, raw, doc, service.max_tasks_per_request)
    if any(item.payload_ref for item in items):
        raise v.bad_request("tasks[].payload_ref: submit uploads with POST submit")
    task_ids = await service.tasks.submit(handler.owner, items)
    return {"task_group_id": group or new_id(), "task_ids": task_ids}


def _tasks_of(
    raw: bytes, doc: dict[str, Any], max_tasks: int
) -> tuple[list[v.TaskRequest], str | None]:
    """The checked tasks of a submit message ``doc`` (parsed from ``raw``)."""
    v.check_strings(raw, doc)
    body = doc.get("body")
    if not isinstance(body, dict):
        raise v.bad_request(
            f"body: expected a submit body (a JSON object), got {type(body).__name__}"
        )
    return v.submission(body, max_tasks)


def _error(request_id: int | None, error: v.ApiError) -> str:
    return json.dumps(
        {
            "type": "submit_error",
            "id": request_id,
            "status": error.status_code,
            "error": error.error,
            "message": error.message,
        },
        separators=(",", ":"),
    )
