"""Shared test configuration: pytest-jupyter's server fixtures, and `fx_stack` — a running
Jupyter server with the fx service plus a started endpoint, shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fx_jupyter.testing import FxStack, start_stack

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(scope="session")
def fx_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FxStack]:
    """One service + endpoint (2 workers) for the whole session. Tests must not break it; tests
    that kill things build their own with :func:`fx_private_stack`."""
    stack = start_stack(tmp_path_factory.mktemp("fx_stack"))
    yield stack
    stack.teardown()


@pytest.fixture
def fx_private_stack(tmp_path: Path) -> Iterator[FxStack]:
    """A service with no endpoint yet, owned by one test (for fault injection)."""
    stack = start_stack(tmp_path / "stack", endpoint=None)
    yield stack
    stack.teardown()
