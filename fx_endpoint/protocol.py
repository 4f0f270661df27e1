"""The fx wire protocol between the service's broker and an endpoint.

Defined here, once, because the endpoint must run on a cluster node without Jupyter; the
service and the SDK import it. See ``docs/architecture.md`` for the message flow.

A message is a ZeroMQ multipart message::

    [header, payload_0, payload_1, ...]

``header`` is UTF-8 JSON ``{"t": <type>, "n": <number of payload frames>, ...body}``. Payload
frames are opaque bytes (serialized functions, arguments, results): the broker forwards and stores
them without ever opening them (DESIGN.md invariant 1), and they travel as their own frames so
large ones are not copied into the JSON. On the service's ROUTER socket the peer identity frame
precedes ``header``; :func:`decode` is given the frames after it.

Every message type carries lists of items, so each hop moves batches (invariant 3).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .version import PROTOCOL_VERSION, __version__

# --- endpoint -> service -------------------------------------------------------------------
#: First message on a connection: {endpoint_id, protocol, fx_version, python, hostname, pid,
#: engine: {type, max_workers}, credit, parts: true (it takes arguments in parts)}
HELLO = "hello"
#: Periodic liveness + load: {status: {...engine status...}}
HEARTBEAT = "heartbeat"
#: State changes at the endpoint: {updates: [[task_id, state, unix_ts], ...]}. The first update
#: of a task (``waiting-for-launch``) acknowledges its receipt.
TASK_STATUS = "task_status"
#: Finished tasks: {results: [ResultHeader, ...]} with one payload frame per result, in order;
#: a payload over :data:`PART_BYTES` travels as ``ResultHeader.parts`` consecutive frames.
RESULTS = "results"
#: Clean shutdown of the endpoint daemon: {}
GOODBYE = "goodbye"

# --- service -> endpoint -------------------------------------------------------------------
#: Answer to HELLO: {fx_version, protocol, heartbeat_period, heartbeat_threshold, parts: true
#: (it takes results in parts)}
WELCOME = "welcome"
#: Fatal refusal (incompatible versions, deleted endpoint): {reason}
REJECT = "reject"
#: Work: {tasks: [TaskHeader, ...]} with payload frames referenced by index from the headers
#: (functions are sent once per message even when many tasks use them); arguments over
#: :data:`PART_BYTES` travel as ``TaskHeader.parts`` consecutive frames from their index.
TASKS = "tasks"
#: The service stored these results; the endpoint may forget them: {task_ids: [...]}
RESULTS_ACK = "results_ack"
#: Drop queued / stop running tasks: {task_ids: [...]}
CANCEL = "cancel"
#: Answer to HEARTBEAT so the endpoint notices a dead service: {}
HEARTBEAT_ACK = "heartbeat_ack"

ENDPOINT_TO_SERVICE = frozenset({HELLO, HEARTBEAT, TASK_STATUS, RESULTS, GOODBYE})
SERVICE_TO_ENDPOINT = frozenset({WELCOME, REJECT, TASKS, RESULTS_ACK, CANCEL, HEARTBEAT_ACK})

#: Any endpoint -> service message may carry ``"credit": n``: n more tasks the endpoint can take.
CREDIT_KEY = "credit"
#: A result's, or a task's arguments', count of payload frames when there are several (see
#: :func:`parts`); in HELLO and WELCOME, ``true`` when the sender takes payloads in parts (a
#: peer that does not say so gets each payload in one frame).
PARTS_KEY = "parts"
#: Largest frame a result or a task's arguments travel in between service and endpoint.
#: CurveZMQ encrypts each frame through buffers of its own size, freshly allocated and copied
#: twice on each side; in frames of 1 MiB those buffers are reused. Measured on the 2-core VM
#: this was tuned on: a 10 MB Curve round trip took 34 ms as one frame and 21.5 ms as 1 MiB
#: frames (over plain ipc:// one frame is the faster, so workers get one).
PART_BYTES = 1024 * 1024

#: ``ZMQ_SNDMORE``, ``ZMQ_EVENTS`` and ``ZMQ_POLLIN`` of zmq.h, as plain ints: pyzmq's flag
#: enums make every ``|`` and ``&`` of them a slow Python call (see :func:`send_frames`).
_SNDMORE = 2
_EVENTS = 15
_POLLIN = 1
#: Smaller ``bytes`` frames are copied into the message (pyzmq's own copy threshold): cheaper
#: than lending a small buffer to ZeroMQ; larger ones, and received frames, go without a copy.
_COPY_BELOW = 65536


class TaskState:
    """funcX's task state names (DESIGN.md, "Task states")."""

    WAITING_FOR_EP = "waiting-for-ep"
    WAITING_FOR_NODES = "waiting-for-nodes"
    WAITING_FOR_LAUNCH = "waiting-for-launch"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    ALL = (
        WAITING_FOR_EP,
        WAITING_FOR_NODES,
        WAITING_FOR_LAUNCH,
        RUNNING,
        SUCCESS,
        FAILED,
        CANCELLED,
    )
    TERMINAL = frozenset({SUCCESS, FAILED, CANCELLED})
    #: States an endpoint may report in TASK_STATUS.
    AT_ENDPOINT = frozenset({WAITING_FOR_NODES, WAITING_FOR_LAUNCH, RUNNING})


class ProtocolError(ValueError):
    """A frame sequence that is not a valid fx message. The receiver logs, counts and drops it."""


@dataclass
class Message:
    """A decoded message: its type, its JSON body, and its opaque payload frames."""

    type: str
    body: dict[str, Any] = field(default_factory=dict)
    frames: list[Any] = field(default_factory=list)


def encode(
    msg_type: str, body: dict[str, Any] | None = None, frames: Sequence[Any] = ()
) -> list[Any]:
    """Frames for a message; payload frames are passed through untouched (zero copy)."""
    header = dict(body or {})
    header["t"] = msg_type
    header["n"] = len(frames)
    return [json.dumps(header, separators=(",", ":")).encode(), *frames]


def send_frames(socket: Any, frames: Sequence[Any], flags: int = 0) -> None:
    """Send ``frames`` as one multipart message on a ZeroMQ ``socket``.

    What ``socket.send_multipart(frames, flags, copy=False)`` does, at a third of its cost per
    frame, which counts with a frame per task: pyzmq combines its ``IntFlag`` flags for every
    frame, and in Python 3.11 that enum arithmetic costs more than sending a small frame.
    """
    flags = int(flags)
    more = flags | _SNDMORE
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        copy = type(frame) is bytes and len(frame) < _COPY_BELOW
        socket.send(frame, more if i < last else flags, copy=copy)


def parts(payload: Any) -> list[Any]:
    """The frames ``payload`` travels in: itself when it is at most :data:`PART_BYTES`, else
    zero-copy views of :data:`PART_BYTES` each (the last one shorter)."""
    if len(payload) <= PART_BYTES:
        return [payload]
    view = memoryview(payload).cast("B")
    return [view[start : start + PART_BYTES] for start in range(0, view.nbytes, PART_BYTES)]


def add_payload(
    frames: list[Any], header: dict[str, Any], payload: Any, split: bool
) -> dict[str, Any]:
    """Append ``payload``'s frames to ``frames``: itself, or when ``split`` (the peer takes
    parts) its :func:`parts`; returns ``header``, with their count as ``parts`` when several."""
    pieces = parts(payload) if split else [payload]
    frames.extend(pieces)
    return header if len(pieces) == 1 else {**header, PARTS_KEY: len(pieces)}


def part_count(header: dict[str, Any], where: str) -> int:
    """How many frames the payload of ``header`` (named ``where`` in errors) travels in."""
    count = header.get(PARTS_KEY, 1)
    if type(count) is not int or count < 1:
        raise ProtocolError(f"{where}.parts is not a positive integer: {count!r}")
    return count


def has_message(socket: Any) -> bool:
    """Whether a message waits on a ZeroMQ ``socket``.

    How a receive loop knows it drained the socket, rather than by a receive failing with
    ``Again`` (pyzmq's exceptions cost more to raise than a small message to receive); asking
    also re-arms the socket's edge-triggered file descriptor.
    """
    return bool(socket.getsockopt(_EVENTS) & _POLLIN)


def recv_frames(socket: Any, flags: int = 0) -> list[Any]:
    """The next multipart message of a ZeroMQ ``socket``, as zero-copy frames.

    ``socket.recv_multipart(flags, copy=False)`` at half its cost per frame: each frame says
    whether more follow, where pyzmq asks the socket, through an enum conversion, for every
    frame. (The parts of a message arrive together: only the first can wait or fail.)
    """
    frames = [socket.recv(int(flags), copy=False)]
    while frames[-1].more:
        frames.append(socket.recv(copy=False))
    return frames


def decode(frames: Sequence[Any], allowed: frozenset[str] | None = None) -> Message:
    """Parse frames (without the ROUTER identity) into a :class:`Message`.

    Raises :class:`ProtocolError` for anything malformed: no frames, a header that is not a JSON
    object, an unknown type, or a payload frame count that does not match the header (a truncated
    or padded message).
    """
    if not frames:
        raise ProtocolError("empty message")
    raw = frames[0]
    raw = raw.bytes if hasattr(raw, "bytes") else raw
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    msg_type = header.pop("t", None)
    count = header.pop("n", None)
    if not isinstance(msg_type, str):
        raise ProtocolError("header has no message type")
    if allowed is not None and msg_type not in allowed:
        raise ProtocolError(f"unexpected message type {msg_type!r}")
    if not isinstance(count, int) or count != len(frames) - 1:
        raise ProtocolError(
            f"{msg_type} message announces {count!r} payload frames but has {len(frames) - 1}"
        )
    return Message(msg_type, header, list(frames[1:]))


def require(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """Fetch ``body[key]`` checking its type, or raise :class:`ProtocolError` naming the key."""
    value = body.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"field {key!r} missing or not {getattr(kind, '__name__', kind)}")
    return value


def check_compatible(peer_protocol: Any, peer_version: Any, peer_role: str, my_role: str) -> None:
    """Raise :class:`ProtocolError` with both versions named when a peer cannot talk to us."""
    if peer_protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{peer_role} {peer_version} (protocol {peer_protocol}) is not compatible with "
            f"{my_role} {__version__} (protocol {PROTOCOL_VERSION}); install the same fx-jupyter "
            f"version on both sides"
        )


def readable_text(text: str) -> str:
    """``text`` with what no database text column holds replaced by U+FFFD: NUL characters
    (PostgreSQL refuses them) and unpaired UTF-16 surrogates (no UTF-8 encoder takes them). A
    task's output and error travel and are stored as text; a stray byte in them must not cost
    the task its result."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
