"""REST and WebSocket handlers under ``{base_url}fx/api/v2/`` (docs/architecture.md).

Authentication is the Jupyter server's own (token, cookie, or JupyterHub's identity provider)
and every method is authorized on the resource ``fx`` with the server's authorizer. Every
answer — including every failure — is JSON; errors are ``{"error": code, "message": text}``.
Each lookup is filtered on the requesting user, so another user's id answers exactly like an
unknown one (404).
"""

from __future__ import annotations

import asyncio
import json
from http.client import responses
from typing import TYPE_CHECKING, Any, cast

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web, websocket
from tornado.http1connection import HTTP1Connection

from fx_endpoint.protocol import TaskState
from fx_endpoint.version import PROTOCOL_VERSION, __version__

from . import socket_submit
from . import validation as v
from .blobs import BlobWriter
from .models import deleted_endpoint
from .openapi import openapi_document
from .records import EndpointRecord, StoreConflict, new_id
from .tasks import not_found

if TYPE_CHECKING:
    from .app import FxService

AUTH_RESOURCE = "fx"
API_PREFIX = "fx/api/v2"
#: ``GET tasks`` answers at most this many tasks.
MAX_LIST = 1000
#: A WebSocket client this far behind (bytes queued) is disconnected; it re-syncs on reconnect.
MAX_WS_BACKLOG = 64 * 1024 * 1024
#: ``GET tasks/{id}/result`` sends a payload in pieces of this size, each once the last left.
RESULT_CHUNK = 4 * 1024 * 1024

_ERROR_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
}


def check_versions(headers: Any) -> None:
    """Refuse an SDK that announces another wire protocol, naming both versions."""
    protocol = headers.get("X-FX-Protocol")
    if protocol is None or protocol.strip() == str(PROTOCOL_VERSION):
        return
    sdk = headers.get("X-FX-SDK-Version", "of unknown version")
    raise v.ApiError(
        400,
        "version_mismatch",
        f"fx SDK {sdk} (protocol {protocol}) is not compatible with the fx service {__version__} "
        f"(protocol {PROTOCOL_VERSION}); install the same fx-jupyter version in the kernel's "
        "environment and in the Jupyter server's",
    )


class FxHandler(ExtensionHandlerMixin, APIHandler):
    """Base of the fx REST handlers: JSON in and out, versions and size checked."""

    auth_resource = AUTH_RESOURCE

    @property
    def service(self) -> FxService:
        """The fx ExtensionApp that owns the store, the broker and the event hub."""
        return cast("FxService", self.extensionapp)

    @property
    def owner(self) -> str:
        """Whose records this request may see."""
        return self.service.owner_of(self.current_user)

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        check_versions(self.request.headers)
        self.check_size(len(self.request.body or b""))
        await self.service.ready()

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """Path and query arguments, refusing what no text column can hold (``%00``)."""
        decoded = super().decode_argument(value, name)
        why = v.storable_text_error(decoded)
        if why:
            raise v.bad_request(f"{name or 'the URL'}: {why}")
        return decoded

    def check_size(self, size: int) -> None:
        """413 naming both sizes when a request body is over ``max_request_size``."""
        limit = self.service.max_request_size
        if size > limit:
            raise v.ApiError(
                413,
                "too_large",
                f"the request body is {size} bytes, larger than the fx service's limit of "
                f"{limit} bytes (FxService.max_request_size); split it into smaller requests",
            )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error as ``{"error", "message"}``."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, v.ApiError):
            error, message = exc.error, exc.message
        elif isinstance(exc, web.HTTPError):
            error = _ERROR_CODES.get(status_code, "error")
            message = exc.get_message() or responses.get(status_code, "error")
            if status_code == 403 and not getattr(self, "_jupyter_current_user", None):
                message = (
                    "not authenticated: send the Jupyter server's token "
                    "(header `Authorization: token <token>`) or log in"
                )
        else:
            error = "internal_error"
            message = "internal error in the fx service; the Jupyter server log has the details"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": error, "message": message}))

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object (400 otherwise)."""
        return v.parse_json_object(self.request.body)

    def answer(self, document: Any) -> None:
        """Finish with a JSON document."""
        self.finish(json.dumps(document, separators=(",", ":")))

    def answer_text(self, text: str) -> None:
        """Finish with JSON already serialized (task documents, see ``models.task_json``)."""
        self.finish(text)


class VersionHandler(FxHandler):
    """``GET version``."""

    @authorized
    async def get(self) -> None:
        service = self.service
        self.answer(
            {
                "api": "v2",
                "fx_version": __version__,
                "protocol": PROTOCOL_VERSION,
                "min_sdk_version": __version__,
                "limits": {
                    "max_tasks_per_submit": service.max_tasks_per_request,
                    "max_ids_per_request": service.max_tasks_per_request,
                    "max_request_bytes": service.max_request_size,
                },
            }
        )


class FunctionsHandler(FxHandler):
    """``POST functions``: register a function."""

    @authorized
    async def post(self) -> None:
        body = self.json_body()
        v.check_keys(
            body,
            {"function_name", "function_code", "source", "python_version", "description", "public"},
        )
        name = v.text(body, "function_name")
        code = v.payload(body, "function_code")
        source = v.text(body, "source", required=False, max_len=v.MAX_TEXT)
        python = v.text(body, "python_version", required=False, max_len=64)
        description = v.text(body, "description", required=False, max_len=v.MAX_TEXT) or ""
        public = v.flag(body, "public")
        assert name is not None
        function_id = await self.service.functions.register(
            self.owner, name, code, source, python, description, public
        )
        self.answer({"function_id": function_id})


class FunctionHandler(FxHandler):
    """``GET functions/{id}``."""

    @authorized
    async def get(self, function_id: str) -> None:
        record = await self.service.functions.get(self.owner, function_id)
        if record is None:
            raise not_found("function", function_id)
        self.answer(
            {
                "function_id": record.function_id,
                "function_name": record.name,
                "description": record.description,
                "public": record.public,
                "python_version": record.python_version,
                "source": record.source,
                "created": record.created,
                "owned": record.owner == self.owner,
            }
        )


class EndpointsHandler(FxHandler):
    """``GET endpoints`` (list) and ``POST endpoints`` (register)."""

    @authorized
    async def get(self) -> None:
        records = self.service.registry.owned(self.owner)
        self.answer({"endpoints": await self.service.dispatcher.statuses(records)})

    @authorized
    async def post(self) -> None:
        body = self.json_body()
        v.check_keys(body, {"name", "public_key", "display_name"})
        name = v.endpoint_name(body, "name")
        key = v.public_key(body, "public_key")
        display = v.text(body, "display_name", required=False)
        service = self.service
        try:
            record, replaced = await service.registry.register(self.owner, name, key, display)
        except StoreConflict as e:
            raise v.ApiError(409, "conflict", f"public_key: {e}") from None
        if replaced is not None:
            service.dispatcher.endpoint_gone(
                record.endpoint_id,
                "the endpoint was registered again with a new key; restart it",
                requeue=True,
            )
        self.answer(
            {
                "endpoint_id": record.endpoint_id,
                "name": record.name,
                "broker": {"url": service.broker.url, "server_key": service.broker.public_key},
            }
        )


class EndpointStatusHandler(FxHandler):
    """``GET endpoints/{id}/status`` (by id or name)."""

    def _record(self, ref: str) -> EndpointRecord:
        record = self.service.registry.resolve(self.owner, ref)
        if record is None:
            raise not_found("endpoint", ref)
        return record

    @authorized
    async def get(self, ref: str) -> None:
        record = self._record(ref)
        self.answer((await self.service.dispatcher.statuses([record]))[0])


class EndpointHandler(EndpointStatusHandler):
    """``GET endpoints/{id}`` and ``DELETE endpoints/{id}``."""

    @authorized
    async def delete(self, ref: str) -> None:
        service = self.service
        record = self._record(ref)
        cancelled = await service.registry.delete(record)
        service.dispatcher.endpoint_gone(
            record.endpoint_id, "the endpoint was deleted", requeue=False
        )
        for change in cancelled:
            service.events.task_result(
                change,
                None,
                f"task {change.task_id} was cancelled: its endpoint was deleted",
                None,
                None,
            )
        service.events.endpoint_changes(
            record.owner, [deleted_endpoint(record.endpoint_id, record.name)]
        )
        self.answer(
            {"endpoint_id": record.endpoint_id, "deleted": True, "cancelled_tasks": len(cancelled)}
        )


class SubmitHandler(FxHandler):
    """``POST submit``: a batch of tasks, all stored before the ids are answered."""

    @authorized
    async def post(self) -> None:
        body = self.request.body
        items, group = await v.off_loop(
            len(body), v.parse_submission, body, self.service.max_tasks_per_request
        )
        if any(item.payload_ref for item in items):
            await self._open_uploads(items)
        task_ids = await self.service.tasks.submit(self.owner, items)
        self.answer({"task_group_id": group or new_id(), "task_ids": task_ids})

    async def _open_uploads(self, items: list[v.TaskRequest]) -> None:
        """Give tasks that name an upload its mapped bytes; another user's upload is 404."""
        refs = [item.payload_ref for item in items if item.payload_ref]
        opened = await self.service.store.open_blobs(self.owner, refs)
        for i, item in enumerate(items):
            if item.payload_ref:
                blob = opened.get(item.payload_ref)
                if blob is None:
                    raise v.ApiError(
                        404,
                        "not_found",
                        f"tasks[{i}].payload_ref: no payload {item.payload_ref!r} (unknown, "
                        "purged, or not yours); upload the arguments with POST payloads",
                    )
                item.payload = blob


@web.stream_request_body
class PayloadsHandler(FxHandler):
    """``POST payloads``: upload a large task argument payload as raw bytes.

    The body is streamed to a blob file as it arrives (never held in memory, never base64'd),
    so authorization and the size check happen in :meth:`prepare`, before any of it is read.
    The answer's ``payload_ref`` stands for the bytes in ``POST submit``.
    """

    _writer: BlobWriter | None = None

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        user = self.current_user
        if not user:
            raise web.HTTPError(403)
        if not await ensure_async(
            self.authorizer.is_authorized(self, user, "write", AUTH_RESOURCE)
        ):
            raise web.HTTPError(403, f"not authorized to write on resource {AUTH_RESOURCE}")
        if self.request.method != "POST":
            return
        declared = self.request.headers.get("Content-Length")
        if declared is None or not declared.isdigit():
            raise v.bad_request(
                "POST payloads needs a Content-Length header: send the payload as one "
                "application/octet-stream body"
            )
        self.check_size(int(declared))
        connection = self.request.connection
        assert isinstance(connection, HTTP1Connection)
        connection.set_max_body_size(self.service.max_request_size)
        self._writer = BlobWriter(self.service.store.blobs)

    async def data_received(self, chunk: bytes) -> None:
        """Write the body through to the blob file as it arrives."""
        if self._writer is not None:
            await self._writer.add(chunk)

    @authorized
    async def post(self) -> None:
        writer = self._writer
        assert writer is not None
        if writer.size == 0:
            self._writer = None
            raise v.bad_request("the request has no body: send the payload bytes")
        store = self.service.store
        try:
            await writer.flush()
            blob_id = await store.blobs.run(writer.commit)
        except BaseException:
            await writer.discard()
            raise
        self._writer = None
        try:
            await store.add_blob(self.owner, blob_id, writer.size)
        except BaseException:
            await store.blobs.run(store.blobs.remove, [blob_id])
            raise
        self.set_status(201)
        self.answer({"payload_ref": blob_id, "size": writer.size})

    def on_connection_close(self) -> None:
        """A body cut short: drop what was written of it."""
        super().on_connection_close()
        writer, self._writer = self._writer, None
        if writer is not None:
            asyncio.ensure_future(writer.discard())

    def on_finish(self) -> None:
        """Refused after the body was read (a failed authorization, a bad request)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            asyncio.ensure_future(writer.discard())


class TaskHandler(FxHandler):
    """``GET tasks/{id}`` and ``DELETE tasks/{id}`` (cancel)."""

    @authorized
    async def get(self, task_id: str) -> None:
        self.answer_text(await self.service.tasks.get(self.owner, task_id))

    @authorized
    async def delete(self, task_id: str) -> None:
        self.answer_text(await self.service.tasks.cancel(self.owner, task_id))


class TaskResultHandler(FxHandler):
    """``GET tasks/{id}/result``: a finished task's payload as raw bytes.

    For payloads too large to travel base64'd in JSON (the Task says ``result_size`` or
    ``exception_size`` then), though any finished task's payload is served. The bytes are
    those the endpoint sent: the serialized value for ``success``, the serialized error for
    ``failed`` (``X-FX-Task-Status`` says which).
    """

    @authorized
    async def get(self, task_id: str) -> None:
        found = await self.service.store.result_blob(self.owner, task_id)
        if found is None:
            raise not_found("task", task_id)
        status, payload = found
        if status not in TaskState.TERMINAL:
            raise v.ApiError(409, "conflict", f"task {task_id} is {status}: it has no result yet")
        if not payload:
            raise v.ApiError(
                404, "not_found", f"task {task_id} ended {status} without a result payload"
            )
        view = memoryview(payload)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(view.nbytes))
        self.set_header("X-FX-Task-Status", status)
        await self.flush()  # the headers; the pieces go to the connection without copies
        connection = self.request.connection
        assert connection is not None
        for start in range(0, view.nbytes, RESULT_CHUNK):
            # IOStream takes any buffer; ``write`` is annotated ``bytes`` only.
            await connection.write(cast(bytes, view[start : start + RESULT_CHUNK]))
        self.finish()


class TasksHandler(FxHandler):
    """``GET tasks?limit=&endpoint_id=&status=``: recent tasks, newest first."""

    @authorized
    async def get(self) -> None:
        raw_limit = self.get_query_argument("limit", "100")
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIST:
            raise v.bad_request(
                f"limit: expected an integer from 1 to {MAX_LIST}, got {raw_limit!r}"
            )
        status = self.get_query_argument("status", None)
        if status is not None and status not in TaskState.ALL:
            raise v.bad_request(f"status: {status!r} is not one of {', '.join(TaskState.ALL)}")
        endpoint = self.get_query_argument("endpoint_id", None) or None
        self.answer_text(await self.service.tasks.recent(self.owner, limit, endpoint, status))


class BatchStatusHandler(FxHandler):
    """``POST batch_status``: many tasks in one request."""

    @authorized
    async def post(self) -> None:
        body = self.json_body()
        v.check_keys(body, {"task_ids"})
        ids = v.id_list(body, "task_ids", self.service.max_tasks_per_request)
        self.answer_text(await self.service.tasks.batch_status(self.owner, ids))


class StatsHandler(FxHandler):
    """``GET stats``: the service's counters (the task counts are the caller's own)."""

    @authorized
    async def get(self) -> None:
        self.answer(await self.service.stats(self.owner))


class OpenAPIHandler(FxHandler):
    """``GET openapi.json``."""

    @authorized
    async def get(self) -> None:
        self.answer(openapi_document(self.service.base_path))


class NotFoundHandler(FxHandler):
    """Any other path under the API: a JSON 404 that lists the routes."""

    def _unknown(self, path: str) -> None:
        raise v.ApiError(
            404,
            "not_found",
            f"no fx API route {self.request.method} {path!r}; see GET {self.service.base_path}openapi.json",
        )

    @authorized
    async def get(self, path: str) -> None:
        self._unknown(path)

    @authorized
    async def post(self, path: str) -> None:
        self._unknown(path)

    @authorized
    async def delete(self, path: str) -> None:
        self._unknown(path)

    @authorized
    async def put(self, path: str) -> None:
        self._unknown(path)

    @authorized
    async def patch(self, path: str) -> None:
        self._unknown(path)


class EventsHandler(
    WebSocketMixin, ExtensionHandlerMixin, websocket.WebSocketHandler, JupyterHandler
):
    """``WS events``: the authenticated user's task and endpoint events."""

    auth_resource = AUTH_RESOURCE
    owner = ""
    # Refusals before the upgrade answer JSON like the REST handlers, not Jupyter's HTML page.
    write_error = FxHandler.write_error

    @property
    def service(self) -> FxService:
        return cast("FxService", self.extensionapp)

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Authorize, check versions, then upgrade to a WebSocket."""
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPError(400, "events is a WebSocket: connect with `Upgrade: websocket`")
        user = self.current_user
        if not await ensure_async(
            self.authorizer.is_authorized(self, user, "execute", AUTH_RESOURCE)
        ):
            raise web.HTTPError(403, f"not authorized to execute on resource {AUTH_RESOURCE}")
        try:
            check_versions(self.request.headers)
        except v.ApiError as e:
            raise web.HTTPError(400, e.message) from None
        await self.service.ready()
        self.owner = self.service.owner_of(user)
        self._backlog = 0
        self._answering: set[asyncio.Future[None]] = set()
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        # Events and submit answers are small frames someone waits on: no Nagle delay.
        self.set_nodelay(True)
        self.service.events.subscribe(self)

    def on_message(self, message: str | bytes) -> None:
        """A client message: a submit (see :mod:`.socket_submit`) is answered on this socket;
        anything else is ignored."""
        task = asyncio.ensure_future(self._answer(message))
        self._answering.add(task)  # referenced until done, or the loop may collect it
        task.add_done_callback(self._answering.discard)

    async def _answer(self, message: str | bytes) -> None:
        answer = await socket_submit.answer_message(self, message)
        if answer is not None and self.ws_connection is not None:
            self.push(answer)

    def on_close(self) -> None:
        self.service.events.unsubscribe(self)

    def push(self, text: str) -> None:
        """Send an event message, or disconnect a client that stopped reading."""
        if self._backlog > MAX_WS_BACKLOG:
            self.log.warning("fx events: client of %s too slow; disconnecting it", self.owner)
            self.service.events.unsubscribe(self)
            self.close(1013, "too far behind; reconnect and call batch_status")
            return
        try:
            future = self.write_message(text)
        except websocket.WebSocketClosedError:
            self.service.events.unsubscribe(self)
            return
        size = len(text)
        self._backlog += size

        def written(f: Any) -> None:
            self._backlog -= size
            if not f.cancelled():
                f.exception()  # a closed socket: on_close unsubscribes

        future.add_done_callback(written)

    def shutdown(self) -> None:
        """The service is stopping."""
        self.close(1001, "the fx service is stopping")


def default_handlers() -> list[tuple[str, type[web.RequestHandler]]]:
    """The fx routes, relative to the server's base URL."""
    ident = r"([^/]+)"
    return [
        (rf"/{API_PREFIX}/version", VersionHandler),
        (rf"/{API_PREFIX}/functions", FunctionsHandler),
        (rf"/{API_PREFIX}/functions/{ident}", FunctionHandler),
        (rf"/{API_PREFIX}/endpoints", EndpointsHandler),
        (rf"/{API_PREFIX}/endpoints/{ident}", EndpointHandler),
        (rf"/{API_PREFIX}/endpoints/{ident}/status", EndpointStatusHandler),
        (rf"/{API_PREFIX}/submit", SubmitHandler),
        (rf"/{API_PREFIX}/payloads", PayloadsHandler),
        (rf"/{API_PREFIX}/tasks", TasksHandler),
        (rf"/{API_PREFIX}/tasks/{ident}", TaskHandler),
        (rf"/{API_PREFIX}/tasks/{ident}/result", TaskResultHandler),
        (rf"/{API_PREFIX}/batch_status", BatchStatusHandler),
        (rf"/{API_PREFIX}/stats", StatsHandler),
        (rf"/{API_PREFIX}/openapi.json", OpenAPIHandler),
        (rf"/{API_PREFIX}/events", EventsHandler),
        (rf"/{API_PREFIX}/(.*)", NotFoundHandler),
    ]
