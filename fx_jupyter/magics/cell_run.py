"""One submitted ``%%funcx`` cell: waiting for it, and bringing its outcome into the notebook.

A blocking cell waits on the kernel's main thread and ends like a local cell would: the remote
output is replayed, the names are bound, the last value is returned for IPython to display, and
a remote exception is raised (so the notebook, or nbclient, sees the cell fail). Its widget is
finished there too, not on the event stream's thread: IPython formats the cell's traceback on
the main thread, and nothing else should be formatting or displaying meanwhile (CPython 3.11's
parser is not safe to use from two threads at once). A detached cell (``block=false``, or a
blocking one whose ``timeout`` passed) ends on the future's callback thread instead, writing
into its widget's output area and formatting an error with ``format_exception_only`` (no
frames, so no source parsing).
"""

from __future__ import annotations

import linecache
import re
import sys
import traceback
from concurrent.futures import CancelledError, Future
from concurrent.futures import wait as wait_futures
from typing import Any

from IPython.core.error import UsageError

from ..sdk import Client, FxError, TaskCancelled
from .cell_result import CellResult, is_cell_result
from .codegen import CellFunction
from .options import CellOptions
from .widgets import TaskWidget


def replay_output(stdout: str, stderr: str, widget: TaskWidget | None = None) -> None:
    """Write a task's captured output here: to the cell's streams, or to ``widget``'s area."""
    if widget is not None and not widget.text_mode:
        if stdout:
            widget.output.append_stdout(stdout)
        if stderr:
            widget.output.append_stderr(stderr)
        return
    if stdout:
        sys.stdout.write(stdout)
        sys.stdout.flush()
    if stderr:
        sys.stderr.write(stderr)
        sys.stderr.flush()


def warn(message: str, widget: TaskWidget | None = None) -> None:
    """Tell the user something did not go as asked, without failing the cell."""
    replay_output("", f"fx: {message}\n", widget)


def open_cell_result(
    value: Any,
    namespace: dict[str, Any],
    out: str | None = None,
    widget: TaskWidget | None = None,
) -> Any:
    """Bind a cell's names in ``namespace``, warn about those that could not come back, and
    return what to display (the value itself when it is not a cell's result)."""
    if not is_cell_result(value):
        return value
    result = CellResult.from_task_result(value)
    result.apply(namespace, out)
    for message in result.warnings():
        warn(message, widget)
    return result.display_value()


_CELL_FRAME = re.compile(r'File "(<funcx cell [0-9a-f]+>)", line (\d+)')


def remote_cell_line(error: BaseException, filename: str) -> int | None:
    """The cell line where a remote exception happened, from its remote traceback's frames."""
    text = getattr(error, "remote_traceback", None) or str(error)
    lines = [int(m.group(2)) for m in _CELL_FRAME.finditer(text) if m.group(1) == filename]
    return lines[-1] if lines else None


def raise_in_cell(error: BaseException, cell: CellFunction) -> None:
    """Raise a remote exception so that IPython shows it at the cell's line, with the cell's
    code around it, like an exception of a local cell; the remote traceback is in its message.

    The exception is raised by a one-statement module compiled under the cell's filename at
    that line, whose source lines IPython then finds in ``linecache``. Our own frames carry
    ``__tracebackhide__``, so the traceback reads: the notebook cell, then the remote line.
    """
    __tracebackhide__ = True
    error = error.with_traceback(None)
    lineno = remote_cell_line(error, cell.filename)
    if lineno is None:
        raise error
    linecache.cache[cell.filename] = (
        len(cell.cell),
        None,
        cell.cell.splitlines(True),
        cell.filename,
    )
    code = compile("\n" * (lineno - 1) + "raise __fx_remote_error", cell.filename, "exec")
    exec(code, {"__fx_remote_error": error})  # noqa: S102 - our own one-line module


def service_error(error: BaseException) -> UsageError | None:
    """The usage error for a failure of fx itself (not of the cell's code), or None."""
    if isinstance(error, FxError) and not isinstance(error, TaskCancelled):
        return UsageError(f"%%funcx: {error}")
    return None


class CellRun:
    """A cell submitted as a task, followed by a :class:`TaskWidget` until it ends."""

    def __init__(
        self,
        namespace: dict[str, Any],
        client: Client,
        future: Future[Any],
        cell: CellFunction,
        options: CellOptions,
        endpoint_label: str,
        *,
        silent: bool = False,
    ) -> None:
        self.namespace = namespace
        self.client = client
        self.future = future
        self.cell = cell
        self.options = options
        self.endpoint_label = endpoint_label
        self.silent = silent
        self.widget = TaskWidget(endpoint_label)

    @property
    def task_id(self) -> str | None:
        return getattr(self.future, "known_task_id", None)

    def start(self) -> None:
        """Show the widget and follow the task (a blocking cell finishes it in :meth:`wait`)."""
        self.widget.follow(
            self.future, self.client, show_result=False, finish_when_done=not self.options.block
        )
        self.widget.show()

    # --- blocking ---------------------------------------------------------------------------

    def wait(self, timeout: float | None) -> Any:
        """Wait for the task and end the cell as a local run would; see the module docstring."""
        __tracebackhide__ = True
        try:
            done, _ = wait_futures([self.future], timeout)
        except KeyboardInterrupt:
            self.widget.finish_when_done()
            warn(f"stopped waiting; {self._where()} {self._fetch_hint()}")
            raise
        if not done:
            warn(
                f"gave up waiting after {timeout:g}s; {self._where()} Its variables will be set "
                f"when it finishes. {self._fetch_hint()}"
            )
            self.detach()
            return None
        return self._finish_blocking()

    def _finish_blocking(self) -> Any:
        __tracebackhide__ = True
        future = self.future
        replay_output(getattr(future, "stdout", ""), getattr(future, "stderr", ""))
        if future.cancelled():
            self.widget.finish(future)
            raise TaskCancelled(self.task_id or "?")
        error = future.exception()
        if error is not None:
            self.widget.finish(future)
            usage = service_error(error)
            if usage is not None:
                raise usage from None
            raise_in_cell(error, self.cell)
        value = open_cell_result(future.result(), self.namespace, self.options.out)
        if self.cell.has_last:
            self.widget.set_result(value)
        else:
            self.widget.finish(future)
        return None if self.silent else value

    # --- detached ---------------------------------------------------------------------------

    def detach(self) -> None:
        """Finish on the future's callback thread when the task ends; return at once."""
        if self.options.block:  # gave up waiting: the widget no longer waits for wait()
            self.widget.finish_when_done()
        self.future.add_done_callback(self._finish_detached)

    def _finish_detached(self, future: Future[Any]) -> None:
        widget = self.widget
        replay_output(getattr(future, "stdout", ""), getattr(future, "stderr", ""), widget)
        try:
            value = future.result()
        except CancelledError:
            warn(f"task {self.task_id} was cancelled", widget)
            return
        except BaseException as error:  # noqa: BLE001 - shown in the widget: no caller to raise to
            text = "".join(traceback.format_exception_only(type(error), error))
            replay_output("", text, widget)
            return
        shown = open_cell_result(value, self.namespace, self.options.out, widget)
        if not self.cell.has_last:
            return
        widget.set_result(shown)
        if shown is not None and not self.silent:
            if widget.text_mode:
                print(repr(shown), flush=True)
            else:
                widget.output.append_display_data(shown)

    # --- messages ---------------------------------------------------------------------------

    def _where(self) -> str:
        if self.task_id is None:
            return f"the task is still being submitted to {self.endpoint_label}."
        return f"task {self.task_id} keeps running on {self.endpoint_label}."

    def _fetch_hint(self) -> str:
        if self.task_id is None:
            return "`%funcx tasks` lists it once it is submitted."
        return f"Fetch its result later with `%funcx result {self.task_id}`."
