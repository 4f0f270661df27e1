"""Exceptions raised by the fx SDK.

Every SDK error derives from :class:`FxError`, so ``except FxError`` catches anything fx raised
on purpose. Errors the *service* answered with (a 4xx/5xx) are :class:`FxAPIError`, which is also
a ``globus_sdk.GlobusAPIError`` so code written for funcX / Globus Compute keeps working.
Exceptions raised *by the remote function* are re-raised as themselves (see
:meth:`fx_endpoint.serialize.RemoteError.reraise_value`), or as
:class:`~fx_endpoint.errors.TaskExecutionFailed` when their class cannot be rebuilt here.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import CancelledError

from globus_sdk import GlobusAPIError

from fx_endpoint.errors import TaskExecutionFailed

__all__ = [
    "EndpointNotFound",
    "FxAPIError",
    "FxError",
    "ServiceNotFound",
    "TaskCancelled",
    "TaskExecutionFailed",
    "TaskPending",
    "VersionMismatch",
]


class FxError(Exception):
    """Base class of every error the fx SDK raises itself."""


class FxAPIError(FxError, GlobusAPIError):
    """The fx service answered a request with an error status.

    ``str()`` is the service's own explanation (its JSON ``"message"``), prefixed with the HTTP
    status and the service's short error code, so a notebook traceback says what was wrong and
    what to do without digging into ``.raw_json``.
    """

    def _post_parse_hook(self) -> bool:
        # The fx service answers {"error": <code>, "message": <text>}; globus-sdk only knows
        # "code", so lift "error" into .code for `except FxAPIError as e: e.code == ...`.
        data = self.raw_json
        if self.code is None and isinstance(data, dict) and isinstance(data.get("error"), str):
            self.code = data["error"]
        return True

    def __str__(self) -> str:
        message = self.message or self.http_reason or "no message"
        code = f" {self.code}" if self.code else ""
        request = self._underlying_response.request
        return f"{self.http_status}{code}: {message} ({request.method} {request.url})"


class TaskPending(FxError):
    """The task has not finished yet; ``status`` says where it is (e.g. ``waiting-for-ep``)."""

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(task_id, status)
        self.task_id = task_id
        self.status = status

    def __str__(self) -> str:
        return f"task {self.task_id} is still pending (status: {self.status})"


class TaskCancelled(FxError, CancelledError):
    """The task was cancelled (by ``cancel()``, or because its endpoint was deleted).

    It is also a ``concurrent.futures.CancelledError``, which is what a cancelled future raises.
    """

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id

    def __str__(self) -> str:
        return f"task {self.task_id} was cancelled"


class VersionMismatch(FxError):
    """This SDK and the service it reached cannot work together; the message names both versions."""

    def __init__(self, message: str, sdk_version: str, service_version: str) -> None:
        super().__init__(message)
        self.sdk_version = sdk_version
        self.service_version = service_version


class ServiceNotFound(FxError):
    """No fx service could be located; ``tried`` lists every place looked at, and why it failed."""

    def __init__(self, tried: Iterable[str], hint: str) -> None:
        self.tried = list(tried)
        self.hint = hint
        super().__init__(self.tried, hint)

    def __str__(self) -> str:
        lines = "\n".join(f"  - {t}" for t in self.tried) or "  (nothing)"
        return f"no fx service found. Tried:\n{lines}\n{self.hint}"


class EndpointNotFound(FxError, LookupError):
    """No endpoint has this name or id; ``known`` lists the names the service does know."""

    def __init__(self, name_or_id: str, known: Iterable[str]) -> None:
        self.name_or_id = name_or_id
        self.known = sorted(known)
        super().__init__(name_or_id, self.known)

    def __str__(self) -> str:
        if self.known:
            return (
                f"no endpoint named {self.name_or_id!r}; known endpoints: {', '.join(self.known)}"
            )
        return (
            f"no endpoint named {self.name_or_id!r}, and no endpoint is registered yet: run "
            f"`fx-endpoint configure NAME` and `fx-endpoint start NAME` on the machine that "
            f"should run the work"
        )
