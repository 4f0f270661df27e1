"""The fx SDK: ``Client`` (the REST API), ``Executor`` (``concurrent.futures``), their errors.

Import from :mod:`fx_jupyter`; the modules here are private and may move.
"""

from __future__ import annotations

from .batch import Batch
from .client import Client
from .errors import (
    EndpointNotFound,
    FxAPIError,
    FxError,
    ServiceNotFound,
    TaskCancelled,
    TaskExecutionFailed,
    TaskPending,
    VersionMismatch,
)
from .events import EventStream
from .executor import Executor
from .futures import FxFuture
from .listings import EndpointList, TaskList

__all__ = [
    "Batch",
    "Client",
    "EndpointList",
    "EndpointNotFound",
    "EventStream",
    "Executor",
    "FxAPIError",
    "FxError",
    "FxFuture",
    "ServiceNotFound",
    "TaskCancelled",
    "TaskExecutionFailed",
    "TaskList",
    "TaskPending",
    "VersionMismatch",
]
