"""Shared test configuration: pytest-jupyter's server fixtures; `fx_stack` — a running
Jupyter server with the fx service plus a started endpoint, shared by the end-to-end tests; and
the store backends: every test that asks for `db_url` (the service suite, the fault-injection
suite) runs once on SQLite and once on a real PostgreSQL server started for the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.databases import Databases

from fx_jupyter.testing import FxStack, start_stack

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    found = Databases()
    yield found
    found.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest) -> str:
    """The store backend of this test run (session-scoped, so module-scoped stacks follow it)."""
    return str(request.param)


@pytest.fixture
def db_url(databases: Databases, db_backend: str, tmp_path: Path) -> str:
    """A fresh store of this run's backend, for one test."""
    return databases.new(db_backend, tmp_path)


@pytest.fixture(scope="session")
def fx_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FxStack]:
    """One service + endpoint (2 workers) for the whole session. Tests must not break it; tests
    that kill things build their own with :func:`fx_private_stack`."""
    stack = start_stack(tmp_path_factory.mktemp("fx_stack"))
    yield stack
    stack.teardown()


@pytest.fixture
def fx_private_stack(tmp_path: Path, db_url: str) -> Iterator[FxStack]:
    """A service with no endpoint yet, owned by one test (for fault injection), on each backend."""
    stack = start_stack(tmp_path / "stack", endpoint=None, db_url=db_url)
    yield stack
    stack.teardown()
