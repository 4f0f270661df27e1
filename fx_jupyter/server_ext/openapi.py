"""The OpenAPI 3.1 document of the fx REST API, served at ``GET openapi.json``.

Written as data next to the handlers it describes; ``tests/server_ext/test_openapi.py`` checks
that every route of :func:`~.handlers.default_handlers` is in it and vice versa.
"""

from __future__ import annotations

from typing import Any

from fx_endpoint.protocol import TaskState
from fx_endpoint.version import __version__


def _obj(
    properties: dict[str, Any], required: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_STR = {"type": "string"}
_ID = {"type": "string", "description": "a UUID"}
_TS = {"type": ["number", "null"], "description": "Unix time in seconds"}
_B64 = {"type": "string", "contentEncoding": "base64", "description": "opaque serialized bytes"}
_STATE = {"type": "string", "enum": list(TaskState.ALL)}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _STR, "message": _STR}, ["error", "message"]),
    "Version": _obj(
        {
            "api": {"const": "v2"},
            "fx_version": _STR,
            "protocol": {"type": "integer"},
            "min_sdk_version": _STR,
            "limits": _obj(
                {
                    "max_tasks_per_submit": {"type": "integer"},
                    "max_ids_per_request": {"type": "integer"},
                    "max_request_bytes": {"type": "integer"},
                }
            ),
        },
        ["api", "fx_version", "protocol", "min_sdk_version", "limits"],
    ),
    "FunctionRegistration": _obj(
        {
            "function_name": _STR,
            "function_code": _B64,
            "source": {"type": ["string", "null"]},
            "python_version": {"type": ["string", "null"]},
            "description": {"type": ["string", "null"]},
            "public": {"type": "boolean", "default": False},
        },
        ["function_name", "function_code"],
        additionalProperties=False,
    ),
    "Function": _obj(
        {
            "function_id": _ID,
            "function_name": _STR,
            "description": _STR,
            "public": {"type": "boolean"},
            "python_version": {"type": ["string", "null"]},
            "source": {"type": ["string", "null"]},
            "created": _TS,
            "owned": {"type": "boolean", "description": "false for another user's public function"},
        }
    ),
    "EndpointRegistration": _obj(
        {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
            "public_key": {
                "type": "string",
                "minLength": 40,
                "maxLength": 40,
                "description": "Z85 Curve key",
            },
            "display_name": {"type": ["string", "null"]},
        },
        ["name", "public_key"],
        additionalProperties=False,
    ),
    "EndpointRegistered": _obj(
        {
            "endpoint_id": _ID,
            "name": _STR,
            "broker": _obj({"url": _STR, "server_key": _STR}, ["url", "server_key"]),
        }
    ),
    "EndpointStatus": _obj(
        {
            "endpoint_id": _ID,
            "name": _STR,
            "display_name": {"type": ["string", "null"]},
            "status": {"type": "string", "enum": ["online", "offline", "deleted"]},
            "last_heartbeat": _TS,
            "fx_version": {"type": ["string", "null"]},
            "python": {"type": ["string", "null"]},
            "hostname": {"type": ["string", "null"]},
            "details": {"type": "object", "description": "engine status of the last heartbeat"},
            "tasks": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "unfinished tasks by state",
            },
            "broker": {
                "type": "object",
                "description": "connection counters: credit, in_flight, malformed_messages, ...",
            },
            "created": _TS,
        }
    ),
    "TaskIn": _obj(
        {
            "endpoint_id": {"type": "string", "description": "endpoint id or name"},
            "function_id": _ID,
            "payload": _B64,
            "payload_ref": {
                "type": "string",
                "format": "uuid",
                "description": "instead of payload: the arguments uploaded with POST payloads",
            },
            "walltime": {"type": ["number", "null"], "exclusiveMinimum": 0},
            "memoize": {"type": "boolean", "default": False},
        },
        ["endpoint_id", "function_id"],
        additionalProperties=False,
    ),
    "Uploaded": _obj(
        {"payload_ref": {"type": "string", "format": "uuid"}, "size": {"type": "integer"}},
        ["payload_ref", "size"],
    ),
    "Submission": _obj(
        {"tasks": {"type": "array", "items": _ref("TaskIn"), "minItems": 1}, "task_group_id": _STR},
        ["tasks"],
        additionalProperties=False,
    ),
    "Submitted": _obj(
        {"task_group_id": _STR, "task_ids": {"type": "array", "items": _ID}},
        ["task_group_id", "task_ids"],
    ),
    "Task": _obj(
        {
            "task_id": _ID,
            "status": _STATE,
            "pending": {"type": "boolean"},
            "result": _B64,
            "exception": _B64,
            "result_size": {
                "type": "integer",
                "description": "a result stored out of line: GET tasks/{task_id}/result",
            },
            "exception_size": {
                "type": "integer",
                "description": "an error stored out of line: GET tasks/{task_id}/result",
            },
            "exception_text": _STR,
            "completion_t": _TS,
            "details": _obj(
                {
                    "endpoint_id": _ID,
                    "function_id": _ID,
                    "created": _TS,
                    "task_transitions": {
                        "type": "object",
                        "additionalProperties": {"type": "number"},
                    },
                    "retries": {"type": "integer"},
                    "stdout": {"type": ["string", "null"]},
                    "stderr": {"type": ["string", "null"]},
                    "walltime": {"type": ["number", "null"]},
                }
            ),
        },
        ["task_id", "status", "pending", "completion_t", "details"],
    ),
    "BatchStatusRequest": _obj(
        {"task_ids": {"type": "array", "items": _ID, "minItems": 1}},
        ["task_ids"],
        additionalProperties=False,
    ),
    "BatchStatus": _obj(
        {
            "results": {"type": "object", "additionalProperties": _ref("Task")},
            "unknown": {"type": "array", "items": _STR},
        },
        ["results", "unknown"],
    ),
    "Stats": _obj(
        {
            "fx_version": _STR,
            "store": {"type": "object"},
            "broker": {"type": "object"},
            "dispatch": {"type": "object"},
            "events": {"type": "object"},
        }
    ),
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "bad input (the message names the field) or an incompatible SDK version",
        403: "not authenticated or not authorized",
        404: "unknown id — or another user's, which answers the same",
        409: "conflict (the public key belongs to another endpoint; a task with no result yet)",
        413: "request body larger than FxService.max_request_size",
    }
    return {str(c): _json(_ref("Error"), texts[c]) for c in (403, *codes)}


def _op(
    summary: str,
    ok: dict[str, Any],
    errors: tuple[int, ...] = (),
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_errors(*errors)}}
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
        op["responses"].update(_errors(400, 413, *errors))
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": _STR,
        "description": description,
    }


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_EP = _path_param("endpoint_id", "endpoint id or name")
_TASK = _path_param("task_id", "task id")


def openapi_document(base_path: str) -> dict[str, Any]:
    """The document, with ``servers`` pointing at this service's base path."""
    status = _op("An endpoint's status", _json(_ref("EndpointStatus")), (404,), params=[_EP])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fx service",
            "version": __version__,
            "description": (
                "Federated Function-as-a-Service in Jupyter. Authenticated like the Jupyter "
                "server (token, cookie or JupyterHub). The WebSocket `events` streams "
                '`{"type": "tasks", "tasks": [...]}` and `{"type": "endpoints", '
                '"endpoints": [...]}` messages for the authenticated user.'
            ),
        },
        "servers": [{"url": base_path}],
        "security": [{"token": []}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`token <Jupyter server token>` (or `Bearer <token>`)",
                }
            },
        },
        "paths": {
            "/version": {"get": _op("Versions of the service", _json(_ref("Version")))},
            "/functions": {
                "post": _op(
                    "Register a function (same owner and bytes give the same id)",
                    _json(_obj({"function_id": _ID}, ["function_id"])),
                    body="FunctionRegistration",
                )
            },
            "/functions/{function_id}": {
                "get": _op(
                    "A function (yours, or a public one)",
                    _json(_ref("Function")),
                    (404,),
                    params=[_path_param("function_id", "function id")],
                )
            },
            "/endpoints": {
                "get": _op(
                    "Your endpoints",
                    _json(_obj({"endpoints": {"type": "array", "items": _ref("EndpointStatus")}})),
                ),
                "post": _op(
                    "Register an endpoint (same name gives the same id; the key is replaced)",
                    _json(_ref("EndpointRegistered")),
                    (409,),
                    body="EndpointRegistration",
                ),
            },
            "/endpoints/{endpoint_id}": {
                "get": status,
                "delete": _op(
                    "Delete an endpoint; its unfinished tasks end cancelled",
                    _json(
                        _obj(
                            {
                                "endpoint_id": _ID,
                                "deleted": {"const": True},
                                "cancelled_tasks": {"type": "integer"},
                            }
                        )
                    ),
                    (404,),
                    params=[_EP],
                ),
            },
            "/endpoints/{endpoint_id}/status": {"get": status},
            "/submit": {
                "post": _op(
                    "Submit a batch of tasks (all or nothing; stored before the answer)",
                    _json(_ref("Submitted")),
                    body="Submission",
                )
            },
            "/tasks": {
                "get": _op(
                    "Your most recent tasks, newest first, without payloads",
                    _json(_obj({"tasks": {"type": "array", "items": _ref("Task")}})),
                    (400,),
                    params=[
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        ),
                        _query("endpoint_id", _STR),
                        _query("status", _STATE),
                    ],
                )
            },
            "/payloads": {
                "post": {
                    "summary": "Upload task arguments as raw bytes, for a payload_ref in submit",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "responses": {
                        "201": _json(_ref("Uploaded"), "Stored"),
                        **_errors(400, 413),
                    },
                }
            },
            "/tasks/{task_id}/result": {
                "get": {
                    "summary": "A finished task's result (or error) payload as raw bytes",
                    "parameters": [_TASK],
                    "responses": {
                        "200": {
                            "description": "The payload; X-FX-Task-Status says success or failed",
                            "content": {
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                }
                            },
                        },
                        **_errors(404, 409),
                    },
                }
            },
            "/tasks/{task_id}": {
                "get": _op("A task, with its result", _json(_ref("Task")), (404,), params=[_TASK]),
                "delete": _op(
                    "Cancel a task (idempotent); answers the task",
                    _json(_ref("Task")),
                    (404,),
                    params=[_TASK],
                ),
            },
            "/batch_status": {
                "post": _op(
                    "Many tasks at once",
                    _json(_ref("BatchStatus")),
                    body="BatchStatusRequest",
                )
            },
            "/stats": {"get": _op("Service counters", _json(_ref("Stats")))},
            "/openapi.json": {"get": _op("This document", _json({"type": "object"}))},
            "/events": {
                "get": {
                    "summary": "WebSocket of your task and endpoint events",
                    "responses": {
                        "101": {"description": "switching to the WebSocket protocol"},
                        **_errors(400),
                    },
                }
            },
        },
    }
