"""``Client``: the fx REST API as Python methods (funcX's ``FuncXClient`` names).

Built on ``globus_sdk.BaseClient`` like funcX's client: bearer-token authorization, retries of
transient failures, and service errors raised as :class:`FxAPIError` (a ``GlobusAPIError``)
whose message is the service's own. Connections are kept alive and reused: globus-sdk's
``requests`` session, and for a plain-http service (the usual local Jupyter server) the leaner
connection pool of :mod:`.direct` on the hot path.

Large payloads never travel base64'd in JSON: a task whose pickled arguments are over
:data:`.batch.UPLOAD_ARGS_BYTES` (a :class:`.batch.LargeTask`) has them uploaded as the raw
pickled bytes first (``POST payloads``) and is submitted by reference, and a result the service
stored out of line (the Task says ``result_size``) is fetched as raw bytes
(``GET tasks/{id}/result``). Small tasks keep the one-request path.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import threading
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import requests
from globus_sdk import AccessTokenAuthorizer, BaseClient, NullAuthorizer
from globus_sdk.response import GlobusHTTPResponse
from globus_sdk.transport import RetryConfig

from fx_endpoint.protocol import TaskState
from fx_endpoint.serialize import PYTHON_VERSION, function_source, serialize_function
from fx_endpoint.version import PROTOCOL_VERSION, __version__

from .batch import (
    MAX_REQUEST_BYTES,
    MAX_TASKS_PER_REQUEST,
    Batch,
    EncodedTask,
    LargeTask,
    encode_args,
    encode_task,
    submit_bodies,
)
from .compat import check_service_version
from .direct import RETRY_STATUSES, DirectHTTP
from .discovery import HINT, SERVICE_PATH, locate_service
from .errors import (
    EndpointNotFound,
    FxAPIError,
    FxError,
    ServiceNotFound,
    TaskCancelled,
    TaskPending,
)
from .listings import EndpointList, TaskList
from .tasks import out_of_line_field, task_document

if TYPE_CHECKING:
    from .events import EventStream

#: Most task ids in one ``POST batch_status``; more are asked in several requests.
MAX_IDS_PER_STATUS_REQUEST = 50_000

#: Submit bodies up to this size go on the event stream's socket when it is open (the
#: service's WebSocket messages are limited to 10 MiB; larger batches are HTTP requests).
MAX_SOCKET_SUBMIT_BYTES = 4 * 1024 * 1024
_JSON = {"Content-Type": "application/json"}
_BINARY = {"Content-Type": "application/octet-stream"}


def _path_id(value: Any, what: str) -> str:
    """An id or name to put in a URL path; anything that would change the route is refused."""
    if isinstance(value, uuid.UUID):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or "/" in value:
        raise ValueError(f"{what} must be a non-empty string without '/', got {value!r}")
    return value


class Client(BaseClient):
    """A connection to one fx service.

    ``Client()`` finds the service of the Jupyter server it runs under (see
    :mod:`fx_jupyter.sdk.discovery`); ``Client(service_url, token)`` names it. The first request
    checks ``GET version`` and raises :class:`VersionMismatch` if this SDK and the service cannot
    work together. A client is safe to share between threads.
    """

    error_class = FxAPIError

    def __init__(self, service_url: str | None = None, token: str | None = None) -> None:
        location = locate_service(service_url, token)
        self.token = location.token
        self.located_by = location.source
        super().__init__(
            base_url=location.url,
            authorizer=AccessTokenAuthorizer(location.token)
            if location.token
            else NullAuthorizer(),
            app_name=f"fx-jupyter-sdk/{__version__}",
            # A few quick retries ride over a restarting server without making a dead one
            # take half a minute to report.
            retry_config=RetryConfig(max_retries=3, max_sleep=2),
        )
        # Proxy settings are read from the environment once, here, not on every request:
        # requests rescans os.environ per request otherwise, a third of a small call's time.
        session = self.transport.session
        session.proxies = requests.utils.get_environ_proxies(self.base_url)
        session.trust_env = False
        self.transport.headers["X-FX-SDK-Version"] = __version__
        self.transport.headers["X-FX-Protocol"] = str(PROTOCOL_VERSION)
        self._direct = (
            DirectHTTP(self.base_url, self.transport.http_timeout)
            if DirectHTTP.usable_for(self.base_url, session.proxies)
            else None
        )
        # A client dropped without close() (a re-run notebook cell) closes its connections:
        # left to the garbage collector, each socket is a ResourceWarning raised on whatever
        # thread happens to collect it.
        weakref.finalize(self, _close_connections, self._direct, self.transport)
        self._version_lock = threading.Lock()
        self._service_version: dict[str, Any] | None = None
        self._functions: dict[bytes, str] = {}
        self._functions_lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._events: EventStream | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<fx Client {self.base_url}>"

    # --- plumbing ------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        query_params: dict[str, Any] | None = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        encoding: str | None = None,
        allow_redirects: bool = True,
        stream: bool = False,
        automatic_authorization: bool = True,
    ) -> GlobusHTTPResponse:
        """Send a request (see ``globus_sdk.BaseClient.request``).

        Every request checks, once, that the service speaks our version. Plain-http services
        are reached over the keep-alive connections of :mod:`.direct`; globus-sdk's transport
        takes over whenever that path cannot answer (and for TLS or proxies).
        """
        if self._service_version is None and path != "version":
            self.version()
        if self._direct is not None and not stream and automatic_authorization:
            response = self._send_direct(method, path, query_params, data, headers)
            if response is not None:
                return response
        return super().request(
            method,
            path,
            query_params=query_params,
            data=data,
            headers=headers,
            encoding=encoding,
            allow_redirects=allow_redirects,
            stream=stream,
            automatic_authorization=automatic_authorization,
        )

    def _send_direct(
        self,
        method: str,
        path: str,
        query_params: dict[str, Any] | None,
        data: Any,
        headers: dict[str, str] | None,
    ) -> GlobusHTTPResponse | None:
        """The answer over the direct path; None when the regular transport must redo it."""
        assert self._direct is not None
        url = self.base_url + urllib.parse.quote(path.lstrip("/"))
        if query_params:
            url += "?" + urllib.parse.urlencode(
                {k: v for k, v in query_params.items() if v is not None}
            )
        send_headers = dict(self.transport.headers)
        if data is None:
            body = None
        elif isinstance(data, bytes):
            body = data
        elif isinstance(data, str):
            body = data.encode()
        else:
            body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
            send_headers["Content-Type"] = "application/json"
        if headers:
            send_headers.update(headers)
        authorization = self.authorization_header()
        if authorization:
            send_headers["Authorization"] = authorization
        try:
            response = self._direct.send(method, url, body, send_headers)
        except (OSError, http.client.HTTPException):
            return None  # a broken or closed connection: the transport retries properly
        status = response.status_code
        if status in RETRY_STATUSES or 300 <= status < 400:
            return None
        if status >= 400:
            raise self.error_class(response)
        return GlobusHTTPResponse(response, self)

    def version(self) -> dict[str, Any]:
        """The service's ``GET version`` document, checked against this SDK (once, then cached).

        Raises :class:`VersionMismatch` naming both versions when they cannot work together,
        and :class:`ServiceNotFound` when the URL is a Jupyter server without the fx service.
        """
        with self._version_lock:
            if self._service_version is None:
                try:
                    doc = self.get("version").data
                except FxAPIError as e:
                    if e.http_status == 404:
                        hint = (
                            "Is the fx_jupyter server extension enabled in that Jupyter server "
                            "(`jupyter server extension list`)? "
                        )
                        if not self.base_url.endswith(SERVICE_PATH):
                            hint = (
                                f"If {self.base_url} is the Jupyter server's URL, the fx service "
                                f"is at {self.base_url}{SERVICE_PATH}. " + hint
                            )
                        raise ServiceNotFound(
                            [f"{self.base_url}: a server answers, but GET version is a 404"],
                            hint + HINT,
                        ) from None
                    raise
                self._service_version = check_service_version(doc, self.base_url)
            return self._service_version

    def authorization_header(self) -> str | None:
        """The ``Authorization`` header value requests carry (the event stream needs it too)."""
        return self.authorizer.get_authorization_header() if self.authorizer else None

    @property
    def events(self) -> EventStream:
        """The :class:`EventStream` of this client: one WebSocket, started on first use.

        A closed client's stream is closed too: listeners can still be added and removed (a
        widget finishing late does), but it never connects.
        """
        with self._events_lock:
            if self._events is None:
                from .events import EventStream

                self._events = EventStream(self)
                if self._closed:
                    self._events.close()
                else:
                    self._events.start()
                    # A client dropped without close() (a re-run notebook cell) stops its stream.
                    weakref.finalize(self, self._events.close)
            return self._events

    def close(self) -> None:
        """Stop the event stream and close the HTTP session."""
        with self._events_lock:
            self._closed = True
            events = self._events
        if events is not None:
            events.close()
        if self._direct is not None:
            self._direct.close()
        super().close()

    # --- functions -----------------------------------------------------------------------------
    def register_function(
        self,
        function: Callable[..., Any],
        description: str | None = None,
        public: bool = False,
        *,
        source: str | None = None,
    ) -> str:
        """Register ``function`` (by value, with its source text) and return its id.

        Registering the same code again returns the same id (cached here; the service also
        dedupes by payload). ``source`` overrides the source text found by ``inspect``, as the
        ``%%funcx`` magic does for a cell.
        """
        if not callable(function):
            raise TypeError(f"register_function needs a callable, got {type(function).__name__}")
        if description is not None and not isinstance(description, str):
            raise TypeError(f"description must be a string, got {type(description).__name__}")
        if not isinstance(public, bool):
            raise TypeError(f"public must be True or False, got {public!r}")
        if source is None:
            source = function_source(function)
        payload = serialize_function(function, source)
        digest = hashlib.sha256(payload).digest()
        with self._functions_lock:
            known = self._functions.get(digest)
        if known is not None:
            return known
        body: dict[str, Any] = {
            "function_name": getattr(function, "__name__", type(function).__name__),
            "function_code": base64.b64encode(payload).decode("ascii"),
            "python_version": PYTHON_VERSION,
            "public": public,
        }
        if source is not None:
            body["source"] = source
        if description is not None:
            body["description"] = description
        function_id = str(self.post("functions", data=body)["function_id"])
        with self._functions_lock:
            self._functions[digest] = function_id
        return function_id

    def get_function(self, function_id: str) -> dict[str, Any]:
        """What the service stored about a function (name, description, source, python...)."""
        return dict(self.get(f"functions/{_path_id(function_id, 'function_id')}").data)

    # --- submitting ----------------------------------------------------------------------------
    def create_batch(self, task_group_id: str | None = None) -> Batch:
        """An empty :class:`Batch`; fill it with ``batch.add(...)`` and send it with batch_run."""
        return Batch(task_group_id)

    def batch_run(self, batch: Batch) -> list[str]:
        """Submit every task of ``batch`` in one request (split only above the size limits);
        return their task ids in the order they were added."""
        if not isinstance(batch, Batch):
            raise TypeError(
                f"batch_run needs a Batch from create_batch(), got {type(batch).__name__}"
            )
        task_ids: list[str] = []
        for chunk in self.submit_encoded(batch.fragments, batch.task_group_id):
            task_ids.extend(chunk)
        return task_ids

    def run(
        self,
        *args: Any,
        endpoint_id: Any,
        function_id: Any,
        walltime: float | None = None,
        memoize: bool | None = None,
        **kwargs: Any,
    ) -> str:
        """Run ``function_id`` with ``args``/``kwargs`` on ``endpoint_id`` (id or name); returns
        the task id. ``walltime`` (seconds) and ``memoize`` are task options, not arguments."""
        fragment = encode_task(
            endpoint_id, function_id, encode_args(args, kwargs), walltime, memoize
        )
        return next(self.submit_encoded([fragment]))[0]

    def submit_encoded(
        self, tasks: Sequence[EncodedTask], task_group_id: str | None = None
    ) -> Iterator[list[str]]:
        """Send encoded tasks (see :mod:`.batch`); yields the task ids of each request in turn.

        Usually one request, after one ``POST payloads`` per :class:`.batch.LargeTask`. While
        it is in flight the event stream (if started) keeps the events of tasks nobody waits
        for yet, so a caller that registers futures for the ids it gets back cannot miss a
        task that finished before its future existed; the tasks are then followed until
        claimed, so ``Executor.get_futures`` of a ``batch_run`` need not ask the service about
        them (see :mod:`.events`).
        """
        limits = self._limits()
        fragments: Sequence[str]
        if any(type(task) is LargeTask for task in tasks):
            fragments = self._upload_arguments(
                tasks, limits.get("max_request_bytes", MAX_REQUEST_BYTES)
            )
        else:
            fragments = tasks  # type: ignore[assignment] # no LargeTask: all str
        for body, count in submit_bodies(
            fragments,
            task_group_id,
            max_tasks=limits.get("max_tasks_per_submit", MAX_TASKS_PER_REQUEST),
            max_bytes=limits.get("max_request_bytes", MAX_REQUEST_BYTES),
        ):
            # The caller registers its futures before the generator resumes, so that stays
            # inside the window too.
            with self._expecting() as follow:
                answer = self._submit_body(body)
                task_ids = answer.get("task_ids") if isinstance(answer, dict) else None
                if not isinstance(task_ids, list) or len(task_ids) != count:
                    raise FxError(
                        f"the service answered submit with {answer!r}, not {count} task ids"
                    )
                follow(task_ids)
                yield task_ids

    def _submit_body(self, body: bytes) -> Any:
        """One submit: on the event stream's socket when it is open (no HTTP request: see
        :meth:`EventStream.submit`), else — or when it did not go that way — over HTTP."""
        events = self._events
        if events is not None and len(body) <= MAX_SOCKET_SUBMIT_BYTES:
            answer = events.submit(body, self.transport.http_timeout)
            if answer is not None:
                return answer
        return self.post("submit", data=body, encoding="text", headers=_JSON).data

    def upload_payload(self, payload: bytes) -> str:
        """Upload serialized task arguments as raw bytes (``POST payloads``); returns the
        ``payload_ref`` a submitted task can name instead of an inline ``payload``."""
        answer = self.post("payloads", data=payload, headers=_BINARY).data
        ref = answer.get("payload_ref") if isinstance(answer, dict) else None
        if not isinstance(ref, str):
            raise FxError(f"the service answered POST payloads with {answer!r}, not a payload_ref")
        return ref

    def _upload_arguments(self, tasks: Sequence[EncodedTask], max_bytes: int) -> list[str]:
        """``tasks`` as JSON fragments, the arguments of each :class:`.batch.LargeTask`
        uploaded as they are (raw pickled bytes) and named by ``payload_ref``. Arguments over
        the service's limit fail before anything is uploaded."""
        for task in tasks:
            if type(task) is LargeTask and len(task.payload) > max_bytes:
                raise FxError(
                    f"the task's serialized arguments are {len(task.payload)} bytes, larger "
                    f"than the fx service's limit of {max_bytes} bytes "
                    "(FxService.max_request_size); pass less data (or a path on storage the "
                    "endpoint can read)"
                )
        return [
            task.fragment(self.upload_payload(task.payload)) if type(task) is LargeTask else task
            for task in tasks  # type: ignore[misc] # str otherwise
        ]

    def _limits(self) -> dict[str, int]:
        """Request size limits the service advertises in ``GET version`` (optional)."""
        limits = self.version().get("limits")
        if not isinstance(limits, dict):
            return {}
        return {k: v for k, v in limits.items() if isinstance(v, int) and v > 0}

    def _expecting(self) -> AbstractContextManager[Any]:
        events = self._events
        return events.expecting() if events is not None else nullcontext(_follow_nothing)

    # --- tasks ---------------------------------------------------------------------------------
    def get_task_record(self, task_id: str) -> dict[str, Any]:
        """The service's Task record: payload fields base64 as sent, except a payload the
        service stored out of line, which is fetched here as raw bytes."""
        task_id = _path_id(task_id, "task_id")
        return self._with_payload(task_id, dict(self.get(f"tasks/{task_id}").data))

    def get_result_payload(self, task_id: str) -> bytes:
        """A finished task's serialized result (or error) as raw bytes
        (``GET tasks/{id}/result``), for payloads too large to travel in JSON."""
        task_id = _path_id(task_id, "task_id")
        return self.get(f"tasks/{task_id}/result").binary_content

    def _with_payload(self, task_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with an out-of-line payload (``result_size``) fetched into ``result``
        (or ``exception``), as bytes."""
        key = out_of_line_field(record)
        if key is not None:
            record[key] = self.get_result_payload(task_id)
        return record

    def get_task(self, task_id: str) -> dict[str, Any]:
        """funcX's task shape: ``{task_id, status, pending, result | exception, completion_t,
        details: {endpoint_id, task_transitions, retries, stdout, stderr, ...}}``."""
        return task_document(self.get_task_record(task_id))

    def get_result(self, task_id: str) -> Any:
        """The value the task returned.

        Raises the remote exception (its own type where it can be rebuilt, the remote traceback
        in its message) when the task failed, :class:`TaskPending` while it is not done, and
        :class:`TaskCancelled` when it was cancelled.
        """
        return _value_of(self.get_task(task_id))

    def batch_status(self, task_ids: Iterable[str]) -> dict[str, Any]:
        """Raw ``POST batch_status``: ``{"results": {task_id: Task}, "unknown": [ids]}``."""
        ids = [_path_id(t, "task_id") for t in task_ids]
        results: dict[str, Any] = {}
        unknown: list[str] = []
        if not ids:
            return {"results": results, "unknown": unknown}
        step = self._limits().get("max_ids_per_request", MAX_IDS_PER_STATUS_REQUEST)
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            answer = self.post("batch_status", data={"task_ids": chunk}).data
            results.update(answer.get("results") or {})
            unknown.extend(answer.get("unknown") or [])
        return {"results": results, "unknown": unknown}

    def get_batch_result(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``{task_id: {pending, status, result | exception}}`` for many tasks in one request.

        An id the service does not know (or that is not yours) gets ``status: "unknown"`` and
        an ``exception`` saying so, rather than failing the whole call.
        """
        ids = list(task_ids)
        answer = self.batch_status(ids)
        out: dict[str, dict[str, Any]] = {}
        for task_id in ids:
            record = answer["results"].get(task_id)
            if record is None:
                out[task_id] = {
                    "pending": False,
                    "status": "unknown",
                    "exception": FxError(f"the service knows no task {task_id} of yours"),
                }
                continue
            doc = task_document(self._with_payload(task_id, dict(record)))
            out[task_id] = {
                k: doc[k] for k in ("pending", "status", "result", "exception") if k in doc
            }
        return out

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a task: a queued one is dropped, a running one's worker stopped; it ends
        ``cancelled``. Returns the task as the service has it after the request."""
        return task_document(dict(self.delete(f"tasks/{_path_id(task_id, 'task_id')}").data))

    def list_tasks(
        self, limit: int = 50, endpoint_id: str | None = None, status: str | None = None
    ) -> TaskList:
        """Your most recent tasks, newest first (without result payloads)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        if status is not None and status not in TaskState.ALL:
            raise ValueError(f"status must be one of {', '.join(TaskState.ALL)}, got {status!r}")
        params: dict[str, Any] = {"limit": limit}
        if endpoint_id is not None:
            params["endpoint_id"] = _path_id(endpoint_id, "endpoint_id")
        if status is not None:
            params["status"] = status
        return TaskList(self.get("tasks", query_params=params).data.get("tasks") or [])

    # --- endpoints -----------------------------------------------------------------------------
    def get_endpoint_status(self, endpoint_id: str) -> dict[str, Any]:
        """EndpointStatus: ``{endpoint_id, name, status: online|offline, last_heartbeat,
        details: {workers, idle_workers, queued, ...}, tasks: {state: count}, ...}``."""
        return dict(self.get(f"endpoints/{_path_id(endpoint_id, 'endpoint_id')}/status").data)

    def list_endpoints(self) -> EndpointList:
        """Your endpoints (a table in a notebook: name, id, status, workers, queued)."""
        return EndpointList(self.get("endpoints").data.get("endpoints") or [])

    def resolve_endpoint(self, name_or_id: str) -> str:
        """The id of the endpoint with this name (or id); :class:`EndpointNotFound` lists the
        names that do exist."""
        key = _path_id(name_or_id, "endpoint name or id")
        try:
            return str(self.get(f"endpoints/{key}").data["endpoint_id"])
        except FxAPIError as e:
            if e.http_status != 404:
                raise
        raise EndpointNotFound(key, self.list_endpoints().names())


def _close_connections(direct: DirectHTTP | None, transport: Any) -> None:
    """Close a client's connection pools (its finalizer: the client itself is gone)."""
    if direct is not None:
        direct.close()
    transport.close()


def _value_of(task: dict[str, Any]) -> Any:
    """The result of a funcX-shaped task document, or the right exception."""
    if task["pending"]:
        raise TaskPending(task["task_id"], task["status"])
    if task["status"] == TaskState.CANCELLED:
        raise TaskCancelled(task["task_id"])
    if "exception" in task:
        raise task["exception"]
    if "result" not in task:
        raise FxError(f"task {task['task_id']} ended {task['status']} but carries no result")
    return task["result"]


def _follow_nothing(task_ids: Iterable[str]) -> None:
    """What a submit does with its task ids when no event stream could follow them."""
