"""Checks of request bodies: every field of every body, before anything is stored.

A failure raises :class:`ApiError` (HTTP 400) whose message names the field — with the task
index in a submission (``tasks[17].payload: ...``) — says what was wrong and what is expected
(DESIGN.md invariant 6). Submissions are checked in one tight loop because a body may hold tens
of thousands of tasks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tornado import web

from .endpoints import NAME_PATTERN

#: Curve public keys travel in Z85: 40 characters for 32 bytes.
_Z85 = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
#: Payload references are the ids ``POST payloads`` makes (random UUIDs).
PAYLOAD_REF = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_ID = 255
MAX_TEXT = 1024 * 1024
#: Request bodies larger than this are parsed and checked off the event loop (:func:`off_loop`).
OFF_LOOP_BYTES = 256 * 1024

T = TypeVar("T")
#: What in a raw body may decode to a string no database stores: a NUL escape, a surrogate
#: escape, or surrogate bytes (json accepts them). Only bodies matching it are walked.
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})|\xed[\xa0-\xbf]")


class ApiError(web.HTTPError):
    """An error answer: HTTP status, a short code, and a message for a person."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(status, message.replace("%", "%%"))
        self.error = error
        self.message = message


def bad_request(message: str) -> ApiError:
    """A 400 ``bad_request`` error."""
    return ApiError(400, "bad_request", message)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why it is not one."""
    if not raw:
        raise bad_request("the request has no body; send a JSON object")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise bad_request(f"the request body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, not {type(body).__name__}")
    check_strings(raw, body)
    return body


def storable_text_error(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (NUL, unpaired surrogate), or None if it can."""
    if "\x00" in value:
        return "contains a NUL character, which text cannot hold"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired UTF-16 surrogate, which is not Unicode text"
    return None


def check_strings(raw: bytes, body: Any) -> None:
    """A 400 naming the field if a string of ``body`` (parsed from ``raw``) is one that no text
    column can hold (a NUL, a lone surrogate); the scan of ``raw`` makes the common case free
    (and the two substring tests before it make the scan itself rare: 1 ms, not 25, for 4 MB)."""
    if (b"\\u" in raw or b"\xed" in raw) and _SUSPECT.search(raw):
        _check_strings(body, "")


def parse_submission(raw: bytes, max_tasks: int) -> tuple[list[TaskRequest], str | None]:
    """The tasks and task group of a raw ``POST submit`` body (a 400 saying what is wrong)."""
    return submission(parse_json_object(raw), max_tasks)


async def off_loop(size: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, on a worker thread when its input of ``size`` bytes makes it long.

    Parsing and checking a batch of 20,000 tasks takes ~90 ms of CPU; on a thread, the GIL goes
    back to the Jupyter event loop every few milliseconds, so the server keeps answering
    (DESIGN.md invariant 4). Small inputs stay on the loop: a thread hop would cost more.
    """
    if size <= OFF_LOOP_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def _check_strings(value: Any, where: str) -> None:
    """400 naming the first string (or key) below ``value`` that text columns cannot hold."""
    if isinstance(value, str):
        why = storable_text_error(value)
        if why:
            raise bad_request(f"{where or 'the request body'}: {why}")
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            why = storable_text_error(key)
            if why:
                raise bad_request(f"{path!r}: a field name {why}")
            _check_strings(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{where}[{i}]")


def check_keys(body: dict[str, Any], allowed: set[str], where: str = "") -> None:
    """Refuse fields the API does not know (a typo must not be ignored silently)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(
            f"{where}unknown field {unknown[0]!r}; expected fields: {', '.join(sorted(allowed))}"
        )


def text(
    body: dict[str, Any],
    key: str,
    *,
    required: bool = True,
    max_len: int = MAX_ID,
    where: str = "",
) -> str | None:
    """A string field (non-empty when required); None when optional and absent or null."""
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise bad_request(f"{where}{key}: expected a non-empty string, got {_describe(value)}")
    if len(value) > max_len:
        raise bad_request(f"{where}{key}: longer than {max_len} characters")
    return value


def flag(body: dict[str, Any], key: str, where: str = "") -> bool:
    """An optional boolean field (false when absent)."""
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise bad_request(f"{where}{key}: expected true or false, got {_describe(value)}")
    return value


def positive_number(body: dict[str, Any], key: str, where: str = "") -> float | None:
    """An optional positive finite number (None when absent or null)."""
    value = body.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise bad_request(
            f"{where}{key}: expected a positive number of seconds, got {_describe(value)}"
        )
    return float(value)


def payload(body: dict[str, Any], key: str, where: str = "") -> bytes:
    """A non-empty base64 field, decoded."""
    value = body.get(key)
    if not isinstance(value, str):
        raise bad_request(f"{where}{key}: expected a base64 string, got {_describe(value)}")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad_request(f"{where}{key}: not valid base64 ({e})") from None
    if not data:
        raise bad_request(f"{where}{key}: empty payload")
    return data


def public_key(body: dict[str, Any], key: str) -> str:
    """A Curve public key in Z85 (40 characters)."""
    value = text(body, key, max_len=40)
    assert value is not None
    if not _Z85.match(value):
        raise bad_request(
            f"{key}: expected a Z85-encoded Curve public key (40 characters), as "
            "`fx-endpoint configure` makes"
        )
    return value


def endpoint_name(body: dict[str, Any], key: str) -> str:
    """An endpoint name: a directory name on the endpoint host."""
    value = text(body, key, max_len=64)
    assert value is not None
    if not NAME_PATTERN.match(value):
        raise bad_request(
            f"{key}: {value!r} is not a valid endpoint name (letters, digits, '_', '.', '-'; "
            "starting with a letter or digit; at most 64 characters)"
        )
    return value


@dataclass(slots=True)
class TaskRequest:
    """One task of a ``POST submit`` body, checked.

    A task whose arguments were uploaded (``payload_ref``) has an empty ``payload`` until the
    handler replaces it by the mapped upload (:class:`.blobs.Blob`)."""

    endpoint: str
    function_id: str
    payload: Any
    walltime: float | None
    memoize: bool
    payload_ref: str | None = None


_TASK_KEYS = {"endpoint_id", "function_id", "payload", "payload_ref", "walltime", "memoize"}
_SUBMIT_KEYS = {"tasks", "task_group_id"}


def submission(body: dict[str, Any], max_tasks: int) -> tuple[list[TaskRequest], str | None]:
    """The tasks of a ``POST submit`` body and its optional task group id."""
    check_keys(body, _SUBMIT_KEYS)
    group = text(body, "task_group_id", required=False)
    items = body.get("tasks")
    if not isinstance(items, list) or not items:
        raise bad_request(f"tasks: expected a non-empty list of tasks, got {_describe(items)}")
    if len(items) > max_tasks:
        raise bad_request(
            f"tasks: {len(items)} tasks in one request, more than the limit of {max_tasks}; "
            "split the batch"
        )
    out = []
    decode = base64.b64decode
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise bad_request(f"tasks[{i}]: expected an object, got {_describe(item)}")
        endpoint = item.get("endpoint_id")
        function_id = item.get("function_id")
        data = item.get("payload")
        if type(endpoint) is not str or not endpoint or len(endpoint) > MAX_ID:
            raise bad_request(
                f"tasks[{i}].endpoint_id: expected an endpoint id or name, got {_describe(endpoint)}"
            )
        if type(function_id) is not str or not function_id or len(function_id) > MAX_ID:
            raise bad_request(
                f"tasks[{i}].function_id: expected a function id, got {_describe(function_id)}"
            )
        ref = None
        if data is None and "payload_ref" in item:
            ref = item["payload_ref"]
            if type(ref) is not str or not PAYLOAD_REF.match(ref):
                raise bad_request(
                    f"tasks[{i}].payload_ref: expected a payload reference as POST payloads "
                    f"answers, got {_describe(ref)}"
                )
            raw = b""
        elif type(data) is not str:
            raise bad_request(
                f"tasks[{i}].payload: expected a base64 string (or a payload_ref from POST "
                f"payloads), got {_describe(data)}"
            )
        else:
            try:
                raw = decode(data, validate=True)
            except (binascii.Error, ValueError) as e:
                raise bad_request(f"tasks[{i}].payload: not valid base64 ({e})") from None
            if not raw:
                raise bad_request(f"tasks[{i}].payload: empty payload")
        walltime = None
        memoize = False
        if len(item) > 3:
            where = f"tasks[{i}]."
            check_keys(item, _TASK_KEYS, where)
            if ref is None and "payload_ref" in item:
                raise bad_request(f"{where}payload_ref: give payload or payload_ref, not both")
            walltime = positive_number(item, "walltime", where)
            memoize = flag(item, "memoize", where)
        out.append(TaskRequest(endpoint, function_id, raw, walltime, memoize, ref))
    return out, group


def id_list(body: dict[str, Any], key: str, max_ids: int) -> list[str]:
    """A non-empty list of id strings (``batch_status``)."""
    ids = body.get(key)
    if not isinstance(ids, list) or not ids:
        raise bad_request(f"{key}: expected a non-empty list of ids, got {_describe(ids)}")
    if len(ids) > max_ids:
        raise bad_request(f"{key}: {len(ids)} ids, more than the limit of {max_ids} per request")
    for i, value in enumerate(ids):
        if type(value) is not str or not value or len(value) > MAX_ID:
            raise bad_request(f"{key}[{i}]: expected an id string, got {_describe(value)}")
    return ids


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    text = json.dumps(value) if isinstance(value, (str, int, float, bool)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."
