"""Peer: the execution engines of a Globus Compute endpoint, driven in this process the way the
endpoint drives them, with no cloud hop: each task is serialized as the SDK does it, packed in a
``Task`` message, handed to ``engine.submit`` with a ``GCFuture``, and its packed ``Result`` is
unpacked and deserialized. What the real system adds (the web service, AMQP queues, the SDK's
HTTP calls) is left out, so these figures flatter it.

``--variant gce`` is GlobusComputeEngine (Parsl's HighThroughputExecutor underneath, local
provider, one block of 2 workers, loopback, its default CurveZMQ); its service is the
interchange process. ``--variant processpool`` is ProcessPoolEngine (a ProcessPoolExecutor of
2 workers) with no service process. Neither engine has a bulk call.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import globus_compute_endpoint
import measure
from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Task
from globus_compute_endpoint.engines import GCFuture, GlobusComputeEngine, ProcessPoolEngine
from globus_compute_sdk.serialize import ComputeSerializer
from parsl.providers import LocalProvider


def noop(x):
    return x


class RemoteTaskError(Exception):
    """A task the engine reported as failed; the message is the engine's error text."""


class EngineDriver:
    """Serializes tasks like the SDK, submits them like the endpoint, and unpacks results."""

    def __init__(self, engine: ProcessPoolEngine | GlobusComputeEngine) -> None:
        self.engine = engine
        self.serde = ComputeSerializer()
        self.functions: dict[Callable[[Any], Any], str] = {}

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Future[bytes]:
        fn_buffer = self.functions.get(fn)
        if fn_buffer is None:
            fn_buffer = self.functions[fn] = self.serde.serialize(fn)
        task_id = uuid.uuid4()
        buffer = self.serde.pack_buffers(
            [fn_buffer, self.serde.serialize((arg,)), self.serde.serialize({})]
        )
        future = GCFuture(gc_task_id=task_id)
        self.engine.submit(future, messagepack.pack(Task(task_id=task_id, task_buffer=buffer)), {})
        return future

    def result(self, future: Future[bytes]) -> Any:
        result = messagepack.unpack(future.result(timeout=300))
        if result.is_error:
            raise RemoteTaskError(result.data.strip().splitlines()[-1])
        return self.serde.deserialize(result.data)


def main() -> None:
    measure.exit_on_sigterm()
    args = measure.parse_args(__doc__)
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as run_dir:
        if args.variant == "processpool":
            engine: ProcessPoolEngine | GlobusComputeEngine = ProcessPoolEngine(
                max_workers=args.workers
            )
            service: Callable[[], list[int]] = list
        else:
            engine = GlobusComputeEngine(
                address="127.0.0.1",
                max_workers_per_node=args.workers,
                provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
            )

            def service() -> list[int]:
                proc = engine.executor.interchange_proc
                return measure.children_of(proc.pid) if proc else []

        engine.start(endpoint_id=uuid.uuid4(), run_dir=run_dir)
        try:
            driver = EngineDriver(engine)
            system = measure.System(
                submit=driver.submit,
                gather=lambda futures: [driver.result(f) for f in futures],
                service_pids=service,
            )
            figures = measure.run(system, noop, args)
        finally:
            engine.shutdown(block=True)
    measure.emit(figures, f"globus-compute-endpoint {globus_compute_endpoint.__version__}")


if __name__ == "__main__":
    main()
