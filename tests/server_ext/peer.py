"""An endpoint-side peer for protocol tests of the broker.

A real ZeroMQ DEALER with its own Curve keypair, registered through the real REST API, speaking
``fx_endpoint.protocol`` on the test's event loop. Tests use it to do what the real daemon never
does on cue: send garbage, replay results, stay silent, use a key the service does not know.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import zmq
import zmq.asyncio

from fx_endpoint import protocol
from fx_endpoint.version import PROTOCOL_VERSION, __version__


class Peer:
    """One endpoint connection to the broker."""

    def __init__(self, url: str, server_key: str, public: bytes, secret: bytes) -> None:
        self.context = zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.curve_serverkey = server_key.encode()
        self.socket.curve_publickey = public
        self.socket.curve_secretkey = secret
        self.socket.linger = 0
        self.socket.connect(url)
        self.public_key = public.decode()
        self.inbox: list[protocol.Message] = []

    async def send(
        self, msg_type: str, body: dict[str, Any] | None = None, frames: list[Any] = ()
    ) -> None:  # type: ignore[assignment]
        """Send one well-formed message."""
        await self.socket.send_multipart(protocol.encode(msg_type, body, list(frames)))

    async def send_raw(self, frames: list[bytes]) -> None:
        """Send arbitrary frames (garbage, truncated messages...)."""
        await self.socket.send_multipart(frames)

    async def hello(self, endpoint_id: str, credit: int = 0, **extra: Any) -> protocol.Message:
        """Say hello and return the answer (welcome or reject)."""
        body = {
            "endpoint_id": endpoint_id,
            "protocol": PROTOCOL_VERSION,
            "fx_version": __version__,
            "python": "3.11.0",
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "engine": {"type": "process", "max_workers": 1},
            "credit": credit,
            **extra,
        }
        await self.send(protocol.HELLO, body)
        return await self.recv()

    async def recv(self, timeout: float = 5.0) -> protocol.Message:
        """The next message from the broker (first those :meth:`expect` set aside)."""
        if self.inbox:
            return self.inbox.pop(0)
        frames = await asyncio.wait_for(self.socket.recv_multipart(), timeout)
        return protocol.decode(frames, protocol.SERVICE_TO_ENDPOINT)

    async def expect(self, msg_type: str, timeout: float = 5.0) -> protocol.Message:
        """The next message of ``msg_type``; others are kept for later (heartbeat_acks are
        dropped)."""
        for i, msg in enumerate(self.inbox):
            if msg.type == msg_type:
                return self.inbox.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            frames = await asyncio.wait_for(
                self.socket.recv_multipart(), max(0.01, deadline - time.monotonic())
            )
            msg = protocol.decode(frames, protocol.SERVICE_TO_ENDPOINT)
            if msg.type == msg_type:
                return msg
            if msg.type != protocol.HEARTBEAT_ACK:
                self.inbox.append(msg)

    async def nothing(self, wait: float = 0.3) -> None:
        """Assert the broker sends nothing for ``wait`` seconds."""
        try:
            msg = await self.recv(wait)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected {msg.type} message: {msg.body}")

    async def tasks(
        self, n: int, timeout: float = 5.0
    ) -> list[tuple[dict[str, Any], bytes, bytes]]:
        """Receive ``tasks`` messages until ``n`` tasks came: (header, function, args) each."""
        out: list[tuple[dict[str, Any], bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            msg = await self.expect(protocol.TASKS, max(0.01, deadline - time.monotonic()))
            for header in msg.body["tasks"]:
                out.append((header, msg.frames[header["function"]], msg.frames[header["args"]]))
        return out

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


def keypair() -> tuple[bytes, bytes]:
    """A fresh Curve keypair (public, secret), z85."""
    return zmq.curve_keypair()
