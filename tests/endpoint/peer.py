"""A broker peer for protocol-level tests of the endpoint daemon.

It is the broker's side of the wire and nothing more: a real ROUTER socket, a real CurveZMQ
server with a real ZAP authenticator that admits the keys a test allows, speaking
``fx_endpoint.protocol``. Tests use it to do what a well-behaved service never does on cue
(withhold ``results_ack``, send malformed tasks, refuse a key, reject a hello) and to look at
exactly what the daemon sends. End-to-end behaviour against the real service is tested in
``test_e2e_service.py``.
"""

from __future__ import annotations

import time
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from fx_endpoint import protocol
from fx_endpoint.version import PROTOCOL_VERSION, __version__


class PeerBroker:
    """A Curve ROUTER on loopback that records every message an endpoint sends."""

    def __init__(self, port: int = 0, keypair: tuple[bytes, bytes] | None = None) -> None:
        """A new broker; give the ``port`` and ``keypair`` of a closed one to play it restarted."""
        self.context = zmq.Context()
        self.public_key, secret = keypair or zmq.curve_keypair()
        self.secret_key = secret
        self.allowed: set[bytes] = set()
        self.auth = ThreadAuthenticator(self.context)
        self.auth.start()
        self.auth.configure_curve_callback(domain="*", credentials_provider=self)
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.curve_server = True
        self.socket.curve_publickey = self.public_key
        self.socket.curve_secretkey = secret
        self.socket.linger = 0
        if port:
            self.socket.bind(f"tcp://127.0.0.1:{port}")
            self.port = port
        else:
            self.port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.identity: bytes | None = None
        self.received: list[protocol.Message] = []

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: admit only keys a test allowed."""
        return key in self.allowed

    def recv(self, timeout: float = 10.0) -> protocol.Message:
        """The next message from any endpoint (its identity is remembered for replies)."""
        if not self.socket.poll(int(timeout * 1000)):
            raise TimeoutError(f"no message from the endpoint within {timeout} s")
        identity, *frames = self.socket.recv_multipart()
        self.identity = identity
        msg = protocol.decode(frames, protocol.ENDPOINT_TO_SERVICE)
        self.received.append(msg)
        return msg

    def expect(self, msg_type: str, timeout: float = 10.0) -> protocol.Message:
        """Skip messages until one of ``msg_type`` arrives (heartbeats come at any time)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if msg.type == msg_type:
                return msg

    def collect(self, predicate: Any, timeout: float = 10.0) -> list[protocol.Message]:
        """Messages received until ``predicate(messages)`` holds."""
        got: list[protocol.Message] = []
        deadline = time.monotonic() + timeout
        while not predicate(got):
            got.append(self.recv(max(0.01, deadline - time.monotonic())))
        return got

    def send(
        self, msg_type: str, body: dict[str, Any] | None = None, frames: list[Any] = ()
    ) -> None:
        assert self.identity is not None, "the endpoint has not spoken yet"
        self.socket.send_multipart([self.identity, *protocol.encode(msg_type, body, frames)])

    def send_raw(self, frames: list[bytes]) -> None:
        assert self.identity is not None
        self.socket.send_multipart([self.identity, *frames])

    def welcome(self) -> protocol.Message:
        """Wait for hello and answer welcome; return the hello."""
        hello = self.expect(protocol.HELLO)
        self.send(
            protocol.WELCOME,
            {
                "fx_version": __version__,
                "protocol": PROTOCOL_VERSION,
                "heartbeat_period": 5,
                "heartbeat_threshold": 30,
            },
        )
        return hello

    def send_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Send tasks given as {task_id, function_id, function: bytes, args: bytes, walltime?}."""
        headers, frames, fn_index = [], [], {}
        for task in tasks:
            if task["function_id"] not in fn_index:
                fn_index[task["function_id"]] = len(frames)
                frames.append(task["function"])
            frames.append(task["args"])
            header = {
                "task_id": task["task_id"],
                "function_id": task["function_id"],
                "function": fn_index[task["function_id"]],
                "args": len(frames) - 1,
                "walltime": task.get("walltime"),
                "retries": 0,
            }
            headers.append(header)
        self.send(protocol.TASKS, {"tasks": headers}, frames)

    def results(
        self, count: int, timeout: float = 20.0, ack: bool = True
    ) -> dict[str, tuple[dict, bytes]]:
        """Collect ``count`` results by task id (acknowledging them unless ``ack`` is False)."""
        out: dict[str, tuple[dict, bytes]] = {}
        deadline = time.monotonic() + timeout
        while len(out) < count:
            msg = self.expect(protocol.RESULTS, max(0.01, deadline - time.monotonic()))
            for header, frame in zip(msg.body["results"], msg.frames):
                out[header["task_id"]] = (header, frame)
            if ack:
                self.send(
                    protocol.RESULTS_ACK, {"task_ids": [h["task_id"] for h in msg.body["results"]]}
                )
        return out

    def close(self) -> None:
        if self.socket.closed:
            return
        self.auth.stop()
        self.socket.close(linger=0)
        self.context.term()
