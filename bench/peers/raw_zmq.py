"""Peer: the least a brokerless task pool over ZeroMQ needs, written here as a yardstick.

The client binds a ROUTER on loopback; each of the 2 worker processes (this script run with
``--worker``) connects a DEALER, says ``ready``, and then answers every ``[task id, function,
argument]`` with ``[task id, result]``, all cloudpickled. Tasks go round-robin to the workers
(no flow control: unbounded queues are fine for no-op tasks). Functions are pickled once per
function and cached by the workers. One-by-one makes a Future per task; the bulk call (``map``)
sends every task and collects the results by position, with no futures.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import cloudpickle
import measure
import zmq


def noop(x):
    return x


def worker(address: str) -> None:
    """A worker's loop: run what arrives, send back the result, until the client goes away."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    sock.send(b"ready")
    functions: dict[bytes, Callable[[Any], Any]] = {}
    while True:
        task_id, fn_bytes, arg = sock.recv_multipart(copy=False)
        key = fn_bytes.bytes
        fn = functions.get(key)
        if fn is None:
            fn = functions[key] = cloudpickle.loads(key)
        sock.send_multipart(
            [task_id, cloudpickle.dumps(fn(cloudpickle.loads(arg.buffer)))], copy=False
        )


class Pool:
    """The client side: one ROUTER, the worker processes, and the futures still pending."""

    def __init__(self, workers: int) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.procs = [
            subprocess.Popen([sys.executable, __file__, "--worker", f"tcp://127.0.0.1:{port}"])
            for _ in range(workers)
        ]
        self.idents = []
        for _ in range(workers):
            if not self.sock.poll(60_000):
                raise TimeoutError("raw pyzmq workers did not say ready within 60 s")
            self.idents.append(self.sock.recv_multipart()[0])
        self.next_worker = itertools.cycle(self.idents)
        self.ids = itertools.count()
        self.pickled: dict[Callable[[Any], Any], bytes] = {}
        self.pending: dict[bytes, Future[Any]] = {}

    def _send(self, fn: Callable[[Any], Any], arg: Any) -> bytes:
        fn_bytes = self.pickled.get(fn)
        if fn_bytes is None:
            fn_bytes = self.pickled[fn] = cloudpickle.dumps(fn)
        task_id = next(self.ids).to_bytes(8, "little")
        self.sock.send_multipart(
            [next(self.next_worker), task_id, fn_bytes, cloudpickle.dumps(arg)], copy=False
        )
        return task_id

    def _receive(self) -> tuple[bytes, Any]:
        if not self.sock.poll(120_000):
            raise TimeoutError("no result from the raw pyzmq workers within 120 s")
        _, task_id, result = self.sock.recv_multipart(copy=False)
        return task_id.bytes, cloudpickle.loads(result.buffer)

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.pending[self._send(fn, arg)] = future
        return future

    def gather(self, futures: list[Future[Any]]) -> list[Any]:
        for future in futures:
            while not future.done():
                task_id, result = self._receive()
                self.pending.pop(task_id).set_result(result)
        return [f.result() for f in futures]

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        position = {self._send(fn, item): i for i, item in enumerate(items)}
        results: list[Any] = [None] * len(position)
        for _ in range(len(position)):
            task_id, result = self._receive()
            results[position[task_id]] = result
        return results

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.sock.close()
        self.ctx.term()


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2])
        return
    measure.exit_on_sigterm()
    args = measure.parse_args(__doc__)
    pool = Pool(args.workers)
    try:
        system = measure.System(
            submit=pool.submit, gather=pool.gather, batch=pool.map, batch_name="map"
        )
        figures = measure.run(system, noop, args)
    finally:
        pool.close()
    measure.emit(figures, f"pyzmq {zmq.__version__}, cloudpickle {cloudpickle.__version__}")


if __name__ == "__main__":
    main()
