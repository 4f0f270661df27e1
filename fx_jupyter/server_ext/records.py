"""The records the store reads and writes, and the ids it makes.

Plain dataclasses shared by the store, the dispatcher, the handlers and the event hub, so none of
them depends on another's internals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


class StoreConflict(Exception):
    """A write that would break a uniqueness rule; the message says which."""


@dataclass
class EndpointRecord:
    """A registered endpoint as stored."""

    endpoint_id: str
    owner: str
    name: str
    public_key: str
    created: float
    last_heartbeat: float | None
    info: dict[str, Any]


@dataclass
class FunctionRecord:
    """A registered function; ``payload`` is None when it was not asked for."""

    function_id: str
    owner: str
    name: str
    description: str
    public: bool
    source: str | None
    python_version: str | None
    created: float
    payload: bytes | None = None


@dataclass
class NewTask:
    """A validated task of a submission, before it is stored.

    ``payload`` is the argument bytes, or for arguments uploaded with ``POST payloads`` the
    mapped upload (a :class:`.blobs.Blob`, which the store records by reference)."""

    task_id: str
    endpoint_id: str
    function_id: str
    payload: Any
    walltime: float | None
    memoize: bool


@dataclass
class ResultIn:
    """A result reported by an endpoint; ``data`` may be a zero-copy buffer of a ZeroMQ frame,
    or for a large result sent in parts, the list of its frames' buffers (written out whole)."""

    task_id: str
    status: str
    data: Any
    exception_text: str | None
    stdout: str | None
    stderr: str | None
    ts: float
    retries: int | None
    #: When the task entered states at the endpoint (``waiting-for-launch``, ``running``), for
    #: tasks whose result overtook their status reports.
    transitions: dict[str, float]


@dataclass
class Change:
    """A task state change the store applied, for events and acknowledgements."""

    task_id: str
    owner: str
    endpoint_id: str
    status: str
    ts: float


@dataclass
class Reports:
    """What :meth:`TaskStore.record_reports` did with an endpoint's reports."""

    changes: list[Change]
    recorded: list[Change]
    duplicates: list[str]
    unknown: list[str]


def new_id() -> str:
    """A random (version 4) UUID string, the id format of funcX.

    Formatted by hand: ``str(uuid.uuid4())`` costs several times more, which shows when a
    submission makes 20,000 of them.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
