"""Per-user push of task and endpoint state changes over WebSockets.

Changes are coalesced per user — a task that went ``waiting-for-launch`` → ``running`` →
``success`` within one window is sent once, as ``success`` — and flushed as one JSON message per
user and window: ``{"type": "tasks", "tasks": [...]}`` and ``{"type": "endpoints",
"endpoints": [...]}``. The window is a throttle, not a delay: an idle hub flushes on the next
loop turn, a busy one at most once per ``flush_interval`` — except for terminal changes, which
a future is waiting for: they go out within a millisecond; and except for the ``waiting-for-ep``
events of a submission (:meth:`EventHub.tasks_submitted`), which nobody waits for: they wait
for the window, so that a task that ends within it costs its user one message, not two.
Terminal task events carry the result (or exception) payload inline, base64, when it is at most
``inline_limit`` bytes, so a waiting future completes without another request; a larger one is
announced by its size (``result_size`` / ``exception_size``), so that the future fetches the raw
bytes with ``GET tasks/{id}/result`` at once rather than first asking ``GET tasks/{id}`` where
they are.

A subscriber that cannot keep up is closed rather than buffered without bound (DESIGN.md
invariant 4); clients re-synchronise with ``POST batch_status`` when they reconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from fx_endpoint.protocol import TaskState

from .models import b64
from .records import Change

#: Least time between two flushes caused by terminal events (seconds).
URGENT_INTERVAL = 0.001


class Subscriber(Protocol):
    """What the hub needs of a connected client (the events WebSocket handler)."""

    owner: str

    def push(self, text: str) -> None:
        """Send one message; the subscriber closes itself if it falls too far behind."""

    def shutdown(self) -> None:
        """Close the connection: the service is stopping."""


class EventHub:
    """Subscribers by owner, and the coalescing buffers of what to tell them."""

    def __init__(self, log: logging.Logger, flush_interval: float, inline_limit: int) -> None:
        self.log = log
        self.flush_interval = flush_interval
        self.inline_limit = inline_limit
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._tasks: dict[str, dict[str, dict[str, Any]]] = {}
        self._endpoints: dict[str, dict[str, dict[str, Any]]] = {}
        self._handle: asyncio.Handle | asyncio.TimerHandle | None = None
        #: The pending flush only serves deferred events: any other one may bring it forward.
        self._deferred = False
        self._last_flush = 0.0
        self.messages_sent = 0
        self.events_sent = 0

    # -- subscribers --------------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> None:
        """Start sending ``subscriber.owner``'s events to ``subscriber``."""
        self._subscribers.setdefault(subscriber.owner, set()).add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop sending to ``subscriber`` (idempotent)."""
        subs = self._subscribers.get(subscriber.owner)
        if subs is not None:
            subs.discard(subscriber)
            if not subs:
                del self._subscribers[subscriber.owner]
                self._tasks.pop(subscriber.owner, None)
                self._endpoints.pop(subscriber.owner, None)

    def wants(self, owner: str) -> bool:
        """Whether anyone listens to ``owner``: callers skip building events otherwise."""
        return owner in self._subscribers

    @property
    def subscriber_count(self) -> int:
        """Connected subscribers, all users together."""
        return sum(len(s) for s in self._subscribers.values())

    def close(self) -> None:
        """Close every subscriber (service shutdown)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                sub.shutdown()
        self._subscribers.clear()

    # -- publishing ---------------------------------------------------------------------------

    def tasks_submitted(self, owner: str, tasks: Iterable[tuple[str, str]], ts: float) -> None:
        """Queue the ``waiting-for-ep`` events of a submission's ``(task_id, endpoint_id)``.

        Nobody waits for them: they wait for the throttle window even when idle, so that a
        task that ends within it is announced once, as ended. Built here directly, as a
        submission may hold tens of thousands of tasks.
        """
        if owner not in self._subscribers:
            return
        pending = self._tasks.setdefault(owner, {})
        waiting = TaskState.WAITING_FOR_EP
        for task_id, endpoint_id in tasks:
            pending[task_id] = {
                "task_id": task_id,
                "status": waiting,
                "ts": ts,
                "endpoint_id": endpoint_id,
            }
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_later(self.flush_interval, self._flush)
            self._deferred = True

    def task_changes(self, changes: list[Change]) -> None:
        """Queue state changes without payloads (acknowledged, running, requeued)."""
        for change in changes:
            if change.owner in self._subscribers:
                self._queue_task(change.owner, _event(change))

    def task_result(
        self,
        change: Change,
        data: Any,
        exception_text: str | None,
        stdout: str | None,
        stderr: str | None,
    ) -> None:
        """Queue a terminal change, with its payload inline when small enough, else its size."""
        if change.owner not in self._subscribers:
            return
        event = _event(change)
        size = 0 if data is None else memoryview(data).nbytes
        if size:
            key = "result" if change.status == TaskState.SUCCESS else "exception"
            if size <= self.inline_limit:
                event[key] = b64(data)
            else:
                event[key + "_size"] = size
        if exception_text:
            event["exception_text"] = exception_text
        if stdout:
            event["stdout"] = stdout
        if stderr:
            event["stderr"] = stderr
        self._queue_task(change.owner, event)

    def endpoint_changes(self, owner: str, statuses: list[dict[str, Any]]) -> None:
        """Queue EndpointStatus documents for ``owner``."""
        if owner not in self._subscribers:
            return
        pending = self._endpoints.setdefault(owner, {})
        for status in statuses:
            pending[status["endpoint_id"]] = status
        self._schedule()

    def _queue_task(self, owner: str, event: dict[str, Any]) -> None:
        self._tasks.setdefault(owner, {})[event["task_id"]] = event
        urgent = event["status"] in TaskState.TERMINAL
        if (
            self._handle is None
            or self._deferred
            or (urgent and isinstance(self._handle, asyncio.TimerHandle))
        ):
            self._schedule(urgent=urgent)

    # -- flushing -----------------------------------------------------------------------------

    def _schedule(self, urgent: bool = False) -> None:
        """Flush on the next loop turn, or at the end of the throttle window.

        A terminal event is what a waiting future needs, so it does not wait for the window,
        only for :data:`URGENT_INTERVAL` since the last flush: idle, it goes out on the next
        loop turn; under load, terminal events still share messages.
        """
        loop = asyncio.get_running_loop()
        if self._handle is not None:
            if not (self._deferred or (urgent and isinstance(self._handle, asyncio.TimerHandle))):
                return
            self._handle.cancel()
        self._deferred = False
        interval = min(URGENT_INTERVAL, self.flush_interval) if urgent else self.flush_interval
        delay = self._last_flush + interval - time.monotonic()
        if delay <= 0:
            self._handle = loop.call_soon(self._flush)
        else:
            self._handle = loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._handle = None
        self._deferred = False
        self._last_flush = time.monotonic()
        tasks, self._tasks = self._tasks, {}
        endpoints, self._endpoints = self._endpoints, {}
        for owner, events in tasks.items():
            self._send(owner, {"type": "tasks", "tasks": list(events.values())}, len(events))
        for owner, statuses in endpoints.items():
            self._send(owner, {"type": "endpoints", "endpoints": list(statuses.values())}, 0)

    def _send(self, owner: str, message: dict[str, Any], n_events: int) -> None:
        subs = self._subscribers.get(owner)
        if not subs:
            return
        text = json.dumps(message, separators=(",", ":"))
        for sub in list(subs):
            sub.push(text)
            self.messages_sent += 1
        self.events_sent += n_events


def _event(change: Change) -> dict[str, Any]:
    return {
        "task_id": change.task_id,
        "status": change.status,
        "ts": change.ts,
        "endpoint_id": change.endpoint_id,
    }
