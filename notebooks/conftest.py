"""nbval runs the notebooks here against a live fx service with an endpoint named ``local``.

nbval's items are not fixture-aware and its kernel inherits this process's environment, so the
stack is started just before the first notebook cell runs (not at collection, so other tests never
see the ``FX_*`` variables), exported to the kernel through ``FX_SERVICE_URL`` / ``FX_TOKEN``, and
stopped, with the environment restored, when the session ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from fx_jupyter.testing import FxStack, start_stack

_stack: FxStack | None = None
_saved_env: dict[str, str | None] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _stack
    if _stack is None and item.path.suffix == ".ipynb":
        _stack = start_stack(Path(tempfile.mkdtemp(prefix="fx-nbval-")), endpoint="local")
        exported = {"FX_SERVICE_URL": _stack.service_url, "FX_TOKEN": _stack.token, "FX_NO_WIDGETS": "1"}
        _saved_env.update({key: os.environ.get(key) for key in exported})
        os.environ.update(exported)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _stack
    if _stack is not None:
        _stack.teardown()
        shutil.rmtree(_stack.root, ignore_errors=True)
        _stack = None
    for key, value in _saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
