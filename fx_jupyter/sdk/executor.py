"""``Executor``: fx as a ``concurrent.futures.Executor`` (funcX's ``FuncXExecutor``).

Three paths, each batched (DESIGN.md invariant 3):

* **submit**: the calling thread registers the function (once per function object) and encodes
  the arguments; a background submitter thread sends *whatever is queued* in one
  ``POST submit``. A lone submit goes out at once; under load the queue fills while a request is
  in flight, so batches form by themselves, with no timer.
* **completion**: futures complete from the client's :class:`EventStream` (results come inline
  in the events), never by polling. Results too large to travel inline are fetched by a small
  thread pool.
* **re-attaching**: :meth:`Executor.get_futures` rebuilds futures for task ids (after a kernel
  restart): one ``batch_status`` for the finished ones, events for the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor as _BaseExecutor
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

from fx_endpoint.protocol import TaskState

from .batch import check_walltime, encode_args, encode_task
from .client import Client
from .errors import FxAPIError, FxError
from .futures import FxFuture
from .tasks import decode_payload_fields, outcome_of

log = logging.getLogger(__name__)

#: Threads that fetch results too large for an event (and send remote cancels).
FETCH_THREADS = 2


class Executor(_BaseExecutor):
    """Run functions on an fx endpoint with the ``concurrent.futures`` interface.

    ``endpoint_id`` is the endpoint's id or name. ``client`` defaults to ``Client()`` (the
    service of the Jupyter server this runs under); an Executor that made its own client closes
    it on shutdown. ``walltime`` (seconds) applies to every task it submits.

    Functions are registered once per function object: redefine a function (as re-running a
    notebook cell does) to pick up new code or new values of the globals it captured.
    """

    def __init__(
        self,
        endpoint_id: str | None = None,
        client: Client | None = None,
        *,
        walltime: float | None = None,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.walltime = None if walltime is None else check_walltime(walltime)
        self._owns_client = client is None
        self.client = client if client is not None else Client()
        self._stream = self.client.events  # connects while the first submit is prepared
        self._lock = threading.Lock()
        # Futures by task id, from registration to their terminal event.
        self._pending: dict[str, FxFuture] = {}
        # Every future not done yet, whatever its stage (queued, in flight, fetching).
        self._unfinished: set[FxFuture] = set()
        self._functions: dict[Any, str] = {}
        self._queue: deque[tuple[FxFuture, str]] = deque()
        self._queue_ready = threading.Condition(self._lock)
        self._shutdown = False
        self._released = False
        self._submitter: threading.Thread | None = None
        self._fetcher: ThreadPoolExecutor | None = None
        self._listener = self._stream.add_listener(self._on_event)
        #: Counters for diagnostics: requests sent and tasks they carried.
        self.stats = {"submit_requests": 0, "tasks_submitted": 0}

    def __repr__(self) -> str:
        return f"<fx Executor endpoint={self.endpoint_id} unfinished={len(self._unfinished)}>"

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
        self._check_open()
        end_time = None if timeout is None else timeout + time.monotonic()
        futures = self._enqueue(
            self.register_function(fn), [(args, {}) for args in zip(*iterables)]
        )

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

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self.endpoint_id is None or not str(self.endpoint_id).strip():
            raise ValueError("this Executor has no endpoint: set Executor(endpoint_id=...)")

    def _enqueue(
        self, function_id: str, calls: Iterable[tuple[Sequence[Any], dict[str, Any]]]
    ) -> list[FxFuture]:
        endpoint_id = self.endpoint_id
        items = [
            (
                FxFuture(self, endpoint_id),
                encode_task(endpoint_id, function_id, encode_args(args, kwargs), self.walltime),
            )
            for args, kwargs in calls
        ]
        futures = [future for future, _ in items]
        self._track(futures)
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
        self._release_if_finished()

    def _submit_loop(self) -> None:
        while True:
            with self._queue_ready:
                while not self._queue and not self._shutdown:
                    self._queue_ready.wait()
                if not self._queue:
                    break
                items = list(self._queue)
                self._queue.clear()
            items = [(f, fragment) for f, fragment in items if not f.cancelled()]
            if items:
                self._send(items)
        self._release_if_finished()

    def _send(self, items: list[tuple[FxFuture, str]]) -> None:
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
            for future in futures[sent:]:
                future.fail(e)
        # A (re)connect during the request may have lost events of these tasks; once connected,
        # the stream itself resyncs everything watched, so only this window needs a check.
        now = self._stream.generation
        if sent and now is not None and now != generation:
            self._resync([f.task_id for f in futures[:sent] if f.task_id and not f.done()])

    def _register(self, pairs: Iterable[tuple[str, FxFuture]]) -> None:
        """Attach task ids to futures; complete at once those whose end already arrived."""
        arrived: list[tuple[FxFuture, dict[str, Any]]] = []
        cancel: list[FxFuture] = []
        watch: list[str] = []
        with self._lock:
            for task_id, future in pairs:
                future.task_id = task_id
                if future.status == "submitting":
                    future.status = TaskState.WAITING_FOR_EP
                if future.cancelled():
                    cancel.append(future)
                    continue
                event = self._stream.take_recent(task_id)
                if event is not None:
                    arrived.append((future, event))
                else:
                    self._pending[task_id] = future
                    watch.append(task_id)
            self._stream.watch(watch)
        for future, event in arrived:
            self._complete(future, event)
        for future in cancel:  # cancelled while its submit was in flight
            self._background(self._cancel_remote, future)

    # --- completing --------------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        task_id = event.get("task_id")
        with self._lock:
            future = self._pending.get(task_id)  # type: ignore[arg-type]
            if future is None:
                return
            if event.get("status") not in TaskState.TERMINAL:
                future.note_event(event)
                return
            del self._pending[task_id]  # type: ignore[arg-type]
        self._complete(future, event)

    def _complete(self, future: FxFuture, event: dict[str, Any]) -> None:
        future.note_event(event)
        outcome = outcome_of(event)
        if outcome is None:  # ended without its payload inline: too large for an event
            self._background(self._fetch, future)
        else:
            future.resolve(outcome)

    def _fetch(self, future: FxFuture) -> None:
        assert future.task_id is not None
        try:
            record = decode_payload_fields(self.client.get_task_record(future.task_id))
        except Exception as e:  # noqa: BLE001 - the future carries the failure to the caller
            future.fail(e)
            return
        future.note_event({**record, **(record.get("details") or {})})
        outcome = outcome_of(record)
        if outcome is None:
            future.fail(
                FxError(
                    f"task {future.task_id} ended {record.get('status')} without a "
                    f"result the service could return"
                )
            )
        else:
            future.resolve(outcome)

    def _background(self, fn: Callable[[FxFuture], object], future: FxFuture) -> None:
        with self._lock:
            if self._fetcher is None:
                self._fetcher = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="fx-fetch")
            fetcher = self._fetcher
        fetcher.submit(fn, future)

    def _resync(self, task_ids: list[str]) -> None:
        """batch_status for ``task_ids``; ids the service does not know fail their futures."""
        try:
            unknown = self._stream.resync(task_ids)
        except Exception as e:  # noqa: BLE001 - logged; later events or a reconnect cover it
            # Not fatal: the stream asks again after its next reconnect, and later events of
            # these tasks still arrive.
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
        if future.task_id is None:
            # Still queued (the submitter skips it) or in flight (cancelled at registration).
            return future.mark_cancelled()
        return self._cancel_remote(future)

    def _cancel_in_background(self, futures: Iterable[FxFuture]) -> None:
        """Cancel many futures: unsent ones at once, remote tasks from the fetch threads."""
        for future in futures:
            if future.done():
                continue
            if future.task_id is None:
                future.mark_cancelled()
            else:
                self._background(self._cancel_remote, future)

    def _cancel_remote(self, future: FxFuture) -> bool:
        assert future.task_id is not None
        try:
            task = self.client.cancel(future.task_id)
        except FxAPIError as e:
            if 400 <= e.http_status < 500:
                return False  # already finished, or unknown: nothing to cancel
            raise
        if task["status"] in (TaskState.SUCCESS, TaskState.FAILED):
            return False  # finished first; its event completes the future
        with self._lock:
            self._pending.pop(future.task_id, None)
        self._stream.unwatch([future.task_id])
        return future.mark_cancelled()

    # --- re-attaching ------------------------------------------------------------------------
    def get_futures(self, task_ids: Iterable[str]) -> list[FxFuture]:
        """Futures for tasks submitted earlier (e.g. before a kernel restart), in order."""
        if self._shutdown:
            raise RuntimeError("cannot attach futures after shutdown")
        ids = list(task_ids)
        futures = [FxFuture(self, self.endpoint_id) for _ in ids]
        for future in futures:
            future.status = "unknown"
        self._track(futures)
        self._register(zip(ids, futures))
        with self._lock:
            waiting = [t for t in ids if t in self._pending]
        self._resync(waiting)
        return futures

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
            fetcher, self._fetcher = self._fetcher, None
        self._stream.remove_listener(self._listener)
        if fetcher is not None:
            fetcher.shutdown(wait=False)
        if self._owns_client:
            self.client.close()
