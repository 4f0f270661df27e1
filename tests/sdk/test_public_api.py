"""The public names of ``fx_jupyter``: complete ``__all__``, funcX aliases, extension hooks."""

from __future__ import annotations

import inspect

import fx_jupyter
import fx_jupyter.sdk


def test_all_is_complete_and_importable() -> None:
    public = {
        name
        for name, value in vars(fx_jupyter).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and name not in {"annotations", "Any", "load_ipython_extension", "unload_ipython_extension"}
    }
    assert public | {"__version__"} == set(fx_jupyter.__all__)
    namespace: dict[str, object] = {}
    exec("from fx_jupyter import *", namespace)  # noqa: S102 - the star import under test
    for name in fx_jupyter.__all__:
        assert namespace[name] is getattr(fx_jupyter, name)


def test_sdk_all_matches_what_it_defines() -> None:
    for name in fx_jupyter.sdk.__all__:
        assert getattr(fx_jupyter.sdk, name) is getattr(fx_jupyter, name)


def test_the_names_the_design_promises() -> None:
    for name in (
        "Client",
        "Executor",
        "FuncXClient",
        "FuncXExecutor",
        "TaskPending",
        "TaskCancelled",
        "TaskExecutionFailed",
        "FxError",
        "FxAPIError",
        "VersionMismatch",
        "ServiceNotFound",
        "EndpointNotFound",
        "__version__",
    ):
        assert name in fx_jupyter.__all__
    assert fx_jupyter.FuncXClient is fx_jupyter.Client
    assert fx_jupyter.FuncXExecutor is fx_jupyter.Executor
    from fx_endpoint.errors import TaskExecutionFailed
    from fx_endpoint.version import __version__

    assert fx_jupyter.TaskExecutionFailed is TaskExecutionFailed
    assert fx_jupyter.__version__ == __version__


def test_errors_form_one_hierarchy() -> None:
    from concurrent.futures import CancelledError

    from globus_sdk import GlobusAPIError

    for cls in (
        fx_jupyter.FxAPIError,
        fx_jupyter.TaskPending,
        fx_jupyter.TaskCancelled,
        fx_jupyter.VersionMismatch,
        fx_jupyter.ServiceNotFound,
        fx_jupyter.EndpointNotFound,
    ):
        assert issubclass(cls, fx_jupyter.FxError)
    assert issubclass(fx_jupyter.FxAPIError, GlobusAPIError)
    assert issubclass(fx_jupyter.TaskCancelled, CancelledError)


def test_server_extension_points_name_the_service() -> None:
    assert fx_jupyter._jupyter_server_extension_points() == [{"module": "fx_jupyter.server_ext"}]


def test_sdk_does_not_import_the_service() -> None:
    """The SDK runs in kernels: it must not pull in the service (or its dependencies)."""
    import subprocess
    import sys

    code = (
        "import sys, fx_jupyter\n"
        "from fx_jupyter import Client, Executor\n"
        "bad = [m for m in sys.modules if m.startswith('fx_jupyter.server_ext')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
