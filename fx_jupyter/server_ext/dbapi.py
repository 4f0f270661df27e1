"""SQLAlchemy-compiled statements run on the DBAPI cursor, for the store's hot paths.

``Connection.execute`` processes every parameter of every row in Python (type processors,
parameter dictionaries); for the 20,000 rows of a big submission, or the few rows of each of
thousands of results messages, that costs more than SQLite itself. Here the statement is still
SQLAlchemy's — built from the tables in :mod:`.schema` and compiled once per dialect, so the SQL
stays portable — but rows go to and come from the driver's cursor as tuples, inside the
connection's current transaction. Values must therefore already be in DBAPI form: str, int,
float, None, bytes or a buffer, and JSON as its text.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from .schema import tasks

Row = tuple[Any, ...]


def execute(
    conn: sa.Connection,
    stmt: sa.ClauseElement,
    names: tuple[str, ...],
    rows: Sequence[Row] | Row,
) -> list[Row]:
    """Run ``stmt`` on the connection's DBAPI cursor with ``rows`` (tuples of its bound
    parameters in ``names`` order): one row executes, a list of rows is an ``executemany``.
    Returns the fetched rows of a query (an empty list otherwise)."""
    sql, order = _compile(conn.dialect, stmt)
    many = isinstance(rows, list)
    batch = rows if many else [rows]
    if order is None:  # named paramstyle (psycopg)
        params: list[Any] = [dict(zip(names, row)) for row in batch]
    elif order == names:
        params = list(batch)
    else:
        index = [names.index(name) for name in order]
        params = [tuple(row[i] for i in index) for row in batch]
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(sql, params)
            return []
        cursor.execute(sql, params[0])
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        cursor.close()


def bulk_insert(
    conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: list[Row]
) -> None:
    """INSERT ``rows`` (tuples in ``columns`` order) with one ``executemany``."""
    execute(conn, _insert(table, columns), columns, rows)


def select_by_task_ids(
    conn: sa.Connection, base: sa.Select[Any], params: dict[str, Any], ids: Sequence[str]
) -> list[Row]:
    """Rows of ``base`` (a query on ``tasks`` with ``params`` bound) for the tasks in ``ids``
    (at most a few hundred per call).

    The IN list is padded to a power of two by repeating an id, so a handful of compiled
    statements serve every batch size.
    """
    size = 1 << max(0, len(ids) - 1).bit_length()
    padded = tuple(ids) + (ids[-1],) * (size - len(ids))
    stmt, id_names = _with_task_ids(base, size)
    return execute(conn, stmt, (*params, *id_names), (*params.values(), *padded))


@functools.lru_cache(maxsize=64)
def _compile(dialect: Dialect, stmt: sa.ClauseElement) -> tuple[str, tuple[str, ...] | None]:
    compiled = stmt.compile(dialect=dialect)
    order = tuple(getattr(compiled, "positiontup", None) or ()) if dialect.positional else None
    return str(compiled), order


@functools.lru_cache(maxsize=16)
def _insert(table: sa.Table, columns: tuple[str, ...]) -> sa.Insert:
    return table.insert().values({c: sa.bindparam(c) for c in columns})


@functools.lru_cache(maxsize=64)
def _with_task_ids(base: sa.Select[Any], size: int) -> tuple[sa.Select[Any], tuple[str, ...]]:
    names = tuple(f"id{i}" for i in range(size))
    return base.where(tasks.c.task_id.in_([sa.bindparam(n) for n in names])), names
