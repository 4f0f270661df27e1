"""Tables of the task store and the engines that open it.

SQLAlchemy Core with portable types only, so the same schema runs on SQLite (the embedded
default) and PostgreSQL (``FX_DB_URL=postgresql+psycopg://...``). Timestamps are Unix seconds in
double-precision columns; payloads are opaque blobs (DESIGN.md invariant 1).

These tables are the schema the code expects; ``migrations/`` (run by :mod:`.migrate` when the
service starts) is how a database gets there. A change here needs a new revision there, and
``tests/server_ext/test_migrations.py`` checks that the two agree on both backends.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Engine

metadata = sa.MetaData()


class JSONText(sa.TypeDecorator[Any]):
    """JSON kept as text: the same on every backend, and cheap to write in bulk — a batch of
    new tasks shares one serialized ``transitions`` value (see :mod:`.dbapi`)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


functions = sa.Table(
    "functions",
    metadata,
    sa.Column("function_id", sa.String(36), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("public", sa.Boolean, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("source", sa.Text),
    sa.Column("python_version", sa.String(64)),
    sa.Column("code_hash", sa.String(64), nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    sa.UniqueConstraint("owner", "code_hash", name="uq_functions_owner_code"),
)

endpoints = sa.Table(
    "endpoints",
    metadata,
    sa.Column("endpoint_id", sa.String(36), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("public_key", sa.String(40), nullable=False, unique=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("last_heartbeat", sa.Double),
    # {"display_name", "hello": {...last hello...}, "status": {...last heartbeat...}}
    sa.Column("info", JSONText, nullable=False),
    sa.UniqueConstraint("owner", "name", name="uq_endpoints_owner_name"),
)


def _partial_index(name: str, *columns: sa.Column[Any], present: sa.Column[Any]) -> sa.Index:
    """An index of only the rows where ``present`` is set (on both backends): rows without it
    cost their insert nothing."""
    where = present.isnot(None)
    return sa.Index(name, *columns, sqlite_where=where, postgresql_where=where)


tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("task_id", sa.String(36), primary_key=True),
    # Submission order, assigned by the single writer: "oldest first" without clock ties.
    sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("endpoint_id", sa.String(36), nullable=False),
    sa.Column("function_id", sa.String(36), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    # {state: unix time the task entered it}
    sa.Column("transitions", JSONText, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("walltime", sa.Double),
    sa.Column("completion_t", sa.Double),
    # sha256(function_id, payload) of tasks submitted with memoize=true, else NULL
    sa.Column("memo_key", sa.String(64)),
    # A large payload stored out of line (then ``payload`` is empty): its blobs.blob_id.
    sa.Column("payload_blob", sa.String(36)),
)
# Every index costs each of the 20,000 inserts of a big batch: only what the hot path needs.
# Listings walk the unique seq index backwards; memo lookups only see memoized tasks.
sa.Index("ix_tasks_endpoint_status_seq", tasks.c.endpoint_id, tasks.c.status, tasks.c.seq)
_partial_index("ix_tasks_owner_memo", tasks.c.owner, tasks.c.memo_key, present=tasks.c.memo_key)
# Partial: only tasks with an out-of-line payload pay for it (blob garbage collection).
_partial_index("ix_tasks_payload_blob", tasks.c.payload_blob, present=tasks.c.payload_blob)

results = sa.Table(
    "results",
    metadata,
    sa.Column("task_id", sa.String(36), primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("data", sa.LargeBinary),
    sa.Column("exception_text", sa.Text),
    sa.Column("stdout", sa.Text),
    sa.Column("stderr", sa.Text),
    sa.Column("created", sa.Double, nullable=False),
    # A large result stored out of line (then ``data`` is NULL): its blobs.blob_id.
    sa.Column("data_blob", sa.String(36)),
)
_partial_index("ix_results_data_blob", results.c.data_blob, present=results.c.data_blob)

# Payloads too large for a row: the bytes are a file of the service's blob directory
# (:mod:`.blobs`), named by ``blob_id``; a row here says whose it is. An uploaded argument has a
# row before any task refers to it; blobs no task or result refers to any more are collected.
blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("blob_id", sa.String(36), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
)

service_state = sa.Table(
    "service_state",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


BACKENDS = ("sqlite", "postgresql")
#: Driver used when a URL names none: the one fx installs (``pip install fx-jupyter[postgresql]``),
#: instead of SQLAlchemy's default psycopg2.
_DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


def store_url(url: str | sa.URL) -> sa.URL:
    """``url`` parsed, with ``postgresql://`` (and ``postgres://``) meaning psycopg 3.

    Raises ValueError naming the problem for a URL that is not one, or names another backend.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(
            f"{url!r} is not a database URL (e.g. sqlite:////path/to/fx.db or "
            "postgresql://user@host/db)"
        ) from None
    if parsed.drivername in _DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=_DEFAULT_DRIVERS[parsed.drivername])
    if parsed.get_backend_name() not in BACKENDS:
        raise ValueError(
            f"{parsed.get_backend_name()!r} is not a supported store backend "
            f"(supported: {', '.join(BACKENDS)})"
        )
    return parsed


def is_sqlite(url: str | sa.URL) -> bool:
    """Whether ``url`` names an SQLite database."""
    return sa.make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str | sa.URL, *, writer: bool, pool_size: int = 1) -> Engine:
    """An engine for the store.

    The writer and the readers get separate engines: on SQLite the writer's transactions start
    with ``BEGIN IMMEDIATE`` (it takes the write lock up front instead of failing to upgrade a read
    lock), readers' with a plain ``BEGIN``. SQLite connections are put in WAL mode with
    ``synchronous=NORMAL`` — a commit appends to the log without an fsync, and the database stays
    consistent across crashes of the process — and SQLAlchemy, not the sqlite3 driver, emits
    BEGIN so savepoints work inside the writer's group transactions.
    """
    url = store_url(url)
    kwargs: dict[str, Any] = {"pool_size": pool_size, "max_overflow": 0, "pool_pre_ping": False}
    if not is_sqlite(url):
        return sa.create_engine(url, **kwargs)
    kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = sa.create_engine(url, **kwargs)
    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # On the driver itself: through exec_driver_sql, SQLAlchemy's execution machinery cost
        # more than the BEGIN, for every transaction and every read.
        connection.connection.driver_connection.execute(begin)  # type: ignore[union-attr]

    return engine
