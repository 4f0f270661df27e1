"""What the ``fx-endpoint`` commands do, apart from parsing arguments and printing.

Each function either returns what to tell the user or raises :class:`ControlError` with a message
that says what went wrong and what to do. Starting is the delicate part: the daemon is spawned
detached, and this process waits on a readiness pipe until the daemon is connected and welcomed
by the service ("ready <pid>") or gives up ("error: <reason>"), so a start that fails, fails in
the foreground with its reason.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from .config import (
    ConfigError,
    EndpointConfig,
    load_config,
    normalize_service_url,
    parse_config,
    render_template,
)
from .paths import EndpointDir, EndpointState, list_endpoints
from .registration import (
    EndpointInfo,
    ServiceClient,
    ServiceError,
    ServiceUnreachable,
    discover_service_url,
    find_token,
)

DEFAULT_START_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 15.0
#: How much longer than the daemon's own startup timeout ``start`` waits for its word.
_READY_MARGIN = 10.0


class ControlError(RuntimeError):
    """A command failed; the message is for the user."""


@dataclass
class Report:
    """Lines to print, and the pid of a daemon the command started (if it did)."""

    lines: list[str] = field(default_factory=list)
    pid: int | None = None

    def say(self, line: str) -> None:
        self.lines.append(line)


def _existing(name: str) -> EndpointDir:
    try:
        ep = EndpointDir.named(name)
    except ValueError as e:
        raise ControlError(str(e)) from None
    if not ep.exists():
        raise ControlError(
            f"there is no endpoint named {name!r}; create it with `fx-endpoint configure {name}`"
        )
    return ep


def _load_config(ep: EndpointDir) -> EndpointConfig:
    try:
        return load_config(ep.config_file)
    except ConfigError as e:
        raise ControlError(str(e)) from None


def _load_info(ep: EndpointDir, config: EndpointConfig) -> EndpointInfo:
    """endpoint.json, or a fresh unregistered identity when it is missing or unreadable."""
    try:
        return EndpointInfo.load(ep.endpoint_file)
    except ValueError:
        return EndpointInfo.new(ep.name, config.service_url)


# --- configure ------------------------------------------------------------------------------

_SERVICE_URL_LINE = re.compile(r"^service_url:.*$", re.MULTILINE)


def configure(name: str, service_url: str | None, max_workers: int | None = None) -> Report:
    """Create (or update) an endpoint's config and register it with the service."""
    try:
        ep = EndpointDir.named(name)
    except ValueError as e:
        raise ControlError(str(e)) from None
    report = Report()
    pid = ep.running_pid()
    if pid is not None:
        raise ControlError(
            f"endpoint {name} is running (pid {pid}); stop it first with `fx-endpoint stop {name}`"
        )
    if service_url is not None:
        try:
            service_url = normalize_service_url(service_url)
        except ValueError as e:
            raise ControlError(f"--service-url: {e}") from None
    if ep.config_file.exists():
        text = ep.config_file.read_text()
        if service_url is not None:
            text = _SERVICE_URL_LINE.sub(f"service_url: {service_url}", text, count=1)
        try:
            service_url = parse_config(text, ep.config_file).service_url
        except ConfigError as e:
            raise ControlError(str(e)) from None
        created = False
    else:
        service_url = service_url or discover_service_url()
        if service_url is None:
            raise ControlError(
                "which fx service should this endpoint serve? Pass --service-url "
                "(e.g. http://127.0.0.1:8888/fx/api/v2/) or set FX_SERVICE_URL"
            )
        text = render_template(name, service_url, max_workers)
        created = True
    ep.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    ep.config_file.write_text(text)
    report.say(
        f"{'Wrote' if created else 'Kept'} {ep.config_file}"
        + ("" if created else f" (service_url: {service_url})")
    )

    info = EndpointInfo.new(name, service_url)
    try:
        old: EndpointInfo | None = EndpointInfo.load(ep.endpoint_file)
    except ValueError:
        old = None
    keep_old = old is not None and old.service_url == service_url
    token = find_token(service_url)
    try:
        if token is None:
            raise ServiceUnreachable(
                f"no token for {service_url} (set FX_TOKEN to the Jupyter server's token, or "
                "run this on that server's machine)"
            )
        ServiceClient(service_url, token).register(info)
    except ServiceUnreachable as e:
        if keep_old and old is not None and old.registered:
            report.say(f"Kept the existing registration (id {old.endpoint_id}): {e}.")
            return report
        if not keep_old:
            info.save(ep.endpoint_file)
        report.say(
            f"Not registered yet: {e}. `fx-endpoint start {name}` registers it once "
            "the service can be reached with a token."
        )
        return report
    except ServiceError as e:
        if not keep_old:
            info.save(ep.endpoint_file)
        raise ControlError(
            f"{e}\nThe config is written; run `fx-endpoint configure {name}` "
            "again once this is fixed."
        ) from None
    info.save(ep.endpoint_file)
    report.say(f"Registered endpoint {name} with {service_url}: id {info.endpoint_id}")
    report.say(f"Start it with `fx-endpoint start {name}`.")
    return report


# --- start / stop ---------------------------------------------------------------------------


def start(name: str, timeout: float = DEFAULT_START_TIMEOUT) -> Report:
    """Start the daemon in the background; return once it is connected, or raise why not."""
    ep = _existing(name)
    report = Report()
    state = ep.state()
    if state is EndpointState.RUNNING:
        raise ControlError(f"endpoint {name} is already running with pid {ep.running_pid()}")
    if state is EndpointState.DISCONNECTED:
        ep.clean_stale()
        report.say(f"Cleaned up after the previous daemon of {name}, which did not stop cleanly.")
    config = _load_config(ep)
    info = _load_info(ep, config)
    token = find_token(config.service_url)
    if token:
        try:
            ServiceClient(config.service_url, token).register(info)
            info.save(ep.endpoint_file)
        except ServiceUnreachable as e:
            if not info.registered:
                raise ControlError(str(e)) from None
            report.say(f"Warning: {e}; using the broker address of the last registration.")
        except ServiceError as e:
            raise ControlError(str(e)) from None
    elif not info.registered:
        raise ControlError(
            f"endpoint {name} is not registered with {config.service_url} and no token is "
            f"available to register it: set FX_TOKEN to the Jupyter server's token (or run "
            f"this on that server's machine) and run `fx-endpoint configure {name}`"
        )
    report.pid = _spawn(ep, timeout)
    report.say(f"Endpoint {name} is running (pid {report.pid}), id {info.endpoint_id}.")
    return report


def _spawn(ep: EndpointDir, timeout: float) -> int:
    """Run the daemon detached and wait for its word on the readiness pipe."""
    read_end, write_end = os.pipe()
    command = [
        sys.executable,
        "-m",
        "fx_endpoint.daemon",
        str(ep.path),
        "--detach",
        "--ready-fd",
        str(write_end),
        "--startup-timeout",
        str(timeout),
    ]
    try:
        with open(ep.stderr_file, "wb") as stderr:
            launcher = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                pass_fds=(write_end,),
                start_new_session=True,
                cwd=ep.path,
            )
        os.close(write_end)
        write_end = -1
        launcher.wait()  # it forks the daemon and exits at once
        line = _read_line(read_end, timeout + _READY_MARGIN)
        if line is not None and line.startswith("error"):
            _read_to_end(read_end, DEFAULT_STOP_TIMEOUT)  # until the failed daemon is gone
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if line is not None and line.startswith("ready"):
        return int(line.split()[1])
    if line is not None and line.startswith("error: "):
        raise ControlError(line[len("error: ") :].replace("\\n", "\n"))
    pid = ep.read_pid()
    if line is None and pid is not None and ep.running_pid() == pid:
        _terminate(pid, DEFAULT_STOP_TIMEOUT)
        ep.clean_stale()
        raise ControlError(
            f"endpoint {ep.name} did not get ready within {timeout:g} s and was "
            f"stopped; see {ep.log_file}"
        )
    raise ControlError(
        f"the endpoint daemon exited while starting; see {ep.log_file} and "
        f"{ep.stderr_file}:\n{_tail(ep.stderr_file)}"
    )


def _read_line(fd: int, timeout: float) -> str | None:
    """The first line written to ``fd`` ('' at end of file), or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").split("\n", 1)[0]


def _read_to_end(fd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], remaining)[0] and not os.read(fd, 4096):
            return


def _tail(path: Any, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "  (nothing)"
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:]) or "  (nothing)"


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to ``timeout``, then SIGKILL the daemon's process group.

    Return whether it stopped by itself.
    """
    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout)
        return True
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        pass
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except ProcessLookupError:
        return True
    try:
        process.wait(5)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        pass
    return False


def stop(name: str, timeout: float = DEFAULT_STOP_TIMEOUT) -> Report:
    """Stop the daemon (SIGTERM, then SIGKILL after ``timeout``)."""
    ep = _existing(name)
    report = Report()
    pid = ep.running_pid()
    if pid is None:
        if ep.state() is EndpointState.DISCONNECTED:
            ep.clean_stale()
            ep.stopped_marker.touch()
            report.say(
                f"Endpoint {name} was not running; cleaned up after its daemon, which "
                "had not stopped cleanly."
            )
        else:
            report.say(f"Endpoint {name} is not running.")
        return report
    if _terminate(pid, timeout):
        report.say(f"Stopped endpoint {name} (pid {pid}).")
    else:
        report.say(f"Endpoint {name} (pid {pid}) did not stop within {timeout:g} s and was killed.")
    if ep.pid_file.exists():
        ep.clean_stale()
        ep.stopped_marker.touch()
    return report


def restart(name: str, timeout: float = DEFAULT_START_TIMEOUT) -> Report:
    """Stop (if running), then start."""
    report = stop(name)
    started = start(name, timeout)
    report.lines += started.lines
    report.pid = started.pid
    return report


# --- delete / status / list -----------------------------------------------------------------


def delete(name: str) -> Report:
    """Stop the endpoint, delete it on the service when reachable, remove its directory."""
    ep = _existing(name)
    report = Report()
    if ep.running_pid() is not None:
        report.lines += stop(name).lines
    try:
        config_url: str | None = load_config(ep.config_file).service_url
    except ConfigError:
        config_url = None
    try:
        info: EndpointInfo | None = EndpointInfo.load(ep.endpoint_file)
    except ValueError:
        info = None
    if info is not None and info.endpoint_id:
        service_url = info.service_url or config_url or ""
        token = find_token(service_url)
        if token is None:
            report.say(
                f"Warning: no token for {service_url}, so the service still lists "
                f"endpoint {info.endpoint_id}; set FX_TOKEN to delete it there too."
            )
        else:
            try:
                ServiceClient(service_url, token).delete(info.endpoint_id)
                report.say(f"Deleted endpoint {info.endpoint_id} on {service_url}.")
            except ServiceError as e:
                if "HTTP 404" not in str(e):
                    report.say(f"Warning: could not delete it on the service: {e}")
    socket_path = ep.worker_socket()
    shutil.rmtree(ep.path)
    socket_path.unlink(missing_ok=True)
    report.say(f"Removed {ep.path}.")
    return report


def status(name: str) -> dict[str, Any]:
    """State, identity, and (while running) the daemon's last status snapshot."""
    ep = _existing(name)
    state = ep.state()
    try:
        info: EndpointInfo | None = EndpointInfo.load(ep.endpoint_file)
    except ValueError:
        info = None
    result: dict[str, Any] = {
        "name": name,
        "state": state.value,
        "endpoint_id": info.endpoint_id if info else None,
        "service_url": info.service_url if info else None,
        "pid": ep.running_pid(),
        "directory": str(ep.path),
    }
    if state is EndpointState.RUNNING:
        result["daemon"] = ep.read_status()
    return result


def listing() -> list[dict[str, Any]]:
    """Name, state and id of every endpoint."""
    rows = []
    for ep in list_endpoints():
        try:
            endpoint_id = EndpointInfo.load(ep.endpoint_file).endpoint_id
        except ValueError:
            endpoint_id = None
        rows.append({"name": ep.name, "state": ep.state().value, "endpoint_id": endpoint_id})
    return rows
