"""The parsl engine: tasks run on Parsl's HighThroughputExecutor, on blocks its provider gets.

Parsl does the heavy lifting: the HighThroughputExecutor (HTEX) brings its interchange and a
worker pool on every node of a block, its provider gets the blocks (Slurm or PBS jobs, HTCondor
jobs, Kubernetes pods, processes on this machine), and its JobStatusPoller scales them between
``min_blocks`` and ``max_blocks``: a block is requested when tasks wait, and blocks are released
after ``max_idletime`` without tasks (:mod:`.parsl_config` maps config.yaml to those objects).
This module adds what fx promises on top:

- each task runs :func:`execute_task` in an HTEX worker: it loads the function (cached by id in
  the worker process) and runs it with the process engine's own code
  (:func:`fx_endpoint.worker.run_task`), so results, exceptions and stdout/stderr are the same;
- HTEX gets at most twice as many tasks as its blocks can run at once; the rest wait here, so
  that cancelling a waiting task really drops it. A task cancelled once HTEX has it is reported
  cancelled at once and its result is ignored when it comes: HTEX cannot take a task back;
- a task whose worker or node is lost (HTEX's ``WorkerLost`` / ``ManagerLost``) runs again up to
  ``max_retries_on_system_failure`` times, then fails with ``WorkerLost`` saying what was lost;
- a walltime is enforced in the worker: at the walltime an alarm interrupts the function, and a
  function that still runs :data:`WALLTIME_GRACE` seconds later has its worker ended;
- states: a thread asks the interchange every :data:`OBSERVE_PERIOD` seconds which managers
  (one per node) are connected and how many tasks each holds. While no worker is connected the
  tasks wait for nodes (``waiting-for-nodes``), then for a worker (``waiting-for-launch``).
  The interchange hands out tasks oldest first, so the N oldest tasks in HTEX are the N its
  managers hold: those are ``running`` (HTEX prefetches none, so a manager runs all it holds).
  A task short enough to run between two looks is reported ``running`` (since its worker
  started it) when its result comes.

HTEX's result thread and that observer never call the listener: they queue what happened and
wake the daemon's loop through a socket pair, whose read end is this engine's poll item.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from parsl.executors import HighThroughputExecutor
from parsl.executors.high_throughput.errors import ManagerLost
from parsl.executors.high_throughput.errors import WorkerLost as HtexWorkerLost
from parsl.jobs.job_status_poller import JobStatusPoller
from parsl.utils import Timer

from .. import worker
from ..errors import WalltimeExceeded, WorkerLost
from . import parsl_config
from .base import (
    Engine,
    EngineError,
    Task,
    TaskOutcome,
    cancelled_outcome,
    failed_outcome,
    ran_outcome,
)

log = logging.getLogger(__name__)

#: Seconds between two looks at the interchange's managers and the blocks.
OBSERVE_PERIOD = 0.5
#: Tasks handed to HTEX per task its blocks can run at once: one running and one queued at
#: the interchange, so that a worker that finishes finds its next task there rather than after
#: a round trip through this loop (twice as fast as one for short tasks, and no slower than
#: more).
HTEX_DEPTH = 2
#: Seconds a task may run on after its walltime interrupt before its worker is ended.
WALLTIME_GRACE = 5.0
#: How :func:`execute_task` is named to HTEX's workers.
EXECUTE_TASK = f"{__name__}.execute_task"
#: The exit code of a worker ended because its task ignored the walltime interrupt.
WALLTIME_EXIT_CODE = 75

# --- in the HTEX worker -----------------------------------------------------------------------

_FUNCTIONS = worker.FunctionCache()


class _WalltimeInterrupt(BaseException):
    """Raised in a task's code when its walltime has passed. A BaseException, like
    KeyboardInterrupt, so that a task's ``except Exception`` does not swallow it."""


class _Alarm:
    """The walltime alarm of the task this worker runs (one at a time, in its main thread)."""

    armed = False
    interrupted = False
    fired = 0

    @classmethod
    def on_signal(cls, signum: int, frame: Any) -> None:
        cls.fired += 1
        if not cls.armed:
            return
        if cls.fired > 1:
            os._exit(WALLTIME_EXIT_CODE)  # the task ignored the interrupt for WALLTIME_GRACE s
        cls.interrupted = True
        raise _WalltimeInterrupt()


def execute_task(
    args: bytes, *, function_id: str, function: bytes, walltime: float | None
) -> tuple[str, float, float, str, str, str | None, bytes]:
    """Run one task in an HTEX worker; never raises.

    Returns ``(status, started, finished, stdout, stderr, exception_text, payload)``, status
    being ``success``, ``failed`` or ``walltime`` (interrupted at its walltime).
    """
    _FUNCTIONS.add(function_id, function)
    if not walltime or threading.current_thread() is not threading.main_thread():
        ok, t0, t1, out, err, exc, payload = worker.run_task(_FUNCTIONS, function_id, args)
        return ("success" if ok else "failed", t0, t1, out, err, exc, payload)
    started = time.time()
    previous = signal.signal(signal.SIGALRM, _Alarm.on_signal)
    _Alarm.fired, _Alarm.interrupted, _Alarm.armed = 0, False, True
    signal.setitimer(signal.ITIMER_REAL, walltime, WALLTIME_GRACE)
    try:
        ok, t0, t1, out, err, exc, payload = worker.run_task(_FUNCTIONS, function_id, args)
        _Alarm.armed = False
    except _WalltimeInterrupt:  # it came between the function's end and the line above
        _Alarm.armed = False
        ok, t0, t1, out, err, exc, payload = False, started, time.time(), "", "", None, b""
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    status = "walltime" if _Alarm.interrupted else "success" if ok else "failed"
    return (status, t0, t1, out, err, exc, payload)


# --- in the endpoint daemon -------------------------------------------------------------------


@dataclass(eq=False)
class _Held:
    """A task the engine holds, waiting here or handed to HTEX."""

    task: Task
    #: HTEX's id for it once handed over, and when it was.
    htex_id: int | None = None
    handed: float = 0.0
    running: bool = False
    waiting_for_nodes: bool = False
    cancelled: bool = False


@dataclass(frozen=True)
class _Snapshot:
    """What the interchange and the provider said at one moment."""

    taken: float = 0.0
    #: Workers of the connected managers that take tasks.
    workers: int = 0
    #: Tasks all connected managers hold.
    at_managers: int = 0
    blocks_running: int = 0
    blocks_pending: int = 0


class ParslEngine(Engine):
    """Parsl's HighThroughputExecutor with its provider, scaled by Parsl's JobStatusPoller."""

    type_name = "parsl"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_retries = self.config.max_retries_on_system_failure
        self._run_dir = self.endpoint_dir.path / "parsl"
        self._executor: HighThroughputExecutor | None = None
        self._poller: JobStatusPoller | None = None
        #: Every task held and not reported finished, by id.
        self._held: dict[str, _Held] = {}
        #: Tasks waiting here for room in HTEX.
        self._pending: deque[_Held] = deque()
        #: Tasks in HTEX by HTEX id, oldest first (cancelled ones too, until HTEX is done).
        self._in_htex: dict[int, _Held] = {}
        #: Futures HTEX completed, queued by its result thread.
        self._completed: deque[Future[Any]] = deque()
        self._snapshot = _Snapshot()
        self._applied: _Snapshot | None = None
        self._observer: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._woken = False

    # --- Engine interface -------------------------------------------------------------------

    @property
    def max_concurrency(self) -> int:
        return self.config.engine.max_workers

    @property
    def ready(self) -> bool:
        # Blocks may take hours to start on a busy cluster: being able to queue is enough.
        return self._executor is not None

    def start(self) -> None:
        executor = parsl_config.build_executor(
            self.config, self._run_dir, f"fx-{self.endpoint_dir.name}"
        )
        try:
            executor.start()
        except Exception as e:
            executor.shutdown(timeout=1)
            raise EngineError(
                f"Parsl's interchange did not start: {e}; see {self._run_dir}/{executor.label}"
            ) from e
        self._executor = executor
        self._poller = parsl_config.start_scaling(self.config.engine, executor)
        self._observer = threading.Thread(
            target=self._observe, args=(executor,), name="fx-parsl-observer"
        )
        self._observer.daemon = True
        self._observer.start()
        log.info(
            "parsl engine: %s provider, blocks %d-%d (%d at start), %d worker(s) per node; "
            "files in %s",
            (self.config.engine.provider or {"type": "local"})["type"],
            self.config.engine.min_blocks,
            self.config.engine.max_blocks,
            self.config.engine.init_blocks,
            self.config.engine.max_workers_per_node,
            self._run_dir,
        )

    def submit(self, tasks: list[Task]) -> None:
        now = time.time()
        no_workers = self._snapshot.workers == 0
        for task in tasks:
            held = _Held(task, waiting_for_nodes=no_workers)
            self._held[task.task_id] = held
            self._pending.append(held)
            if no_workers:
                self.listener.task_waiting_for_nodes(task.task_id, now)
        self._feed()

    def cancel(self, task_ids: list[str]) -> None:
        dropped = False
        for task_id in task_ids:
            held = self._held.pop(task_id, None)
            if held is None:
                continue
            held.cancelled = True
            dropped = dropped or held.htex_id is None
            self.listener.task_finished(cancelled_outcome(held.task))
        if dropped:
            self._pending = deque(h for h in self._pending if not h.cancelled)

    def poll_items(self) -> list[Any]:
        return [self._wake_r.fileno()]

    def next_timeout(self, now: float) -> float | None:
        return None  # the observer wakes the loop

    def process(self, ready: set[Any], now: float) -> None:
        if self._wake_r.fileno() in ready:
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
        self._woken = False
        self._check_executor()
        while self._completed:
            self._settle(self._completed.popleft())
        if self._snapshot is not self._applied:
            self._apply(self._snapshot)
        self._feed()

    def status(self) -> dict[str, Any]:
        snap = self._snapshot
        running = sum(1 for h in self._held.values() if h.running)
        return {
            "type": self.type_name,
            "provider": (self.config.engine.provider or {"type": "local"})["type"],
            "max_workers": self.max_concurrency,
            "workers": snap.workers,
            "idle_workers": max(0, snap.workers - snap.at_managers),
            "queued": len(self._held) - running,
            "running": running,
            "blocks": {"pending": snap.blocks_pending, "running": snap.blocks_running},
            "max_blocks": self.config.engine.max_blocks,
        }

    def stop(self, timeout: float = 5.0) -> None:
        # The observer first: it shares HTEX's command socket, which shutdown closes.
        self._stopping.set()
        if self._observer is not None:
            self._observer.join(timeout)
        executor, poller = self._executor, self._poller
        if executor is not None and poller is not None:
            if executor.bad_state_is_set or _interchange_exit(executor) is not None:
                # The poller would scale in through the interchange, which cannot answer.
                Timer.close(poller, timeout)
                _cancel_blocks(executor)
            else:
                poller.close(timeout)  # cancels every block
            executor.shutdown(timeout=timeout)
        self._wake_r.close()
        self._wake_w.close()

    # --- HTEX -------------------------------------------------------------------------------

    def _feed(self) -> None:
        """Hand HTEX the tasks waiting here, up to HTEX_DEPTH per task its blocks can run.

        What the blocks can run is max_workers (max_blocks x nodes x workers per node), or the
        workers connected when nodes have more: Parsl's strategy sees all the demand it may
        serve, and the rest stays here, where cancelling drops it.
        """
        executor = self._executor
        assert executor is not None, "start() first"
        slots = max(self.max_concurrency, self._snapshot.workers)
        room = HTEX_DEPTH * slots - len(self._in_htex)
        while room > 0 and self._pending:
            held = self._pending.popleft()
            task = held.task
            context = {
                "task_executor": {
                    "f": EXECUTE_TASK,
                    "k": {
                        "function_id": task.function_id,
                        "function": bytes(task.function),
                        "walltime": task.walltime,
                    },
                }
            }
            try:
                future = executor.submit_payload(context, bytes(task.args))
            except Exception as e:
                self._pending.appendleft(held)
                self._check_executor()
                raise EngineError(f"Parsl's executor refused a task: {e}") from e
            held.htex_id = future.parsl_executor_task_id
            held.handed = time.time()
            self._in_htex[held.htex_id] = held
            future.add_done_callback(self._on_done)
            room -= 1

    def _on_done(self, future: Future[Any]) -> None:
        """In HTEX's result thread: queue the future and wake the loop (once per turn)."""
        self._completed.append(future)
        self._wake()

    def _wake(self) -> None:
        if not self._woken:
            self._woken = True
            try:
                self._wake_w.send(b"\0")
            except OSError:  # full (the loop is already woken) or closed (stopping)
                pass

    def _settle(self, future: Future[Any]) -> None:
        held = self._in_htex.pop(future.parsl_executor_task_id, None)  # type: ignore[attr-defined]
        if held is None or held.cancelled:
            return
        task = held.task
        try:
            status, t0, t1, out, err, exc, payload = future.result()
        except (HtexWorkerLost, ManagerLost) as e:
            self._lost(held, e)
            return
        except Exception as e:  # noqa: BLE001 - whatever HTEX failed the task with is its result
            self._check_executor()
            self._finish(held, failed_outcome(task, e))
            return
        if status == "walltime":
            error = WalltimeExceeded(
                f"task {task.task_id} exceeded its walltime of {task.walltime:g} s; "
                "it was interrupted"
            )
            outcome = failed_outcome(task, error, t0)
            outcome.stdout, outcome.stderr = out, err
        else:
            outcome = ran_outcome(task, status == "success", payload, t0, t1, out, err, exc)
        if not held.running:
            # It ran between two looks of the observer (a short task does): it was running all
            # the same, since t0.
            held.running = True
            self.listener.task_running(task.task_id, t0)
        self._finish(held, outcome)

    def _finish(self, held: _Held, outcome: TaskOutcome) -> None:
        del self._held[held.task.task_id]
        self.listener.task_finished(outcome)

    def _lost(self, held: _Held, error: Exception) -> None:
        """HTEX lost the worker or the node running ``held``: retry it, or fail it."""
        task = held.task
        if task.walltime and time.time() - held.handed >= task.walltime + WALLTIME_GRACE:
            # execute_task ended its worker, most likely: the task ignored its interrupt.
            timeout = WalltimeExceeded(
                f"task {task.task_id} exceeded its walltime of {task.walltime:g} s and kept "
                f"running {WALLTIME_GRACE:g} s after it was interrupted; its worker was stopped"
            )
            self._finish(held, failed_outcome(task, timeout))
            return
        what = (
            "worker"
            if isinstance(error, HtexWorkerLost)
            else "node (its block ended or stopped answering)"
        )
        if task.retries < self._max_retries:
            task.retries += 1
            log.warning(
                "the %s running task %s was lost (%s); retrying it (%d of %d)",
                what,
                task.task_id,
                error,
                task.retries,
                self._max_retries,
            )
            held.htex_id = None
            held.running = False
            self._pending.appendleft(held)
            return
        lost = WorkerLost(
            f"the {what} running task {task.task_id} was lost ({error}); the task was tried "
            f"{task.retries + 1} time(s) (max_retries_on_system_failure: {self._max_retries})"
        )
        self._finish(held, failed_outcome(task, lost))

    def _check_executor(self) -> None:
        """Raise EngineError when Parsl gave up on its blocks or its interchange died."""
        executor = self._executor
        if executor is None:
            return
        if executor.bad_state_is_set:
            raise EngineError(
                f"Parsl gave up on this endpoint's blocks: {str(executor.executor_exception).strip()}"
                f"\nsee the job scripts and their output in {self._run_dir}/submit_scripts"
            )
        code = _interchange_exit(executor)
        if code is not None:
            raise EngineError(
                f"Parsl's interchange exited with code {code}; see "
                f"{self._run_dir}/{executor.label}/interchange.log"
            )

    # --- states -----------------------------------------------------------------------------

    def _observe(self, executor: HighThroughputExecutor) -> None:
        """The observer thread: a snapshot of managers and blocks every OBSERVE_PERIOD."""
        while not self._stopping.wait(OBSERVE_PERIOD):
            if executor.bad_state_is_set or _interchange_exit(executor) is not None:
                self._wake()  # the loop's _check_executor says why
                return
            try:
                managers = executor.connected_managers()
            except Exception:
                if self._stopping.is_set():
                    return
                log.exception("asking Parsl's interchange for its managers failed")
                continue
            # A block whose managers are connected but held is being released: not pending.
            active = [m for m in managers if m["active"]]
            known = {m["block_id"] for m in managers}
            blocks = dict(executor.status_facade)
            self._snapshot = _Snapshot(
                taken=time.time(),
                workers=sum(m["worker_count"] for m in active),
                at_managers=sum(m["tasks"] for m in managers),
                blocks_running=len({m["block_id"] for m in active}),
                blocks_pending=sum(
                    1 for b, s in blocks.items() if not s.terminal and b not in known
                ),
            )
            self._wake()

    def _apply(self, snap: _Snapshot) -> None:
        """Report the states a snapshot shows: running, waiting for nodes, or for a worker."""
        last = self._applied or _Snapshot()
        shape = (snap.blocks_pending, snap.blocks_running, snap.workers)
        if shape != (last.blocks_pending, last.blocks_running, last.workers):
            log.info("blocks: %d pending, %d running; %d worker(s) connected", *shape)
        self._applied = snap
        for held in itertools.islice(self._in_htex.values(), snap.at_managers):
            if not held.running and not held.cancelled:
                held.running = True
                self.listener.task_running(held.task.task_id, snap.taken)
        no_workers = snap.workers == 0
        for held in self._held.values():
            if held.running or held.waiting_for_nodes == no_workers:
                continue
            held.waiting_for_nodes = no_workers
            if no_workers:
                self.listener.task_waiting_for_nodes(held.task.task_id, snap.taken)
            else:
                self.listener.task_waiting_for_launch(held.task.task_id, snap.taken)


def _interchange_exit(executor: HighThroughputExecutor) -> int | None:
    """The exit code of HTEX's interchange process, or None while it runs."""
    process = executor.interchange_proc
    return None if process is None else process.poll()


def _cancel_blocks(executor: HighThroughputExecutor) -> None:
    """Cancel the blocks Parsl still counts as alive, through its provider directly."""
    jobs = [
        executor.blocks_to_job_id[block]
        for block, status in dict(executor.status_facade).items()
        if not status.terminal and block in executor.blocks_to_job_id
    ]
    if jobs and executor.provider is not None:
        try:
            executor.provider.cancel(jobs)
        except Exception:
            log.exception("cancelling the blocks %s failed", jobs)
