"""``EventStream``: the service's task-state events, over one WebSocket per client.

Futures complete from these events instead of polling: the service pushes every state change of
the user's tasks (coalesced every few milliseconds, results inline when small), and a daemon
thread here reads them and hands each to the listeners (the Executors, widgets).

Why Tornado: it is already required (Jupyter Server runs on it), and its asyncio client gives us
connect and ping timeouts, backoff sleeps that a ``close()`` interrupts at once, and a clean
shutdown, all in one small loop owned by the stream's thread. (``websocket-client`` would be a
blocking ``recv`` that a shutdown can only break by closing the socket under it.)

Events are not replayed by the service, so two gaps are closed here:

* after every (re)connect, ``batch_status`` is asked for the tasks someone still waits on
  (:meth:`watch`), and the answers are dispatched like events;
* while a submit is in flight (:meth:`expecting`), terminal events of tasks nobody watches yet are
  kept, so a future registered right after its submit returns finds its task's end
  (:meth:`take_recent`) even when the task finished first.
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
from contextlib import contextmanager
from itertools import count
from typing import TYPE_CHECKING, Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

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
    event: dict[str, Any] = {
        "task_id": record.get("task_id"),
        "status": record.get("status"),
        "ts": record.get("completion_t"),
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
    def expecting(self) -> Iterator[None]:
        """Keep terminal events of unwatched tasks while the block runs (a submit in flight)."""
        token = object()
        with self._lock:
            self._pins[id(token)] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                del self._pins[id(token)]
                self._evict()

    def take_recent(self, task_id: str) -> dict[str, Any] | None:
        """The terminal event of ``task_id`` if it arrived while unwatched (and forget it)."""
        with self._lock:
            entry = self._recent.pop(task_id, None)
        return entry[1] if entry is not None else None

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

    # --- dispatch ------------------------------------------------------------------------------
    def dispatch_tasks(self, events: list[dict[str, Any]]) -> None:
        """Decode and deliver task events (from the socket or from a resync)."""
        for event in events:
            if "result" in event or "exception" in event:
                decode_payload_fields(event)
        now = time.monotonic()
        with self._lock:
            keep = bool(self._pins)
            watched = self._watched
            for event in events:
                if event.get("status") in TaskState.TERMINAL:
                    task_id = event.get("task_id")
                    if task_id in watched:
                        watched.discard(task_id)
                    elif keep and isinstance(task_id, str):
                        self._recent[task_id] = (now, event)
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
            self._conn = None
            conn.close()
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
