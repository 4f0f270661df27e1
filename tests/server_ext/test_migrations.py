"""Schema creation and upgrades through Alembic, on SQLite and PostgreSQL: the migrations build
exactly the tables the code uses, a store made before migrations existed is adopted, and a store
from a newer fx-jupyter is refused with a message saying so, untouched."""

from __future__ import annotations

import asyncio
import logging

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from fx_jupyter.server_ext import migrate
from fx_jupyter.server_ext.schema import create_engine, metadata, service_state
from fx_jupyter.server_ext.store import TaskStore

LOG = logging.getLogger("test-migrations")


@pytest.fixture
def engine(db_url: str):
    engine = create_engine(db_url, writer=True)
    yield engine
    engine.dispose()


def differences(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, metadata)


def test_an_empty_database_gets_the_schema_the_code_uses(engine):
    assert migrate.upgrade(engine) == (None, migrate.head())
    assert differences(engine) == []
    assert migrate.upgrade(engine) == (migrate.head(), migrate.head())


def test_every_revision_downgrades_and_upgrades_again(engine):
    migrate.upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
        assert migrate.current_revision(conn) is None
        assert sa.inspect(conn).get_table_names() == ["alembic_version"]
    assert migrate.upgrade(engine) == (None, migrate.head())
    assert differences(engine) == []


def test_a_store_made_before_migrations_is_adopted_with_its_data(engine):
    with engine.begin() as conn:  # the tables fx-jupyter 0.1 made, with no alembic_version
        command.upgrade(migrate.alembic_config(conn), migrate.BASELINE)
        conn.execute(sa.text("DROP TABLE alembic_version"))
        conn.execute(service_state.insert().values(key="broker_port", value="4242"))
    assert migrate.upgrade(engine) == (migrate.BASELINE, migrate.head())
    with engine.connect() as conn:
        assert conn.execute(sa.select(service_state.c.value)).scalar() == "4242"
    assert differences(engine) == []


def test_a_store_from_a_newer_fx_is_refused_and_left_alone(engine):
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    with pytest.raises(migrate.SchemaError, match="'f00dfeed'.*newer fx-jupyter"):
        migrate.upgrade(engine)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == "f00dfeed"


def test_services_starting_at_once_migrate_once(db_url, jp_asyncio_loop):
    stores = [TaskStore(db_url, LOG) for _ in range(3)]

    async def open_all() -> None:
        await asyncio.gather(*(store.open() for store in stores))
        await asyncio.gather(*(store.close() for store in stores))

    jp_asyncio_loop.run_until_complete(open_all())
    engine = create_engine(db_url, writer=True)
    try:
        assert differences(engine) == []
    finally:
        engine.dispose()


@pytest.fixture
def newer_store(engine) -> None:
    """The test's database, already upgraded by a (pretend) newer fx-jupyter."""
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeed'"))


async def test_the_service_reports_a_store_it_cannot_use(newer_store, api):
    """A schema newer than the code: the API answers 503 with the reason, nothing changes."""
    status, body = await api("GET", "endpoints")
    assert status == 503, body
    assert "'f00dfeed'" in body["message"] and "newer fx-jupyter" in body["message"]
