"""The default engine: a pool of ``max_workers`` worker processes on this machine.

Workers (:mod:`fx_endpoint.worker`) connect to a ROUTER socket the engine binds on a Unix
socket private to the user. The engine hands each worker about :data:`WORKER_QUEUE_SECONDS` of
work ahead, judged from the mean task duration: many tasks at once when they are short (so a
worker never waits for the daemon between two no-op tasks, and one message carries many), one
at a time when they are long (so a long task never holds others hostage while another worker
idles). Workers report in batches and say which task they run (see :mod:`fx_endpoint.worker`):

- a worker that dies (signal, exit code, OOM kill) is replaced. If it held one task, that task
  caused it: it is retried up to ``max_retries_on_system_failure`` times, then fails with
  ``WorkerLost`` saying how the worker died. If it held several, nobody can tell which one it
  ran, so they all run again one per worker ("suspects", in isolation) without counting a
  retry: the next death is then blamed on the right task;
- a task past its ``walltime`` gets its worker killed and fails with ``WalltimeExceeded``;
- cancelling a running task kills its worker; cancelling a task waiting at a worker asks the
  worker to drop it.

Worker deaths are noticed at once through pidfds (Linux) gathered in one selector whose file
descriptor the daemon polls, elsewhere by polling the processes a few times a second.
"""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zmq

from .. import protocol, worker
from ..errors import WalltimeExceeded, WorkerLost
from .base import Engine, EngineError, Task, cancelled_outcome, failed_outcome, ran_outcome

log = logging.getLogger(__name__)

#: Seconds of work (by the mean task duration) handed to a worker ahead of time.
WORKER_QUEUE_SECONDS = 0.02
#: Most tasks a worker holds at once.
MAX_WORKER_QUEUE = 32
#: Workers dying before they register, in a row, before a start gives up.
START_FAILURES_ALLOWED = 3
#: Longest wait before replacing a worker that keeps dying before it registers.
MAX_RESPAWN_DELAY = 30.0
#: Environment variables that select an accelerator, set to the worker's one.
ACCELERATOR_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")
_POLL_PROCESSES_SECONDS = 0.2
_HAS_PIDFD = hasattr(os, "pidfd_open")


def describe_exit(returncode: int) -> str:
    """How a process ended, in words: 'was killed by signal SIGKILL' or 'exited with code 3'."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"was killed by signal {name}"
    return f"exited with code {returncode}"


@dataclass(eq=False)
class _Worker:
    """One worker process and what the engine has handed it."""

    slot: int
    identity: bytes
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    pidfd: int | None = None
    registered: bool = False
    #: Ids of the tasks sent to this worker and not yet reported done or dropped, in order.
    queue: deque[str] = field(default_factory=deque)
    #: The task the worker said it started, and when.
    running: str | None = None
    running_since: float = 0.0
    #: Function ids this worker already has.
    functions: set[str] = field(default_factory=set)
    #: Why the engine killed it ("walltime", "cancel", "stop"), if it did.
    killed_for: str | None = None
    #: It holds a suspect task, alone.
    isolated: bool = False


class ProcessEngine(Engine):
    """``max_workers`` local worker processes fed over a ZeroMQ Unix socket."""

    type_name = "process"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_workers = self.config.engine.max_workers
        self._max_retries = self.config.max_retries_on_system_failure
        # Its own context, ended in stop(): the process-wide instance would outlive the engine
        # (and be shared with whoever else in the process uses it, tests included).
        self._context: zmq.Context[Any] = zmq.Context()
        self._socket: zmq.Socket[Any] | None = None
        self._socket_path = self.endpoint_dir.worker_socket()
        self._url = f"ipc://{self._socket_path}"
        self._log_dir = self.endpoint_dir.path / "workers"
        self._work_dir = self.endpoint_dir.path / "tasks"
        self._deaths = selectors.DefaultSelector()
        self._workers: dict[bytes, _Worker] = {}
        self._generation = 0
        #: Every task held: waiting here or at a worker.
        self._tasks: dict[str, Task] = {}
        self._pending: deque[Task] = deque()
        #: Tasks held by a worker that died holding several: each runs alone next time.
        self._suspects: deque[Task] = deque()
        self._suspect_ids: set[str] = set()
        self._at_worker: dict[str, _Worker] = {}
        #: Cancelled (and reported) tasks a worker still holds; it was asked to drop them.
        self._dropping: set[str] = set()
        #: Slot -> time at which to start a replacement worker.
        self._respawn: dict[int, float] = {}
        self._start_failures = 0
        self._registered_slots: set[int] = set()
        self._mean_duration: float | None = None
        self._next_process_poll = 0.0

    # --- Engine interface -------------------------------------------------------------------

    @property
    def max_concurrency(self) -> int:
        return self._max_workers

    @property
    def ready(self) -> bool:
        return len(self._registered_slots) == self._max_workers

    def start(self) -> None:
        if self.config.sandbox == "bwrap" and shutil.which("bwrap") is None:
            raise EngineError(
                "sandbox: bwrap needs bubblewrap (the `bwrap` program), which is not installed "
                "on this host; install it or set `sandbox: none`"
            )
        self._log_dir.mkdir(mode=0o700, exist_ok=True)
        self._work_dir.mkdir(mode=0o700, exist_ok=True)
        for old in self._log_dir.glob("worker-*.log"):
            old.unlink()
        try:
            self._socket_path.unlink()
        except FileNotFoundError:
            pass
        socket = self._context.socket(zmq.ROUTER)
        socket.linger = 0
        socket.sndhwm = socket.rcvhwm = 0
        socket.router_mandatory = True
        old_umask = os.umask(0o077)
        try:
            socket.bind(self._url)
        finally:
            os.umask(old_umask)
        self._socket = socket
        for slot in range(self._max_workers):
            self._spawn(slot)

    def submit(self, tasks: list[Task]) -> None:
        for task in tasks:
            self._tasks[task.task_id] = task
        self._pending.extend(tasks)
        self._dispatch()

    def cancel(self, task_ids: list[str]) -> None:
        dropped_here: set[str] = set()
        ask: dict[_Worker, list[str]] = {}
        for task_id in task_ids:
            task = self._tasks.pop(task_id, None)
            if task is None:
                continue
            holder = self._at_worker.get(task_id)
            if holder is None:
                dropped_here.add(task_id)
            elif holder.running == task_id:
                self._kill(holder, "cancel")
            else:
                self._dropping.add(task_id)
                ask.setdefault(holder, []).append(task_id)
            self.listener.task_finished(cancelled_outcome(task))
        if dropped_here:
            self._pending = deque(t for t in self._pending if t.task_id not in dropped_here)
            self._suspects = deque(t for t in self._suspects if t.task_id not in dropped_here)
            self._suspect_ids -= dropped_here
        for holder, ids in ask.items():
            self._send(holder, protocol.encode(worker.CANCEL, {"ids": ids}))

    def poll_items(self) -> list[Any]:
        assert self._socket is not None, "start() first"
        return [self._socket, self._deaths.fileno()]

    def next_timeout(self, now: float) -> float | None:
        deadlines = list(self._respawn.values())
        for w in self._workers.values():
            if w.running is not None and w.killed_for is None:
                walltime = self._tasks[w.running].walltime if w.running in self._tasks else None
                if walltime:
                    deadlines.append(w.running_since + walltime)
        if not _HAS_PIDFD and self._workers:
            deadlines.append(self._next_process_poll)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def process(self, ready: set[Any], now: float) -> None:
        if self._socket is not None and self._socket in ready:
            self._receive()
        if self._deaths.fileno() in ready:
            for key, _ in self._deaths.select(0):
                self._reap(key.data)
        if not _HAS_PIDFD and now >= self._next_process_poll:
            self._next_process_poll = now + _POLL_PROCESSES_SECONDS
            for w in list(self._workers.values()):
                if w.process.poll() is not None:
                    self._reap(w)
        self._enforce_walltimes(now)
        for slot, when in list(self._respawn.items()):
            if now >= when:
                del self._respawn[slot]
                self._spawn(slot)
        self._dispatch()

    def status(self) -> dict[str, Any]:
        registered = [w for w in self._workers.values() if w.registered]
        running = sum(1 for w in registered if w.running is not None)
        return {
            "type": self.type_name,
            "max_workers": self._max_workers,
            "workers": len(registered),
            "idle_workers": sum(1 for w in registered if not w.queue),
            "queued": len(self._tasks) - running,
            "running": running,
            "worker_pids": sorted(w.process.pid for w in registered),
        }

    def stop(self, timeout: float = 5.0) -> None:
        workers = list(self._workers.values())
        for w in workers:
            w.killed_for = "stop"
            _signal(w.process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w in workers:
            try:
                w.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(w.process, signal.SIGKILL)
                w.process.wait()
            self._forget(w)
        self._respawn.clear()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        self._context.term()
        self._deaths.close()
        try:
            self._socket_path.unlink()
        except FileNotFoundError:
            pass

    # --- workers ----------------------------------------------------------------------------

    def _command(self, identity: str) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of a worker."""
        args = ["-m", "fx_endpoint.worker", "--url", self._url, "--identity", identity]
        env = dict(os.environ)
        if self.config.worker_init.strip():
            # worker_init may activate another environment: then its python3 runs the worker;
            # otherwise the endpoint's own Python (first on PATH) does.
            env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
            script = f"{self.config.worker_init}\nexec python3 {shlex.join(args)}\n"
            command = ["bash", "-c", script]
        else:
            command = [sys.executable, *args]
        if self.config.sandbox == "bwrap":
            command = self._bwrap() + command
        return command, env

    def _bwrap(self) -> list[str]:
        """bubblewrap arguments: read-only root, private /tmp, no network, writable task dir."""
        args = [
            "bwrap",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            "--unshare-net",
            "--die-with-parent",
        ]
        # The private /tmp would hide a Python or code that lives under /tmp: show those again,
        # read-only.
        for path in _python_paths_under("/tmp"):
            args += ["--ro-bind", path, path]
        for path in (self._socket_path.parent, self._work_dir):
            args += ["--bind", str(path), str(path)]
        return [*args, "--"]

    def _spawn(self, slot: int) -> None:
        self._generation += 1
        identity = f"w{slot}.{self._generation}"
        command, env = self._command(identity)
        accelerators = self.config.available_accelerators
        if accelerators:
            device = accelerators[slot % len(accelerators)]
            env.update({name: device for name in ACCELERATOR_VARIABLES})
        log_file = open(self._log_dir / f"worker-{slot}.log", "ab")  # noqa: SIM115 - kept open
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._work_dir,
                close_fds=True,
            )
        except OSError as e:
            log_file.close()
            raise EngineError(f"cannot start a worker ({shlex.join(command[:3])} ...): {e}") from e
        w = _Worker(slot, identity.encode(), process, log_file)
        if _HAS_PIDFD:
            w.pidfd = os.pidfd_open(process.pid)
            self._deaths.register(w.pidfd, selectors.EVENT_READ, w)
        self._workers[w.identity] = w
        log.debug("started worker %s (pid %d)", identity, process.pid)

    def _kill(self, w: _Worker, reason: str) -> None:
        if w.killed_for is None:
            w.killed_for = reason
            _signal(w.process, signal.SIGKILL)

    def _forget(self, w: _Worker) -> None:
        if w.pidfd is not None:
            self._deaths.unregister(w.pidfd)
            os.close(w.pidfd)
            w.pidfd = None
        w.log.close()
        self._workers.pop(w.identity, None)

    def _reap(self, w: _Worker) -> None:
        """A worker exited: settle its tasks and replace it."""
        returncode = w.process.wait()
        self._forget(w)
        how = describe_exit(returncode)
        held: list[Task] = []
        for task_id in w.queue:
            self._at_worker.pop(task_id, None)
            if task_id in self._dropping:
                self._dropping.discard(task_id)
            elif task_id in self._tasks:
                held.append(self._tasks[task_id])
        culprit = next((t for t in held if t.task_id == w.running), None)
        if w.killed_for == "walltime" and culprit is not None:
            held.remove(culprit)
            del self._tasks[culprit.task_id]
            error = WalltimeExceeded(
                f"task {culprit.task_id} exceeded its walltime of "
                f"{culprit.walltime:g} s; its worker was stopped"
            )
            self.listener.task_finished(failed_outcome(culprit, error, w.running_since))
            self._pending.extendleft(reversed(held))
        elif w.killed_for is not None or not held:
            self._pending.extendleft(reversed(held))
        elif len(held) == 1:
            self._blame(held[0], w, how)
        else:
            log.warning(
                "worker pid %d %s holding %d tasks; running them again one per worker "
                "to find the one responsible",
                w.process.pid,
                how,
                len(held),
            )
            self._suspects.extendleft(reversed(held))
            self._suspect_ids.update(t.task_id for t in held)
        if w.killed_for == "stop":
            return
        if w.registered or w.killed_for is not None:
            log.info("worker pid %d %s; replacing it", w.process.pid, how)
            self._spawn(w.slot)
            return
        self._start_failures += 1
        reason = f"a worker {how} before it could start; its output:\n{self._tail(w.slot)}"
        if not self.ready and self._start_failures >= START_FAILURES_ALLOWED:
            raise EngineError(reason)
        delay = min(MAX_RESPAWN_DELAY, 0.5 * 2 ** (self._start_failures - 1))
        log.error("%s\nstarting another in %.1f s", reason, delay)
        self._respawn[w.slot] = time.time() + delay

    def _blame(self, task: Task, w: _Worker, how: str) -> None:
        """The worker died running ``task`` alone: retry it, or fail it with WorkerLost."""
        self._suspect_ids.discard(task.task_id)
        if task.retries < self._max_retries:
            task.retries += 1
            log.warning(
                "worker pid %d %s running task %s; retrying it (%d of %d)",
                w.process.pid,
                how,
                task.task_id,
                task.retries,
                self._max_retries,
            )
            self._pending.appendleft(task)
            return
        del self._tasks[task.task_id]
        error = WorkerLost(
            f"the worker (pid {w.process.pid}) running task {task.task_id} {how}; the task was "
            f"tried {task.retries + 1} time(s) (max_retries_on_system_failure: "
            f"{self._max_retries})"
        )
        self.listener.task_finished(failed_outcome(task, error, w.running_since or None))

    def _tail(self, slot: int, lines: int = 10) -> str:
        try:
            text = (self._log_dir / f"worker-{slot}.log").read_text(errors="replace")
        except OSError:
            return "  (none)"
        tail = text.strip().splitlines()[-lines:]
        return "\n".join(f"  {line}" for line in tail) if tail else "  (none)"

    def _enforce_walltimes(self, now: float) -> None:
        for w in list(self._workers.values()):
            if w.running is None or w.killed_for is not None:
                continue
            task = self._tasks.get(w.running)
            if task is not None and task.walltime and now - w.running_since >= task.walltime:
                log.info(
                    "task %s exceeded its walltime of %g s; killing worker pid %d",
                    task.task_id,
                    task.walltime,
                    w.process.pid,
                )
                self._kill(w, "walltime")

    # --- messages ---------------------------------------------------------------------------

    def _send(self, w: _Worker, frames: list[Any]) -> None:
        assert self._socket is not None
        try:
            protocol.send_frames(self._socket, [w.identity, *frames])
        except zmq.ZMQError as e:
            # Its connection is gone: it is dying, and _reap will settle its tasks.
            log.debug("cannot reach worker %s: %s", w.identity, e)

    def _receive(self) -> None:
        socket = self._socket
        assert socket is not None
        while protocol.has_message(socket):
            frames = protocol.recv_frames(socket)
            w = self._workers.get(frames[0].bytes)
            if w is None:
                continue
            try:
                msg = protocol.decode(frames[1:], worker.FROM_WORKER)
            except protocol.ProtocolError as e:
                log.error("dropping a malformed message from worker %s: %s", w.identity, e)
                continue
            if msg.type == worker.READY:
                w.registered = True
                self._registered_slots.add(w.slot)
                self._start_failures = 0
                log.debug("worker %s registered (pid %s)", w.identity, msg.body.get("pid"))
            else:
                self._report(w, msg)

    def _report(self, w: _Worker, msg: protocol.Message) -> None:
        for item, payload in zip(msg.body["done"], msg.frames):
            task_id, ok, t0, t1, out, err, exc = item
            self._settled(w, task_id)
            if task_id in self._dropping:
                self._dropping.discard(task_id)
                continue
            task = self._tasks.pop(task_id, None)
            if task is None:
                continue
            mean = self._mean_duration
            self._mean_duration = t1 - t0 if mean is None else 0.9 * mean + 0.1 * (t1 - t0)
            self.listener.task_finished(ran_outcome(task, ok, payload, t0, t1, out, err, exc))
        for task_id in msg.body["dropped"]:
            self._settled(w, task_id)
            self._dropping.discard(task_id)
        started = msg.body["started"]
        if started is None:
            w.running = None
            return
        w.running, w.running_since = started
        if w.running in self._dropping:
            self._kill(w, "cancel")
        elif w.running in self._tasks:
            self.listener.task_running(w.running, w.running_since)

    def _settled(self, w: _Worker, task_id: str) -> None:
        self._at_worker.pop(task_id, None)
        if task_id in self._suspect_ids:
            self._suspect_ids.discard(task_id)
            w.isolated = False
        if w.running == task_id:
            w.running = None
        try:
            w.queue.remove(task_id)
        except ValueError:
            pass

    def _depth(self) -> int:
        """How many tasks a worker may hold, from the mean task duration so far."""
        mean = self._mean_duration
        if mean is None:
            return 1
        return max(1, min(MAX_WORKER_QUEUE, int(WORKER_QUEUE_SECONDS / max(mean, 1e-6))))

    def _dispatch(self) -> None:
        """Hand tasks to workers: suspects alone to idle ones, then the rest, spread evenly.

        A worker is refilled once it is down to half its share, so that a message carries
        several tasks when tasks are short.
        """
        if not (self._pending or self._suspects):
            return
        workers = [
            w
            for w in self._workers.values()
            if w.registered and w.killed_for is None and not w.isolated
        ]
        batches: dict[_Worker, list[tuple[Task, bool]]] = {}
        for w in workers:
            if not self._suspects:
                break
            if not w.queue:
                task = self._suspects.popleft()
                w.isolated = True
                self._assign(w, task)
                batches[w] = [(task, True)]
        depth = self._depth()
        refill = [w for w in workers if not w.isolated and len(w.queue) <= depth // 2]
        for level in range(1, depth + 1):
            if not self._pending:
                break
            for w in refill:
                if not self._pending:
                    break
                if len(w.queue) < level:
                    task = self._pending.popleft()
                    self._assign(w, task)
                    batches.setdefault(w, []).append((task, bool(task.walltime)))
        for w, tasks in batches.items():
            items: list[list[Any]] = []
            frames: list[Any] = []
            for task, announce in tasks:
                f = -1
                if task.function_id not in w.functions:
                    w.functions.add(task.function_id)
                    f = len(frames)
                    frames.append(task.function)
                frames.append(task.args)
                items.append([task.task_id, task.function_id, f, len(frames) - 1, announce])
            self._send(w, protocol.encode(worker.TASKS, {"tasks": items}, frames))

    def _assign(self, w: _Worker, task: Task) -> None:
        w.queue.append(task.task_id)
        self._at_worker[task.task_id] = w


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        process.send_signal(sig)
    except ProcessLookupError:
        pass


def _python_paths_under(root: str) -> list[str]:
    """Directories the worker's Python imports from (its prefixes and sys.path) below ``root``."""
    found: list[str] = []
    for entry in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path):
        path = os.path.realpath(entry) if entry else ""
        if path.startswith(root.rstrip("/") + "/") and os.path.isdir(path) and path not in found:
            found.append(path)
    return found
