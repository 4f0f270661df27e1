"""The endpoint's registration with the service: the HTTP calls the CLI makes, the token it uses,
and ``endpoint.json``, the record of what registration returned.

Registration makes the endpoint known to the service: the endpoint sends its name and the public
half of its own CurveZMQ keypair, and gets back its id and the broker's address and public key.
Only the CLI talks HTTP; the daemon only uses ``endpoint.json``. Tokens are never stored: they
come from ``FX_TOKEN`` or, on the Jupyter server's own machine, from its runtime files.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import zmq

from . import protocol
from .paths import write_private

#: Path of the fx REST API under a Jupyter server's URL.
API_PATH = "fx/api/v2/"
HTTP_TIMEOUT = 10.0
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


class ServiceError(RuntimeError):
    """A call to the service failed; the message says what to do."""


class ServiceUnreachable(ServiceError):
    """Nothing answered at the service URL."""


@dataclass
class EndpointInfo:
    """What ``endpoint.json`` holds: identity, broker address, and the endpoint's Curve keys."""

    name: str
    service_url: str
    public_key: str
    secret_key: str
    endpoint_id: str | None = None
    broker_url: str | None = None
    server_key: str | None = None

    @classmethod
    def new(cls, name: str, service_url: str) -> EndpointInfo:
        """An unregistered endpoint with a fresh Curve keypair."""
        public, secret = zmq.curve_keypair()
        return cls(name, service_url, public.decode(), secret.decode())

    @property
    def registered(self) -> bool:
        return bool(self.endpoint_id and self.broker_url and self.server_key)

    @classmethod
    def load(cls, path: Path) -> EndpointInfo:
        """Read ``endpoint.json``; ValueError says what is wrong with it."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path} does not exist; run `fx-endpoint configure`") from None
        except (OSError, ValueError) as e:
            raise ValueError(
                f"{path} is not readable JSON ({e}); run `fx-endpoint configure` again"
            ) from None
        fields = set(cls.__dataclass_fields__)
        required = {"name", "service_url", "public_key", "secret_key"}
        if not isinstance(data, dict) or not required <= data.keys():
            raise ValueError(f"{path} is incomplete; run `fx-endpoint configure` again")
        return cls(**{k: v for k, v in data.items() if k in fields})

    def save(self, path: Path) -> None:
        """Write ``endpoint.json`` readable by its owner only (it holds a secret key)."""
        write_private(path, json.dumps(asdict(self), indent=2) + "\n")


# --- finding a token ------------------------------------------------------------------------


def jupyter_runtime_dir() -> Path:
    """Where running Jupyter servers describe themselves (``jpserver-*.json``).

    Uses jupyter_core when it is installed (the machine of a Jupyter server always has it); a
    cluster node without it gets Jupyter's default location. Imported lazily so that importing
    ``fx_endpoint`` never imports Jupyter.
    """
    try:
        from jupyter_core.paths import jupyter_runtime_dir as runtime_dir
    except ImportError:
        if os.environ.get("JUPYTER_RUNTIME_DIR"):
            return Path(os.environ["JUPYTER_RUNTIME_DIR"])
        if os.environ.get("JUPYTER_DATA_DIR"):
            return Path(os.environ["JUPYTER_DATA_DIR"]) / "runtime"
        if sys.platform == "darwin":
            return Path.home() / "Library" / "Jupyter" / "runtime"
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(data) / "jupyter" / "runtime"
    return Path(runtime_dir())


def running_servers() -> list[dict[str, Any]]:
    """The Jupyter servers of this user on this machine that are alive, newest first."""
    servers = []
    for name in glob.glob(str(jupyter_runtime_dir() / "jpserver-*.json")):
        try:
            info = json.loads(Path(name).read_text())
            pid = int(info["pid"])
            os.kill(pid, 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(info.get("url"), str) and info.get("token") is not None:
            info["_mtime"] = os.path.getmtime(name)
            servers.append(info)
    return sorted(servers, key=lambda s: s["_mtime"], reverse=True)


def _same_server(server_url: str, service_url: str) -> bool:
    a, b = urlsplit(server_url), urlsplit(service_url)
    if a.scheme != b.scheme or a.port != b.port:
        return False
    same_host = a.hostname == b.hostname or {a.hostname, b.hostname} <= _LOOPBACK
    return same_host and b.path.startswith(a.path or "/")


def find_token(service_url: str) -> str | None:
    """``FX_TOKEN``, else the token of a local Jupyter server serving ``service_url``."""
    token = os.environ.get("FX_TOKEN")
    if token:
        return token
    for server in running_servers():
        if _same_server(server["url"], service_url) and server["token"]:
            return str(server["token"])
    return None


def discover_service_url() -> str | None:
    """The fx API URL of the one Jupyter server running here, or None if not exactly one."""
    servers = running_servers()
    urls = {s["url"] for s in servers}
    if len(urls) != 1:
        return None
    base = urls.pop()
    return (base if base.endswith("/") else base + "/") + API_PATH


# --- HTTP -----------------------------------------------------------------------------------


class ServiceClient:
    """The few REST calls an endpoint's CLI makes (``docs/architecture.md``, REST API)."""

    def __init__(self, service_url: str, token: str | None) -> None:
        self.service_url = service_url
        self.token = token

    def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        url = self.service_url + route
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise ServiceError(self._explain(e, method, url)) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ServiceUnreachable(
                f"cannot reach the fx service at {self.service_url}: {reason}"
            ) from None
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise ServiceError(
                f"{method} {url} answered something that is not JSON; is "
                f"{self.service_url} the fx API URL (ending in {API_PATH})?"
            ) from None

    def _explain(self, error: urllib.error.HTTPError, method: str, url: str) -> str:
        try:
            detail = json.loads(error.read()).get("message", "")
        except (ValueError, AttributeError, OSError):
            detail = ""
        if error.code in (401, 403):
            hint = (
                "the service refused the token; set FX_TOKEN to a valid token of the Jupyter server"
            )
        elif error.code == 404 and not detail:
            hint = (
                f"no fx service there; is {self.service_url} the fx API URL and the "
                "fx_jupyter server extension enabled?"
            )
        else:
            hint = detail or error.reason
        return f"{method} {url} failed (HTTP {error.code}): {hint}"

    def check_version(self) -> dict[str, Any]:
        """The service's versions; :class:`ServiceError` naming both if they do not match."""
        info = self._call("GET", "version")
        try:
            protocol.check_compatible(
                info.get("protocol"), info.get("fx_version"), "the fx service", "this endpoint"
            )
        except protocol.ProtocolError as e:
            raise ServiceError(str(e)) from None
        return info

    def register(self, info: EndpointInfo) -> None:
        """Register (or re-register: same name, same id) and store the broker's address."""
        if not self.token:
            raise ServiceError(
                f"no token for {self.service_url}: set FX_TOKEN (the Jupyter server's token), "
                "or run this on the machine of that Jupyter server"
            )
        self.check_version()
        answer = self._call("POST", "endpoints", {"name": info.name, "public_key": info.public_key})
        try:
            broker = answer["broker"]
            info.endpoint_id = str(answer["endpoint_id"])
            info.broker_url = str(broker["url"])
            info.server_key = str(broker["server_key"])
        except (KeyError, TypeError):
            raise ServiceError(
                f"the service answered the registration without an endpoint id "
                f"and broker address: {answer!r}"
            ) from None
        info.service_url = self.service_url

    def delete(self, endpoint_id: str) -> None:
        """Delete the endpoint on the service (its queued tasks end cancelled)."""
        self._call("DELETE", f"endpoints/{endpoint_id}")
