"""A private PostgreSQL server for tests: its own data directory, socket directory and free port.

PostgreSQL refuses to run as root, so when the tests run as root (CI, these machines) the server
runs as the ``postgres`` system user created by Debian's package. Failures raise
:class:`PostgresUnavailable` with the reason (tests fail with it, never skip).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be started here; the message says why."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise PostgresUnavailable("initdb not found: install Debian's postgresql package")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """One server, one database ``fx`` owned by user ``fx`` (trust auth on loopback only).

    Its directory is a fresh one directly under the system temp dir (pytest's are private to
    root, which the ``postgres`` user cannot enter), removed by :meth:`stop`.
    """

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fx-pg-")))
    port: int = 0

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://fx@127.0.0.1:{self.port}/fx"

    def new_database(self) -> str:
        """A fresh, empty database on this server; its URL in the plain ``postgresql://`` form
        users write in ``FX_DB_URL``."""
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=fx dbname=fx", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://fx@127.0.0.1:{self.port}/{name}"

    def _as_owner(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def start(self) -> PostgresServer:
        bindir = _bindir()
        self.port = _free_port()
        data = self.root / "data"
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        init = self._as_owner(str(bindir / "initdb"), "-D", str(data), "-U", "fx", "--auth=trust", "-E", "UTF8")
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()}")
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        started = self._as_owner(
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "postgres.log"), "-o", opts, "-w", "start"
        )
        if started.returncode != 0:
            raise PostgresUnavailable(f"pg_ctl start failed: {started.stderr.strip()} {self.log()}")
        created = self._as_owner(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "fx", "fx")
        if created.returncode != 0:
            raise PostgresUnavailable(f"createdb failed: {created.stderr.strip()}")
        return self

    def log(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            self._as_owner(str(_bindir() / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        deadline = time.monotonic() + 10
        while (data / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)
