"""The small interface between the endpoint daemon and an engine that runs tasks.

The daemon owns the connection to the service, the journal and the credit; an engine owns the
workers. The daemon is one thread running one ZeroMQ poll loop, and an engine plugs into that
loop instead of bringing threads of its own: it names the sockets or file descriptors it wants
watched (:meth:`Engine.poll_items`), says when it next needs a turn (:meth:`Engine.next_timeout`)
and does its work in :meth:`Engine.process`. It tells the daemon what happened through an
:class:`EngineListener`. An engine built on threads (Parsl's executor) can wake the loop through
a pipe or an inproc socket it lists in ``poll_items``.

Adding an engine is adding one module with one :class:`Engine` subclass and naming it in
:func:`fx_endpoint.engines.create_engine`.
"""

from __future__ import annotations

import abc
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any, Protocol

from .. import serialize
from ..config import EndpointConfig
from ..paths import EndpointDir
from ..protocol import readable_text


@dataclass
class Task:
    """A task as an engine sees it: what to run, with what, for how long at most."""

    task_id: str
    function_id: str
    #: The serialized function (``serialize.serialize_function``); bytes or a zmq Frame.
    function: Any
    #: The serialized ``(args, kwargs)``; bytes or a zmq Frame.
    args: Any
    walltime: float | None = None
    #: Times this task was started again after its worker died under it.
    retries: int = 0


@dataclass
class TaskOutcome:
    """How a task ended, with its result payload (a value or a ``RemoteError``)."""

    task_id: str
    status: str
    payload: Any
    finished: float
    started: float | None = None
    stdout: str = ""
    stderr: str = ""
    exception_text: str | None = None
    retries: int = 0

    def __post_init__(self) -> None:
        self.stdout = readable_text(self.stdout)
        self.stderr = readable_text(self.stderr)
        if self.exception_text is not None:
            self.exception_text = readable_text(self.exception_text)


def ran_outcome(
    task: Task,
    ok: bool,
    payload: Any,
    started: float,
    finished: float,
    stdout: str,
    stderr: str,
    exception_text: str | None,
) -> TaskOutcome:
    """The outcome of a task a worker ran to its end (what :func:`fx_endpoint.worker.run_task`
    reports): its value, or the exception its function raised."""
    return TaskOutcome(
        task.task_id,
        "success" if ok else "failed",
        payload,
        finished,
        started=started,
        stdout=stdout,
        stderr=stderr,
        exception_text=exception_text,
        retries=task.retries,
    )


def cancelled_outcome(task: Task) -> TaskOutcome:
    """The outcome of a cancelled task: its payload raises ``CancelledError`` in the caller."""
    error = CancelledError(f"task {task.task_id} was cancelled")
    return TaskOutcome(
        task.task_id,
        "cancelled",
        serialize.serialize_exception(error, f"CancelledError: {error}\n"),
        time.time(),
        exception_text=f"CancelledError: {error}",
        retries=task.retries,
    )


def failed_outcome(task: Task, error: BaseException, started: float | None = None) -> TaskOutcome:
    """The outcome of a task the engine itself failed (its worker died, its walltime passed)."""
    text = f"{type(error).__name__}: {error}"
    return TaskOutcome(
        task.task_id,
        "failed",
        serialize.serialize_exception(error, text + "\n"),
        time.time(),
        started=started,
        exception_text=text,
        retries=task.retries,
    )


class EngineListener(Protocol):
    """What an engine reports to the daemon.

    A task the daemon hands over is ``waiting-for-launch``. An engine whose workers come and go
    with cluster blocks (the parsl engine) says when a task waits for a block to start
    (``waiting-for-nodes``) and when, a block being up, it waits for a worker again.
    """

    def task_waiting_for_nodes(self, task_id: str, ts: float) -> None:
        """``task_id`` waits for a block of nodes to start, since ``ts``."""

    def task_waiting_for_launch(self, task_id: str, ts: float) -> None:
        """``task_id`` waits for a worker of a running block, since ``ts``."""

    def task_running(self, task_id: str, ts: float) -> None:
        """A worker started ``task_id`` at ``ts``."""

    def task_finished(self, outcome: TaskOutcome) -> None:
        """A task ended: success, failure, or cancellation."""


class EngineError(RuntimeError):
    """The engine cannot run tasks at all (workers cannot start); the message says why."""


class Engine(abc.ABC):
    """An engine runs the tasks the daemon hands it and reports how each one ends.

    Every task handed to :meth:`submit` is eventually reported to
    :meth:`EngineListener.task_finished` exactly once, unless the engine is stopped first.
    """

    #: The ``engine.type`` value in config.yaml that selects this engine.
    type_name: str = ""

    def __init__(
        self, config: EndpointConfig, endpoint_dir: EndpointDir, listener: EngineListener
    ) -> None:
        self.config = config
        self.endpoint_dir = endpoint_dir
        self.listener = listener

    @property
    @abc.abstractmethod
    def max_concurrency(self) -> int:
        """How many tasks can run at once (the daemon adds its prefetch on top)."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start the workers (without waiting for them)."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """Whether the workers started at launch are up, so ``start`` may report success."""

    @abc.abstractmethod
    def submit(self, tasks: list[Task]) -> None:
        """Queue tasks to run."""

    @abc.abstractmethod
    def cancel(self, task_ids: list[str]) -> None:
        """Drop queued tasks and stop running ones; each is reported ``cancelled``.

        Ids the engine does not hold (finished already) are ignored.
        """

    @abc.abstractmethod
    def poll_items(self) -> list[Any]:
        """ZeroMQ sockets and file descriptors whose readability needs :meth:`process`."""

    @abc.abstractmethod
    def next_timeout(self, now: float) -> float | None:
        """Seconds until :meth:`process` must run even if nothing is readable (None: never)."""

    @abc.abstractmethod
    def process(self, ready: set[Any], now: float) -> None:
        """Handle whatever is readable among ``ready`` and any deadline that has passed.

        Raises :class:`EngineError` when the engine can no longer run tasks.
        """

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """Counts for heartbeats and ``fx-endpoint status``: workers, idle_workers, queued,
        running."""

    @abc.abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """Stop every worker, waiting up to ``timeout`` seconds before killing them."""
