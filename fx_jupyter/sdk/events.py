"""``EventStream``: the service's task-state events, over one WebSocket per client.

Futures complete from these events instead of polling: the service pushes every state change of
the user's tasks (coalesced every few milliseconds, results inline when small), and a daemon
thread here reads them and hands each to the listeners (the Executors, widgets).

Why Tornado: it is already required (Jupyter Server runs on it), and its asyncio client gives us
connect and ping timeouts, backoff sleeps that a ``close()`` interrupts at once, and a clean
shutdown, all in one small loop owned by the stream's thread. (``websocket-client`` would be a
blocking ``recv`` that a shutdown can only break by closing the socket under it.)

The socket also carries submits (:meth:`EventStream.submit`, see
``fx_jupyter.server_ext.socket_submit``): a submit answered there skips an HTTP request, and
its answer arrives ahead of its tasks' events. Anything that cannot go this way (not connected,
refused, connection lost) is sent over HTTP by the caller, which then also raises the errors.

Events are not replayed by the service, so two gaps are closed here:

* after every (re)connect, ``batch_status`` is asked for the tasks someone still waits on
  (:meth:`watch`), and the answers are dispatched like events;
* while a submit is in flight (:meth:`expecting`), terminal events of tasks nobody watches yet are
  kept, so a future registered right after its submit returns finds its task's end
  (:meth:`claim`) even when the task finished first;
* the tasks a submit returned are then *followed* until someone claims them (``batch_run`` now,
  ``get_futures`` later): their terminal events are kept, and while the connection they were
  submitted on lasts, a claim knows their end has not arrived yet instead of asking the service.
  Bounded (:data:`FOLLOW_MAX_TASKS`, :data:`FOLLOW_MAX_BYTES`; oldest go first) and forgotten on
  a disconnect: a task no longer followed is simply asked about, as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from itertools import count
from typing import TYPE_CHECKING, Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from fx_endpoint.protocol import TaskState
from fx_endpoint.version import PROTOCOL_VERSION, __version__

from .errors import FxError
from .tasks import decode_payload_fields

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger(__name__)

#: A listener takes one event dict, or (``batch=True``) the list of one message's events.
Listener = Callable[[Any], None]

#: The kinds of events a listener can ask for.
KINDS = ("tasks", "endpoints")
#: Reconnect backoff: first wait, longest wait (seconds); each wait is jittered.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
#: Seconds between WebSocket pings; a connection that stops answering is replaced.
PING_INTERVAL = 20.0
CONNECT_TIMEOUT = 10.0
#: Events may carry many inline results at once.
MAX_MESSAGE_SIZE = 1 << 30
#: Submitted tasks followed until claimed, at most (the oldest are forgotten first).
FOLLOW_MAX_TASKS = 200_000
#: Bytes of inline results and exceptions kept for followed tasks, at most.
FOLLOW_MAX_BYTES = 64 * 1024 * 1024
_CONNECT_OPTIONS: dict[str, Any] = {
    "ping_interval": PING_INTERVAL,
    "max_message_size": MAX_MESSAGE_SIZE,
}


def websocket_url(service_url: str) -> str:
    """``ws(s)://.../fx/api/v2/events`` for an ``http(s)://.../fx/api/v2/`` service URL."""
    if service_url.startswith("https://"):
        return "wss://" + service_url[len("https://") :] + "events"
    if service_url.startswith("http://"):
        return "ws://" + service_url[len("http://") :] + "events"
    raise ValueError(f"service URL must be http(s)://, got {service_url!r}")


def event_from_task(record: dict[str, Any]) -> dict[str, Any]:
    """A task event (base64 payloads) built from a ``batch_status`` Task record."""
    details = record.get("details") or {}
    status = record.get("status")
    # When the task entered its state: a listener that missed the event (a widget) must not
    # take the time of the question for it.
    transitions = details.get("task_transitions")
    entered = transitions.get(status) if isinstance(transitions, dict) else None
    event: dict[str, Any] = {
        "task_id": record.get("task_id"),
        "status": status,
        "ts": record.get("completion_t") or entered,
        "endpoint_id": details.get("endpoint_id"),
    }
    for key in ("result", "exception", "result_size", "exception_size", "exception_text"):
        if key in record:
            event[key] = record[key]
    for key in ("stdout", "stderr"):
        if details.get(key):
            event[key] = details[key]
    return event


class EventStream:
    """One WebSocket to the service's ``events``, read by a daemon thread, reconnecting forever.

    Listeners are called on the stream's thread (or on the thread of a :meth:`resync`), with
    each task event dict: ``{task_id, status, ts, endpoint_id, result?, exception?,
    result_size?, exception_size?, exception_text?, stdout?, stderr?}``, ``result``/``exception``
    decoded to bytes (``*_size`` instead: too large to be inline, see
    :func:`.tasks.out_of_line_field`). They must
    be quick and thread-safe; an exception in one is logged and does not stop the stream.
    """

    def __init__(self, client: Client) -> None:
        # Weak: a client nobody uses any more is collected, and its finalizer closes us.
        self._client = weakref.ref(client)
        self.url = websocket_url(client.base_url)
        self._lock = threading.Lock()
        self._listeners: dict[int, tuple[str, bool, Listener]] = {}
        self._handles = count(1)
        self._watched: set[str] = set()
        self._recent: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._pins: dict[int, float] = {}
        # Followed tasks: their terminal event once it came (None until then), oldest first.
        self._followed: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self._followed_bytes = 0
        # Submits sent on the socket, by request id, until their answer (or the connection) ends.
        self._submits: dict[int, Future[dict[str, Any] | None]] = {}
        self._submit_ids = count(1)
        #: Submits the service answered on the socket (diagnostics: the rest went over HTTP).
        self.submits_answered = 0
        self._generation = 0
        self._connected = threading.Event()
        self._closed = False
        self.last_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._conn: WebSocketClientConnection | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed" if self._closed else "connecting"
        return f"<fx EventStream {self.url} {state}>"

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the reader thread (idempotent)."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._main, name="fx-events", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Close the WebSocket and stop the thread (waits for it unless called from it)."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._request_stop)
            except RuntimeError:
                pass  # the loop already finished
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def client(self) -> Client:
        """The client this stream belongs to."""
        client = self._client()
        if client is None:
            raise FxError("the client of this event stream is gone")
        return client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int | None:
        """Number of the current connection (1, 2, ... per reconnect); None while disconnected.

        A caller that saw the same number before and after an operation knows no event of it
        was lost to a reconnect.
        """
        return self._generation if self._connected.is_set() else None

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until the WebSocket is open; False on timeout."""
        return self._connected.wait(timeout)

    # --- listeners and interest ----------------------------------------------------------------
    def add_listener(self, callback: Listener, kind: str = "tasks", *, batch: bool = False) -> int:
        """Call ``callback(event)`` for each event of ``kind`` (``tasks`` or ``endpoints``);
        returns a handle for :meth:`remove_listener`.

        With ``batch=True`` the callback gets the list of events of one message instead (the
        service coalesces them): one call per message, for listeners that take a lock.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not callable(callback):
            raise TypeError("callback must be callable")
        with self._lock:
            handle = next(self._handles)
            self._listeners[handle] = (kind, batch, callback)
        return handle

    def remove_listener(self, handle: int) -> None:
        """Stop calling a listener (unknown handles are ignored)."""
        with self._lock:
            self._listeners.pop(handle, None)

    def watch(self, task_ids: Iterable[str]) -> None:
        """Tasks someone waits on: re-asked after a reconnect until their terminal event."""
        with self._lock:
            self._watched.update(task_ids)

    def unwatch(self, task_ids: Iterable[str]) -> None:
        with self._lock:
            self._watched.difference_update(task_ids)

    @contextmanager
    def expecting(self) -> Iterator[Callable[[Iterable[str]], None]]:
        """Keep terminal events of unwatched tasks while the block runs (a submit in flight).

        Yields ``follow(task_ids)``: call it with the ids the submit returned, inside the block,
        to follow those tasks until they are claimed (see the module docstring). It does
        nothing if the connection changed since the block began: events may have been missed.
        """
        token = object()
        with self._lock:
            self._pins[id(token)] = time.monotonic()
            generation = self.generation

        def follow(task_ids: Iterable[str]) -> None:
            self._follow(task_ids, generation)

        try:
            yield follow
        finally:
            with self._lock:
                del self._pins[id(token)]
                self._evict()

    def claim(self, task_id: str) -> tuple[bool, dict[str, Any] | None]:
        """``(followed, event)`` for a task someone starts waiting on (and forget it here).

        ``event`` is its terminal event if that already arrived; ``followed`` says whether
        every event of the task since its submit reached this stream, so that no event means
        it has not ended yet. When not followed, only the service can tell.
        """
        with self._lock:
            entry = self._recent.pop(task_id, None)
            if task_id in self._followed:
                event = self._followed.pop(task_id)
                if event is not None:
                    self._followed_bytes -= _inline_bytes(event)
                return True, event if entry is None else entry[1]
        return entry is not None, entry[1] if entry is not None else None

    def _follow(self, task_ids: Iterable[str], generation: int | None) -> None:
        with self._lock:
            if generation is None or generation != self.generation:
                return
            followed, recent = self._followed, self._recent
            for task_id in task_ids:
                entry = recent.pop(task_id, None)
                event = entry[1] if entry is not None else None
                followed[task_id] = event
                if event is not None:
                    self._followed_bytes += _inline_bytes(event)
            self._trim_followed()

    def _trim_followed(self) -> None:
        """Forget the oldest followed tasks beyond the bounds (lock held)."""
        followed = self._followed
        while len(followed) > FOLLOW_MAX_TASKS or self._followed_bytes > FOLLOW_MAX_BYTES:
            _, event = followed.popitem(last=False)
            if event is not None:
                self._followed_bytes -= _inline_bytes(event)

    def _forget_unended(self) -> None:
        """After a disconnect: events of followed tasks may be lost; keep only the ends."""
        with self._lock:
            self._followed = OrderedDict(
                (task_id, event) for task_id, event in self._followed.items() if event is not None
            )

    def _evict(self) -> None:
        """Drop kept events older than every submit still in flight (lock held)."""
        if not self._pins:
            self._recent.clear()
            return
        oldest = min(self._pins.values())
        while self._recent:
            task_id, (received, _) = next(iter(self._recent.items()))
            if received >= oldest:
                break
            del self._recent[task_id]

    # --- submits -------------------------------------------------------------------------------
    def submit(self, body: bytes, timeout: float | None) -> dict[str, Any] | None:
        """Send a ``POST submit`` body on the socket; the service's answer (``task_ids``...),
        or None when it did not go this way: not connected, refused, the connection lost, no
        answer within ``timeout``. The caller then sends it over HTTP (where a refusal is
        raised as usual); a submit lost with its connection may thus be stored twice, as an
        HTTP request retried after a reset can (delivery is at least once)."""
        with self._lock:
            loop, conn = self._loop, self._conn
            if loop is None or conn is None or not self._connected.is_set():
                return None
            request_id = next(self._submit_ids)
            answer: Future[dict[str, Any] | None] = Future()
            self._submits[request_id] = answer
        message = b'{"type":"submit","id":%d,"body":%b}' % (request_id, body)
        try:
            loop.call_soon_threadsafe(self._send_submit, conn, request_id, message)
            return answer.result(timeout)
        except (RuntimeError, TimeoutError):  # the loop is gone, or no answer in time
            return None
        finally:
            with self._lock:
                self._submits.pop(request_id, None)

    def _send_submit(
        self, conn: WebSocketClientConnection, request_id: int, message: bytes
    ) -> None:
        """On the loop: write a submit, unless its connection ended meanwhile."""
        if conn is not self._conn:
            self._answer_submit(request_id, None)
            return
        try:
            conn.write_message(message, binary=True)
        except WebSocketClosedError:
            self._answer_submit(request_id, None)

    def _answer_submit(self, request_id: Any, answer: dict[str, Any] | None) -> None:
        with self._lock:
            waiting = self._submits.pop(request_id, None) if type(request_id) is int else None
        if waiting is not None and not waiting.done():
            if answer is not None:
                self.submits_answered += 1
            waiting.set_result(answer)

    def _end_submits(self) -> None:
        """The connection ended: submits still unanswered go over HTTP."""
        with self._lock:
            ids = list(self._submits)
        for request_id in ids:
            self._answer_submit(request_id, None)

    # --- dispatch ------------------------------------------------------------------------------
    def dispatch_tasks(self, events: list[dict[str, Any]]) -> None:
        """Decode and deliver task events (from the socket or from a resync)."""
        for event in events:
            if "result" in event or "exception" in event:
                decode_payload_fields(event)
        now = time.monotonic()
        with self._lock:
            keep = bool(self._pins)
            watched, followed = self._watched, self._followed
            for event in events:
                if event.get("status") in TaskState.TERMINAL:
                    task_id = event.get("task_id")
                    if task_id in watched:
                        watched.discard(task_id)
                    elif task_id in followed:
                        if followed[task_id] is None:
                            followed[task_id] = event
                            self._followed_bytes += _inline_bytes(event)
                    elif keep and isinstance(task_id, str):
                        self._recent[task_id] = (now, event)
            if self._followed_bytes > FOLLOW_MAX_BYTES:
                self._trim_followed()
            listeners = [(b, cb) for kind, b, cb in self._listeners.values() if kind == "tasks"]
        self._deliver(listeners, events)

    def dispatch_endpoints(self, endpoints: list[dict[str, Any]]) -> None:
        """Deliver endpoint status events."""
        with self._lock:
            listeners = [(b, cb) for kind, b, cb in self._listeners.values() if kind == "endpoints"]
        self._deliver(listeners, endpoints)

    @staticmethod
    def _deliver(listeners: list[tuple[bool, Listener]], events: list[dict[str, Any]]) -> None:
        for batch, callback in listeners:
            for item in (events,) if batch else events:
                try:
                    callback(item)
                except Exception:
                    log.exception("fx event listener %r failed", callback)

    def resync(self, task_ids: Iterable[str]) -> list[str]:
        """Ask ``batch_status`` for ``task_ids`` and dispatch the answers as events (on this
        thread). Returns the ids the service does not know."""
        ids = list(task_ids)
        if not ids:
            return []
        answer = self.client.batch_status(ids)
        records = answer["results"]
        self.dispatch_tasks([event_from_task(records[t]) for t in ids if t in records])
        return list(answer["unknown"])

    def _resync_watched(self) -> None:
        with self._lock:
            ids = list(self._watched)
        try:
            self.resync(ids)
        except Exception as e:  # noqa: BLE001 - a background thread; any failure is retried
            # The next connection tries again; meanwhile nothing is lost, only late.
            log.debug("fx event stream: resync of %d tasks failed: %s", len(ids), e)

    # --- the reader thread ---------------------------------------------------------------------
    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        with self._lock:
            self._loop = loop
            closed = self._closed
        try:
            if not closed:
                loop.run_until_complete(self._run())
        finally:
            self._connected.clear()
            with self._lock:
                self._loop = None
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._conn is not None:
            self._conn.close()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        if self._closed:
            return
        backoff = BACKOFF_FIRST
        warned = False
        while not self._stop.is_set():
            if self._closed or self._client() is None:
                return  # closed, or its client is gone: nobody is left to reconnect for
            try:
                conn = await websocket_connect(self._request(), **_CONNECT_OPTIONS)
            except Exception as e:  # noqa: BLE001 - whatever broke, the answer is to retry
                if self._closed or self._stop.is_set():
                    return
                self.last_error = e
                # Logged, never printed: a script whose service went away first (its own
                # teardown) gets one warning, and none once it closed its client.
                level = logging.DEBUG if warned else logging.WARNING
                log.log(level, "fx event stream: cannot connect to %s (%s); retrying", self.url, e)
                warned = True
                await self._sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff, warned = BACKOFF_FIRST, False
            await self._read(conn)

    async def _read(self, conn: WebSocketClientConnection) -> None:
        # A submit is one small frame that waits for its answer: Nagle's algorithm would hold
        # it back for the previous frame's (delayed) ACK.
        if conn.protocol is not None:
            conn.protocol.set_nodelay(True)
        self._conn = conn
        self._generation += 1
        self._connected.set()
        if self._stop is not None and self._stop.is_set():
            conn.close()
        # Events sent while we were away are gone: ask for what is still awaited.
        threading.Thread(target=self._resync_watched, name="fx-resync", daemon=True).start()
        try:
            while True:
                message = await conn.read_message()
                if message is None:
                    break
                self._handle(message)
        finally:
            self._connected.clear()
            self._forget_unended()
            self._conn = None
            conn.close()
            self._end_submits()
        if conn.close_code is not None and conn.close_code != 1000:
            log.debug("fx event stream closed: %s %s", conn.close_code, conn.close_reason)

    def _handle(self, message: str | bytes) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            log.warning("fx event stream: dropped a message that is not JSON")
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "tasks" and isinstance(data.get("tasks"), list):
            self.dispatch_tasks([e for e in data["tasks"] if isinstance(e, dict)])
        elif kind == "endpoints" and isinstance(data.get("endpoints"), list):
            self.dispatch_endpoints([e for e in data["endpoints"] if isinstance(e, dict)])
        elif kind == "submitted":
            self._answer_submit(data.get("id"), data)
        elif kind == "submit_error":
            log.debug("fx event stream: a submit was refused on the socket: %s", data)
            self._answer_submit(data.get("id"), None)

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _request(self) -> HTTPRequest:
        headers = {"X-FX-SDK-Version": __version__, "X-FX-Protocol": str(PROTOCOL_VERSION)}
        authorization = self.client.authorization_header()
        if authorization:
            headers["Authorization"] = authorization
        return HTTPRequest(
            self.url,
            headers=headers,
            connect_timeout=CONNECT_TIMEOUT,
            request_timeout=CONNECT_TIMEOUT,
        )


def _inline_bytes(event: dict[str, Any]) -> int:
    """Bytes an event's inline result or exception holds (what following it costs)."""
    payload = event.get("result", event.get("exception"))
    return len(payload) if isinstance(payload, (bytes, str)) else 0
