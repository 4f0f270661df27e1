"""Fixtures of the SDK tests: a clean environment, and a small HTTP peer for the cases the real
service cannot produce (an incompatible or missing service, a foreign server)."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from fx_endpoint.version import PROTOCOL_VERSION, __version__

COMPATIBLE_VERSION = {
    "api": "v2",
    "fx_version": __version__,
    "protocol": PROTOCOL_VERSION,
    "min_sdk_version": __version__,
}


def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
def connect() -> Iterator[Callable[..., Any]]:
    """``connect(service_url, token)``: a ``Client`` that is closed at teardown, even when the
    test fails half-way."""
    from fx_jupyter import Client

    clients: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        client = Client(*args, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """No FX_* or JUPYTERHUB_* variables, and an empty Jupyter runtime dir of our own."""
    import os

    for name in list(os.environ):
        if name.startswith(("FX_", "JUPYTERHUB_")):
            monkeypatch.delenv(name)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    return runtime


@dataclass
class Peer:
    """An HTTP server on a free loopback port answering canned JSON per (method, path)."""

    port: int = 0
    #: (method, path) -> handler -> (status, body), or an awaitable of that.
    routes: dict[tuple[str, str], Callable[[tornado.web.RequestHandler], Any]] = field(
        default_factory=dict
    )
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    #: Messages pushed to each client of ``/fx/api/v2/events`` when it connects.
    ws_messages: list[str | bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def answer(self, method: str, path: str, status: int, body: Any) -> None:
        """Answer ``method path`` with ``status`` and ``body`` (JSON unless it is a str)."""
        self.routes[(method, path)] = lambda _handler: (status, body)

    def version(self, path: str = "/fx/api/v2/", doc: dict[str, Any] | None = None) -> None:
        """Serve an fx version document at ``{path}version``."""
        self.answer("GET", path + "version", 200, COMPATIBLE_VERSION if doc is None else doc)

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.requests if (m, p) == (method, path))


class _Handler(tornado.web.RequestHandler):
    def initialize(self, peer: Peer) -> None:
        self.peer = peer

    async def _serve(self) -> None:
        req = self.request
        headers = dict(req.headers)
        # Which TCP connection carried the request (keep-alive tests compare them).
        headers["X-Peer-Port"] = str(req.connection.stream.socket.getpeername()[1])  # type: ignore[union-attr]
        self.peer.requests.append((req.method or "", req.path, headers))
        route = self.peer.routes.get((req.method or "", req.path))
        if route is None:
            self.set_status(404)
            self.finish({"message": "Not Found"})
            return
        answer = route(self)
        # A route may be a coroutine (a slow answer that must not stall the peer's loop).
        status, body = await answer if inspect.isawaitable(answer) else answer
        self.set_status(status)
        if isinstance(body, str):
            self.set_header("Content-Type", "text/plain")
            self.finish(body)
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(body))

    get = post = delete = _serve  # type: ignore[assignment]


class _Events(tornado.websocket.WebSocketHandler):
    def initialize(self, peer: Peer) -> None:
        self.peer = peer

    def open(self) -> None:  # type: ignore[override]
        self.peer.requests.append(("WS", self.request.path, dict(self.request.headers)))
        for message in self.peer.ws_messages:
            self.write_message(message, binary=isinstance(message, bytes))


@pytest.fixture
def peer_factory() -> Iterator[Callable[[], Peer]]:
    """Start any number of peers, each on its own thread and loop; all stop at teardown."""
    stops: list[Callable[[], None]] = []

    def start() -> Peer:
        peer = Peer()
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        peer.port = sockets[0].getsockname()[1]
        ready = threading.Event()
        holder: dict[str, Any] = {}

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            app = tornado.web.Application(
                [
                    (r"/fx/api/v2/events", _Events, {"peer": peer}),
                    (r"/.*", _Handler, {"peer": peer}),
                ]
            )
            server = tornado.httpserver.HTTPServer(app)
            server.add_sockets(sockets)
            holder.update(loop=loop, server=server)
            ready.set()
            loop.run_forever()
            server.stop()
            loop.run_until_complete(server.close_all_connections())
            loop.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        ready.wait(10)

        def stop() -> None:
            holder["loop"].call_soon_threadsafe(holder["loop"].stop)
            thread.join(10)

        stops.append(stop)
        return peer

    yield start
    for stop in stops:
        stop()


@pytest.fixture
def peer(peer_factory: Callable[[], Peer]) -> Peer:
    """One peer that answers ``GET /fx/api/v2/version`` like a compatible service."""
    p = peer_factory()
    p.version()
    return p


# --- the real service -------------------------------------------------------------------------


@pytest.fixture(scope="package")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Jupyter server with the fx service and no running endpoint, shared by the SDK tests
    that need the service but no worker (tasks stay queued)."""
    from fx_jupyter.testing import start_stack

    stack = start_stack(tmp_path_factory.mktemp("sdk_service"), endpoint=None)
    yield stack
    stack.teardown()


@pytest.fixture(scope="package")
def offline_endpoint(service: Any) -> dict[str, str]:
    """An endpoint registered with the service that never connects: its tasks stay waiting."""
    import zmq

    public, _secret = zmq.curve_keypair()
    status, body = service.request(
        "POST", "endpoints", {"name": "offline", "public_key": public.decode()}
    )
    assert status == 200, body
    return {"id": body["endpoint_id"], "name": "offline"}


@pytest.fixture
def client(service: Any) -> Iterator[Any]:
    """A Client of the shared service, closed after the test."""
    c = service.client()
    yield c
    c.close()


@pytest.fixture
def executor(client: Any, offline_endpoint: dict[str, str]) -> Iterator[Any]:
    """An Executor on the offline endpoint: its futures stay pending until cancelled."""
    from fx_jupyter import Executor

    ex = Executor(offline_endpoint["id"], client)
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)
