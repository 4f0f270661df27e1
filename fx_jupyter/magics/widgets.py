"""Live progress for fx tasks: :class:`TaskWidget` for one task, :class:`BatchWidget` for many.

Both are ipywidgets fed from the client's event stream. Events arrive on the stream's
background thread, so a widget keeps updating whether or not the kernel is busy (a blocking
``%%funcx`` cell waits on its main thread meanwhile). A ticker thread refreshes the elapsed
times of unfinished widgets once a second, so "running 12s" counts up between events.

Without a frontend to draw widgets (plain IPython, a script) or with ``FX_NO_WIDGETS=1`` (CI,
docs builds), the same objects write short text lines to stderr instead (one at the end, and
one per change at most every second while unfinished); their traits hold the same values
either way, which is what the tests check.
"""

from __future__ import annotations

import abc
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from html import escape
from typing import TYPE_CHECKING, Any

import ipywidgets  # type: ignore[import-untyped]
from IPython import get_ipython
from IPython.display import display
from traitlets import Bool, Dict, Float, Int, MetaHasTraits, Unicode

from fx_endpoint.protocol import TaskState

from ..sdk import reprs

if TYPE_CHECKING:
    from ..sdk import Client

#: Set to 1 to get text lines instead of widgets (CI, docs builds).
NO_WIDGETS_ENV = "FX_NO_WIDGETS"
#: Seconds between refreshes of elapsed times, and at least between two text progress lines.
TICK = 1.0
#: Longest result preview shown in a TaskWidget.
PREVIEW_LIMIT = 200
#: Events of other tasks a widget keeps while it waits for its own task id.
EARLY_EVENTS = 256

_ORDER = {state: index for index, state in enumerate(TaskState.ALL)}


def widgets_enabled() -> bool:
    """Whether to draw widgets: in a kernel with a frontend, unless ``FX_NO_WIDGETS`` is set."""
    if os.environ.get(NO_WIDGETS_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def format_seconds(seconds: float) -> str:
    """``0.12s``, ``4.5s``, ``1m05s``, ``2h03m``: short enough for a status line."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def preview(value: Any, limit: int = PREVIEW_LIMIT) -> str:
    """A one-line ``repr`` of ``value``, cut at ``limit`` characters."""
    try:
        text = repr(value)
    except Exception as e:  # noqa: BLE001 - a broken __repr__ must not break the widget
        text = f"<{type(value).__name__} object (repr failed: {e})>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _state_of(future: Future[Any]) -> str:
    """The remote state an ``FxFuture`` last heard of (``waiting-for-ep`` before any)."""
    status = getattr(future, "status", None)
    return status if status in _ORDER else TaskState.WAITING_FOR_EP


class _Ticker:
    """One daemon thread refreshing every unfinished widget once a second; it exits when none is
    left and starts again with the next widget."""

    def __init__(self) -> None:
        self._views: weakref.WeakSet[_LiveView] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, view: _LiveView) -> None:
        with self._lock:
            self._views.add(view)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fx-widgets", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(TICK)
            with self._lock:
                views = [view for view in self._views if not view.finished]
                if not views:
                    self._thread = None
                    return
            for view in views:
                view.refresh()


_ticker = _Ticker()


class _AbstractWidgetMeta(MetaHasTraits, abc.ABCMeta):
    """Widgets are traitlets classes (``MetaHasTraits``); this lets one be an ABC as well."""


class _LiveView(ipywidgets.VBox, metaclass=_AbstractWidgetMeta):
    """What both widgets share: widget or text mode, a lock, and ticking while unfinished.

    An abstract base: subclasses say when they are :attr:`finished`, what their text line is
    (:meth:`summary`), what a new line would be about (:meth:`_snapshot`), and how to draw
    themselves (:meth:`_render`). The text line is also their plain-text repr, which is what a
    notebook viewer without widget support shows.
    """

    text_mode = Bool(help="Write text lines to stderr instead of drawing a widget.")

    def __init__(self, text_mode: bool | None = None, **kwargs: Any) -> None:
        # Set through the constructor: ipywidgets' own calls open(), which depends on it.
        text_mode = not widgets_enabled() if text_mode is None else text_mode
        super().__init__(text_mode=text_mode, **kwargs)
        self._lock = threading.RLock()
        # Text mode: the first progress line comes a tick after the view was created.
        self._last_line = time.monotonic()
        self._announced: object = None
        self._final_written = False

    @property
    @abc.abstractmethod
    def finished(self) -> bool:
        """Whether the work followed has ended (then the ticker drops the view)."""

    @abc.abstractmethod
    def summary(self) -> str:
        """The text line describing the current state."""

    @abc.abstractmethod
    def _snapshot(self) -> object:
        """What the last text line reported; a line is news when this changed."""

    def __repr__(self) -> str:
        return self.summary()

    def open(self) -> None:
        """Open the widget's comm to the frontend, except in text mode: nothing will draw the
        widget, and a comm costs a message with its whole state, for every task followed."""
        if not self.text_mode:
            super().open()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        if self.text_mode:  # no comm, so no widget view: the text line
            return {"text/plain": repr(self)}
        return super()._repr_mimebundle_(**kwargs)  # type: ignore[no-any-return]

    @abc.abstractmethod
    def _render(self) -> None:
        """Draw the widget's children from its current traits (widget mode only)."""

    def show(self) -> None:
        """Display the widget and keep it ticking until finished.

        In text mode nothing is written yet: a line comes when the work is still unfinished a
        second later, and one at the end, so a quick task costs a single line.
        """
        with self._lock:
            if not self.text_mode:
                self._render()
                display(self)
        if not self.finished:
            _ticker.add(self)

    def refresh(self) -> None:
        """Redraw elapsed times; in text mode, write a line if something changed meanwhile."""
        with self._lock:
            self._tick()
            self._changed()

    def _tick(self) -> None:
        """Pick up what changed without an event (the ticker calls this once a second)."""

    def _changed(self) -> None:
        """After a change (lock held): redraw, or write a text line if it is worth one.

        Text mode writes the final line once, and otherwise at most one line per second.
        """
        if not self.text_mode:
            self._render()
        elif self.finished:
            if not self._final_written:
                self._final_written = True
                self._write(self.summary())
        elif self._snapshot() != self._announced and time.monotonic() - self._last_line >= TICK:
            self._write(self.summary())

    def _write(self, line: str) -> None:
        self._announced = self._snapshot()
        self._last_line = time.monotonic()
        print(line, file=sys.stderr, flush=True)


class TaskWidget(_LiveView):
    """One task: endpoint, id, state with the time spent in each, then the result or the error.

    Feed it task events (:meth:`handle_event`) or a task's ``task_transitions``
    (:meth:`set_transitions`); :meth:`set_result` / :meth:`set_error` show the outcome. Its
    :attr:`output` area receives what the magic replays there (output of a ``block=false``
    cell, which has no cell output to go to any more).

    Its two child widgets, the state line and the output area, are made when first needed (the
    first drawing; the first output of a detached cell): every widget opens a comm and sends its
    whole state, about a millisecond each, and a ``%%funcx`` cell makes one TaskWidget per run.
    A text-mode widget needs neither, a blocking cell's widget no output area.
    """

    endpoint = Unicode(help="Name (or id) of the endpoint the task runs on.")
    task_id = Unicode(help="The task's id; empty while it is being submitted.")
    state = Unicode(TaskState.WAITING_FOR_EP, help="The task's latest state (funcX's names).")
    transitions = Dict(help="When the task entered each state: {state: unix time}.")
    result_preview = Unicode(help="A one-line repr of the result, once the task succeeded.")
    error = Unicode(help="The remote exception's type and message, once the task failed.")

    def __init__(self, endpoint: str, task_id: str = "", *, text_mode: bool | None = None) -> None:
        self._header: ipywidgets.HTML | None = None
        self._output: ipywidgets.Output | None = None
        super().__init__(text_mode=text_mode)
        self.endpoint = endpoint
        self.task_id = task_id
        self._future: Future[Any] | None = None
        self._show_result = True
        self._client: Client | None = None
        self._listener: Any = None
        # While the caller finishes the widget itself: the terminal event's {state: ts}.
        self._hold_end = False
        self._held_end: dict[str, float] = {}
        # Events that came before the service answered with the task id (its first states can
        # overtake the submit's answer); replayed once the id is known.
        self._early: deque[dict[str, Any]] = deque(maxlen=EARLY_EVENTS)

    @classmethod
    def for_future(
        cls,
        future: Future[Any],
        client: Client | None = None,
        *,
        endpoint: str | None = None,
        show: bool = True,
        text_mode: bool | None = None,
    ) -> TaskWidget:
        """A widget following an ``Executor`` future (``client`` adds the intermediate states)."""
        label = endpoint or getattr(future, "endpoint_id", None) or "?"
        widget = cls(str(label), text_mode=text_mode)
        widget.follow(future, client)
        if show:
            widget.show()
        return widget

    def follow(
        self,
        future: Future[Any],
        client: Client | None = None,
        *,
        show_result: bool = True,
        finish_when_done: bool = True,
    ) -> None:
        """Track ``future``: its task id once known, ``client``'s events of its task, and its end.

        With ``show_result=False`` the caller sets the preview itself (the ``%%funcx`` magic
        shows the cell's last value, not the dict its function returns). With
        ``finish_when_done=False`` the widget does not finish on the thread that completes the
        future (the event stream's): the caller calls :meth:`finish` on its own thread, or
        :meth:`finish_when_done` to hand that back. A blocking ``%%funcx`` cell does so that
        the widget's last line, the error it formats and the cell's output come in order,
        from the kernel's main thread.
        """
        self._future = future
        self._show_result = show_result
        self._hold_end = not finish_when_done
        if client is not None:
            self._client = client
            self._listener = client.events.add_listener(self.handle_event)
        self._adopt_task_id()
        if finish_when_done:
            future.add_done_callback(self.finish)

    def finish_when_done(self) -> None:
        """Finish by itself when the future completes, after all (a cell gave up waiting)."""
        assert self._future is not None, "follow() a future first"
        with self._lock:
            self._hold_end = False
        self._future.add_done_callback(self.finish)

    @property
    def finished(self) -> bool:
        return self.state in TaskState.TERMINAL

    @property
    def output(self) -> ipywidgets.Output:
        """The output area below the state line (made, and shown, on first use)."""
        with self._lock:
            if self._output is None:
                self._output = ipywidgets.Output()
                self._arrange()
            return self._output

    def _arrange(self) -> None:
        self.children = tuple(w for w in (self._header, self._output) if w is not None)

    # --- feeding ---------------------------------------------------------------------------

    def handle_event(self, event: dict[str, Any]) -> None:
        """Take a task event (``{task_id, status, ts, ...}``); events of other tasks are ignored."""
        status = event.get("status")
        if not isinstance(status, str) or status not in _ORDER:
            return
        with self._lock:
            if not self.task_id:
                self._adopt_task_id()
            if not self.task_id:
                self._early.append(event)
                return
            if event.get("task_id") == self.task_id:
                self._take(status, event)

    def _take(self, status: str, event: dict[str, Any]) -> None:
        """Record one event of this widget's task (the caller holds the lock)."""
        ts = event.get("ts")
        ts = ts if isinstance(ts, (int, float)) else time.time()
        if self._hold_end and status in TaskState.TERMINAL:
            self._held_end.setdefault(status, ts)
            return
        self._merge({status: ts})

    def set_task_id(self, task_id: str) -> None:
        """The service acknowledged the task."""
        with self._lock:
            self.task_id = task_id
            early, self._early = self._early, deque(maxlen=EARLY_EVENTS)
            for event in early:
                if event.get("task_id") == task_id:
                    self._take(event["status"], event)
            self._changed()

    def _adopt_task_id(self) -> None:
        task_id = getattr(self._future, "known_task_id", None)
        if task_id and not self.task_id:
            self.set_task_id(task_id)

    def finish(self, future: Future[Any]) -> None:
        """Show how ``future`` ended: its result (unless the caller shows it), error or cancel."""
        with self._lock:
            self._adopt_task_id()
            if self._client is not None and self._listener is not None:
                self._client.events.remove_listener(self._listener)
                self._listener = None
            if future.cancelled():
                self.set_cancelled()
            elif future.exception() is not None:
                self.set_error(future.exception())  # type: ignore[arg-type]
            elif self._show_result:
                self.set_result(future.result())
            else:
                self._finish(TaskState.SUCCESS)

    def set_transitions(self, transitions: dict[str, float]) -> None:
        """Take a task's recorded ``task_transitions`` (exact service times)."""
        with self._lock:
            self._merge(
                {
                    s: t
                    for s, t in transitions.items()
                    if s in _ORDER and isinstance(t, (int, float))
                }
            )

    def set_result(self, value: Any) -> None:
        """The task succeeded with ``value``."""
        with self._lock:
            self.result_preview = preview(value)
            self._finish(TaskState.SUCCESS)

    def set_error(self, error: BaseException | str) -> None:
        """The task failed (or could not be submitted) with ``error``."""
        with self._lock:
            if isinstance(error, BaseException):
                message = str(error).split("\n\nRemote traceback:")[0]
                error = f"{type(error).__name__}: {message}" if message else type(error).__name__
            self.error = error
            self._finish(TaskState.FAILED)

    def set_cancelled(self) -> None:
        """The task was cancelled."""
        with self._lock:
            self._finish(TaskState.CANCELLED)

    def _finish(self, state: str) -> None:
        if not self.finished:
            ended = self._held_end.get(state, time.time())
            self.transitions = {**self.transitions, state: ended}
            self.state = state
        self._changed()

    def _merge(self, new: dict[str, float]) -> None:
        merged = dict(self.transitions)
        for state, ts in new.items():
            merged.setdefault(state, ts)
        self.transitions = merged
        if not self.finished:
            # The latest state wins; ties go to the later state of the lifecycle, and a
            # terminal state, once there, stays.
            terminal = [s for s in merged if s in TaskState.TERMINAL]
            self.state = (
                terminal[0] if terminal else max(merged, key=lambda s: (merged[s], _ORDER[s]))
            )
        self._changed()

    # --- showing -----------------------------------------------------------------------------

    def _tick(self) -> None:
        self._adopt_task_id()

    def durations(self, now: float | None = None) -> list[tuple[str, float]]:
        """``(state, seconds)`` in lifecycle order; the current state counts up to ``now``."""
        now = time.time() if now is None else now
        steps = sorted(self.transitions.items(), key=lambda item: (item[1], _ORDER[item[0]]))
        result = []
        for index, (state, start) in enumerate(steps):
            if state in TaskState.TERMINAL:
                break
            end = steps[index + 1][1] if index + 1 < len(steps) else now
            result.append((state, max(end - start, 0.0)))
        return result

    def elapsed(self, now: float | None = None) -> float:
        """Seconds from the first recorded state to the end (or to ``now``)."""
        if not self.transitions:
            return 0.0
        now = time.time() if now is None else now
        start = min(self.transitions.values())
        end = max(self.transitions.values()) if self.finished else now
        return max(end - start, 0.0)

    def summary(self) -> str:
        task = self.task_id or "(submitting)"
        steps = ", ".join(f"{s} {format_seconds(d)}" for s, d in self.durations())
        line = f"fx task {task} on {self.endpoint}: {self.state}"
        if self.finished:
            line += f" after {format_seconds(self.elapsed())}"
        return f"{line} ({steps})" if steps else line

    def _snapshot(self) -> object:
        return self.state

    def _render(self) -> None:
        task = reprs.mono(self.task_id) if self.task_id else "<i>submitting</i>"
        steps = " &rarr; ".join(f"{escape(s)} {format_seconds(d)}" for s, d in self.durations())
        if self.finished:
            steps += (
                f" &rarr; {reprs.status_badge(self.state)} after {format_seconds(self.elapsed())}"
            )
        outcome = ""
        if self.error:
            outcome = (
                f'<div style="color: var(--jp-error-color1, #d32f2f);">{escape(self.error)}</div>'
            )
        elif self.result_preview:
            outcome = f"<div>result: {reprs.mono(self.result_preview)}</div>"
        html = (
            '<div style="font-family: var(--jp-ui-font-family); font-size: '
            'var(--jp-ui-font-size1); color: var(--jp-ui-font-color1);">'
            f"fx task {task} on <b>{escape(self.endpoint)}</b>: "
            f"{reprs.status_badge(self.state)}"
            f'<div style="color: var(--jp-ui-font-color2);">{steps}</div>{outcome}</div>'
        )
        if self._header is None:
            self._header = ipywidgets.HTML(html)
            self._arrange()
        else:
            self._header.value = html


class BatchWidget(_LiveView):
    """Many tasks: a progress bar, how many are in each state, and the throughput.

    Build it with :meth:`for_futures` (``Executor.map``/``submit`` futures) or
    :meth:`for_task_ids` (``Client.batch_run`` ids). Futures finish it by themselves; a client
    passed along also shows the intermediate states (queued, running) from its event stream.
    """

    total = Int(help="Number of tasks tracked.")
    done = Int(help="Tasks that reached a terminal state.")
    counts = Dict(help="Tasks per state: {state: count}.")
    throughput = Float(help="Finished tasks per second since the widget started.")

    def __init__(self, total: int = 0, *, text_mode: bool | None = None) -> None:
        self._bar = ipywidgets.IntProgress(min=0, max=max(total, 1), value=0)
        self._label = ipywidgets.HTML()
        super().__init__(text_mode=text_mode, children=[self._bar, self._label])
        self.total = total
        self._states: dict[str, str] = {}
        self._unassigned: list[Future[Any]] = []
        self._started = time.monotonic()
        self._finished_at: float | None = None
        self._client: Client | None = None
        self._listener: Any = None

    @classmethod
    def for_futures(
        cls,
        futures: Sequence[Future[Any]],
        client: Client | None = None,
        *,
        show: bool = True,
        text_mode: bool | None = None,
    ) -> BatchWidget:
        """Track ``futures`` (e.g. from ``Executor.submit``); show the widget unless told not."""
        widget = cls(len(futures), text_mode=text_mode)
        with widget._lock:
            for future in futures:
                task_id = getattr(future, "known_task_id", None)
                if task_id:
                    widget._states[task_id] = _state_of(future)
                else:
                    widget._unassigned.append(future)
            widget._recount()
        if client is not None:
            widget._listen(client)
        if show:
            widget.show()
        for future in futures:
            future.add_done_callback(widget._future_done)
        return widget

    @classmethod
    def for_task_ids(
        cls,
        client: Client,
        task_ids: Iterable[str],
        *,
        show: bool = True,
        text_mode: bool | None = None,
    ) -> BatchWidget:
        """Track tasks by id (e.g. from ``Client.batch_run``) through ``client``'s events.

        The tasks' current states are asked once (``batch_status``): events are not replayed,
        so tasks that ended before the widget existed would otherwise never count. The event
        stream also watches them, so it asks again for those still running after a reconnect.
        """
        ids = list(task_ids)
        widget = cls(len(ids), text_mode=text_mode)
        with widget._lock:
            widget._states = {task_id: TaskState.WAITING_FOR_EP for task_id in ids}
            widget._recount()
        widget._listen(client)
        try:
            client.events.watch(ids)
            unknown = client.events.resync(ids)
        except BaseException:
            widget.close_listener()
            raise
        if unknown:
            widget.close_listener()
            client.events.unwatch(unknown)
            raise ValueError(f"the service knows no task {', '.join(unknown)} of yours")
        if show:
            widget.show()
        return widget

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def handle_event(self, event: dict[str, Any]) -> None:
        """Take a task event; events of tasks not tracked here are ignored."""
        task_id, status = event.get("task_id"), event.get("status")
        if not isinstance(status, str) or status not in _ORDER:
            return
        with self._lock:
            if self._unassigned:
                self._adopt_assigned()
            current = self._states.get(task_id)  # type: ignore[arg-type]
            if current is None or current in TaskState.TERMINAL:
                return
            self._states[task_id] = status  # type: ignore[index]
            self._recount()

    def close_listener(self) -> None:
        """Stop listening to the client's events (done by itself once every task finished)."""
        client, listener = self._client, self._listener
        self._client = self._listener = None
        if client is not None and listener is not None:
            client.events.remove_listener(listener)

    def _listen(self, client: Client) -> None:
        self._client = client
        self._listener = client.events.add_listener(self.handle_event)

    def _future_done(self, future: Future[Any]) -> None:
        if future.cancelled():
            state = TaskState.CANCELLED
        elif future.exception() is not None:
            state = TaskState.FAILED
        else:
            state = TaskState.SUCCESS
        with self._lock:
            if future in self._unassigned:
                self._unassigned.remove(future)
            # A future whose submit failed never got a task id.
            self._states[getattr(future, "known_task_id", None) or f"future-{id(future)}"] = state
            self._recount()

    def _adopt_assigned(self) -> None:
        """Futures whose task id arrived since: track them by id from now on."""
        for future in list(self._unassigned):
            task_id = getattr(future, "known_task_id", None)
            if task_id:
                self._unassigned.remove(future)
                self._states.setdefault(task_id, _state_of(future))

    def _recount(self) -> None:
        counts: dict[str, int] = {}
        if self._unassigned:
            counts[TaskState.WAITING_FOR_EP] = len(self._unassigned)
        for state in self._states.values():
            counts[state] = counts.get(state, 0) + 1
        self.counts = {state: counts[state] for state in TaskState.ALL if state in counts}
        self.done = sum(n for state, n in counts.items() if state in TaskState.TERMINAL)
        if self.finished and self._finished_at is None:
            self._finished_at = time.monotonic()
        self.throughput = self._rate()
        self._changed()
        if self.finished:
            self.close_listener()

    def _rate(self) -> float:
        end = self._finished_at if self._finished_at is not None else time.monotonic()
        elapsed = end - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def _tick(self) -> None:
        self.throughput = self._rate()

    def _snapshot(self) -> object:
        return dict(self.counts)

    def summary(self) -> str:
        states = ", ".join(f"{state} {n}" for state, n in self.counts.items())
        return f"fx batch: {self.done}/{self.total} done ({states}), {self.throughput:.1f} tasks/s"

    def _render(self) -> None:
        self._bar.max = max(self.total, 1)
        self._bar.value = self.done
        failed = self.counts.get(TaskState.FAILED, 0)
        self._bar.bar_style = (
            "danger" if failed else "success" if self.finished and self.total else ""
        )
        states = " &middot; ".join(
            f"{reprs.status_badge(state)} {n}" for state, n in self.counts.items()
        )
        self._label.value = (
            '<div style="font-family: var(--jp-ui-font-family); font-size: '
            'var(--jp-ui-font-size1); color: var(--jp-ui-font-color1);">'
            f"{self.done}/{self.total} done &middot; {self.throughput:.1f} tasks/s"
            f"<br>{states}</div>"
        )
