"""The fx service as a Jupyter Server extension (``FxService``) and standalone (``fx-service``).

Configure it like any Jupyter option — ``c.FxService.db_url = ...`` in
``jupyter_server_config.py``, ``--FxService.broker_port=5555`` on the command line — or through
the ``FX_*`` environment variable each option names (configuration wins over the environment).
``docs/service.md`` lists every option.

The store, the broker and the event hub start with the server (``_start_jupyter_server_extension``)
or, in embedders that never call that hook, on the first request; they stop with the server.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import time
from collections.abc import Callable
from typing import Any

from jupyter_server.auth.identity import (
    IdentityProvider,
    LegacyIdentityProvider,
    PasswordIdentityProvider,
    User,
)
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Bool, Float, Int, TraitError, Unicode, default, validate

from fx_endpoint.version import __version__

from .broker import Broker
from .dispatch import Dispatcher
from .endpoints import EndpointRegistry
from .events import EventHub
from .functions import FunctionRegistry
from .handlers import API_PREFIX, default_handlers
from .schema import is_sqlite, store_url
from .store import TaskStore
from .tasks import TaskManager
from .validation import ApiError

#: Identity providers of a personal Jupyter server: whoever holds the token is the one user.
_PERSONAL_PROVIDERS = (IdentityProvider, PasswordIdentityProvider, LegacyIdentityProvider)

_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _env_default(
    trait: str, env: str, cast: Callable[[str], Any], fallback: Callable[[Any], Any] | None = None
) -> Any:
    """A traitlets dynamic default: the environment variable ``env`` if set, else ``fallback``
    (a function of the app) or the trait's own default."""

    @default(trait)
    def _default(self: FxService) -> Any:
        raw = os.environ.get(env, "")
        if raw == "":
            return fallback(self) if fallback else self.traits()[trait].default_value
        try:
            value = cast(raw)
        except (ValueError, KeyError):
            raise TraitError(f"environment variable {env}={raw!r} is not a valid {trait}") from None
        try:
            return _checked(trait, value)
        except TraitError as e:
            raise TraitError(f"environment variable {env}: {e}") from None

    return _default


_POSITIVE = {
    "max_request_size",
    "max_tasks_per_request",
    "event_inline_limit",
    "read_threads",
    "dispatch_batch_size",
    "heartbeat_period",
    "heartbeat_threshold",
}


def _checked(trait: str, value: Any) -> Any:
    """Range checks shared by configured values and values from the environment (traitlets
    does not run ``@validate`` on dynamic defaults)."""
    if trait == "db_url":
        try:
            store_url(value)
        except ValueError as e:
            raise TraitError(f"db_url: {e}") from None
        if is_sqlite(value) and value.rstrip("/") in (
            "sqlite:",
            "sqlite:/",
            "sqlite://",
            "sqlite:///:memory:",
        ):
            raise TraitError(
                f"db_url {value!r}: the store needs a file (several threads share it), e.g. "
                "sqlite:////path/to/fx.db"
            )
    elif trait == "broker_port" and not 0 <= value <= 65535:
        raise TraitError(f"broker_port {value} is not a TCP port (0 picks a free one)")
    elif trait in _POSITIVE and value <= 0:
        raise TraitError(f"{trait} must be positive, not {value}")
    elif trait == "result_ttl" and not value >= 0:  # also refuses NaN
        raise TraitError(f"result_ttl must be 0 (keep forever) or positive seconds, not {value}")
    return value


def _boolean(raw: str) -> bool:
    return _BOOLEANS[raw.strip().lower()]


def _default_db_url(app: FxService) -> str:
    return "sqlite:///" + os.path.join(app.data_dir, "fx", "fx.db")


class FxService(ExtensionApp):
    """The fx service: REST + WebSocket API, task store, ZeroMQ broker, event hub."""

    name = "fx"
    extension_url = f"/{API_PREFIX}/version"
    load_other_extensions = True
    serverapp_config = {"open_browser": False}  # noqa: RUF012 - as declared by ExtensionApp

    # -- options ------------------------------------------------------------------------------

    db_url = Unicode(
        help="""SQLAlchemy URL of the task store. Default: SQLite (WAL) at
        {jupyter_data_dir}/fx/fx.db. PostgreSQL: postgresql+psycopg://user@host/db.
        Env: FX_DB_URL.""",
    ).tag(config=True)
    _env_db_url = _env_default("db_url", "FX_DB_URL", str, _default_db_url)

    broker_ip = Unicode(
        "127.0.0.1",
        help="""Interface the ZeroMQ broker binds to. 0.0.0.0 (or ::) for endpoints on
        other hosts; then set broker_public_host if the host name is not what they should use.
        Env: FX_BROKER_IP.""",
    ).tag(config=True)
    _env_broker_ip = _env_default("broker_ip", "FX_BROKER_IP", str)

    broker_port = Int(
        0,
        help="""TCP port of the ZeroMQ broker; 0 picks a free one on first start and reuses it
        afterwards (it is remembered in the store). Env: FX_BROKER_PORT.""",
    ).tag(config=True)
    _env_broker_port = _env_default("broker_port", "FX_BROKER_PORT", int)

    broker_public_host = Unicode(
        "",
        help="""Host name or address endpoints connect to (the broker URL handed out at
        registration). Empty: broker_ip, or this machine's FQDN when binding to all
        interfaces. Env: FX_BROKER_PUBLIC_HOST.""",
    ).tag(config=True)
    _env_broker_public_host = _env_default("broker_public_host", "FX_BROKER_PUBLIC_HOST", str)

    heartbeat_period = Float(
        5.0,
        help="""Seconds between endpoint heartbeats, for endpoints whose hello does not say.
        Env: FX_HEARTBEAT_PERIOD.""",
    ).tag(config=True)
    _env_heartbeat_period = _env_default("heartbeat_period", "FX_HEARTBEAT_PERIOD", float)

    heartbeat_threshold = Float(
        30.0,
        help="""Seconds without any message after which an endpoint (whose hello does not say)
        is offline and its unfinished tasks return to waiting-for-ep.
        Env: FX_HEARTBEAT_THRESHOLD.""",
    ).tag(config=True)
    _env_heartbeat_threshold = _env_default("heartbeat_threshold", "FX_HEARTBEAT_THRESHOLD", float)

    max_request_size = Int(
        512 * 1024 * 1024,
        help="""Largest request body in bytes; larger ones get 413 naming both sizes. Keep it
        at most ServerApp.max_body_size (also 512 MiB), which Tornado enforces before fx sees
        the request. Env: FX_MAX_REQUEST_SIZE.""",
    ).tag(config=True)
    _env_max_request_size = _env_default("max_request_size", "FX_MAX_REQUEST_SIZE", int)

    max_tasks_per_request = Int(
        100_000,
        help="""Most tasks in one POST submit, and most ids in one POST batch_status.
        Env: FX_MAX_TASKS_PER_REQUEST.""",
    ).tag(config=True)
    _env_max_tasks = _env_default("max_tasks_per_request", "FX_MAX_TASKS_PER_REQUEST", int)

    event_inline_limit = Int(
        256 * 1024,
        help="""Largest result (or exception) payload in bytes pushed inline, base64, with a
        terminal task event; larger ones are fetched with GET tasks/{id}.
        Env: FX_EVENT_INLINE_LIMIT.""",
    ).tag(config=True)
    _env_event_inline = _env_default("event_inline_limit", "FX_EVENT_INLINE_LIMIT", int)

    event_flush_interval = Float(
        0.005,
        help="""Seconds between two event messages to one user: changes within the window are
        coalesced; terminal changes and an idle stream go out at once.
        Env: FX_EVENT_FLUSH_INTERVAL.""",
    ).tag(config=True)
    _env_event_flush = _env_default("event_flush_interval", "FX_EVENT_FLUSH_INTERVAL", float)

    read_threads = Int(
        4,
        help="""Threads (and database connections) for store reads. Env: FX_READ_THREADS.""",
    ).tag(config=True)
    _env_read_threads = _env_default("read_threads", "FX_READ_THREADS", int)

    dispatch_batch_size = Int(
        1000,
        help="""Most tasks in one message to an endpoint, and per store read of a backlog.
        Env: FX_DISPATCH_BATCH_SIZE.""",
    ).tag(config=True)
    _env_dispatch_batch = _env_default("dispatch_batch_size", "FX_DISPATCH_BATCH_SIZE", int)

    function_cache_size = Int(
        256 * 1024 * 1024,
        help="""Bytes of function payloads kept in memory. Env: FX_FUNCTION_CACHE_SIZE.""",
    ).tag(config=True)
    _env_function_cache = _env_default("function_cache_size", "FX_FUNCTION_CACHE_SIZE", int)

    single_user = Bool(
        None,
        allow_none=True,
        help="""Whether every authenticated request belongs to one owner. A personal Jupyter
        server's token authenticates a person, but jupyter_server's stock identity providers
        give each token request a random anonymous name; fx then records everything under the
        login name of the server's OS user. None (the default): true with those stock
        providers, false with any other (JupyterHub's, a custom one), where the owner is
        current_user.username. Env: FX_SINGLE_USER (true/false).""",
    ).tag(config=True)
    _env_single_user = _env_default("single_user", "FX_SINGLE_USER", _boolean)

    result_ttl = Float(
        7 * 24 * 3600.0,
        help="""Seconds a finished task (success, failed, cancelled) and its result are kept
        after completion; then both are purged and GET tasks/{id} answers 404. 0 keeps them
        forever. Env: FX_RESULT_TTL.""",
    ).tag(config=True)
    _env_result_ttl = _env_default("result_ttl", "FX_RESULT_TTL", float)

    blob_dir = Unicode(
        help="""Directory of task arguments and results too large for a database row (over
        1 MiB), one file each. Default: blobs/ beside an SQLite store, else
        {jupyter_data_dir}/fx/blobs. Env: FX_BLOB_DIR.""",
    ).tag(config=True)
    _env_blob_dir = _env_default("blob_dir", "FX_BLOB_DIR", str, lambda app: "")

    @validate(
        "db_url",
        "broker_port",
        "max_request_size",
        "max_tasks_per_request",
        "event_inline_limit",
        "read_threads",
        "dispatch_batch_size",
        "heartbeat_period",
        "heartbeat_threshold",
        "result_ttl",
    )
    def _validate_option(self, proposal: dict[str, Any]) -> Any:
        return _checked(proposal["trait"].name, proposal["value"])

    # -- extension hooks ----------------------------------------------------------------------

    def initialize_settings(self) -> None:
        """Build the components (nothing touches the disk or the network yet)."""
        log = self.log
        self.store = TaskStore(self.db_url, log, self.read_threads, self.blob_dir or None)
        self.registry = EndpointRegistry(self.store)
        self.functions = FunctionRegistry(self.store, self.function_cache_size)
        self.events = EventHub(log, self.event_flush_interval, self.event_inline_limit)
        self.dispatcher = Dispatcher(
            self.store,
            self.functions,
            self.events,
            log,
            batch_size=self.dispatch_batch_size,
            heartbeat_period=self.heartbeat_period,
            heartbeat_threshold=self.heartbeat_threshold,
        )
        self.broker = Broker(
            self.store,
            self.registry,
            self.dispatcher,
            log,
            ip=self.broker_ip,
            port=self.broker_port,
            public_host=self.broker_public_host,
        )
        self.tasks = TaskManager(
            self.store, self.registry, self.functions, self.dispatcher, self.events, log
        )
        assert self.serverapp is not None
        provider = self.serverapp.identity_provider
        single = self.single_user
        self.single_user_mode = type(provider) in _PERSONAL_PROVIDERS if single is None else single
        self.single_owner = _login_name()
        self.base_path = url_path_join(self.serverapp.base_url, API_PREFIX) + "/"
        self._started: asyncio.Future[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        #: Finished tasks purged by the result time-to-live since start; read by `stats`.
        self.purged_results = 0

    def initialize_handlers(self) -> None:
        """Add the fx routes."""
        self.handlers.extend(default_handlers())

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Start at server start so endpoints can connect before any request arrives."""
        started = self._start_once()
        await asyncio.wait([started])
        if not started.cancelled():
            started.exception()  # a failure was logged by _start; requests answer 503

    def _start_once(self) -> asyncio.Future[None]:
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        return self._started

    async def ready(self) -> None:
        """Start the store, the broker and the dispatcher once; later calls wait for that."""
        try:
            await asyncio.shield(self._start_once())
        except Exception as e:
            raise ApiError(503, "unavailable", f"the fx service could not start: {e}") from e

    async def _start(self) -> None:
        try:
            await self.store.open()
            await self.registry.load()
            await self.broker.start()
            self.dispatcher.start(self.broker)
            if self.result_ttl > 0:
                self._purger = asyncio.create_task(self._purge_periodically())
        except Exception:
            self.log.exception("fx service failed to start (store %s)", self.store.url)
            raise
        self.log.info(
            "fx service %s at %s: store %s (%s), broker %s, %s",
            __version__,
            self.base_path,
            self.store.backend,
            self.store.url if self.store.backend == "sqlite" else "external",
            self.broker.url,
            f"single user {self.single_owner}" if self.single_user_mode else "per-user records",
        )

    async def stop_extension(self) -> None:
        """Stop the broker, flush pending writes, close the store."""
        if self._started is None:
            return
        await asyncio.wait([self._started])  # a failed start was logged; close what did start
        if self._purger is not None:
            self._purger.cancel()
            await asyncio.wait([self._purger])
        await self.broker.stop()
        self.events.close()
        await self.dispatcher.stop()
        await self.store.close()

    async def _purge_periodically(self) -> None:
        """Purge expired results every tenth of the time-to-live (between 1 s and an hour), so
        a result outlives its TTL by at most that period."""
        period = max(1.0, min(self.result_ttl / 10, 3600.0))
        while True:
            await asyncio.sleep(period)
            try:
                self.purged_results += await self.store.purge_results(time.time() - self.result_ttl)
            except Exception:  # a failed purge is retried next period
                self.log.exception("fx service: purging expired results failed")

    # -- used by the handlers -----------------------------------------------------------------

    def owner_of(self, user: User | None) -> str:
        """The owner name of the records a request may see."""
        if self.single_user_mode or user is None:
            return self.single_owner
        return user.username

    async def stats(self, owner: str) -> dict[str, Any]:
        """Counters of the store, broker, dispatcher and events (task counts of ``owner``)."""
        store = self.store
        writer = store.writer
        counts = await store.task_counts(owner=owner)
        return {
            "fx_version": __version__,
            "store": {
                "backend": store.backend,
                "size_bytes": await store.size_bytes(),
                "transactions": writer.transactions,
                "operations": writer.operations,
                "failed_transactions": writer.failed_transactions,
                "tasks": counts.get("*", {}),
                "result_ttl": self.result_ttl,
                "purged_results": self.purged_results,
            },
            "broker": {
                "url": self.broker.url,
                "connected_endpoints": len(self.dispatcher.links),
                **self.broker.stats,
                "malformed_reasons": dict(self.broker.malformed_reasons),
            },
            "dispatch": dict(self.dispatcher.totals),
            "events": {
                "subscribers": self.events.subscriber_count,
                "messages_sent": self.events.messages_sent,
                "events_sent": self.events.events_sent,
            },
        }


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


class FxStandaloneService(FxService):
    """``fx-service``: a Jupyter server running only the fx extension (for JupyterHub)."""

    load_other_extensions = False

    @classmethod
    def get_extension_package(cls) -> str:
        return "fx_jupyter.server_ext"


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``fx-service``; takes the same options as ``jupyter server``."""
    FxStandaloneService.launch_instance(argv)  # type: ignore[no-untyped-call]
