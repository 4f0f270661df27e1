"""Dispatch: tasks to connected endpoints by credit, their reports back into the store.

One :class:`Link` per live endpoint connection (made by ``hello``, ended by ``goodbye``, by a
missed heartbeat, by a new ``hello`` or by deletion). A link sends tasks only while it has
credit, in submission order:

1. the **backlog** — tasks already ``waiting-for-ep`` in the store when the link became ready
   (``seq`` up to ``until``), read oldest first in batches, walking a ``seq`` cursor;
2. then **hot** tasks — submitted while the link is up, handed over in memory after their commit
   so the common case never reads a payload back from the store.

The cursor and the hot queue make it impossible to send a task twice on one link; the set of
tasks in flight (sent, not yet acknowledged by a status report or a result) is kept as well, as a
guard and for the endpoint's status. Tasks are never marked as sent in the store: a link that
ends returns its endpoint's unfinished tasks to ``waiting-for-ep`` and the next link starts from
the store again (at-least-once delivery, DESIGN.md invariant 2).

Reports are written through the store's group-commit writer; only after the commit does the
service acknowledge results to the endpoint and push events to the user (invariant 2 again).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fx_endpoint.protocol import (
    CANCEL,
    PARTS_KEY,
    REJECT,
    RESULTS_ACK,
    TASKS,
    WELCOME,
    add_payload,
)
from fx_endpoint.version import PROTOCOL_VERSION, __version__

from .events import EventHub
from .functions import FunctionRegistry
from .models import endpoint_status
from .records import Change, EndpointRecord, Reports, ResultIn
from .store import TaskStore

if TYPE_CHECKING:
    from .broker import Broker

#: Hot tasks a link keeps in memory while it has no credit; beyond either bound it drops them
#: and reads them back from the store when credit comes (memory stays bounded).
HOT_LIMIT_TASKS = 50_000
HOT_LIMIT_BYTES = 256 * 1024 * 1024
#: Payload bytes per ``tasks`` message (one task always fits, however large).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class OutTask:
    """A task on its way to an endpoint."""

    seq: int
    task_id: str
    function_id: str
    payload: bytes
    walltime: float | None
    retries: int


class Link:
    """A live connection of one endpoint: its credit, its queues, its liveness."""

    def __init__(
        self,
        record: EndpointRecord,
        identity: bytes,
        hello: dict[str, Any],
        credit: int,
        heartbeat_period: float,
        heartbeat_threshold: float,
    ) -> None:
        self.record = record
        self.identity = identity
        self.hello = hello
        #: The endpoint takes task arguments in parts (it said so in its hello).
        self.takes_parts = hello.get(PARTS_KEY) is True
        self.credit = credit
        self.heartbeat_period = heartbeat_period
        self.heartbeat_threshold = heartbeat_threshold
        self.connected_at = time.time()
        self.last_seen = time.monotonic()
        self.last_heartbeat = self.connected_at
        self.status: dict[str, Any] = {}
        self.inflight: set[str] = set()
        self.hot: OrderedDict[str, OutTask] = OrderedDict()
        self.hot_bytes = 0
        self.cursor = 0  # highest backlog seq read
        self.until = 0  # the backlog is (cursor, until]
        self.backlog_done = False
        self.ready = False  # the backlog window is known (after the hello requeue committed)
        self.closed = False
        self.pump: asyncio.Task[None] | None = None
        self.tasks_sent = 0
        # Reports waiting for the write under way (see Dispatcher._store_reports).
        self.pending_updates: list[tuple[str, str, float]] = []
        self.pending_results: list[ResultIn] = []
        self.writing = False
        self.write_scheduled = False

    @property
    def endpoint_id(self) -> str:
        return self.record.endpoint_id


class Dispatcher:
    """Links of connected endpoints; moves tasks out and reports in."""

    def __init__(
        self,
        store: TaskStore,
        functions: FunctionRegistry,
        events: EventHub,
        log: logging.Logger,
        *,
        batch_size: int,
        heartbeat_period: float,
        heartbeat_threshold: float,
    ) -> None:
        self.store = store
        self.functions = functions
        self.events = events
        self.log = log
        self.batch_size = batch_size
        self.heartbeat_period = heartbeat_period
        self.heartbeat_threshold = heartbeat_threshold
        self.broker: Broker | None = None
        self.links: dict[str, Link] = {}
        self._by_identity: dict[bytes, Link] = {}
        self._background: set[asyncio.Future[Any]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self._dirty: dict[Link, None] = {}  # links to send to on the next loop turn, in order
        self._flush: asyncio.Handle | None = None
        #: Per endpoint id: malformed_messages, duplicate_results, unknown_results.
        self.per_endpoint: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.totals: Counter[str] = Counter(
            {"tasks_sent": 0, "duplicate_results": 0, "unknown_results": 0}
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, broker: Broker) -> None:
        """Send through ``broker`` and start watching heartbeats."""
        self.broker = broker
        self._monitor = asyncio.ensure_future(self._watch_heartbeats())
        self._monitor.add_done_callback(self._done)

    async def stop(self) -> None:
        """Stop watching and wait for report handling already under way."""
        if self._monitor is not None:
            self._monitor.cancel()
        for link in list(self.links.values()):
            self._drop(link)
        pending = [f for f in self._background if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=10)

    # -- sessions -----------------------------------------------------------------------------

    def session(self, identity: bytes, record: EndpointRecord) -> Link | None:
        """The live link of this connection, or None when it has not said hello (or was
        replaced). Any message on a live link proves the endpoint alive."""
        link = self._by_identity.get(identity)
        if link is None or link.closed or link.endpoint_id != record.endpoint_id:
            return None
        link.last_seen = time.monotonic()
        return link

    def hello(
        self, identity: bytes, record: EndpointRecord, hello: dict[str, Any], credit: int
    ) -> None:
        """Open a link for a connection that said a valid hello; a previous one is replaced."""
        old = self.links.get(record.endpoint_id)
        if old is not None:
            self.log.info("fx endpoint %s (%s) reconnected", record.name, record.endpoint_id)
            self._drop(old)
        period = float(hello.get("heartbeat_period") or self.heartbeat_period)
        threshold = float(hello.get("heartbeat_threshold") or self.heartbeat_threshold)
        link = Link(record, identity, hello, credit, period, threshold)
        self.links[record.endpoint_id] = link
        self._by_identity[identity] = link
        self._send(
            link,
            WELCOME,
            {
                "fx_version": __version__,
                "protocol": PROTOCOL_VERSION,
                "heartbeat_period": period,
                "heartbeat_threshold": threshold,
                PARTS_KEY: True,
            },
        )
        record.last_heartbeat = link.connected_at
        record.info = {**record.info, "hello": hello}
        self._watch(self.store.endpoint_seen(record.endpoint_id, link.connected_at, record.info))
        self.log.info(
            "fx endpoint %s (%s) online from %s, credit %d",
            record.name,
            record.endpoint_id,
            hello.get("hostname"),
            credit,
        )
        # What an earlier connection had accepted goes back to the queue and is sent again.
        self._spawn(self._open(link, self.store.requeue(record.endpoint_id)))

    async def _open(self, link: Link, requeued: Awaitable[list[Change]]) -> None:
        changes = await requeued
        self.events.task_changes(changes)
        if link.closed:
            return
        link.until = self.store.committed_seq
        link.ready = True
        self._kick(link)
        await self.publish_endpoint(link.record)

    def heartbeat(self, link: Link, status: dict[str, Any]) -> None:
        """Record an endpoint's heartbeat and its engine status."""
        link.status = status
        link.last_heartbeat = time.time()
        record = link.record
        record.last_heartbeat = link.last_heartbeat
        record.info = {**record.info, "status": status}
        self._watch(self.store.endpoint_seen(record.endpoint_id, link.last_heartbeat, record.info))
        self._spawn(self.publish_endpoint(record))

    def add_credit(self, link: Link, credit: int) -> None:
        """The endpoint can take ``credit`` more tasks."""
        if credit:
            link.credit += credit
            self._kick(link)

    def disconnect(self, link: Link, why: str) -> None:
        """End a link now (goodbye, a rejected hello): its unfinished tasks go back to the queue."""
        self._offline(link, why)

    def endpoint_gone(self, endpoint_id: str, reason: str, requeue: bool) -> None:
        """Refuse the live connection of a deleted or re-keyed endpoint."""
        link = self.links.get(endpoint_id)
        if link is None:
            return
        self._send(link, REJECT, {"reason": reason})
        if requeue:
            self._offline(link, reason)
        else:
            self._drop(link)

    def _offline(self, link: Link, why: str) -> None:
        self.log.info("fx endpoint %s (%s) offline: %s", link.record.name, link.endpoint_id, why)
        self._drop(link)
        self._spawn(self._requeue(link.record))

    async def _requeue(self, record: EndpointRecord) -> None:
        self.events.task_changes(await self.store.requeue(record.endpoint_id))
        await self.publish_endpoint(record)

    def _drop(self, link: Link) -> None:
        link.closed = True
        if self.links.get(link.endpoint_id) is link:
            del self.links[link.endpoint_id]
        if self._by_identity.get(link.identity) is link:
            del self._by_identity[link.identity]
        link.hot.clear()

    async def _watch_heartbeats(self) -> None:
        while True:
            thresholds = [link.heartbeat_threshold for link in self.links.values()]
            await asyncio.sleep(max(0.05, min([1.0, *(t / 4 for t in thresholds)])))
            now = time.monotonic()
            for link in list(self.links.values()):
                if now - link.last_seen > link.heartbeat_threshold:
                    self._offline(link, f"no message for {link.heartbeat_threshold:g} s")

    # -- reports from endpoints ---------------------------------------------------------------

    def task_status(self, link: Link, updates: list[tuple[str, str, float]]) -> None:
        """State changes reported by the endpoint; the first one acknowledges receipt."""
        link.pending_updates.extend(updates)
        self._schedule_reports(link)

    def results(self, link: Link, batch: list[ResultIn]) -> None:
        """Results: stored (first wins), then acknowledged, then pushed to their users."""
        link.pending_results.extend(batch)
        self._schedule_reports(link)

    def _schedule_reports(self, link: Link) -> None:
        """Write on the next loop turn, so that the reports the broker takes in during this one
        (a ``task_status`` and a ``results`` message sent together) go in one operation."""
        if not link.write_scheduled:
            link.write_scheduled = True
            asyncio.get_running_loop().call_soon(self._store_reports, link)

    def _store_reports(self, link: Link) -> None:
        """Write what the endpoint reported, one operation at a time per link.

        Reports that arrive while a write is under way wait for it and then go together: an
        endpoint that sends a message per result still costs one store operation per commit,
        not one per message.
        """
        link.write_scheduled = False
        if link.writing or not (link.pending_updates or link.pending_results):
            return
        updates, batch = link.pending_updates, link.pending_results
        link.pending_updates, link.pending_results = [], []
        link.writing = True
        stored = self.store.record_reports(link.endpoint_id, updates, batch)
        self._spawn(self._reports_stored(link, updates, batch, stored))

    async def _reports_stored(
        self,
        link: Link,
        updates: list[tuple[str, str, float]],
        batch: list[ResultIn],
        stored: Awaitable[Reports],
    ) -> None:
        try:
            outcome = await stored
        finally:
            link.writing = False
            self._store_reports(link)
        link.inflight.difference_update(u[0] for u in updates)
        if batch:
            ids = [r.task_id for r in batch]
            link.inflight.difference_update(ids)
            self._send(link, RESULTS_ACK, {"task_ids": ids}, even_if_closed=True)
        self._count_dropped(link, "duplicate_results", outcome.duplicates)
        self._count_dropped(link, "unknown_results", outcome.unknown)
        self.events.task_changes(outcome.changes)
        recorded = {c.task_id: c for c in outcome.recorded}
        for r in batch:
            change = recorded.pop(r.task_id, None)
            if change is not None:
                self.events.task_result(change, r.data, r.exception_text, r.stdout, r.stderr)

    def _count_dropped(self, link: Link, key: str, task_ids: list[str]) -> None:
        if not task_ids:
            return
        self.per_endpoint[link.endpoint_id][key] += len(task_ids)
        self.totals[key] += len(task_ids)
        self.log.info(
            "fx endpoint %s: dropped %d %s (%s...)",
            link.endpoint_id,
            len(task_ids),
            key.replace("_", " "),
            task_ids[0],
        )

    # -- tasks out ----------------------------------------------------------------------------

    def tasks_added(self, endpoint_id: str, tasks: list[OutTask]) -> None:
        """Committed tasks for ``endpoint_id``, in ``seq`` order: queue them on its link."""
        link = self.links.get(endpoint_id)
        if link is None or not link.ready:
            return  # the link's backlog read will find them
        for task in tasks:
            if task.seq > link.until:
                link.hot[task.task_id] = task
                link.hot_bytes += len(task.payload)
        if len(link.hot) > HOT_LIMIT_TASKS or link.hot_bytes > HOT_LIMIT_BYTES:
            self._spill(link)
        if link.credit > 0 and link.pump is None:
            # Out right away, before the submitter gets its answer: the task's way to the
            # endpoint is what its result waits for, and this submission is one batch already.
            self._dirty.pop(link, None)
            self._send_link(link)

    def _spill(self, link: Link) -> None:
        """Forget the hot queue and widen the backlog window over it."""
        if link.backlog_done and link.hot:
            # Hot tasks go out in seq order: all below the oldest one still queued were sent.
            first_unsent = next(iter(link.hot.values())).seq
            link.cursor = max(link.cursor, first_unsent - 1)
        link.hot.clear()
        link.hot_bytes = 0
        link.until = self.store.committed_seq
        link.backlog_done = link.cursor >= link.until

    def cancelled(self, endpoint_id: str, task_ids: list[str]) -> None:
        """Tasks were cancelled: unqueue them, and tell the endpoint about any it may hold."""
        link = self.links.get(endpoint_id)
        if link is None:
            return
        maybe_sent = []
        for task_id in task_ids:
            task = link.hot.pop(task_id, None)
            if task is None:
                maybe_sent.append(task_id)
            else:
                link.hot_bytes -= len(task.payload)
        if maybe_sent:
            self._send(link, CANCEL, {"task_ids": maybe_sent})

    def _kick(self, link: Link) -> None:
        """Something changed (credit, new tasks, ready): send on the next loop turn.

        Everything that changes within one loop turn goes out together: one ``tasks`` message
        per endpoint and turn.
        """
        if link.ready and not link.closed and link.credit > 0 and link.pump is None:
            self._dirty[link] = None
            if self._flush is None:
                self._flush = asyncio.get_running_loop().call_soon(self._send_ready)

    def _send_ready(self) -> None:
        """Send what needs no waiting (hot tasks whose functions are cached) right here; hand
        the rest (backlog reads, uncached functions) to the link's asynchronous pump."""
        self._flush = None
        dirty, self._dirty = self._dirty, {}
        for link in dirty:
            self._send_link(link)

    def _send_link(self, link: Link) -> None:
        """:meth:`_send_ready` for one link."""
        if link.closed or link.pump is not None:
            return
        while link.credit > 0 and link.backlog_done and link.hot:
            batch = list(itertools.islice(link.hot.values(), min(link.credit, self.batch_size)))
            payloads = self.functions.cached_payloads({t.function_id for t in batch})
            if payloads is None:
                break
            for task in batch:
                del link.hot[task.task_id]
                link.hot_bytes -= len(task.payload)
            self._emit(link, batch, payloads)
        if link.credit > 0 and (link.hot or not link.backlog_done):
            link.pump = asyncio.ensure_future(self._pump(link))

    async def _pump(self, link: Link) -> None:
        try:
            while not link.closed and link.credit > 0:
                batch = await self._next_batch(link, min(link.credit, self.batch_size))
                if not batch or link.closed:
                    break
                fids = {t.function_id for t in batch}
                payloads = self.functions.cached_payloads(fids)
                if payloads is None:
                    records = await self.functions.with_payloads(fids)
                    payloads = {f: r.payload for f, r in records.items() if r.payload is not None}
                if link.closed:
                    break  # still waiting-for-ep in the store: the next link reads them
                self._emit(link, batch, payloads)
        except Exception:
            self.log.exception("fx: sending tasks to endpoint %s failed", link.endpoint_id)
        finally:
            link.pump = None

    async def _next_batch(self, link: Link, limit: int) -> list[OutTask]:
        while not link.backlog_done:
            until = link.until
            rows = await self.store.fetch_backlog(link.endpoint_id, link.cursor, until, limit)
            if link.closed:
                return []
            link.cursor = until if len(rows) < limit else max(link.cursor, rows[-1][0])
            link.backlog_done = link.cursor >= link.until
            batch = [OutTask(*row) for row in rows if row[1] not in link.inflight]
            if batch:
                return batch
        batch = []
        while link.hot and len(batch) < limit:
            task = link.hot.popitem(last=False)[1]
            link.hot_bytes -= len(task.payload)
            batch.append(task)
        return batch

    def _emit(self, link: Link, batch: list[OutTask], payloads: dict[str, bytes]) -> None:
        """Send ``batch`` in ``tasks`` messages, each distinct function once per message."""
        headers: list[dict[str, Any]] = []
        frames: list[Any] = []
        fn_frame: dict[str, int] = {}
        size = 0
        sent = 0
        for task in batch:
            function = payloads.get(task.function_id)
            if function is None:  # functions are never deleted: a damaged store
                self.log.error(
                    "fx: task %s uses unknown function %s", task.task_id, task.function_id
                )
                continue
            grows = len(task.payload) + (0 if task.function_id in fn_frame else len(function))
            if headers and size + grows > MAX_MESSAGE_BYTES:
                self._send(link, TASKS, {"tasks": headers}, frames)
                headers, frames, fn_frame, size = [], [], {}, 0
            if task.function_id not in fn_frame:
                fn_frame[task.function_id] = len(frames)
                frames.append(function)
                size += len(function)
            header = {
                "task_id": task.task_id,
                "function_id": task.function_id,
                "function": fn_frame[task.function_id],
                "args": len(frames),
                "walltime": task.walltime,
                "retries": task.retries,
            }
            headers.append(add_payload(frames, header, task.payload, link.takes_parts))
            size += len(task.payload)
            link.inflight.add(task.task_id)
            sent += 1
        if headers:
            self._send(link, TASKS, {"tasks": headers}, frames)
        link.credit -= sent
        link.tasks_sent += sent
        self.totals["tasks_sent"] += sent

    # -- status -------------------------------------------------------------------------------

    def connection(self, endpoint_id: str) -> dict[str, Any] | None:
        """The live view of an endpoint's connection for EndpointStatus (None when offline)."""
        link = self.links.get(endpoint_id)
        if link is None:
            return None
        return {
            "hello": link.hello,
            "status": link.status,
            "last_heartbeat": link.last_heartbeat,
            "broker": {
                "connected_since": link.connected_at,
                "credit": link.credit,
                "in_flight": len(link.inflight),
                "queued_in_memory": len(link.hot),
                "tasks_sent": link.tasks_sent,
                "heartbeat_period": link.heartbeat_period,
                "heartbeat_threshold": link.heartbeat_threshold,
            },
        }

    def counters(self, endpoint_id: str) -> dict[str, int]:
        """Malformed messages, duplicate and unknown results of an endpoint since start."""
        counts = self.per_endpoint.get(endpoint_id, Counter())
        return {
            k: counts[k] for k in ("malformed_messages", "duplicate_results", "unknown_results")
        }

    async def statuses(self, records: list[EndpointRecord]) -> list[dict[str, Any]]:
        """EndpointStatus documents (with counts of unfinished tasks) for ``records``."""
        counts = await self.store.task_counts(
            endpoint_ids=[r.endpoint_id for r in records], active_only=True
        )
        return [
            endpoint_status(
                r,
                self.connection(r.endpoint_id),
                self.counters(r.endpoint_id),
                counts.get(r.endpoint_id, {}),
            )
            for r in records
        ]

    async def publish_endpoint(self, record: EndpointRecord) -> None:
        """Push an endpoint's status to its owner's subscribers."""
        if self.events.wants(record.owner):
            self.events.endpoint_changes(record.owner, await self.statuses([record]))

    # -- plumbing -----------------------------------------------------------------------------

    def _send(
        self,
        link: Link,
        msg_type: str,
        body: dict[str, Any],
        frames: list[Any] | None = None,
        even_if_closed: bool = False,
    ) -> None:
        if self.broker is not None and (even_if_closed or not link.closed):
            self.broker.send(link.identity, msg_type, body, frames or [])

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _watch(self, future: Awaitable[Any]) -> None:
        """Log the failure of a write nobody awaits."""
        fut = asyncio.ensure_future(future)
        self._background.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._background.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            self.log.error("fx dispatch: %s", fut.exception(), exc_info=fut.exception())
