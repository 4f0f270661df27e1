"""``Executor``: fx as a ``concurrent.futures.Executor`` (funcX's ``FuncXExecutor``).

Three paths, each batched (DESIGN.md invariant 3):

* **submit**: the calling thread registers the function (once per function object) and encodes
  the arguments; a background submitter thread sends *whatever is queued* in one
  ``POST submit``. A lone submit goes out at once; under load the queue fills while a request is
  in flight, so batches form by themselves, with no timer.
* **completion**: futures complete from the client's :class:`EventStream` (results come inline
  in the events), never by polling. Results too large to travel inline are fetched by a small
  thread pool, as raw bytes (``GET tasks/{id}/result``: the event names their size).
* **re-attaching**: :meth:`Executor.get_futures` rebuilds futures for task ids (after a kernel
  restart, or for a ``batch_run``): one ``batch_status`` for the finished ones, events for the
  rest. Tasks this client submitted and its event stream followed since need no question.

The submitter is a daemon thread (a stuck request must not hold a kernel up forever), so an
``atexit`` hook lets every Executor send what is queued before the interpreter exits: a script
that submits and exits, with or without ``shutdown(wait=False)``, loses nothing.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import Executor as _BaseExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

from fx_endpoint.protocol import TaskState

from .background import BackgroundWorkers
from .batch import EncodedTask, check_walltime, encode_args, encode_task
from .client import Client
from .errors import FxAPIError, FxError
from .futures import FxFuture
from .tasks import decode_payload_fields, out_of_line_field, outcome_of

log = logging.getLogger(__name__)

#: Tasks per submit request at most, and per step of encoding a ``map``: a large map goes out
#: as a pipeline of requests, so the endpoint runs the first tasks while the service stores the
#: next ones and the caller still encodes more (one request of everything kept each stage idle
#: until the one before it had finished).
PIPELINE_TASKS = 2000
#: Threads that fetch results too large for an event and send remote cancels.
BACKGROUND_THREADS = 2
#: Seconds ``FxFuture.task_id`` waits for the service to accept a task when the client has no
#: HTTP timeout of its own.
TASK_ID_TIMEOUT = 60.0

#: Executors that may still hold queued tasks (see :func:`_send_queued_at_exit`).
_live: weakref.WeakSet[Executor] = weakref.WeakSet()


class Executor(_BaseExecutor):
    """Run functions on an fx endpoint with the ``concurrent.futures`` interface.

    ``endpoint_id`` is the endpoint's id or name. ``client`` defaults to ``Client()`` (the
    service of the Jupyter server this runs under); an Executor that made its own client closes
    it on shutdown. ``walltime`` (seconds) applies to every task it submits.

    ``memoize=True`` makes every task it submits memoized: a call whose function and argument
    bytes equal those of an earlier successful memoized task of yours is answered with that
    task's stored result (and output) without running. Like ``walltime`` it is an attribute
    read at each submit, so ``executor.memoize = False`` turns it off for later tasks.

    Functions are registered once per function object: redefine a function (as re-running a
    notebook cell does) to pick up new code or new values of the globals it captured.
    """

    def __init__(
        self,
        endpoint_id: str | None = None,
        client: Client | None = None,
        *,
        walltime: float | None = None,
        memoize: bool = False,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.walltime = None if walltime is None else check_walltime(walltime)
        self.memoize = memoize
        self._owns_client = client is None
        self.client = client if client is not None else Client()
        self._stream = self.client.events  # connects while the first submit is prepared
        self._lock = threading.Lock()
        # Futures by task id, from registration to their terminal event.
        self._pending: dict[str, FxFuture] = {}
        # Every future not done yet, whatever its stage (queued, in flight, fetching).
        self._unfinished: set[FxFuture] = set()
        self._functions: dict[Any, str] = {}
        self._queue: deque[tuple[FxFuture, EncodedTask]] = deque()
        self._queue_ready = threading.Condition(self._lock)
        # Notified when queued tasks got their ids or will never get one (and when the queue
        # drained): what FxFuture.task_id and the exit hook wait on.
        self._acknowledged = threading.Condition(self._lock)
        self._sending = False
        #: Seconds ``FxFuture.task_id`` waits for the service to accept a task.
        self.task_id_timeout = float(self.client.transport.http_timeout or TASK_ID_TIMEOUT)
        self._shutdown = False
        self._released = False
        self._submitter: threading.Thread | None = None
        self._background = BackgroundWorkers(BACKGROUND_THREADS, "fx-fetch")
        self._listener = self._stream.add_listener(self._on_events, batch=True)
        #: Counters for diagnostics: requests sent and tasks they carried.
        self.stats = {"submit_requests": 0, "tasks_submitted": 0}
        _live.add(self)

    def __repr__(self) -> str:
        return f"<fx Executor endpoint={self.endpoint_id} unfinished={len(self._unfinished)}>"

    @property
    def memoize(self) -> bool:
        """Whether the tasks submitted from now on are memoized (see the class docstring)."""
        return self._memoize

    @memoize.setter
    def memoize(self, value: bool) -> None:
        # Checked here rather than at submit: a wrong value (memoize="no") is the caller's
        # mistake, and it should fail where it was made, not at some later submit.
        if not isinstance(value, bool):
            raise TypeError(f"memoize must be True or False, got {value!r}")
        self._memoize = value

    # --- registering -----------------------------------------------------------------------
    def register_function(self, fn: Callable[..., Any], **options: Any) -> str:
        """The function id of ``fn``, registering it on first use (cached per object)."""
        try:
            known = self._functions.get(fn)
        except TypeError:  # an unhashable callable: the client's cache (by code) still helps
            return self.client.register_function(fn, **options)
        if known is not None:
            return known
        function_id = self.client.register_function(fn, **options)
        self._functions[fn] = function_id
        return function_id

    # --- submitting --------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> FxFuture:
        """Run ``fn(*args, **kwargs)`` on the endpoint; returns its future at once."""
        self._check_open()
        return self._enqueue(self.register_function(fn), [(args, kwargs)])[0]

    def submit_to_registered_function(
        self,
        function_id: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> FxFuture:
        """Run an already registered function by id (what ``%%funcx`` does)."""
        self._check_open()
        return self._enqueue(function_id, [(tuple(args), dict(kwargs or {}))])[0]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """``map(fn, *iterables)`` on the endpoint: all tasks go out in one submit; results
        come back in order. ``chunksize`` is accepted for compatibility: each call is one
        task already, batched on the wire."""
        end_time = None if timeout is None else timeout + time.monotonic()
        futures = self.map_futures(fn, *iterables)

        def results() -> Iterator[Any]:
            try:
                futures.reverse()
                while futures:
                    remaining = None if end_time is None else end_time - time.monotonic()
                    yield futures[-1].result(remaining)
                    futures.pop()
            finally:
                # Abandoned (timeout, error, generator closed): cancel what is left, like
                # concurrent.futures does, without making the caller wait for each request.
                self._cancel_in_background(futures)

        return results()

    def map_futures(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[FxFuture]:
        """The futures of ``fn`` over ``iterables`` (as :meth:`map` submits them, in one
        request), at once: to follow them (``BatchWidget.for_futures``), to collect them as they
        complete, or to keep their task ids."""
        self._check_open()
        return self._enqueue(self.register_function(fn), [(args, {}) for args in zip(*iterables)])

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self.endpoint_id is None or not str(self.endpoint_id).strip():
            raise ValueError("this Executor has no endpoint: set Executor(endpoint_id=...)")

    def _enqueue(
        self, function_id: str, calls: Iterable[tuple[Sequence[Any], dict[str, Any]]]
    ) -> list[FxFuture]:
        endpoint_id, walltime = self.endpoint_id, self.walltime
        memoize = True if self._memoize else None  # absent from the JSON unless asked for
        futures: list[FxFuture] = []
        for chunk in _chunks(calls, PIPELINE_TASKS):
            items = [
                (
                    FxFuture(self, endpoint_id),
                    encode_task(
                        endpoint_id, function_id, encode_args(args, kwargs), walltime, memoize
                    ),
                )
                for args, kwargs in chunk
            ]
            chunk_futures = [future for future, _ in items]
            self._track(chunk_futures)
            futures.extend(chunk_futures)
            with self._queue_ready:
                if self._shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                self._queue.extend(items)
                self._queue_ready.notify()
                if self._submitter is None:
                    self._submitter = threading.Thread(
                        target=self._submit_loop, name="fx-submit", daemon=True
                    )
                    self._submitter.start()
        return futures

    def _track(self, futures: list[FxFuture]) -> None:
        with self._lock:
            self._unfinished.update(futures)
        for future in futures:
            future.add_done_callback(self._forget)

    def _forget(self, future: Future) -> None:  # type: ignore[type-arg]
        with self._lock:
            self._unfinished.discard(future)  # type: ignore[arg-type]
        if self._shutdown:
            self._release_if_finished()

    def _submit_loop(self) -> None:
        while True:
            with self._queue_ready:
                while not self._queue and not self._shutdown:
                    self._queue_ready.wait()
                if not self._queue:
                    break
                queue = self._queue
                items = [queue.popleft() for _ in range(min(len(queue), PIPELINE_TASKS))]
                self._sending = True
                dropped = [f for f, _ in items if f.cancel_requested]
                for future in dropped:
                    future.unsent = True
                if dropped:
                    items = [(f, fragment) for f, fragment in items if not f.cancel_requested]
                    self._acknowledged.notify_all()
            try:
                if items:
                    self._send(items)
            finally:
                with self._lock:
                    self._sending = False
                    self._acknowledged.notify_all()
        self._release_if_finished()

    def wait_for_task_id(self, future: FxFuture) -> str | None:
        """``future.task_id``: wait until the service accepted its task (see FxFuture)."""
        if threading.current_thread() is self._submitter:
            # A done callback on the submitter thread: waiting here would wait for itself.
            return future.known_task_id
        with self._acknowledged:
            settled = self._acknowledged.wait_for(
                lambda: future.known_task_id is not None or future.unsent,
                self.task_id_timeout,
            )
        if future.known_task_id is not None:
            return future.known_task_id
        if not settled:
            raise TimeoutError(
                f"the service has not accepted the task within {self.task_id_timeout:g}s; "
                f"its submit is still in flight (the future completes when it is done)"
            )
        try:
            # Set already, or being set by the thread that is cancelling it.
            error = future.exception(self.task_id_timeout)
        except CancelledError:
            return None  # cancelled before it was sent: there is no task
        if error is None:
            return None
        raise error

    def _flush(self, timeout: float) -> bool:
        """Wait until every queued task was sent (or failed); False on timeout."""
        with self._acknowledged:
            return self._acknowledged.wait_for(
                lambda: not self._queue and not self._sending, timeout
            )

    def _send(self, items: list[tuple[FxFuture, EncodedTask]]) -> None:
        """One submit of queued tasks (more than one request only above the size limits)."""
        futures = [future for future, _ in items]
        generation = self._stream.generation
        sent = 0
        try:
            for task_ids in self.client.submit_encoded([fragment for _, fragment in items]):
                self._register(zip(task_ids, futures[sent : sent + len(task_ids)]))
                sent += len(task_ids)
                self.stats["submit_requests"] += 1
                self.stats["tasks_submitted"] += len(task_ids)
        except Exception as e:  # noqa: BLE001 - the futures carry any failure to the caller
            failed = futures[sent:]
            for future in failed:
                future.fail(e)
            with self._lock:  # after fail(): a reader of task_id finds the error set
                for future in failed:
                    future.unsent = True
                self._acknowledged.notify_all()
        # A (re)connect during the request may have lost events of these tasks; once connected,
        # the stream itself resyncs everything watched, so only this window needs a check.
        now = self._stream.generation
        if sent and now is not None and now != generation:
            self._resync(
                [f.known_task_id for f in futures[:sent] if f.known_task_id and not f.done()]
            )

    def _register(self, pairs: Iterable[tuple[str, FxFuture]]) -> set[str]:
        """Attach task ids to futures; complete at once those whose end already arrived.

        Returns the ids of the tasks the event stream followed since their submit (see
        :meth:`EventStream.claim`): for those, no event yet means not ended yet.
        """
        arrived: list[tuple[FxFuture, dict[str, Any]]] = []
        cancel: list[FxFuture] = []
        watch: list[str] = []
        followed: set[str] = set()
        with self._lock:
            for task_id, future in pairs:
                future.task_id = task_id
                if future.status == "submitting":
                    future.status = TaskState.WAITING_FOR_EP
                if future.cancel_requested:
                    cancel.append(future)
                    continue
                seen, event = self._stream.claim(task_id)
                if seen:
                    followed.add(task_id)
                if event is not None:
                    arrived.append((future, event))
                else:
                    self._pending[task_id] = future
                    watch.append(task_id)
            self._stream.watch(watch)
            self._acknowledged.notify_all()
        for future, event in arrived:
            self._complete(future, event)
        if cancel:  # cancelled while their submit was in flight
            self._background.submit(self._cancel_many, cancel)
        return followed

    # --- completing --------------------------------------------------------------------------
    def _on_events(self, events: list[dict[str, Any]]) -> None:
        ended: list[tuple[FxFuture, dict[str, Any]]] = []
        with self._lock:
            pending = self._pending
            for event in events:
                future = pending.get(event.get("task_id"))  # type: ignore[arg-type]
                if future is None:
                    continue
                if event.get("status") in TaskState.TERMINAL:
                    del pending[event["task_id"]]
                    ended.append((future, event))
                else:
                    future.note_event(event)
        for future, event in ended:
            self._complete(future, event)

    def _complete(self, future: FxFuture, event: dict[str, Any]) -> None:
        future.note_event(event)
        outcome = outcome_of(event)
        if outcome is None:  # ended without its payload inline: too large for an event
            self._background.submit(self._fetch, future, event)
        else:
            future.resolve(outcome)

    def _fetch(self, future: FxFuture, event: dict[str, Any]) -> None:
        """Complete ``future`` from the payload its terminal ``event`` did not carry: fetched
        raw when the event names its size (one request), else with the whole Task record."""
        task_id = future.known_task_id
        assert task_id is not None
        key = out_of_line_field(event)
        try:
            if key is not None:
                record = {**event, key: self.client.get_result_payload(task_id)}
            else:
                record = decode_payload_fields(self.client.get_task_record(task_id))
                future.note_event({**record, **(record.get("details") or {})})
        except Exception as e:  # noqa: BLE001 - the future carries the failure to the caller
            future.fail(e)
            return
        outcome = outcome_of(record)
        if outcome is None:
            future.fail(
                FxError(
                    f"task {task_id} ended {record.get('status')} without a "
                    f"result the service could return"
                )
            )
        else:
            future.resolve(outcome)

    def _resync(self, task_ids: list[str], *, quiet: bool = True) -> None:
        """batch_status for ``task_ids``; ids the service does not know fail their futures.

        A failure is logged when ``quiet`` (the tasks were just submitted: the stream asks
        again after its next reconnect, and their later events still arrive), else raised.
        """
        try:
            unknown = self._stream.resync(task_ids)
        except Exception as e:
            if not quiet:
                raise
            log.warning("fx: could not ask the service about %d tasks: %s", len(task_ids), e)
            return
        for task_id in unknown:
            with self._lock:
                future = self._pending.pop(task_id, None)
            if future is not None:
                self._stream.unwatch([task_id])
                future.fail(FxError(f"the service knows no task {task_id} of yours"))

    # --- cancelling --------------------------------------------------------------------------
    def cancel_future(self, future: FxFuture) -> bool:
        """``future.cancel()``: drop it if not sent yet, else cancel the remote task."""
        with self._lock:  # against _register: either it sees the flag, or we see the id
            unsent = future.known_task_id is None
            if unsent:
                future.cancel_requested = True
        if unsent:
            # Still queued (the submitter skips it) or in flight (cancelled at registration).
            return future.mark_cancelled()
        return self._cancel_remote(future)

    def _cancel_in_background(self, futures: Iterable[FxFuture]) -> None:
        """Cancel many futures: unsent ones at once, remote tasks from a background thread."""
        remote = []
        for future in futures:
            if future.done():
                continue
            if future.known_task_id is None:
                future.mark_cancelled()
            else:
                remote.append(future)
        if remote:
            self._background.submit(self._cancel_many, remote)

    def _cancel_many(self, futures: list[FxFuture]) -> None:
        for i, future in enumerate(futures):
            if future.done():
                continue
            try:
                self._cancel_remote(future)
            except Exception as e:  # noqa: BLE001 - the service is unreachable or refuses
                rest = [f for f in futures[i:] if not f.done()]
                log.warning(
                    "fx: cannot cancel %d tasks (%s); their futures are cancelled here, but the "
                    "tasks may still run",
                    len(rest),
                    e,
                )
                for f in rest:
                    self._forget_remote(f)
                    f.mark_cancelled()
                return

    def _cancel_remote(self, future: FxFuture) -> bool:
        task_id = future.known_task_id
        assert task_id is not None
        try:
            task = self.client.cancel(task_id)
        except FxAPIError as e:
            if 400 <= e.http_status < 500:
                return False  # already finished, or unknown: nothing to cancel
            raise
        if task["status"] in (TaskState.SUCCESS, TaskState.FAILED):
            return False  # finished first; its event completes the future
        self._forget_remote(future)
        return future.mark_cancelled()

    def _forget_remote(self, future: FxFuture) -> None:
        """Stop waiting for the events of a future's task."""
        task_id = future.known_task_id
        if task_id is None:
            return
        with self._lock:
            self._pending.pop(task_id, None)
        self._stream.unwatch([task_id])

    # --- re-attaching ------------------------------------------------------------------------
    def get_futures(self, task_ids: Iterable[str]) -> list[FxFuture]:
        """Futures for tasks submitted earlier (e.g. before a kernel restart), in order."""
        if self._shutdown:
            raise RuntimeError("cannot attach futures after shutdown")
        ids = _task_id_list(task_ids)
        # One future per task: an id given twice, or one this executor already follows, maps
        # to the same future (two futures under one id would leave one pending forever).
        by_id: dict[str, FxFuture] = {}
        with self._lock:
            for task_id in ids:
                known = self._pending.get(task_id)
                if known is not None:
                    by_id[task_id] = known
        new = {t: FxFuture(self, self.endpoint_id) for t in dict.fromkeys(ids) if t not in by_id}
        for future in new.values():
            future.status = "unknown"
        self._track(list(new.values()))
        followed = self._register(new.items())
        by_id.update(new)
        with self._lock:
            # A task this client submitted and followed since is not asked about: its end
            # comes as an event (a batch_run's tasks, re-attached in the same kernel).
            waiting = [t for t in new if t not in followed and self._pending.get(t) is new[t]]
        try:
            self._resync(waiting, quiet=False)
        except Exception as e:  # noqa: BLE001 - the futures carry it: nothing else will come
            for task_id in waiting:
                self._forget_remote(new[task_id])
                new[task_id].fail(e)
        return [by_id[t] for t in ids]

    # --- shutting down -----------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; with ``wait``, block until every future is done.

        ``cancel_futures`` cancels what has not finished (queued tasks are dropped, remote ones
        cancelled). Without ``wait``, futures still complete; resources go when they have.
        """
        with self._queue_ready:
            self._shutdown = True
            self._queue_ready.notify_all()
            submitter = self._submitter
        if cancel_futures:
            with self._lock:
                unfinished = list(self._unfinished)
            self._cancel_in_background(unfinished)
        if wait:
            if submitter is not None and submitter is not threading.current_thread():
                submitter.join()
            with self._lock:
                unfinished = list(self._unfinished)
            wait_futures(unfinished)
        self._release_if_finished()

    def _release_if_finished(self) -> None:
        """Free threads, listener and (own) client once shut down and every future is done."""
        with self._lock:
            if not self._shutdown or self._released or self._unfinished or self._queue:
                return
            if (
                self._submitter is not None
                and self._submitter.is_alive()
                and (self._submitter is not threading.current_thread())
            ):
                return
            self._released = True
        self._stream.remove_listener(self._listener)
        self._background.stop()
        if self._owns_client:
            self.client.close()


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _task_id_list(task_ids: Iterable[Any]) -> list[str]:
    """``task_ids`` as a list of id strings; a bad entry is refused, by position, up front."""
    if isinstance(task_ids, (str, bytes)):
        raise TypeError(
            f"task_ids must be a list of task ids, not one {type(task_ids).__name__} "
            f"(get_futures([task_id]) for one task)"
        )
    ids = []
    for index, task_id in enumerate(task_ids):
        if isinstance(task_id, uuid.UUID):
            task_id = str(task_id)
        if not isinstance(task_id, str):
            raise TypeError(
                f"task_ids[{index}] must be a task id string, got {type(task_id).__name__} "
                f"{task_id!r}"
            )
        if not task_id.strip() or "/" in task_id:
            raise ValueError(f"task_ids[{index}] is not a task id: {task_id!r}")
        ids.append(task_id)
    return ids


@atexit.register
def _send_queued_at_exit() -> None:
    """Give every Executor's submitter (a daemon thread) the time to send what is queued,
    each bounded by its client's HTTP timeout, before the interpreter stops it."""
    for executor in list(_live):
        if not executor._flush(executor.task_id_timeout):
            log.warning("fx: tasks still queued at exit were not sent: the service did not answer")
