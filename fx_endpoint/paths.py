"""Where an endpoint keeps its files, and the state ``fx-endpoint list`` derives from them.

``$FX_HOME/endpoints/NAME/`` (``FX_HOME`` defaults to ``~/.fx``) holds ``config.yaml`` (edited
by the user), ``endpoint.json`` (id, broker address, Curve keys; mode 0600), ``daemon.pid``,
``endpoint.log`` (rotated), ``journal.db``, ``status.json`` (rewritten every heartbeat) and the
``stopped`` marker of a clean stop. The state is read from these files alone so that ``list``
works without talking to anything.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

DEFAULT_NAME = "default"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: Unix socket paths longer than this do not fit ``sockaddr_un`` on every platform (104 on
#: macOS, 108 on Linux, both counting the terminating NUL).
_MAX_IPC_PATH = 100
#: What a daemon's command line contains; used to tell our daemon from a recycled pid.
DAEMON_MODULE = "fx_endpoint.daemon"


class EndpointState(str, enum.Enum):
    """The four states of an endpoint as ``fx-endpoint list`` shows them."""

    INITIALIZED = "Initialized"
    RUNNING = "Running"
    STOPPED = "Stopped"
    DISCONNECTED = "Disconnected"


class InvalidName(ValueError):
    """An endpoint name that cannot be a directory name."""


def fx_home() -> Path:
    """``$FX_HOME`` or ``~/.fx``."""
    home = os.environ.get("FX_HOME")
    return Path(home).expanduser().absolute() if home else Path.home() / ".fx"


def endpoints_root() -> Path:
    """The directory holding one subdirectory per endpoint."""
    return fx_home() / "endpoints"


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid endpoint name, else raise :class:`InvalidName`."""
    if not _NAME_RE.match(name):
        raise InvalidName(
            f"invalid endpoint name {name!r}: use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class EndpointDir:
    """The files of one endpoint."""

    name: str
    path: Path

    @classmethod
    def named(cls, name: str) -> EndpointDir:
        """The directory of endpoint ``name`` under ``$FX_HOME`` (which need not exist yet)."""
        return cls(check_name(name), endpoints_root() / name)

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def endpoint_file(self) -> Path:
        return self.path / "endpoint.json"

    @property
    def pid_file(self) -> Path:
        return self.path / "daemon.pid"

    @property
    def log_file(self) -> Path:
        return self.path / "endpoint.log"

    @property
    def stderr_file(self) -> Path:
        """Output of the daemon and its workers outside of logging (crashes, C libraries)."""
        return self.path / "daemon.stderr"

    @property
    def journal_file(self) -> Path:
        return self.path / "journal.db"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def stopped_marker(self) -> Path:
        return self.path / "stopped"

    def exists(self) -> bool:
        """Whether the endpoint was configured (its config file exists)."""
        return self.config_file.is_file()

    def worker_socket(self) -> Path:
        """The Unix socket the daemon's workers connect to.

        It lives in the endpoint directory (private to the user) when the path is short enough
        for a Unix socket, else in a per-user 0700 directory under the temp dir, named after a
        hash of the endpoint directory so that a later ``start`` can find and remove it.
        """
        here = self.path / "workers.ipc"
        if len(str(here)) <= _MAX_IPC_PATH:
            return here
        digest = hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:16]
        return private_runtime_dir() / f"{digest}.ipc"

    # --- pid file ---------------------------------------------------------------------------

    def read_pid(self) -> int | None:
        """The pid in the pid file, or None when there is no (readable) pid file."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def running_pid(self) -> int | None:
        """The pid of this endpoint's live daemon, or None.

        A pid file whose process is gone, or whose pid now belongs to another program, does not
        count: pids are recycled.
        """
        pid = self.read_pid()
        if pid is None:
            return None
        return pid if is_daemon_process(pid, self.path) else None

    def state(self) -> EndpointState:
        """Initialized, Running, Stopped or Disconnected (docs/architecture.md)."""
        if self.pid_file.exists():
            if self.running_pid() is not None:
                return EndpointState.RUNNING
            return EndpointState.DISCONNECTED
        if self.stopped_marker.exists():
            return EndpointState.STOPPED
        return EndpointState.INITIALIZED

    def read_status(self) -> dict[str, Any] | None:
        """The daemon's last status snapshot, or None."""
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def clean_stale(self) -> list[Path]:
        """Remove what a daemon that died without stopping left behind; return what was removed.

        Only call this when no daemon of this endpoint runs.
        """
        removed = []
        for path in (self.pid_file, self.worker_socket(), self.status_file):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
        return removed


def is_daemon_process(pid: int, endpoint_path: Path) -> bool:
    """Whether ``pid`` is a live fx endpoint daemon serving ``endpoint_path``."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return DAEMON_MODULE in cmdline and str(endpoint_path) in cmdline


def list_endpoints() -> list[EndpointDir]:
    """Every configured endpoint, sorted by name."""
    root = endpoints_root()
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and _NAME_RE.match(child.name):
            ep = EndpointDir(child.name, child)
            if ep.exists():
                found.append(ep)
    return found


def private_runtime_dir() -> Path:
    """A per-user directory only its owner can enter, for sockets whose path must be short."""
    path = Path(tempfile.gettempdir()) / f"fx-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path} must be a directory owned by you with mode 0700")
    return path


def write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, readable by its owner only."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_atomic(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
