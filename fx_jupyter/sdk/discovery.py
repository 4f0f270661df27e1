"""Finding the fx service a ``Client()`` without arguments should talk to.

The service lives inside a Jupyter server, so a notebook kernel can almost always find it without
being told: the kernel's environment or the Jupyter runtime files say where its server is and
which token it accepts. The order, first match wins:

1. ``service_url`` passed to ``Client`` (token: the argument, ``FX_TOKEN``, the hub token, or the
   token of the local Jupyter server whose URL it starts with);
2. ``FX_SERVICE_URL`` (+ ``FX_TOKEN``), which a JupyterHub admin sets when one standalone
   ``fx-service`` serves the whole hub;
3. inside a JupyterHub single-user server (``JUPYTERHUB_API_TOKEN`` and
   ``JUPYTERHUB_SERVICE_PREFIX``/``JUPYTERHUB_API_URL``): the user's own server, directly at
   ``JUPYTERHUB_SERVICE_URL`` or through the proxy at ``{public url}{prefix}``, with the hub token;
4. the Jupyter runtime files (``jpserver-*.json``): the server that is an ancestor of this
   process (the kernel's own server) first, then the others, newest first.

Explicit settings (1, 2) are used as given; discovered candidates (3, 4) are probed with
``GET version`` and the first that answers wins. When nothing does, :class:`ServiceNotFound` lists
every candidate and why it was rejected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import requests

from .errors import ServiceNotFound

#: Where the fx REST API lives below a Jupyter server's base URL.
SERVICE_PATH = "fx/api/v2/"

#: Seconds a discovery probe waits for a candidate server to answer.
PROBE_TIMEOUT = 2.0

_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]", "*"}

HINT = (
    "Run this in a notebook of a Jupyter server that has fx-jupyter installed (the server "
    "extension is enabled on install), or tell the SDK where the service is: "
    "Client(service_url=..., token=...) or the FX_SERVICE_URL and FX_TOKEN environment variables."
)


@dataclass(frozen=True)
class ServiceLocation:
    """Where the service is (``url`` ends with ``/``), the token it takes, and how we know."""

    url: str
    token: str
    source: str


def with_slash(url: str) -> str:
    """``url`` ending with exactly one ``/`` (base URLs are joined with relative paths)."""
    return url.rstrip("/") + "/"


def service_url_of(server_url: str) -> str:
    """The fx API URL of the Jupyter server at ``server_url`` (which includes its base_url)."""
    return with_slash(server_url) + SERVICE_PATH


def locate_service(
    service_url: str | None = None,
    token: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    runtime_dir: str | os.PathLike[str] | None = None,
) -> ServiceLocation:
    """Find the service (see the module docstring for the order) or raise ServiceNotFound."""
    env = os.environ if environ is None else environ
    hub_token = env.get("JUPYTERHUB_API_TOKEN", "")
    if service_url:
        url = with_slash(service_url)
        if token is None:
            token = env.get("FX_TOKEN") or hub_token or _runtime_token_for(url, runtime_dir)
        return ServiceLocation(url, token, "service_url argument")
    if env.get("FX_SERVICE_URL"):
        url = with_slash(env["FX_SERVICE_URL"])
        if token is None:
            token = env.get("FX_TOKEN") or hub_token or _runtime_token_for(url, runtime_dir)
        return ServiceLocation(url, token, "FX_SERVICE_URL")

    tried = ["FX_SERVICE_URL: not set"]
    if hub_token and (env.get("JUPYTERHUB_SERVICE_PREFIX") or env.get("JUPYTERHUB_API_URL")):
        candidates = _hub_candidates(env)
        if not candidates:
            tried.append(
                "JupyterHub: none of JUPYTERHUB_SERVICE_URL, JUPYTERHUB_PUBLIC_URL, "
                "JUPYTERHUB_HOST says where this user's server is"
            )
        for url, source in candidates:
            problem = probe(url, token or hub_token)
            if problem is None:
                return ServiceLocation(url, token or hub_token, source)
            tried.append(f"{source} {url}: {problem}")
    else:
        tried.append("JupyterHub: not in a JupyterHub single-user server (no JUPYTERHUB_API_TOKEN)")

    found = _search_runtime_files(runtime_dir, token, tried)
    if found is not None:
        return found
    raise ServiceNotFound(tried, HINT)


def _hub_candidates(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """URLs of the user's own single-user server: direct (no proxy hop) first, then public."""
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    candidates: list[tuple[str, str]] = []
    if env.get("JUPYTERHUB_SERVICE_URL"):
        parts = urlsplit(env["JUPYTERHUB_SERVICE_URL"])
        host = parts.hostname or ""
        if host in _WILDCARD_HOSTS:
            # The server binds all interfaces; this process runs beside it, so loopback works.
            netloc = "127.0.0.1" + (f":{parts.port}" if parts.port else "")
            parts = parts._replace(netloc=netloc)
        candidates.append((service_url_of(urlunsplit(parts)), "JUPYTERHUB_SERVICE_URL"))
    if env.get("JUPYTERHUB_PUBLIC_URL"):
        candidates.append((service_url_of(env["JUPYTERHUB_PUBLIC_URL"]), "JUPYTERHUB_PUBLIC_URL"))
    elif env.get("JUPYTERHUB_HOST"):
        public = env["JUPYTERHUB_HOST"].rstrip("/") + "/" + prefix.lstrip("/")
        candidates.append((service_url_of(public), "JUPYTERHUB_HOST + JUPYTERHUB_SERVICE_PREFIX"))
    return candidates


def probe(url: str, token: str | None) -> str | None:
    """``None`` when an fx service answers ``GET version`` at ``url``; else why not, in words."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.get(url + "version", headers=headers, timeout=PROBE_TIMEOUT)
    except requests.Timeout:
        return f"no answer within {PROBE_TIMEOUT:g}s"
    except requests.RequestException as e:
        return f"cannot connect ({type(e).__name__})"
    if response.status_code == 404:
        return "the Jupyter server answers but has no fx service (404: extension not enabled?)"
    if response.status_code in (401, 403):
        return f"the token was refused ({response.status_code})"
    if response.status_code != 200:
        return f"answered {response.status_code} {response.reason}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "api" not in body:
        return "answered 200 but not with an fx version document"
    return None


@dataclass(frozen=True)
class RuntimeServer:
    """One ``jpserver-*.json`` file: a Jupyter server running (or once running) on this host."""

    path: Path
    url: str
    token: str
    pid: int
    sock: str
    mtime: float


def read_runtime_servers(runtime_dir: str | os.PathLike[str] | None) -> list[RuntimeServer]:
    """Every readable server file in the runtime dir (unreadable ones are skipped)."""
    servers = []
    for path in _runtime_files(runtime_dir):
        try:
            info: Any = json.loads(path.read_text())
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict) or not isinstance(info.get("url"), str):
            continue
        servers.append(
            RuntimeServer(
                path=path,
                url=with_slash(info["url"]),
                token=str(info.get("token") or ""),
                pid=int(info.get("pid") or 0),
                sock=str(info.get("sock") or ""),
                mtime=mtime,
            )
        )
    return servers


def _runtime_files(runtime_dir: str | os.PathLike[str] | None) -> list[Path]:
    directory = Path(runtime_dir) if runtime_dir is not None else _default_runtime_dir()
    try:
        return sorted(directory.glob("jpserver-*.json"))
    except OSError:
        return []


def _default_runtime_dir() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir())


def _ancestor_pids() -> set[int]:
    """This process and its ancestors: a kernel's Jupyter server is one of its parents."""
    me = psutil.Process()
    try:
        return {me.pid, *(p.pid for p in me.parents())}
    except psutil.Error:
        return {me.pid}


def _search_runtime_files(
    runtime_dir: str | os.PathLike[str] | None, token: str | None, tried: list[str]
) -> ServiceLocation | None:
    directory = Path(runtime_dir) if runtime_dir is not None else _default_runtime_dir()
    servers = read_runtime_servers(directory)
    if not servers:
        tried.append(f"Jupyter runtime files: no jpserver-*.json in {directory}")
        return None
    ancestors = _ancestor_pids()
    # Our own server first (a kernel's parent), then the newest: the one just started is the
    # one the user most likely means.
    servers.sort(key=lambda s: (s.pid not in ancestors, -s.mtime))
    for server in servers:
        label = f"{server.path.name} ({server.url}, pid {server.pid})"
        if server.sock:
            tried.append(f"{label}: serves on a Unix socket, which the SDK cannot reach")
            continue
        if server.pid and not psutil.pid_exists(server.pid):
            tried.append(f"{label}: stale file, the process is gone")
            continue
        url = service_url_of(server.url)
        use_token = token if token is not None else server.token
        problem = probe(url, use_token)
        if problem is None:
            return ServiceLocation(url, use_token, server.path.name)
        tried.append(f"{label}: {problem}")
    return None


def _runtime_token_for(url: str, runtime_dir: str | os.PathLike[str] | None) -> str:
    """The token of the local Jupyter server serving ``url``, or "" when none matches."""
    for server in read_runtime_servers(runtime_dir):
        if _serves(server.url, url):
            return server.token
    return ""


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _serves(server_url: str, url: str) -> bool:
    """Whether ``url`` is below ``server_url``, taking localhost and 127.0.0.1 as one host."""
    a, b = urlsplit(server_url), urlsplit(url)
    same_host = a.hostname == b.hostname or {a.hostname, b.hostname} <= _LOOPBACK
    return (
        same_host
        and a.scheme == b.scheme
        and a.port == b.port
        and with_slash(b.path).startswith(with_slash(a.path))
    )
