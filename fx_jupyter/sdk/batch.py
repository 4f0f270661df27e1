"""Tasks on their way to ``POST submit``: a :class:`Batch`, and their JSON encoding.

Every task is encoded once, when it is added: its arguments are pickled and base64-encoded and
the task becomes a ready JSON fragment. Submitting N tasks then joins fragments into one request
body (or a few, above the size limits) instead of re-walking N dicts; this keeps the SDK's
per-task cost to the pickling itself, which matters at thousands of tasks per second.

A task whose pickled arguments are over :data:`UPLOAD_ARGS_BYTES` is a :class:`LargeTask`
instead: its arguments stay the raw pickled bytes, which the client uploads as they are
(``POST payloads``) and submits by ``payload_ref``; base64-encoding 10 MB only to decode it
again before the upload would cost more than the upload itself.
"""

from __future__ import annotations

import base64
import json
import math
import pickle
import uuid
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from fx_endpoint.serialize import serialize_args

#: Argument types nothing in which is pickled by reference.
_PLAIN = frozenset({int, float, complex, str, bytes, bool, type(None)})

#: Most tasks in one ``POST submit``; a larger batch is split into several requests.
MAX_TASKS_PER_REQUEST = 50_000
#: Largest request body in bytes (below Tornado's default 100 MB ``max_body_size``); a task
#: larger than this on its own is still sent, alone.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: Pickled arguments larger than this (1 MiB of JSON once base64'd) are uploaded as raw bytes
#: and submitted by reference (:class:`LargeTask`).
UPLOAD_ARGS_BYTES = 768 * 1024
_PAYLOAD_KEY = '"payload":"'


class LargeTask:
    """A task of a ``POST submit`` whose arguments travel apart, uploaded as raw bytes.

    ``head`` and ``tail`` are its JSON fragment around the argument field, so that once
    uploaded it becomes an ordinary fragment naming the upload (:meth:`fragment`).
    """

    __slots__ = ("head", "payload", "tail")

    def __init__(self, head: str, payload: bytes, tail: str) -> None:
        self.head = head
        self.payload = payload
        self.tail = tail

    def fragment(self, payload_ref: str) -> str:
        """The task's JSON fragment, its arguments named by ``payload_ref``."""
        return f'{self.head}"payload_ref":{json.dumps(payload_ref)}{self.tail}'

    def __repr__(self) -> str:
        return f"<LargeTask of {len(self.payload)} bytes of arguments>"


#: An encoded task: a JSON fragment, or a task whose arguments are still to upload.
EncodedTask = str | LargeTask


def _as_id(value: Any, name: str) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise TypeError(
            f"{name} must be a non-empty string (an id or, for endpoints, a name), got {value!r}"
        )
    return value


def encode_args(args: Sequence[Any], kwargs: dict[str, Any]) -> bytes:
    """The serialized arguments of a task calling a function with ``args`` and ``kwargs``.

    The format is :func:`fx_endpoint.serialize.serialize_args`. Arguments that are all plain
    scalars (the common ``map`` over numbers or names) are pickled by ``pickle`` itself: for
    them cloudpickle writes the very same bytes, only several times slower.
    """
    args = tuple(args)
    try:
        if all(type(a) in _PLAIN for a in args) and all(type(v) in _PLAIN for v in kwargs.values()):
            payload = pickle.dumps((args, dict(kwargs)), protocol=cloudpickle.DEFAULT_PROTOCOL)
        else:
            payload = serialize_args(args, kwargs)
    except Exception as e:
        raise TypeError(
            f"cannot serialize the task's arguments (they are pickled with cloudpickle to travel "
            f"to the endpoint): {type(e).__name__}: {e}"
        ) from e
    return payload


def check_walltime(walltime: Any) -> float:
    """``walltime`` as float seconds; anything but a positive finite number raises."""
    if isinstance(walltime, bool) or not isinstance(walltime, (int, float)):
        raise TypeError(f"walltime must be a number of seconds, got {walltime!r}")
    if not math.isfinite(walltime) or walltime <= 0:
        raise ValueError(f"walltime must be a positive number of seconds, got {walltime!r}")
    return float(walltime)


def encode_task(
    endpoint_id: Any,
    function_id: Any,
    payload: bytes,
    walltime: float | None = None,
    memoize: bool | None = None,
) -> EncodedTask:
    """One task of a ``POST submit`` body, its arguments ``payload`` (from :func:`encode_args`):
    a JSON fragment, or a :class:`LargeTask` when they are over :data:`UPLOAD_ARGS_BYTES`.
    Bad options raise, naming them."""
    if type(endpoint_id) is str and type(function_id) is str:
        prefix = _cached_prefix(endpoint_id, function_id)  # a map: the same ids 10,000 times
    else:
        prefix = _task_prefix(endpoint_id, function_id)
    if len(payload) > UPLOAD_ARGS_BYTES:
        options = "" if walltime is None and memoize is None else _task_options(walltime, memoize)
        return LargeTask(prefix[: -len(_PAYLOAD_KEY)], payload, options + "}")
    encoded = base64.b64encode(payload).decode("ascii")
    if walltime is None and memoize is None:
        return prefix + encoded + '"}'
    return prefix + encoded + '"' + _task_options(walltime, memoize) + "}"


def _task_prefix(endpoint_id: Any, function_id: Any) -> str:
    return (
        f'{{"endpoint_id":{json.dumps(_as_id(endpoint_id, "endpoint_id"))},'
        f'"function_id":{json.dumps(_as_id(function_id, "function_id"))},"payload":"'
    )


_cached_prefix = lru_cache(maxsize=256)(_task_prefix)


def _task_options(walltime: Any, memoize: Any) -> str:
    options = ""
    if walltime is not None:
        options += f',"walltime":{check_walltime(walltime)!r}'
    if memoize is not None:
        if not isinstance(memoize, bool):
            raise TypeError(f"memoize must be True or False, got {memoize!r}")
        options += ',"memoize":true' if memoize else ',"memoize":false'
    return options


def submit_bodies(
    fragments: Sequence[str],
    task_group_id: str | None = None,
    max_tasks: int = MAX_TASKS_PER_REQUEST,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> Iterator[tuple[bytes, int]]:
    """``POST submit`` bodies for ``fragments``, in order: ``(body, number of tasks in it)``.

    One body unless the tasks exceed ``max_tasks`` or ``max_bytes``. The bodies of a split
    batch all carry one ``task_group_id`` (a new one if none was given), so it stays one group.
    """
    ranges = _split(fragments, max_tasks, max_bytes)
    if task_group_id is None and len(ranges) > 1:
        task_group_id = str(uuid.uuid4())
    suffix = "]" + (f',"task_group_id":{json.dumps(task_group_id)}' if task_group_id else "") + "}"
    for start, end in ranges:
        yield ('{"tasks":[' + ",".join(fragments[start:end]) + suffix).encode(), end - start


def _split(fragments: Sequence[str], max_tasks: int, max_bytes: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of at most ``max_tasks`` fragments and about ``max_bytes``."""
    ranges = []
    start = 0
    while start < len(fragments):
        size = 0
        end = start
        while end < len(fragments) and end - start < max_tasks:
            size += len(fragments[end]) + 1
            if size > max_bytes and end > start:
                break
            end += 1
        ranges.append((start, end))
        start = end
    return ranges


class Batch:
    """Tasks to submit together: ``client.batch_run(batch)`` sends them in one request.

    funcX's interface: ``batch = client.create_batch(); batch.add(*args, endpoint_id=...,
    function_id=..., **kwargs)``. Arguments are serialized when added, so later changes to a
    mutable argument do not change a task already in the batch.
    """

    def __init__(self, task_group_id: str | None = None) -> None:
        self.task_group_id = task_group_id
        self._fragments: list[EncodedTask] = []

    def add(
        self,
        *args: Any,
        endpoint_id: Any,
        function_id: Any,
        walltime: float | None = None,
        memoize: bool | None = None,
        **kwargs: Any,
    ) -> None:
        """Add a call of ``function_id`` on ``endpoint_id`` (an id or a name).

        ``walltime`` (seconds) and ``memoize`` are options of the task, not arguments of the
        function; every other keyword is passed to the function.
        """
        self._fragments.append(
            encode_task(endpoint_id, function_id, encode_args(args, kwargs), walltime, memoize)
        )

    def __len__(self) -> int:
        return len(self._fragments)

    def __repr__(self) -> str:
        return f"<Batch of {len(self)} tasks>"

    @property
    def fragments(self) -> list[EncodedTask]:
        """The encoded tasks, in the order they were added."""
        return self._fragments
