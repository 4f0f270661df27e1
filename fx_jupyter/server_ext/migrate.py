"""Creating and upgrading the store's schema with Alembic, on SQLite and PostgreSQL alike.

The service calls :func:`upgrade` when it starts, so a new fx-jupyter brings an existing store up
to date by itself and a fresh database gets the whole schema. Revisions live in
``migrations/versions``; ``0001`` is the schema fx-jupyter 0.1 made with ``create_all`` before
there were migrations, so such a store (tables, no ``alembic_version``) is stamped with it
rather than created again. A store already upgraded by a newer fx-jupyter is refused with a
message saying so: running old code on a newer schema would corrupt it.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Engine

SCRIPT_LOCATION = "fx_jupyter.server_ext:migrations"
BASELINE = "0001"
#: Any constant: serializes migrations of services starting at once on one PostgreSQL database.
_PG_LOCK_KEY = 0x66782D6A7570
_SQLITE_RETRIES = 5


class SchemaError(RuntimeError):
    """The store's schema cannot be brought to what this fx-jupyter expects; says why."""


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic configuration for the store's revisions, bound to ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this fx-jupyter knows."""
    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the store at ``engine`` to the newest revision in one transaction.

    Returns the revision before (None for an empty database) and after. SQLite answers
    "database is locked" at once, without waiting out its busy timeout, when two connections
    opening a fresh file would deadlock (one switching it to WAL while another holds a lock);
    its documented remedy is to run the transaction again, which this does a few times.
    """
    for attempt in range(_SQLITE_RETRIES):
        try:
            return _upgrade_once(engine)
        except sa.exc.OperationalError as e:
            if engine.dialect.name != "sqlite" or "database is locked" not in str(e.orig):
                raise
            time.sleep(0.05 * 2**attempt)
    return _upgrade_once(engine)


def _upgrade_once(engine: Engine) -> tuple[str | None, str]:
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        config = alembic_config(conn)
        before = current_revision(conn)
        if before is None and sa.inspect(conn).has_table("tasks"):
            command.stamp(config, BASELINE)
            before = BASELINE
        elif before is not None:
            _check_known(config, before)
        command.upgrade(config, "head")
        return before, str(current_revision(conn))


def _check_known(config: Config, revision: str) -> None:
    try:
        known = ScriptDirectory.from_config(config).get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise SchemaError(
            f"the store's schema is at revision {revision!r}, which this fx-jupyter does not "
            f"know (its newest is {head()!r}): the store was upgraded by a newer fx-jupyter; "
            "upgrade fx-jupyter to use it"
        )
