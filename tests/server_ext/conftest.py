"""Fixtures of the service tests: a real Jupyter server (pytest-jupyter) with the fx extension,
its store a fresh database (each test runs on SQLite and on PostgreSQL: ``db_url`` in
tests/conftest.py), two users, and a JSON helper around ``jp_fetch``."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from jupyter_server.auth.identity import IdentityProvider, User
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from fx_endpoint import protocol
from fx_jupyter.server_ext.app import FxService

from .peer import Peer, keypair

ALICE = "alice-token"
BOB = "bob-token"


class TwoUsers(IdentityProvider):
    """Test-only identity provider: each token is a different user (as JupyterHub would say)."""

    users: ClassVar[dict[str, str]] = {ALICE: "alice", BOB: "bob"}

    def get_user(self, handler: Any) -> User | None:
        name = self.users.get(self.get_token(handler) or "")
        if name is None:
            return None
        handler._token_authenticated = True
        return User(name)


@pytest.fixture
def fx_config() -> dict[str, Any]:
    """FxService options of this test (tests override or extend it)."""
    return {}


@pytest.fixture
def jp_server_config(db_url: str, fx_config: dict[str, Any]) -> Config:
    """The server of each service test, its store a fresh database of each backend."""
    return Config(
        {
            "ServerApp": {
                "jpserver_extensions": {"fx_jupyter.server_ext": True},
                "identity_provider_class": TwoUsers,
            },
            "IdentityProvider": {"token": ALICE},
            "FxService": {
                "db_url": db_url,
                "event_flush_interval": 0.001,
                **fx_config,
            },
        }
    )


@pytest.fixture
def fx_service(jp_serverapp: Any) -> FxService:
    """The running FxService extension app."""
    return jp_serverapp.extension_manager.extension_points["fx"].app


Api = Callable[..., Awaitable[tuple[int, Any]]]


@pytest.fixture
def api(jp_fetch: Any) -> Api:
    """``await api(method, path, body=None, user=ALICE, headers=None, raw=None)`` → (status, JSON).

    Never raises on HTTP errors: tests assert on the status and the error document.
    """

    async def call(
        method: str,
        path: str,
        body: Any = None,
        user: str = ALICE,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        all_headers = {"Authorization": f"token {user}", **(headers or {})}
        try:
            response = await jp_fetch(
                "fx",
                "api",
                "v2",
                path,
                method=method,
                body=data,
                headers=all_headers,
                params=params,
                allow_nonstandard_methods=True,
            )
        except HTTPClientError as e:
            assert e.response is not None, e
            return e.code, json.loads(e.response.body)
        return response.code, json.loads(response.body)

    return call


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def register_function(
    api: Api, code: bytes = b"function bytes", user: str = ALICE, **extra: Any
) -> str:
    """Register opaque function bytes; returns the function id."""
    status, body = await api(
        "POST", "functions", {"function_name": "f", "function_code": b64(code), **extra}, user=user
    )
    assert status == 200, body
    return body["function_id"]


@dataclass
class Registered:
    """An endpoint registered through REST, with the Curve keys a peer needs."""

    endpoint_id: str
    name: str
    broker_url: str
    server_key: str
    public: bytes
    secret: bytes

    def peer(self) -> Peer:
        return Peer(self.broker_url, self.server_key, self.public, self.secret)

    @asynccontextmanager
    async def connected(self, credit: int = 0, **hello: Any) -> AsyncIterator[Peer]:
        """A peer of this endpoint that said hello and was welcomed; closed on the way out."""
        with closing(self.peer()) as peer:
            welcome = await peer.hello(self.endpoint_id, credit=credit, **hello)
            assert welcome.type == protocol.WELCOME, welcome.body
            yield peer


async def register_endpoint(api: Api, name: str = "ep", user: str = ALICE) -> Registered:
    """Register an endpoint with a fresh keypair."""
    public, secret = keypair()
    status, body = await api(
        "POST", "endpoints", {"name": name, "public_key": public.decode()}, user=user
    )
    assert status == 200, body
    return Registered(
        body["endpoint_id"],
        name,
        body["broker"]["url"],
        body["broker"]["server_key"],
        public,
        secret,
    )


async def submit(
    api: Api, endpoint: str, function_id: str, n: int = 1, user: str = ALICE
) -> list[str]:
    """Submit ``n`` tasks with payloads ``args-0``, ``args-1``...; returns their ids."""
    tasks = [
        {"endpoint_id": endpoint, "function_id": function_id, "payload": b64(f"args-{i}".encode())}
        for i in range(n)
    ]
    status, body = await api("POST", "submit", {"tasks": tasks}, user=user)
    assert status == 200, body
    return body["task_ids"]


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll an async predicate until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
