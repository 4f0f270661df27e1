"""Does fx keep the Jupyter server responsive? Latency of `GET /api/status` (a plain Jupyter
Server request, served by the same event loop as the fx service and broker) while the server is
idle, and while fx moves a big batch of no-op tasks through one endpoint.

Starts its own Jupyter server with the fx service and one endpoint (process engine) in a
temporary directory, measures, prints a table, and stops everything.

    .venv/bin/python bench/responsiveness.py [--tasks 20000] [--workers 2] [--interval 0.01]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

from fx_jupyter.testing import FxStack, start_stack


def noop(x):
    return x


class Prober:
    """Times `GET /api/status` every ``interval`` seconds on one keep-alive connection."""

    def __init__(self, stack: FxStack, interval: float) -> None:
        self.stack = stack
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=30)
        headers = {"Authorization": f"token {self.stack.token}"}
        while not self._stop.is_set():
            start = time.perf_counter()
            conn.request("GET", "/api/status", headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            self.samples.append((time.perf_counter() - start) * 1000)
            self._stop.wait(self.interval)
        conn.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between probes")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle probing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fx-bench-") as tmp:
        stack = start_stack(Path(tmp) / "stack", max_workers=args.workers)
        client = stack.client()
        try:
            function_id = client.register_function(noop)
            with Prober(stack, args.interval) as idle:
                time.sleep(args.idle)
            batch = client.create_batch()
            for i in range(args.tasks):
                batch.add(i, endpoint_id=stack.endpoint_id, function_id=function_id)
            with Prober(stack, args.interval) as busy:
                start = time.perf_counter()
                task_ids = client.batch_run(batch)
                while True:
                    done = stack.get("stats")["store"]["tasks"].get("success", 0)
                    if done >= args.tasks:
                        break
                    time.sleep(0.2)
                elapsed = time.perf_counter() - start
            assert len(task_ids) == args.tasks
        finally:
            client.close()
            stack.teardown()

    print(f"GET /api/status latency (ms), probing every {args.interval * 1000:.0f} ms")
    print(f"{'':28} {'samples':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
    for label, samples in (
        ("idle", idle.samples),
        (f"{args.tasks} tasks in {elapsed:.1f} s", busy.samples),
    ):
        print(
            f"{label:28} {len(samples):>8} {statistics.median(samples):>7.2f} "
            f"{percentile(samples, 0.9):>7.2f} {percentile(samples, 0.99):>7.2f} "
            f"{max(samples):>7.2f}"
        )


if __name__ == "__main__":
    main()
