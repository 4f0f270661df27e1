"""``FxFuture``: a ``concurrent.futures.Future`` for one fx task.

It stays *pending* (in ``concurrent.futures`` terms) until the task ends, whatever the remote
state, so ``cancel()`` can still reach a running task: the remote state is ``status``, and
``running()`` reports it. The Executor completes it from the event stream.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any

from fx_endpoint.protocol import TaskState

from . import reprs
from .tasks import Outcome

if TYPE_CHECKING:
    from .executor import Executor

#: ``status`` of a future whose task the service has not acknowledged yet.
SUBMITTING = "submitting"


class FxFuture(Future):  # type: ignore[type-arg]
    """The result of an fx task, to come.

    ``task_id`` is the task's id (reading it waits until the service accepted the task);
    ``status`` is the task's last known state (funcX's names); ``stdout``/``stderr`` are what
    the function printed, when the task ended with them.
    """

    def __init__(self, executor: Executor | None = None, endpoint_id: str | None = None) -> None:
        super().__init__()
        self._task_id: str | None = None
        #: Set (with the executor's lock held) when the task will never get an id: its submit
        #: failed, or it was cancelled before it was sent.
        self.unsent = False
        self.endpoint_id = endpoint_id
        self.status = SUBMITTING
        self.stdout = ""
        self.stderr = ""
        self._executor = executor
        self._cancel_lock = threading.Lock()
        self._cancel_notified = False
        #: Set (before the state changes) once cancelled: a lock-free check for hot loops.
        self.cancel_requested = False

    def __repr__(self) -> str:
        state = self.status if not self.done() else self._state.lower()
        return f"<FxFuture task_id={self._task_id} status={state}>"

    def _repr_html_(self) -> str:
        return reprs.future_html(self._task_id, self.status, self.endpoint_id)

    @property
    def task_id(self) -> str | None:
        """The task's id, as soon as the service has accepted the task.

        ``submit`` returns before its request is sent (a background thread batches requests),
        so reading this right after ``submit`` waits for that request, at most the client's
        HTTP timeout (then ``TimeoutError``). A submit that failed raises its error here too;
        a future cancelled before its task was sent has no id (None).
        """
        task_id = self._task_id
        if task_id is not None or self._executor is None:
            return task_id
        return self._executor.wait_for_task_id(self)

    @task_id.setter
    def task_id(self, value: str | None) -> None:
        self._task_id = value

    @property
    def known_task_id(self) -> str | None:
        """The task's id if the service accepted the task already, else None; never waits
        (for displays and callbacks that must not block)."""
        return self._task_id

    def running(self) -> bool:
        """Whether the task is running on a worker right now."""
        return not self.done() and self.status == TaskState.RUNNING

    def cancel(self) -> bool:
        """Cancel the task: a queued one is dropped, a running one's worker is stopped.

        Returns True when the cancel was accepted (the future is then cancelled), False when
        the task had already finished.
        """
        if self.done():
            return self.cancelled()
        if self._executor is None:
            return self.mark_cancelled()
        return self._executor.cancel_future(self)

    def mark_cancelled(self) -> bool:
        """Cancel locally (no request): the task is known to be, or will be, cancelled."""
        with self._cancel_lock:
            self.cancel_requested = True
            if not Future.cancel(self):
                self.cancel_requested = False
                return False
            self.status = TaskState.CANCELLED
            if not self._cancel_notified:
                # Wakes wait()/as_completed() too, which a bare Future.cancel() leaves to the
                # worker that would have run it; here nobody else would.
                self._cancel_notified = True
                self.set_running_or_notify_cancel()
        return True

    def resolve(self, outcome: Outcome) -> None:
        """Complete from a task outcome; a future already done (cancelled meanwhile) stays so."""
        self.status = outcome.status
        if outcome.cancelled:
            self.mark_cancelled()
            return
        try:
            if outcome.exception is not None:
                self.set_exception(outcome.exception)
            else:
                self.set_result(outcome.value)
        except InvalidStateError:
            pass

    def fail(self, exception: BaseException) -> None:
        """Complete with an error of the SDK's own (submit refused, result not fetchable)."""
        try:
            self.set_exception(exception)
        except InvalidStateError:
            pass

    def note_event(self, event: dict[str, Any]) -> None:
        """Remember what an event says about the task (state, output, endpoint)."""
        status = event.get("status")
        if isinstance(status, str):
            self.status = status
        if event.get("stdout"):
            self.stdout = event["stdout"]
        if event.get("stderr"):
            self.stderr = event["stderr"]
        endpoint_id = event.get("endpoint_id")
        if endpoint_id and endpoint_id != self.endpoint_id:
            self.endpoint_id = endpoint_id
