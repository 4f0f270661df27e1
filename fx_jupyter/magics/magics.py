"""``%%funcx`` (run a cell on an endpoint) and the ``%funcx`` line magics.

``%load_ext fx_jupyter`` registers :class:`FxMagics`. The cell magic's path: parse the options,
analyse the cell (:mod:`.analysis`), generate its function (:mod:`.codegen`), register it once
per code, submit it with the notebook values it reads, and follow it (:mod:`.cell_run`).

Re-running a cell costs one request, the submit: the cell's analysis, the generated function,
its id, the endpoint's id and an Executor are cached per cell text, endpoint and task options, and the endpoint's online
state comes from the event stream after the first look.
"""

from __future__ import annotations

import ast
import hashlib
import threading
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
from globus_sdk import NetworkError
from IPython.core.displayhook import DisplayHook
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_cell_magic, magics_class, output_can_be_silenced

from fx_endpoint.serialize import DeserializationError

from ..sdk import Client, Executor, FxAPIError, FxError
from .analysis import CellNames, UnsupportedCell, analyze_cell, notebook_arguments
from .cell_run import (
    CellRun,
    open_cell_result,
    raise_in_cell,
    remote_cell_line,
    replay_output,
    service_error,
    warn,
)
from .codegen import CellFunction, build_cell_function, parse_cell
from .options import DEFAULT_TASK_LIMIT, CellOptions, parse_cell_options, parse_line_command
from .tables import EndpointTable, TaskTable

#: Cell analyses and generated cell functions kept for re-runs (per cell text, and per cell
#: text and argument list).
CELL_CACHE_SIZE = 128


def unpicklable(values: dict[str, Any]) -> dict[str, str]:
    """The values that do not pickle, with the reason: names to tell the user about."""
    failed = {}
    for name, value in values.items():
        try:
            cloudpickle.dumps(value)
        except Exception as e:  # noqa: BLE001 - pickling raises anything; reported by name
            failed[name] = f"{type(e).__name__}: {e}"
    return failed


@magics_class
class FxMagics(Magics):
    """The fx magics; one instance per IPython shell.

    ``client`` is created on first use with ``Client()`` (the service of the Jupyter server the
    kernel runs under, or ``FX_SERVICE_URL``/``FX_TOKEN``); pass one to use another service.
    """

    def __init__(self, shell: Any = None, client: Client | None = None) -> None:
        super().__init__(shell)
        self._client = client
        self._owns_client = client is None
        self._lock = threading.Lock()
        self._default_endpoint: str | None = None  # as the user named it in `%funcx use`
        self._endpoints: dict[str, tuple[str, str]] = {}  # name or id -> (id, name)
        self._endpoint_states: dict[str, str] = {}  # id -> online | offline
        self._endpoint_listener: Any = None
        self._analyses: OrderedDict[str, tuple[ast.Module, CellNames]] = OrderedDict()
        self._cells: OrderedDict[tuple[str, tuple[str, ...]], CellFunction] = OrderedDict()
        self._function_ids: dict[str, str] = {}  # sha256 of generated source -> function id
        self._executors: dict[tuple[str, float | None, bool], Executor] = {}

    @property
    def _shell(self) -> InteractiveShell:
        if self.shell is None:
            raise RuntimeError("FxMagics needs an IPython shell")
        return self.shell

    # --- the service ------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The SDK client, created on first use."""
        with self._lock:
            if self._client is None:
                with _service_errors():
                    self._client = Client()
            client = self._client
            if self._endpoint_listener is None:
                self._endpoint_listener = client.events.add_listener(
                    self._on_endpoint_event, kind="endpoints"
                )
        return client

    def close(self) -> None:
        """Stop listening, shut the executors down and close our own client; tasks keep
        running remotely (``%funcx result`` fetches them after the next use)."""
        with self._lock:
            executors = list(self._executors.values())
            self._executors.clear()
            client, listener = self._client, self._endpoint_listener
            self._endpoint_listener = None
            if self._owns_client:
                self._client = None
        for executor in executors:
            executor.shutdown(wait=False)
        if client is not None and listener is not None:
            client.events.remove_listener(listener)
        if client is not None and self._owns_client:
            client.close()

    def _on_endpoint_event(self, event: dict[str, Any]) -> None:
        endpoint_id, status = event.get("endpoint_id"), event.get("status")
        if isinstance(endpoint_id, str) and isinstance(status, str):
            self._endpoint_states[endpoint_id] = status

    def _endpoint(self, name_or_id: str | None) -> tuple[str, str]:
        """``(id, name)`` of the named endpoint, or of the default one; warns when it is offline."""
        name_or_id = name_or_id or self._default_endpoint
        if name_or_id is None:
            raise UsageError(
                "%%funcx: no endpoint given: add endpoint=NAME to the %%funcx line, or choose "
                "a default with `%funcx use NAME` (`%funcx endpoints` lists them)"
            )
        endpoint = self._resolve(name_or_id)
        endpoint_id, name = endpoint
        if self._endpoint_states.get(endpoint_id) == "offline":
            warn(
                f"endpoint {name!r} is offline: the task will wait until it connects. Start it "
                f"with `fx-endpoint start {name}` on its machine."
            )
        return endpoint

    def _resolve(self, name_or_id: str) -> tuple[str, str]:
        known = self._endpoints.get(name_or_id)
        if known is not None:
            return known
        client = self.client
        with _service_errors():
            endpoint_id = client.resolve_endpoint(name_or_id)
            status = client.get_endpoint_status(endpoint_id)
        endpoint = (endpoint_id, str(status.get("name") or name_or_id))
        self._endpoints[name_or_id] = endpoint
        self._endpoints.setdefault(endpoint_id, endpoint)
        self._endpoint_states.setdefault(endpoint_id, str(status.get("status")))
        return endpoint

    def _forget_endpoint(self, endpoint_id: str) -> None:
        """Drop cached facts about an endpoint the service refused (deleted, re-created)."""
        for key in [k for k, v in self._endpoints.items() if v[0] == endpoint_id]:
            del self._endpoints[key]
        self._endpoint_states.pop(endpoint_id, None)

    def _executor(self, endpoint_id: str, options: CellOptions) -> Executor:
        # One Executor per set of task options: they are the Executor's, fixed for its tasks.
        key = (endpoint_id, options.walltime, options.memoize)
        client = self.client
        with self._lock:
            executor = self._executors.get(key)
            if executor is None:
                executor = Executor(
                    endpoint_id, client, walltime=options.walltime, memoize=options.memoize
                )
                self._executors[key] = executor
        return executor

    # --- the magic --------------------------------------------------------------------------

    @output_can_be_silenced
    @line_cell_magic
    def funcx(self, line: str, cell: str | None = None) -> Any:
        """Run a cell on an fx endpoint, or manage endpoints and tasks.

        Cell magic::

            %%funcx endpoint=NAME|ID [block=true|false] [timeout=SECONDS] [out=VAR]
                    [walltime=SECONDS] [memoize=true|false]

        The cell runs remotely as a function: the notebook variables it reads are sent as
        arguments, the names it assigns come back when it succeeds, and the value of its last
        expression is the cell's result (and ``out``'s value). Its output is replayed here and
        a remote exception is raised here with the remote traceback. ``block=false`` returns
        at once and fills the variables when the task ends; ``timeout`` stops waiting (the task
        goes on); ``walltime`` stops the task on the endpoint; ``memoize=true`` answers a re-run
        with the same cell and the same values from the stored result, without running it.

        Line magics::

            %funcx endpoints          your endpoints: name, id, state, workers, queued
            %funcx tasks [LIMIT]      your recent tasks and their states
            %funcx use [ENDPOINT]     the default endpoint of %%funcx cells (show it without one)
            %funcx result TASK_ID     fetch a task's result (a cell's: sets its variables)
        """
        __tracebackhide__ = True
        if cell is None:
            return self._line(line)
        return self._cell(line, cell)

    def _line(self, line: str) -> Any:
        command, args = parse_line_command(line)
        if command == "endpoints":
            with _service_errors():
                endpoints = self.client.list_endpoints()
            default = self._resolve(self._default_endpoint)[0] if self._default_endpoint else None
            return EndpointTable(endpoints, default)
        if command == "tasks":
            limit = int(args[0]) if args else DEFAULT_TASK_LIMIT
            with _service_errors():
                tasks = self.client.list_tasks(limit=limit)
                names = {
                    str(ep.get("endpoint_id")): str(ep.get("name"))
                    for ep in self.client.list_endpoints()
                }
            return TaskTable(tasks, names)
        if command == "use":
            return self._use(args[0] if args else None)
        return self._result(args[0])

    def _use(self, name_or_id: str | None) -> None:
        if name_or_id is None:
            if self._default_endpoint is None:
                print("fx: no default endpoint; choose one with `%funcx use NAME`")
            else:
                endpoint_id, name = self._resolve(self._default_endpoint)
                print(f"fx: %%funcx cells run on {name} ({endpoint_id}) by default")
            return
        endpoint_id, name = self._endpoint(name_or_id)
        self._default_endpoint = name_or_id
        print(f"fx: %%funcx cells now run on {name} ({endpoint_id}) by default")

    def _result(self, task_id: str) -> Any:
        __tracebackhide__ = True
        with _service_errors():
            task = self.client.get_task(task_id)
        details = task.get("details") or {}
        if task.get("pending"):
            print(f"fx: task {task_id} is {task.get('status')}; ask again when it has finished")
            return None
        replay_output(details.get("stdout") or "", details.get("stderr") or "")
        error = task.get("exception")
        if isinstance(error, BaseException):
            if isinstance(error, DeserializationError):
                raise UsageError(f"%funcx result: {error}")
            for cell in self._cells.values():
                if remote_cell_line(error, cell.filename) is not None:
                    raise_in_cell(error, cell)
            raise error.with_traceback(None)
        if task.get("status") != "success":
            raise UsageError(f"%funcx result: task {task_id} ended {task.get('status')}")
        return open_cell_result(task.get("result"), self._shell.user_ns)

    def _cell(self, line: str, cell: str) -> Any:
        __tracebackhide__ = True
        options = parse_cell_options(line)
        if not cell.strip():
            raise UsageError("%%funcx: the cell is empty; write the code to run below %%funcx")
        namespace = self._shell.user_ns
        tree, names = self._analyze(cell)
        params = notebook_arguments(names.reads, namespace, self._shell.user_ns_hidden)
        function = self._cell_function(cell, tree, names, params)
        endpoint_id, name = self._endpoint(options.endpoint)
        function_id = self._register(function)
        kwargs = {param: namespace[param] for param in params}
        future = self._submit(endpoint_id, options, function_id, kwargs)
        run = CellRun(
            namespace,
            self.client,
            future,
            function,
            options,
            name,
            silent=DisplayHook.semicolon_at_end_of_expression(cell),
        )
        future.add_done_callback(lambda f: self._check_refused(f, endpoint_id))
        run.start()
        if not options.block:
            run.detach()
            return None
        return run.wait(options.timeout)

    def _analyze(self, cell: str) -> tuple[ast.Module, CellNames]:
        """The cell's syntax tree (left unchanged by code generation) and names, cached per
        cell text: a re-run of the same cell need not parse, compile and analyse it again."""
        __tracebackhide__ = True
        cached = self._analyses.get(cell)
        if cached is not None:
            self._analyses.move_to_end(cell)
            return cached
        analysis = self._parse_and_analyze(cell)
        self._analyses[cell] = analysis
        while len(self._analyses) > CELL_CACHE_SIZE:
            self._analyses.popitem(last=False)
        return analysis

    def _parse_and_analyze(self, cell: str) -> tuple[ast.Module, CellNames]:
        __tracebackhide__ = True
        try:
            tree = parse_cell(cell)
        except SyntaxError as error:
            ipython_line = self._ipython_syntax_line(cell)
            if ipython_line is not None:
                raise UsageError(
                    f"%%funcx: line {ipython_line} uses IPython syntax (a %magic or a !shell "
                    f"command), which cannot run on an endpoint; write it in Python"
                ) from None
            # A UsageError shows as the message alone; a SyntaxError raised from a magic would
            # come with the magic's whole call stack.
            detail = "".join(traceback.format_exception_only(type(error), error)).rstrip()
            raise UsageError(f"%%funcx: the cell is not valid Python:\n{detail}") from None
        try:
            return tree, analyze_cell(tree)
        except UnsupportedCell as error:
            raise UsageError(f"%%funcx: {error}") from None

    def _ipython_syntax_line(self, cell: str) -> int | None:
        """The first line IPython would rewrite, when that rewriting makes the cell parse."""
        transformed = self._shell.transform_cell(cell)
        try:
            ast.parse(transformed)
        except SyntaxError:
            return None
        for number, (mine, theirs) in enumerate(
            zip(cell.splitlines(), transformed.splitlines()), start=1
        ):
            if mine != theirs:
                return number
        return None

    def _cell_function(
        self, cell: str, tree: ast.Module, names: CellNames, params: list[str]
    ) -> CellFunction:
        key = (cell, tuple(params))
        cached = self._cells.get(key)
        if cached is not None:
            self._cells.move_to_end(key)
            return cached
        try:
            function = build_cell_function(cell, tree, names, params)
        except UnsupportedCell as error:
            raise UsageError(f"%%funcx: {error}") from None
        self._cells[key] = function
        while len(self._cells) > CELL_CACHE_SIZE:
            self._cells.popitem(last=False)
        return function

    def _register(self, function: CellFunction) -> str:
        digest = hashlib.sha256(function.source.encode()).hexdigest()
        function_id = self._function_ids.get(digest)
        if function_id is None:
            first_line = next((ln.strip() for ln in function.cell.splitlines() if ln.strip()), "")
            with _service_errors():
                function_id = self.client.register_function(
                    function.function,
                    description=f"%%funcx cell {function.name}: {first_line[:80]}",
                    source=function.source,
                )
            self._function_ids[digest] = function_id
        return function_id

    def _submit(
        self, endpoint_id: str, options: CellOptions, function_id: str, kwargs: dict[str, Any]
    ) -> Any:
        __tracebackhide__ = True
        executor = self._executor(endpoint_id, options)
        try:
            return executor.submit_to_registered_function(function_id, kwargs=kwargs)
        except Exception as error:
            failed = unpicklable(kwargs)
            if failed:
                listed = "; ".join(f"`{name}` ({why})" for name, why in failed.items())
                raise UsageError(
                    f"%%funcx: the cell reads notebook variables that cannot be sent to the "
                    f"endpoint: {listed}. Create them inside the cell instead, or `del` them "
                    f"from the notebook if the cell does not need their old value."
                ) from None
            usage = service_error(error)
            if usage is not None:
                raise usage from None
            raise

    def _check_refused(self, future: Any, endpoint_id: str) -> None:
        """A submit the service refused may mean a stale endpoint id: resolve afresh next time."""
        if not future.cancelled() and isinstance(future.exception(), FxAPIError):
            self._forget_endpoint(endpoint_id)


@contextmanager
def _service_errors() -> Iterator[None]:
    """Turn failures to reach or use the service into one-line usage errors."""
    try:
        yield
    except NetworkError as error:
        raise UsageError(f"fx: cannot reach the fx service: {error}") from None
    except FxError as error:
        raise UsageError(f"fx: {error}") from None
