"""The ZeroMQ broker endpoints connect to: a CurveZMQ ROUTER on the Jupyter event loop.

Security: the socket is always a Curve server; a ZAP authenticator in the broker's own ZeroMQ
context admits a client only if its public key is registered for an endpoint (the registry is
consulted at each handshake, so registering and deleting take effect at once), and
``ZAP_ENFORCE_DOMAIN`` makes the socket refuse clients should the authenticator be missing. Each
message's ``User-Id`` property — the client's z85 public key, set by the authenticator — says
which endpoint sent it, so one endpoint can never speak for another.

Robustness: every frame sequence is decoded and its fields type-checked before anything acts on
it; a malformed one (garbage, truncated, unknown type, wrong field types, a frame count that
does not match) is logged, counted and dropped, and the broker keeps serving.

Address: the chosen port and the server keypair are kept in the store's ``service_state``, so a
restarted service listens on the same address with the same key and endpoints reconnect by
themselves.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections import Counter
from typing import Any

import zmq
from zmq.auth.asyncio import AsyncioAuthenticator

from fx_endpoint.protocol import (
    CREDIT_KEY,
    ENDPOINT_TO_SERVICE,
    GOODBYE,
    HEARTBEAT,
    HEARTBEAT_ACK,
    HELLO,
    PARTS_KEY,
    REJECT,
    RESULTS,
    TASK_STATUS,
    ProtocolError,
    TaskState,
    check_compatible,
    decode,
    encode,
    has_message,
    part_count,
    readable_text,
    recv_frames,
    require,
    send_frames,
)

from .blobs import OUT_OF_LINE_BYTES
from .dispatch import Dispatcher
from .endpoints import EndpointRegistry
from .records import EndpointRecord, ResultIn
from .store import TaskStore

ZAP_DOMAIN = "fx"
#: More credit than this in one message is nonsense, not capacity.
MAX_CREDIT = 10_000_000
#: Messages handled per wake-up of the receive loop before it yields to the event loop.
DRAIN_BATCH = 100
#: Log the first malformed messages, then only every LOG_EVERY-th, so garbage cannot flood logs.
LOG_FIRST = 20
LOG_EVERY = 1000
#: Distinct kinds of malformed message counted by name in ``GET stats``; more go to "other".
MAX_REASONS = 50

#: The counters of :attr:`Broker.stats`, all reported (zero included) by ``GET stats``.
COUNTERS = (
    "messages_in",
    "messages_out",
    "malformed_messages",
    "unknown_key_messages",
    "no_session_messages",
    "refused_keys",
    "rejected",
    "send_errors",
    "internal_errors",
)

_STATE_PORT = "broker_port"
_STATE_PUBLIC = "broker_public_key"
_STATE_SECRET = "broker_secret_key"


class Broker:
    """Owns the ROUTER socket: authenticates, decodes, validates, and hands messages on."""

    def __init__(
        self,
        store: TaskStore,
        registry: EndpointRegistry,
        dispatcher: Dispatcher,
        log: logging.Logger,
        *,
        ip: str,
        port: int,
        public_host: str,
    ) -> None:
        self.store = store
        self.registry = registry
        self.dispatcher = dispatcher
        self.log = log
        self.ip = ip
        self.requested_port = port
        self.public_host = public_host or _default_public_host(ip)
        self.port = 0
        self.public_key = ""
        self._context: zmq.Context[Any] | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._socket: zmq.Socket[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._check_scheduled = False
        self.stats: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self.malformed_reasons: Counter[str] = Counter()

    @property
    def url(self) -> str:
        """Where endpoints connect."""
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"tcp://{host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load or make the keypair, bind (on the remembered port when possible), serve."""
        state = await self.store.get_state()
        public = state.get(_STATE_PUBLIC)
        secret = state.get(_STATE_SECRET)
        if not (public and secret):
            public_b, secret_b = zmq.curve_keypair()
            public, secret = public_b.decode("ascii"), secret_b.decode("ascii")
        self.public_key = public

        self._context = zmq.Context()
        self._auth = AsyncioAuthenticator(self._context, log=self.log.getChild("zap"))
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self)

        sock = self._context.socket(zmq.ROUTER)
        sock.curve_server = True
        sock.curve_publickey = public.encode("ascii")
        sock.curve_secretkey = secret.encode("ascii")
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        sock.router_mandatory = True  # an unroutable send raises instead of vanishing
        sock.sndhwm = 0  # credit bounds what we queue; never drop a reply
        sock.linger = 0
        if ":" in self.ip:
            sock.ipv6 = True
        self._socket = sock
        self.port = self._bind(sock, state)
        await self.store.set_state(
            {_STATE_PORT: str(self.port), _STATE_PUBLIC: public, _STATE_SECRET: secret}
        )
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.FD, self._readable)
        self._check_soon()  # the FD only signals changes: look once for what is already there
        self.log.info("fx broker listening on %s (Curve key %s)", self.url, public)

    def _bind(self, sock: zmq.Socket[Any], state: dict[str, str]) -> int:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        if self.requested_port:
            sock.bind(f"tcp://{host}:{self.requested_port}")
            return self.requested_port
        remembered = int(state.get(_STATE_PORT) or 0)
        if remembered:
            try:
                sock.bind(f"tcp://{host}:{remembered}")
                return remembered
            except zmq.ZMQError as e:
                self.log.warning(
                    "fx broker: port %d of the last run is taken (%s); endpoints must be "
                    "restarted to learn the new one",
                    remembered,
                    e,
                )
        return sock.bind_to_random_port(f"tcp://{host}")

    async def stop(self) -> None:
        """Stop serving and release the socket, the authenticator and the context."""
        if self._loop is not None and self._socket is not None:
            self._loop.remove_reader(self._socket.FD)
        if self._auth is not None:
            self._auth.stop()
        if self._socket is not None:
            self._socket.close(linger=0)
        if self._context is not None:
            self._context.term()

    # -- ZAP ----------------------------------------------------------------------------------

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP credentials check: admit registered endpoint keys only."""
        allowed = self.registry.by_key(key.decode("ascii", "replace")) is not None
        if not allowed:
            self.stats["refused_keys"] += 1
            n = self.stats["refused_keys"]
            if n <= LOG_FIRST or n % LOG_EVERY == 0:  # a refused client retries forever
                self.log.warning(
                    "fx broker: refused a connection with unregistered key %r (#%d); run "
                    "`fx-endpoint configure` on that endpoint",
                    key,
                    n,
                )
        return allowed

    # -- sending ------------------------------------------------------------------------------

    def send(self, identity: bytes, msg_type: str, body: dict[str, Any], frames: list[Any]) -> None:
        """Send a message to one connection now (never blocks: ROUTER with no send limit)."""
        if self._socket is None or self._socket.closed:
            return
        try:
            send_frames(self._socket, [identity, *encode(msg_type, body, frames)], zmq.NOBLOCK)
        except zmq.ZMQError as e:  # the peer is gone (EHOSTUNREACH): its link times out
            self.stats["send_errors"] += 1
            self.log.debug("fx broker: send failed: %s", e)
        else:
            self.stats["messages_out"] += 1
        self._check_soon()

    # -- receiving ----------------------------------------------------------------------------
    #
    # A plain socket on the loop's reader callback, as pyzmq's ZMQStream does it, rather than
    # zmq.asyncio: no future per message. ZeroMQ's FD is edge-triggered: it signals that the
    # socket's state changed, not that a message is waiting, and any operation on the socket
    # (a send too) may consume that signal. So the reader drains until EAGAIN, and every send
    # schedules a look at the socket's events on the next loop turn.

    def _readable(self) -> None:
        sock = self._socket
        if sock is None or sock.closed:
            return
        for _ in range(DRAIN_BATCH):
            try:
                if not has_message(sock):
                    return
                frames = recv_frames(sock, zmq.NOBLOCK)
            except zmq.ZMQError as e:
                self.log.error("fx broker: receive failed: %s", e)
                return
            self._handle_safely(frames)
        self._check_soon()  # more may wait: let the loop breathe, then continue

    def _check_soon(self) -> None:
        if not self._check_scheduled and self._loop is not None:
            self._check_scheduled = True
            self._loop.call_soon(self._check)

    def _check(self) -> None:
        self._check_scheduled = False
        sock = self._socket
        if sock is not None and not sock.closed and has_message(sock):
            self._readable()

    def _handle_safely(self, frames: list[zmq.Frame]) -> None:
        try:
            self._handle(frames)
        except Exception:
            self.stats["internal_errors"] += 1
            self.log.exception("fx broker: failed to handle a message")

    def _handle(self, frames: list[zmq.Frame]) -> None:
        self.stats["messages_in"] += 1
        if len(frames) < 2:
            self._malformed(None, "empty message")
            return
        identity = frames[0].bytes
        try:
            user_id = frames[1].get("User-Id")
        except zmq.ZMQError:
            user_id = None
        record = self.registry.by_key(user_id) if isinstance(user_id, str) else None
        if record is None:  # deleted (or re-keyed) while its Curve session lasts
            self.stats["unknown_key_messages"] += 1
            return
        try:
            msg = decode(frames[1:], ENDPOINT_TO_SERVICE)
            credit = _credit(msg.body)
            if msg.type == HELLO:
                self._hello(identity, record, msg.body, credit)
                return
            link = self.dispatcher.session(identity, record)
            if link is None:
                self.stats["no_session_messages"] += 1
                self.log.debug("fx broker: %s from %s before hello: dropped", msg.type, record.name)
                return
            if msg.type == HEARTBEAT:
                status = msg.body.get("status", {})
                if not isinstance(status, dict):
                    raise ProtocolError("field 'status' is not an object")
                self.dispatcher.heartbeat(link, status)
                self.send(identity, HEARTBEAT_ACK, {}, [])
            elif msg.type == TASK_STATUS:
                self.dispatcher.task_status(link, _updates(msg.body))
            elif msg.type == RESULTS:
                self.dispatcher.results(link, _results(msg.body, msg.frames))
            elif msg.type == GOODBYE:
                self.dispatcher.disconnect(link, "said goodbye")
                return
            self.dispatcher.add_credit(link, credit)
        except ProtocolError as e:
            self._malformed(record, str(e))

    def _hello(
        self, identity: bytes, record: EndpointRecord, body: dict[str, Any], credit: int
    ) -> None:
        try:
            check_compatible(
                body.get("protocol"), body.get("fx_version"), "fx endpoint", "fx service"
            )
            claimed = require(body, "endpoint_id", str)
            if claimed != record.endpoint_id:
                raise ProtocolError(
                    f"this connection's key is registered for endpoint {record.endpoint_id} "
                    f"({record.name}), not {claimed}; run `fx-endpoint configure` again"
                )
        except ProtocolError as e:
            self.stats["rejected"] += 1
            self.log.warning("fx broker: rejected endpoint %s: %s", record.name, e)
            self.send(identity, REJECT, {"reason": str(e)}, [])
            link = self.dispatcher.session(identity, record)
            if link is not None:
                self.dispatcher.disconnect(link, "rejected")
            return
        hello = {
            "fx_version": require(body, "fx_version", str),
            "protocol": body["protocol"],
            "python": require(body, "python", str),
            "hostname": require(body, "hostname", str),
            "pid": require(body, "pid", int),
            "engine": require(body, "engine", dict),
        }
        if body.get(PARTS_KEY) is True:
            hello[PARTS_KEY] = True
        for key in ("heartbeat_period", "heartbeat_threshold"):
            if key in body:
                value = body[key]
                if not _is_number(value) or value <= 0:
                    raise ProtocolError(f"field {key!r} is not a positive number")
                hello[key] = float(value)
        self.dispatcher.hello(identity, record, hello, credit)

    def _malformed(self, record: EndpointRecord | None, reason: str) -> None:
        self.stats["malformed_messages"] += 1
        kind = reason.split(":")[0][:80]
        if kind not in self.malformed_reasons and len(self.malformed_reasons) >= MAX_REASONS:
            kind = "other"  # reasons quote what peers sent: keep the table bounded
        self.malformed_reasons[kind] += 1
        if record is not None:
            self.dispatcher.per_endpoint[record.endpoint_id]["malformed_messages"] += 1
        n = self.stats["malformed_messages"]
        if n <= LOG_FIRST or n % LOG_EVERY == 0:
            who = f"endpoint {record.name} ({record.endpoint_id})" if record else "a peer"
            self.log.warning(
                "fx broker: dropped a malformed message from %s (#%d): %s", who, n, reason
            )


def _is_number(value: Any) -> bool:
    """A finite JSON number (a bool is not one). Exact type checks: this runs several times per
    result, and JSON decodes numbers to exactly int or float."""
    kind = type(value)
    return (kind is float or kind is int) and math.isfinite(value)


def _credit(body: dict[str, Any]) -> int:
    if CREDIT_KEY not in body:
        return 0
    credit = body[CREDIT_KEY]
    if not isinstance(credit, int) or isinstance(credit, bool) or not 0 <= credit <= MAX_CREDIT:
        raise ProtocolError(f"field 'credit' is not an integer in [0, {MAX_CREDIT}]")
    return credit


def _updates(body: dict[str, Any]) -> list[tuple[str, str, float]]:
    updates = require(body, "updates", list)
    out = []
    for i, item in enumerate(updates):
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not _is_task_id(item[0])
            or item[1] not in TaskState.AT_ENDPOINT
            or not _is_number(item[2])
        ):
            raise ProtocolError(f"updates[{i}] is not [task_id, endpoint state, timestamp]")
        out.append((item[0], item[1], float(item[2])))
    return out


_RESULT_TEXT_FIELDS = ("exception_text", "stdout", "stderr")


def _is_task_id(value: Any) -> bool:
    """A string a task id column can be searched for (ids are UUIDs; anything else is unknown
    and counted as such, but a NUL would fail the whole batch's statement on PostgreSQL)."""
    return type(value) is str and len(value) <= 64 and readable_text(value) == value


def _results(body: dict[str, Any], frames: list[Any]) -> list[ResultIn]:
    headers = require(body, "results", list)
    out = []
    end = 0
    for i, header in enumerate(headers):
        if not isinstance(header, dict):
            raise ProtocolError(f"results[{i}] is not an object")
        start, end = end, end + part_count(header, f"results[{i}]")
        if end > len(frames):
            raise ProtocolError(f"{len(headers)} results but {len(frames)} payload frames")
        data = _payload(frames[start:end])
        task_id = header.get("task_id")
        status = header.get("status")
        if not _is_task_id(task_id) or status not in TaskState.TERMINAL:
            raise ProtocolError(f"results[{i}] needs a task_id and a final status")
        exception_text = header.get("exception_text")
        stdout = header.get("stdout")
        stderr = header.get("stderr")
        for key, value in zip(_RESULT_TEXT_FIELDS, (exception_text, stdout, stderr)):
            if value is not None and type(value) is not str:
                raise ProtocolError(f"results[{i}].{key} is not a string")
        if exception_text is not None:
            exception_text = readable_text(exception_text)
        stdout = stdout and readable_text(stdout)
        stderr = stderr and readable_text(stderr)
        ts = header.get("ts")
        if ts is not None and not _is_number(ts):
            raise ProtocolError(f"results[{i}].ts is not a number")
        retries = header.get("retries")
        if retries is not None and (type(retries) is not int or retries < 0):
            raise ProtocolError(f"results[{i}].retries is not a non-negative integer")
        transitions = header.get("transitions") or {}
        if not isinstance(transitions, dict):
            raise ProtocolError(f"results[{i}].transitions is not an object")
        for state, when in transitions.items():
            if state not in TaskState.AT_ENDPOINT or not _is_number(when):
                raise ProtocolError(f"results[{i}].transitions has {state!r}: {when!r}")
        when = float(ts) if ts is not None else time.time()
        out.append(
            ResultIn(
                task_id, status, data, exception_text, stdout, stderr, when, retries, transitions
            )
        )
    if end != len(frames):
        raise ProtocolError(f"{len(headers)} results but {len(frames)} payload frames")
    return out


def _payload(frames: list[Any]) -> Any:
    """A result's payload from its frames, without copying a large one: the buffer of its one
    frame, or the buffers of its parts (joined when small enough to be stored inline)."""
    buffers = [frame.buffer if hasattr(frame, "buffer") else frame for frame in frames]
    if len(buffers) == 1:
        return buffers[0]
    if sum(len(b) for b in buffers) <= OUT_OF_LINE_BYTES:
        return b"".join(buffers)
    return buffers


def _default_public_host(ip: str) -> str:
    """The address to give endpoints when the broker listens on every interface."""
    if ip in ("", "*", "0.0.0.0", "::"):
        return socket.getfqdn()
    return ip
