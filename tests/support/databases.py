"""Fresh store databases of both backends for the tests that run on each of them."""

from __future__ import annotations

from pathlib import Path

from .postgres import PostgresServer


class Databases:
    """Fresh store databases of either backend; PostgreSQL starts on first use, once."""

    def __init__(self) -> None:
        self._postgres: PostgresServer | None = None

    def new(self, backend: str, directory: Path) -> str:
        """The URL of a new, empty database: an SQLite file in ``directory``, or a database on
        the session's PostgreSQL server."""
        if backend == "sqlite":
            (directory / "store").mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{directory / 'store' / 'fx.db'}"
        if self._postgres is None:
            self._postgres = PostgresServer().start()
        return self._postgres.new_database()

    def stop(self) -> None:
        if self._postgres is not None:
            self._postgres.stop()
