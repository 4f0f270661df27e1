"""fx-jupyter: federated Function-as-a-Service in Jupyter.

``from fx_jupyter import Client, Executor`` (or funcX's names, ``FuncXClient`` and
``FuncXExecutor``). This package is also the Jupyter server extension (the fx service, enabled on
install) and an IPython extension (``%load_ext fx_jupyter`` for the ``%%funcx`` magic).
"""

from __future__ import annotations

from typing import Any

from fx_endpoint.version import __version__

from .sdk import (
    Batch,
    Client,
    EndpointList,
    EndpointNotFound,
    EventStream,
    Executor,
    FxAPIError,
    FxError,
    FxFuture,
    ServiceNotFound,
    TaskCancelled,
    TaskExecutionFailed,
    TaskList,
    TaskPending,
    VersionMismatch,
)

#: funcX's name for :class:`Client`.
FuncXClient = Client
#: funcX's name for :class:`Executor`.
FuncXExecutor = Executor

__all__ = [
    "Batch",
    "Client",
    "EndpointList",
    "EndpointNotFound",
    "EventStream",
    "Executor",
    "FuncXClient",
    "FuncXExecutor",
    "FxAPIError",
    "FxError",
    "FxFuture",
    "ServiceNotFound",
    "TaskCancelled",
    "TaskExecutionFailed",
    "TaskList",
    "TaskPending",
    "VersionMismatch",
    "__version__",
]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Jupyter Server finds the fx service here when the extension is enabled."""
    return [{"module": "fx_jupyter.server_ext"}]


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext fx_jupyter``: register the ``%%funcx`` and ``%funcx`` magics."""
    from .magics import load_ipython_extension as load_magics

    load_magics(ip)


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext fx_jupyter`` (and ``%reload_ext``): shut the magics' executors down and
    close their client."""
    from .magics import unload_ipython_extension as unload_magics

    unload_magics(ip)
