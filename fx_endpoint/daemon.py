"""The endpoint daemon: one process, one thread, one ZeroMQ poll loop.

:class:`EndpointDaemon` connects *out* to the service's broker (a DEALER socket, CurveZMQ
client), says ``hello``, and after ``welcome`` takes tasks while it has credit, hands them to its
engine, and sends their states and results back. Each turn of the loop handles everything that
is ready and then flushes: a result leaves within the turn it arrived in, in one ``results``
message with every other result of the turn. State changes (``task_status``) and journal writes
are not on that path: they are held for :data:`REPORT_DELAY` and then go together, one journal
commit and one message. A quick task's states are thereby never sent (its result carries its
transitions), and a task that comes and goes within the delay never reaches the journal's disk.

Credit is incremental: ``hello`` grants the endpoint's free capacity (workers + prefetch, minus
the tasks it still holds), and every later message may grant ``credit: n`` more, one per task
finished (or received twice). The broker spends one per task it sends, so the endpoint never
holds more than its capacity.

Started by ``fx-endpoint start`` as ``python -m fx_endpoint.daemon DIR --ready-fd N --detach``:
it detaches, writes its pid file and reports ``ready <pid>`` or ``error: <reason>`` on the
readiness pipe, so a start that fails, fails in the foreground.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import protocol
from .config import ConfigError, EndpointConfig, load_config
from .engines import EngineError, create_engine
from .engines.base import Task, TaskOutcome, failed_outcome
from .errors import ResultTooLarge
from .journal import Journal
from .paths import EndpointDir, write_atomic
from .protocol import TaskState
from .registration import EndpointInfo
from .serialize import PYTHON_VERSION, serialize_exception
from .version import PROTOCOL_VERSION, __version__

log = logging.getLogger("fx_endpoint")

DEFAULT_STARTUP_TIMEOUT = 30.0
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5
#: Results resent per message after a reconnection.
RESEND_BATCH = 200
#: How long a clean stop waits for ``goodbye`` to leave.
GOODBYE_LINGER_MS = 1000
#: A result unacknowledged for this long is written to the journal (it lives in memory before).
STORE_RESULT_AFTER = 1.0
#: Bytes of unacknowledged results kept in memory at most; older ones go to the journal.
MAX_RESULT_BYTES_IN_MEMORY = 64 * 1024 * 1024
#: Longest a state change or a journal write waits to go out with later ones. Nobody waits on
#: them: the service's durability does not depend on the acknowledgement (it re-queues whatever
#: an endpoint that vanishes held, acknowledged or not), and the journal only spares a restarted
#: endpoint work. Sending each at once cost a message, a service commit, an event and a journal
#: commit per task on the path of every result.
REPORT_DELAY = 0.02

_MONITORED = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def _too_large(outcome: TaskOutcome, limit: int) -> TaskOutcome:
    """A result over ``max_result_size`` fails its task instead: sending it would swell the
    journal, the broker and the service's store (SQLite refuses blobs over 1 GB)."""
    error = ResultTooLarge(
        f"the task's result is {len(outcome.payload)} bytes, larger than this endpoint's "
        f"max_result_size of {limit} bytes; return less (or write it to shared storage)"
    )
    text = f"ResultTooLarge: {error}"
    return replace(
        outcome,
        status=TaskState.FAILED,
        payload=serialize_exception(error, text + "\n"),
        exception_text=text,
    )


class EndpointDaemon:
    """Serves one endpoint: the broker connection, the journal, the credit and an engine.

    Also the engine's :class:`~fx_endpoint.engines.base.EngineListener`.
    """

    def __init__(
        self,
        endpoint_dir: EndpointDir,
        config: EndpointConfig,
        info: EndpointInfo,
        *,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        self.dir = endpoint_dir
        self.config = config
        self.info = info
        self._startup_timeout = startup_timeout
        self._on_ready = on_ready
        self._context = zmq.Context()
        self._journal = Journal(endpoint_dir.journal_file)
        self._engine = create_engine(config, endpoint_dir, self)
        self._broker: zmq.Socket[Any] | None = None
        self._monitor: zmq.Socket[Any] | None = None
        self._poller = zmq.Poller()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

        self._welcomed = False
        #: The service takes results in parts (it said so in its welcome).
        self._service_takes_parts = False
        self._ready = False
        self._stopping = False
        self._exit_code = 0
        #: Tasks handed to the engine, with the time each entered waiting-for-launch (received).
        self._held: dict[str, float] = {}
        #: Held tasks a worker started, with the time it did.
        self._running: dict[str, float] = {}
        #: Held tasks that waited for a block of nodes, with the time they began to; they wait
        #: for nodes still while that time is not earlier than their ``_held`` time.
        self._nodes: dict[str, float] = {}
        #: Results the service has not acknowledged, in memory, oldest first (with the
        #: monotonic time each finished), and the ids of those stored in the journal instead.
        self._unacked: dict[str, tuple[dict[str, Any], Any, float]] = {}
        self._unacked_bytes = 0
        self._stored: set[str] = set()
        self._updates: list[list[Any]] = []
        #: Monotonic time of the oldest state change or journal write not flushed yet (0: none).
        self._deferred_since = 0.0
        self._results: list[tuple[dict[str, Any], Any]] = []
        self._grant = 0
        self._heartbeat_period = config.heartbeat_period
        self._next_heartbeat = 0.0
        self._last_heard = 0.0
        self._started = time.time()
        #: What the broker connection did so far, to explain a start that does not get through.
        self._seen: set[int] = set()
        self.counters = {"received": 0, "completed": 0, "duplicates": 0, "malformed": 0}

    # --- life cycle -------------------------------------------------------------------------

    @property
    def was_ready(self) -> bool:
        """Whether the daemon got to serve (so that its end is a stop, not a failed start)."""
        return self._ready

    def request_stop(self) -> None:
        """Ask the loop to stop (signal-safe: it only sets a flag and wakes the loop)."""
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def run(self) -> int:
        """Serve until stopped; return the process exit code (0 after a clean stop)."""
        try:
            self._startup()
            while not self._stopping:
                self._turn()
        except EngineError as e:
            self._fatal(str(e))
        finally:
            self._shutdown()
        return self._exit_code

    def _startup(self) -> None:
        self._engine.start()
        replay = self._journal.pending_tasks()
        self._stored.update(self._journal.stored_ids())
        self._journal.collect_garbage()
        if replay or self._stored:
            log.info(
                "journal: running %d unfinished task(s) again; %d result(s) to resend",
                len(replay),
                len(self._stored),
            )
        for task, received in replay:
            self._held[task.task_id] = received
        self._engine.submit([task for task, _ in replay])
        for item in self._engine.poll_items():
            self._poller.register(item, zmq.POLLIN)
        self._poller.register(self._wake_r.fileno(), zmq.POLLIN)
        self._connect()
        log.info(
            "endpoint %s (%s) connecting to %s",
            self.info.name,
            self.info.endpoint_id,
            self.info.broker_url,
        )

    def _connect(self) -> None:
        """(Re)create the broker socket. ZeroMQ reconnects it by itself after network trouble."""
        assert self.info.broker_url and self.info.server_key
        broker = self._context.socket(zmq.DEALER)
        broker.curve_serverkey = self.info.server_key.encode()
        broker.curve_publickey = self.info.public_key.encode()
        broker.curve_secretkey = self.info.secret_key.encode()
        broker.linger = 0
        broker.sndhwm = broker.rcvhwm = 0
        broker.reconnect_ivl = 100
        broker.reconnect_ivl_max = 5000
        # ZeroMQ-level heartbeats drop a dead TCP connection so that it reconnects.
        broker.heartbeat_ivl = int(self._heartbeat_period * 1000)
        broker.heartbeat_timeout = int(self.config.heartbeat_threshold * 1000)
        broker.heartbeat_ttl = int(self.config.heartbeat_threshold * 1000)
        self._monitor = broker.get_monitor_socket(_MONITORED)
        broker.connect(self.info.broker_url)
        self._broker = broker
        self._poller.register(broker, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def _disconnect(self) -> None:
        if self._broker is None:
            return
        self._poller.unregister(self._broker)
        assert self._monitor is not None
        self._poller.unregister(self._monitor)
        self._broker.disable_monitor()
        self._monitor.close(linger=0)
        self._broker.close()
        self._broker = self._monitor = None
        self._welcomed = False

    def _shutdown(self) -> None:
        try:
            self._engine.stop()
        except Exception:
            log.exception("stopping the engine failed")
        self._store_results(0.0)
        self._journal.close()
        if self._broker is not None:
            if self._welcomed:
                self._broker.linger = GOODBYE_LINGER_MS
                self._send(protocol.GOODBYE, {})
            self._disconnect()
        self._context.term()
        self._wake_r.close()
        self._wake_w.close()
        log.info("endpoint %s stopped", self.info.name)

    def _fatal(self, reason: str) -> None:
        log.error("%s", reason)
        self._report_ready(f"error: {reason}")
        self._exit_code = 1
        self._stopping = True

    def _report_ready(self, line: str) -> None:
        if self._on_ready is not None:
            callback, self._on_ready = self._on_ready, None
            callback(line)

    # --- the loop ---------------------------------------------------------------------------

    def _turn(self) -> None:
        now = time.time()
        timeout = self._next_heartbeat - now
        engine_timeout = self._engine.next_timeout(now)
        if engine_timeout is not None:
            timeout = min(timeout, engine_timeout)
        if not self._ready:
            timeout = min(timeout, self._started + self._startup_timeout - now, 0.05)
        if self._deferred_since:
            timeout = min(timeout, self._deferred_since + REPORT_DELAY - time.monotonic())
        events = dict(self._poller.poll(max(0, int(timeout * 1000 + 0.999))))
        now = time.time()
        if self._wake_r.fileno() in events:
            try:
                self._wake_r.recv(4096)
            except BlockingIOError:
                pass
        if self._monitor is not None and self._monitor in events:
            self._on_monitor()
        if self._broker is not None and self._broker in events:
            self._receive(now)
        self._engine.process(set(events), now)
        if now >= self._next_heartbeat:
            self._heartbeat(now)
        if not self._ready:
            self._check_startup(now)
        self._flush()

    def _check_startup(self, now: float) -> None:
        if self._welcomed and self._engine.ready:
            self._ready = True
            self.dir.stopped_marker.unlink(missing_ok=True)
            self._write_status(now)
            log.info("endpoint %s is ready", self.info.name)
            self._report_ready(f"ready {os.getpid()}")
        elif now - self._started >= self._startup_timeout:
            self._fatal(self._startup_problem())

    def _startup_problem(self) -> str:
        url = self.info.broker_url
        waited = f"{self._startup_timeout:g} s"
        if self._welcomed:
            return (
                f"the workers did not start within {waited}; see "
                f"{self.dir.path / 'workers'}/worker-*.log"
            )
        if zmq.EVENT_HANDSHAKE_SUCCEEDED in self._seen:
            return f"the service's broker at {url} did not answer hello within {waited}"
        if self._seen & {zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}:
            return (
                f"the secure handshake with the broker at {url} failed; run "
                f"`fx-endpoint configure {self.info.name}` again"
            )
        if zmq.EVENT_CONNECTED in self._seen:
            return (
                f"connected to {url} but the secure handshake did not complete within "
                f"{waited}; the broker's key may have changed: run "
                f"`fx-endpoint configure {self.info.name}` again"
            )
        return (
            f"cannot connect to the service's broker at {url} within {waited}; is the "
            "Jupyter server with the fx service running?"
        )

    def _on_monitor(self) -> None:
        assert self._monitor is not None
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            self._seen.add(event)
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._send_hello()
            elif event == zmq.EVENT_DISCONNECTED:
                if self._welcomed:
                    log.warning("lost the connection to the service; reconnecting")
                self._welcomed = False
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                reason = (
                    f"credential refused by the service; run "
                    f"`fx-endpoint configure {self.info.name}` again"
                )
                if self._ready:
                    log.error("%s", reason)
                else:
                    self._fatal(reason)

    def _heartbeat(self, now: float) -> None:
        self._next_heartbeat = now + self._heartbeat_period
        if self._welcomed:
            silence = now - self._last_heard
            if silence > self.config.heartbeat_threshold:
                log.warning(
                    "the service has not answered for %.0f s; reconnecting (results "
                    "stay in the journal)",
                    silence,
                )
                self._disconnect()
                self._connect()
            else:
                self._send(protocol.HEARTBEAT, {"status": self.status()})
        self._write_status(now)

    # --- messages from the service ----------------------------------------------------------

    def _receive(self, now: float) -> None:
        broker = self._broker
        assert broker is not None
        while protocol.has_message(broker):
            frames = protocol.recv_frames(broker)
            try:
                msg = protocol.decode(frames, protocol.SERVICE_TO_ENDPOINT)
                self._last_heard = now
                self._handle(msg, now)
            except protocol.ProtocolError as e:
                self.counters["malformed"] += 1
                log.error("dropped a malformed message from the service: %s", e)

    def _handle(self, msg: protocol.Message, now: float) -> None:
        body = msg.body
        if msg.type == protocol.TASKS:
            self._on_tasks(protocol.require(body, "tasks", list), msg.frames, now)
        elif msg.type == protocol.RESULTS_ACK:
            ids = [i for i in protocol.require(body, "task_ids", list) if isinstance(i, str)]
            self._journal.forget(ids)
            self._defer()
            for task_id in ids:
                entry = self._unacked.pop(task_id, None)
                if entry is not None:
                    self._unacked_bytes -= len(entry[1])
                self._stored.discard(task_id)
        elif msg.type == protocol.CANCEL:
            ids = protocol.require(body, "task_ids", list)
            self._engine.cancel([i for i in ids if isinstance(i, str) and i in self._held])
        elif msg.type == protocol.WELCOME:
            self._on_welcome(body)
        elif msg.type == protocol.REJECT:
            reason = body.get("reason") or "no reason given"
            self._welcomed = False
            self._fatal(f"the service refused this endpoint: {reason}")

    def _on_welcome(self, body: dict[str, Any]) -> None:
        try:
            protocol.check_compatible(
                body.get("protocol"), body.get("fx_version"), "the fx service", "this endpoint"
            )
        except protocol.ProtocolError as e:
            self._fatal(str(e))
            return
        period = body.get("heartbeat_period")
        if isinstance(period, (int, float)) and 0 < period < self.config.heartbeat_period:
            self._heartbeat_period = float(period)
        self._welcomed = True
        self._service_takes_parts = body.get(protocol.PARTS_KEY) is True
        log.info("connected to the service (fx %s)", body.get("fx_version"))
        self._resend_state()

    def _on_tasks(self, headers: list[Any], frames: list[Any], now: float) -> None:
        accepted: list[Task] = []
        for header in headers:
            try:
                task = _parse_task(header, frames)
            except protocol.ProtocolError as e:
                self._reject_task(header, e, now)
                continue
            task_id = task.task_id
            if task_id in self._held or task_id in self._unacked or task_id in self._stored:
                # Sent again (at-least-once): keep the copy we have, return the credit.
                self.counters["duplicates"] += 1
                self._grant += 1
                if task_id in self._unacked:
                    self._results.append(self._unacked[task_id][:2])
                elif task_id in self._stored:
                    self._results.extend(self._journal.results([task_id]))
                continue
            self._held[task_id] = now
            self._journal.accept(task, now)
            self._updates.append([task_id, TaskState.WAITING_FOR_LAUNCH, now])
            accepted.append(task)
        self.counters["received"] += len(accepted)
        if accepted:
            self._defer()
            self._engine.submit(accepted)

    def _reject_task(self, header: Any, error: protocol.ProtocolError, now: float) -> None:
        """Fail a task whose header is malformed (if it has an id to fail it by)."""
        self.counters["malformed"] += 1
        task_id = header.get("task_id") if isinstance(header, dict) else None
        log.error("malformed task %s from the service: %s", task_id, error)
        if (
            not isinstance(task_id, str)
            or task_id in self._held
            or task_id in self._unacked
            or task_id in self._stored
        ):
            self._grant += 1
            return
        self._held[task_id] = now
        reason = protocol.ProtocolError(f"the endpoint could not read this task: {error}")
        self.task_finished(failed_outcome(Task(task_id, "", b"", b""), reason))

    # --- EngineListener ---------------------------------------------------------------------

    def task_waiting_for_nodes(self, task_id: str, ts: float) -> None:
        if task_id in self._held:
            self._nodes[task_id] = ts
            self._updates.append([task_id, TaskState.WAITING_FOR_NODES, ts])
            self._defer()

    def task_waiting_for_launch(self, task_id: str, ts: float) -> None:
        if task_id in self._held:
            self._held[task_id] = ts
            self._updates.append([task_id, TaskState.WAITING_FOR_LAUNCH, ts])
            self._defer()

    def task_running(self, task_id: str, ts: float) -> None:
        if task_id in self._held:
            self._running[task_id] = ts
            self._updates.append([task_id, TaskState.RUNNING, ts])
            self._defer()

    def task_finished(self, outcome: TaskOutcome) -> None:
        received = self._held.pop(outcome.task_id, None)
        if received is None:
            return
        if (
            outcome.status == TaskState.SUCCESS
            and len(outcome.payload) > self.config.max_result_size
        ):
            outcome = _too_large(outcome, self.config.max_result_size)
        started = self._running.pop(outcome.task_id, None) or outcome.started
        transitions = {TaskState.WAITING_FOR_LAUNCH: received}
        nodes = self._nodes.pop(outcome.task_id, None)
        if nodes is not None:
            transitions[TaskState.WAITING_FOR_NODES] = nodes
        if started is not None:
            transitions[TaskState.RUNNING] = started
        header = {
            "task_id": outcome.task_id,
            "status": outcome.status,
            "ts": outcome.finished,
            "stdout": outcome.stdout,
            "stderr": outcome.stderr,
            "exception_text": outcome.exception_text,
            "transitions": transitions,
            "retries": outcome.retries,
        }
        self._unacked[outcome.task_id] = (header, outcome.payload, time.monotonic())
        self._unacked_bytes += len(outcome.payload)
        self._results.append((header, outcome.payload))
        self._grant += 1
        self.counters["completed"] += 1

    # --- messages to the service ------------------------------------------------------------

    def _send(self, msg_type: str, body: dict[str, Any], frames: list[Any] | None = None) -> None:
        if self._broker is not None:
            protocol.send_frames(self._broker, protocol.encode(msg_type, body, frames or []))

    def _send_results(
        self, results: list[tuple[dict[str, Any], Any]], body: dict[str, Any]
    ) -> None:
        """One ``results`` message; a large payload goes in parts (see :func:`protocol.parts`)
        to a service that takes them."""
        frames: list[Any] = []
        split = self._service_takes_parts
        headers = [protocol.add_payload(frames, h, p, split) for h, p in results]
        self._send(protocol.RESULTS, {"results": headers, **body}, frames)

    def _send_hello(self) -> None:
        credit = max(0, self.config.capacity - len(self._held))
        self._grant = 0
        self._send(
            protocol.HELLO,
            {
                "endpoint_id": self.info.endpoint_id,
                "protocol": PROTOCOL_VERSION,
                "fx_version": __version__,
                "python": PYTHON_VERSION,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "engine": {
                    "type": self.config.engine.type,
                    "max_workers": self.config.engine.max_workers,
                },
                "heartbeat_period": self.config.heartbeat_period,
                "heartbeat_threshold": self.config.heartbeat_threshold,
                protocol.CREDIT_KEY: credit,
                protocol.PARTS_KEY: True,
            },
        )

    def _resend_state(self) -> None:
        """After (re)connecting: say again what we hold and send every unacknowledged result."""
        self._journal.commit()
        self._updates = [[t, TaskState.WAITING_FOR_LAUNCH, ts] for t, ts in self._held.items()]
        self._updates += [
            [t, TaskState.WAITING_FOR_NODES, ts]
            for t, ts in self._nodes.items()
            if ts >= self._held[t] and t not in self._running
        ]
        self._updates += [[t, TaskState.RUNNING, ts] for t, ts in self._running.items()]
        self._defer()
        self._results = [entry[:2] for entry in self._unacked.values()]
        stored = sorted(self._stored)
        for start in range(0, len(stored), RESEND_BATCH):
            batch = list(self._journal.results(stored[start : start + RESEND_BATCH]))
            if batch:
                self._send_results(batch, {})

    def _store_results(self, age: float) -> None:
        """Write to the journal the results unacknowledged for ``age`` seconds, and the oldest
        ones beyond the memory budget."""
        if not self._unacked:
            return
        now = time.monotonic()
        size = self._unacked_bytes
        old = []
        for task_id, (header, payload, finished) in self._unacked.items():
            if now - finished < age and size <= MAX_RESULT_BYTES_IN_MEMORY:
                break
            old.append(task_id)
            size -= len(payload)
            self._journal.store_result(header, payload)
        for task_id in old:
            del self._unacked[task_id]
            self._stored.add(task_id)
        self._unacked_bytes = size
        if old:
            self._defer()

    def _defer(self) -> None:
        """A state change or journal write is waiting: flush within REPORT_DELAY."""
        if not self._deferred_since:
            self._deferred_since = time.monotonic()

    def _flush(self) -> None:
        """End of a loop turn: send the turn's results; report states and commit the journal
        once the oldest of them waited REPORT_DELAY."""
        if not self._welcomed:
            # Rebuilt from the journal and the held tasks on the next welcome. The credit
            # granted since the last hello is kept: the next hello resets it.
            self._store_results(0.0)
            self._journal.commit()
            self._updates.clear()
            self._results.clear()
            self._deferred_since = 0.0
            return
        self._store_results(STORE_RESULT_AFTER)
        if self._deferred_since and time.monotonic() - self._deferred_since >= REPORT_DELAY:
            self._deferred_since = 0.0
            self._journal.commit()  # before the states acknowledge the receipt of tasks
            held = self._held
            # A task that already finished reports through its result's transitions.
            updates = [u for u in self._updates if u[0] in held]
            self._updates = []
            if updates:
                self._send(protocol.TASK_STATUS, {"updates": updates})
        if self._results:
            results, self._results = self._results, []
            self._send_results(results, {protocol.CREDIT_KEY: self._grant})
            self._grant = 0
        elif self._grant:
            self._send(protocol.TASK_STATUS, {"updates": [], protocol.CREDIT_KEY: self._grant})
            self._grant = 0

    # --- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Engine counts plus the daemon's own, for heartbeats and ``fx-endpoint status``."""
        return {
            **self._engine.status(),
            "results_unacknowledged": len(self._unacked) + len(self._stored),
            **self.counters,
        }

    def _write_status(self, now: float) -> None:
        snapshot = {
            "name": self.info.name,
            "endpoint_id": self.info.endpoint_id,
            "pid": os.getpid(),
            "service_url": self.info.service_url,
            "connected": self._welcomed,
            "last_heard": self._last_heard or None,
            "updated": now,
            "started": self._started,
            **self.status(),
        }
        try:
            write_atomic(self.dir.status_file, json.dumps(snapshot, indent=1))
        except OSError as e:
            log.warning("cannot write %s: %s", self.dir.status_file, e)


def _parse_task(header: Any, frames: list[Any]) -> Task:
    """A :class:`Task` from a ``tasks`` header (docs/architecture.md), or ProtocolError.

    Exact type checks (JSON gives exactly str, int, float): this runs once per task.
    """
    if type(header) is not dict:
        raise protocol.ProtocolError("a task header is not a JSON object")
    task_id = header.get("task_id")
    if type(task_id) is not str:
        task_id = protocol.require(header, "task_id", str)  # raises, naming the field
    function_id = header.get("function_id")
    if type(function_id) is not str:
        function_id = protocol.require(header, "function_id", str)
    indexes = []
    for key in ("function", "args"):
        index = header.get(key)
        if type(index) is not int:
            index = protocol.require(header, key, int)
        if not 0 <= index < len(frames):
            raise protocol.ProtocolError(
                f"{key} frame {index} does not exist (the message has {len(frames)})"
            )
        indexes.append(index)
    walltime = header.get("walltime")
    if walltime is not None and (type(walltime) not in (int, float) or walltime <= 0):
        raise protocol.ProtocolError(f"walltime must be a positive number, got {walltime!r}")
    retries = header.get("retries", 0)
    if type(retries) is not int or retries < 0:
        raise protocol.ProtocolError(f"retries must be an integer >= 0, got {retries!r}")
    return Task(
        task_id,
        function_id,
        frames[indexes[0]],
        _arguments(header, frames, indexes[1]),
        float(walltime) if walltime else None,
        retries,
    )


def _arguments(header: dict[str, Any], frames: list[Any], index: int) -> Any:
    """A task's arguments: their frame, or the join of the parts they came in (engines and
    workers take one buffer; one copy here costs less than CurveZMQ's copies of one large
    frame, see :data:`protocol.PART_BYTES`)."""
    count = protocol.part_count(header, "task")
    if count == 1:
        return frames[index]
    if index + count > len(frames):
        raise protocol.ProtocolError(
            f"args frames {index}-{index + count - 1} do not exist (the message has {len(frames)})"
        )
    return b"".join([frame.buffer for frame in frames[index : index + count]])


# --- the process --------------------------------------------------------------------------


class _ReadyPipe:
    """The write end of the pipe ``fx-endpoint start`` waits on (stderr when run by hand).

    After "ready" it is closed; after an error it stays open until the process exits, so that
    ``start`` returns only once the failed daemon is gone.
    """

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def __call__(self, line: str) -> None:
        if self.fd is None:
            print(line, file=sys.stderr)
            return
        try:
            os.write(self.fd, (line.replace("\n", "\\n") + "\n").encode())
            if not line.startswith("error"):
                os.close(self.fd)
        except OSError:
            pass
        self.fd = None


def _detach() -> None:
    """Leave the parent's session and process for good (the classic double fork)."""
    if os.getsid(0) != os.getpid():
        os.setsid()
    if os.fork() > 0:
        os._exit(0)


def _claim_pid_file(ep: EndpointDir) -> int | None:
    """Write our pid file; return the pid of a daemon already running instead, if any."""
    for _ in range(2):
        try:
            fd = os.open(ep.pid_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            running = ep.running_pid()
            if running is not None:
                return running
            ep.pid_file.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        return None
    return ep.read_pid()


def _setup_logging(ep: EndpointDir) -> None:
    handler = logging.handlers.RotatingFileHandler(
        ep.log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("FX_LOG_LEVEL", "INFO").upper()
    root.setLevel(level if isinstance(logging.getLevelName(level), int) else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """``python -m fx_endpoint.daemon DIR``: run the endpoint whose files are in DIR."""
    parser = argparse.ArgumentParser(description="fx endpoint daemon (use `fx-endpoint start`)")
    parser.add_argument("directory", help="the endpoint's directory")
    parser.add_argument("--ready-fd", type=int, help="pipe to report 'ready' or 'error: ...' on")
    parser.add_argument("--detach", action="store_true", help="run in the background")
    parser.add_argument("--startup-timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT)
    args = parser.parse_args(argv)
    path = Path(args.directory)
    ep = EndpointDir(path.name, path)
    ready = _ReadyPipe(args.ready_fd)
    if args.detach:
        _detach()
    running = _claim_pid_file(ep)
    if running is not None:
        ready(f"error: endpoint {ep.name} is already running with pid {running}")
        return 1
    _setup_logging(ep)
    daemon: EndpointDaemon | None = None

    def on_signal(signum: int, frame: Any) -> None:
        if daemon is None:
            raise SystemExit(1)  # still starting: stop right here
        daemon.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        try:
            config = load_config(ep.config_file)
            info = EndpointInfo.load(ep.endpoint_file)
            if not info.registered:
                raise ValueError(
                    f"endpoint {ep.name} is not registered with the service yet; "
                    f"run `fx-endpoint configure {ep.name}`"
                )
            daemon = EndpointDaemon(
                ep, config, info, startup_timeout=args.startup_timeout, on_ready=ready
            )
        except (ConfigError, ValueError, EngineError) as e:
            log.error("%s", e)
            ready(f"error: {e}")
            return 1
        return daemon.run()
    except Exception as e:
        log.exception("the endpoint daemon crashed")
        ready(f"error: the endpoint daemon crashed: {e}; see {ep.log_file}")
        return 1
    finally:
        if daemon is not None and daemon.was_ready:
            ep.stopped_marker.touch()
        ep.status_file.unlink(missing_ok=True)
        if ep.read_pid() == os.getpid():
            ep.pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
