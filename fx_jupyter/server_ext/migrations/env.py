"""Alembic environment of the task store.

The service runs migrations itself (:mod:`..migrate`) on a connection it already holds, passed
in ``config.attributes["connection"]``; there is no ``alembic.ini`` and no offline mode. Batch
mode lets a revision alter columns on SQLite, which has no ``ALTER COLUMN``.
"""

from __future__ import annotations

from alembic import context

from fx_jupyter.server_ext.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "fx store migrations run on a connection given by fx_jupyter.server_ext.migrate "
        "(start the service, or call migrate.upgrade(engine))"
    )
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
