"""A worker process of the process engine: runs tasks one at a time, in the order it gets them.

Started by :class:`~fx_endpoint.engines.process.ProcessEngine` as
``python -m fx_endpoint.worker --url URL --identity ID``. It connects a DEALER socket to the
engine's ROUTER and speaks a small private protocol (``protocol.encode`` framing)::

    engine -> worker  tasks   {tasks: [[task_id, function_id, f, a, announce], ...]} + frames
                      cancel  {ids: [task_id, ...]}
    worker -> engine  ready   {pid, python}
                      report  {done: [[task_id, ok, t0, t1, stdout, stderr, exc_text], ...],
                               dropped: [task_id, ...], started: [task_id, t0] | null}
                              + one payload frame per done item

``f`` and ``a`` index the message's frames: the function payload (-1 when this worker already
has that function: each is sent once per worker, loaded on first use and cached, so a function
that cannot be loaded fails its tasks, not the worker) and the task's arguments.

Reports are batched: finished tasks are reported together when the worker runs out of work,
when the oldest unreported result is :data:`REPORT_AFTER` old, when the task just finished took
that long, or when the running task has run that long.
``started`` names the task the worker runs from now on, and is always true when sent, so the
engine learns within milliseconds which task each worker runs (to cancel it, to count its
walltime). A task flagged ``announce`` (it has a walltime, or it is suspected of killing a
worker) is reported before it starts, so its start time is exact.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from . import protocol, serialize

READY = "ready"
REPORT = "report"
TASKS = "tasks"
CANCEL = "cancel"
TO_WORKER = frozenset({TASKS, CANCEL})
FROM_WORKER = frozenset({READY, REPORT})

#: Captured stdout and stderr are each cut at this many characters.
OUTPUT_LIMIT = 1 << 20
#: Longest a result, or the start of a running task, waits before the worker reports it.
REPORT_AFTER = 0.001
#: Longest the announcer sleeps while one long task runs.
ANNOUNCER_MAX_SLEEP = 0.064
#: Most results in one report.
MAX_REPORT = 256
#: How often an idle worker checks that the daemon that started it is still alive.
_PARENT_CHECK_MS = 1000


class CappedText(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        super().__init__()
        self._limit = limit
        self._parts: list[str] = []
        self._size = 0
        self._dropped = 0

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = self._limit - self._size
        if room >= len(text):
            self._parts.append(text)
            self._size += len(text)
        else:
            if room > 0:
                self._parts.append(text[:room])
                self._size += room
            self._dropped += len(text) - max(room, 0)
        return len(text)

    def getvalue(self) -> str:
        text = "".join(self._parts)
        if self._dropped:
            text += f"\n[output truncated: {self._dropped} more characters]\n"
        return text


class FunctionCache:
    """Function payloads by id, loaded on first use; a load failure is remembered too."""

    def __init__(self) -> None:
        self._payloads: dict[str, Any] = {}
        self._loaded: dict[str, Callable[..., Any] | serialize.DeserializationError] = {}

    def add(self, function_id: str, payload: Any) -> None:
        if function_id not in self._loaded:
            self._payloads[function_id] = payload

    def get(self, function_id: str) -> Callable[..., Any]:
        fn = self._loaded.get(function_id)
        if fn is None:
            payload = self._payloads.pop(function_id, None)
            if payload is None:
                raise serialize.DeserializationError(
                    f"function {function_id} was never sent to this worker"
                )
            try:
                fn = serialize.deserialize_function(_as_bytes(payload))
            except serialize.DeserializationError as e:
                fn = e
            self._loaded[function_id] = fn
        if isinstance(fn, serialize.DeserializationError):
            raise fn
        return fn


def _as_bytes(frame: Any) -> bytes:
    return frame.bytes if isinstance(frame, zmq.Frame) else bytes(frame)


def _as_buffer(frame: Any) -> Any:
    """A received frame's bytes as a buffer, not a copy: ``pickle.loads`` reads any buffer,
    and arguments may be hundreds of MB."""
    return frame.buffer if isinstance(frame, zmq.Frame) else frame


def _user_traceback(exc: BaseException) -> str:
    """The traceback text of ``exc`` without this module's own frames at its top."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def pack_result(value: Any) -> bytes:
    """Serialize a result: plain pickle when it can (ten times cheaper), else cloudpickle.

    Plain pickle only succeeds for values whose classes and functions it can name by
    reference (and it checks the name leads back to the very object), which is exactly when
    cloudpickle would have pickled them by reference too.
    """
    try:
        return pickle.dumps(value, protocol=pickle.DEFAULT_PROTOCOL)
    except Exception:  # noqa: BLE001 - a __reduce__ may raise anything; cloudpickle decides
        return serialize.serialize_result(value)


def run_task(
    functions: FunctionCache, function_id: str, args_payload: Any
) -> tuple[bool, float, float, str, str, str | None, bytes]:
    """Run one task: (ok, t0, t1, stdout, stderr, exception text, payload). Never raises."""
    out, err = CappedText(), CappedText()
    saved = sys.stdout, sys.stderr
    started = time.time()
    sys.stdout, sys.stderr = out, err
    exc_text = None
    try:
        fn = functions.get(function_id)
        args, kwargs = serialize.deserialize_args(_as_buffer(args_payload))
        payload = pack_result(fn(*args, **kwargs))
        ok = True
    except BaseException as e:  # noqa: BLE001 - a task's SystemExit must not end the worker
        if isinstance(e, serialize.DeserializationError):
            exc_text = f"{type(e).__name__}: {e}\n"  # our own check: the traceback is noise
        else:
            exc_text = _user_traceback(e)
        try:
            payload = serialize.serialize_exception(e, exc_text)
        except Exception as pack_error:  # noqa: BLE001 - an exception whose str() raises
            fallback = RuntimeError(f"{type(e).__name__} (unprintable: {pack_error})")
            payload = serialize.serialize_exception(fallback, exc_text)
        ok = False
    finally:
        sys.stdout, sys.stderr = saved
    return ok, started, time.time(), out.getvalue(), err.getvalue(), exc_text, payload


class Worker:
    """The receive-run-report loop of one worker process.

    The socket is shared with a small announcer thread (which reports a task that has been
    running for a while), so every use of it holds ``_lock``.
    """

    def __init__(self, socket: zmq.Socket[Any]) -> None:
        self.socket = socket
        self.functions = FunctionCache()
        self.queue: deque[tuple[str, str, Any, bool]] = deque()
        self.parent = os.getppid()
        self._lock = threading.Lock()
        self._busy = threading.Event()
        self._done: list[list[Any]] = []
        self._payloads: list[bytes] = []
        self._dropped: list[str] = []
        self._oldest = 0.0
        self._last_duration = 0.0
        #: The task running now and its start, and the last task reported as started.
        self._current: tuple[str, float] | None = None
        self._announced: str | None = None

    # --- messages (callers hold _lock) ----------------------------------------------------

    def _flush(self, started: tuple[str, float] | None) -> None:
        body = {
            "done": self._done,
            "dropped": self._dropped,
            "started": list(started) if started else None,
        }
        protocol.send_frames(self.socket, protocol.encode(REPORT, body, self._payloads))
        self._done, self._payloads, self._dropped = [], [], []
        self._announced = started[0] if started else None

    def _take_in(self) -> None:
        """Everything already waiting on the socket (this runs before every task)."""
        while protocol.has_message(self.socket):
            self._handle(protocol.recv_frames(self.socket))

    def _handle(self, frames: list[Any]) -> None:
        msg = protocol.decode(frames, TO_WORKER)
        if msg.type == TASKS:
            for task_id, function_id, f, a, announce in msg.body["tasks"]:
                if f >= 0:
                    self.functions.add(function_id, msg.frames[f])
                self.queue.append((task_id, function_id, msg.frames[a], announce))
        else:
            cancelled = set(msg.body["ids"])
            self._dropped.extend(t[0] for t in self.queue if t[0] in cancelled)
            self.queue = deque(t for t in self.queue if t[0] not in cancelled)

    def _wait(self) -> None:
        """Block until a message comes (checking now and then that the daemon lives)."""
        while not self.socket.poll(_PARENT_CHECK_MS):
            if os.getppid() != self.parent:
                raise SystemExit("the endpoint daemon is gone")
        self._take_in()

    # --- the loops ------------------------------------------------------------------------

    def _announcer(self) -> None:
        """Report a task that runs longer than REPORT_AFTER, with the results before it.

        While the same announced task keeps running it looks less and less often (up to
        ANNOUNCER_MAX_SLEEP), so a long task costs no CPU here.
        """
        delay = REPORT_AFTER
        while True:
            self._busy.wait()
            time.sleep(delay)
            with self._lock:
                current = self._current
                if (
                    current is not None
                    and current[0] != self._announced
                    and time.time() - current[1] >= REPORT_AFTER
                ):
                    self._flush(current)
                settled = current is not None and current[0] == self._announced
            delay = min(2 * delay, ANNOUNCER_MAX_SLEEP) if settled else REPORT_AFTER

    def run(self) -> None:
        """Serve tasks until the engine stops this process."""
        threading.Thread(target=self._announcer, name="announcer", daemon=True).start()
        with self._lock:
            self.socket.send_multipart(
                protocol.encode(READY, {"pid": os.getpid(), "python": serialize.PYTHON_VERSION})
            )
        while True:
            with self._lock:
                self._take_in()
                if not self.queue:
                    if self._done or self._dropped:
                        self._flush(None)
                    self._busy.clear()
                    self._wait()
                    continue
                task_id, function_id, args_payload, announce = self.queue.popleft()
                now = time.time()
                if announce or (
                    self._done
                    and (
                        now - self._oldest >= REPORT_AFTER
                        or len(self._done) >= MAX_REPORT
                        or self._last_duration >= REPORT_AFTER
                    )
                ):
                    self._flush((task_id, now))
                self._current = (task_id, now)
            if not self._busy.is_set():
                self._busy.set()
            ok, t0, t1, out, err, exc, payload = run_task(self.functions, function_id, args_payload)
            with self._lock:
                self._current = None
                self._last_duration = t1 - t0
                if not self._done:
                    self._oldest = t1
                self._done.append([task_id, ok, t0, t1, out, err, exc])
                self._payloads.append(payload)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m fx_endpoint.worker``."""
    parser = argparse.ArgumentParser(description="fx endpoint worker (started by the endpoint)")
    parser.add_argument("--url", required=True, help="the engine's ZeroMQ address")
    parser.add_argument("--identity", required=True, help="this worker's socket identity")
    args = parser.parse_args(argv)
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.identity = args.identity.encode()
    socket.linger = 0
    socket.connect(args.url)
    Worker(socket).run()


if __name__ == "__main__":
    main()
