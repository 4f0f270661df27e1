"""fx end to end: no-op tasks/s through one batch and through Executor.map, and the warm round-trip
latency of Executor.submit(...).result().

Starts its own Jupyter server with the fx service and one endpoint (process engine) in a
temporary directory, measures, prints a table, and stops everything.

    .venv/bin/python bench/throughput.py [--tasks 20000] [--samples 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

from fx_jupyter import Executor
from fx_jupyter.testing import start_stack


def noop(x):
    return x


def measure_batch(client, endpoint_id: str, function_id: str, n: int) -> float:
    """Tasks/s for one batch_run of ``n`` tasks, all results collected."""
    with Executor(endpoint_id=endpoint_id, client=client) as ex:
        start = time.perf_counter()
        batch = client.create_batch()
        for i in range(n):
            batch.add(i, endpoint_id=endpoint_id, function_id=function_id)
        task_ids = client.batch_run(batch)
        futures = ex.get_futures(task_ids)
        wait(futures)
        elapsed = time.perf_counter() - start
        assert [f.result() for f in futures] == list(range(n))
    return n / elapsed


def measure_map(client, endpoint_id: str, n: int) -> float:
    """Tasks/s through Executor.map over ``n`` items."""
    with Executor(endpoint_id=endpoint_id, client=client) as ex:
        list(ex.map(noop, range(10)))  # registers the function, warms the workers
        start = time.perf_counter()
        results = list(ex.map(noop, range(n)))
        elapsed = time.perf_counter() - start
    assert results == list(range(n))
    return n / elapsed


def measure_latency(client, endpoint_id: str, samples: int) -> tuple[float, float]:
    """Median and p99 in ms of a warm submit(...).result()."""
    times = []
    with Executor(endpoint_id=endpoint_id, client=client) as ex:
        for i in range(50):
            ex.submit(noop, i).result(timeout=30)
        for i in range(samples):
            start = time.perf_counter()
            ex.submit(noop, i).result(timeout=30)
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20000, help="tasks per throughput run")
    parser.add_argument("--samples", type=int, default=1000, help="round trips for the latency figure")
    parser.add_argument("--workers", type=int, default=2, help="endpoint workers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fx-bench-") as tmp:
        stack = start_stack(Path(tmp), endpoint="bench", max_workers=args.workers)
        try:
            client = stack.client()
            fid = client.register_function(noop)
            measure_batch(client, stack.endpoint_id, fid, 200)  # warm up
            batch_rate = measure_batch(client, stack.endpoint_id, fid, args.tasks)
            map_rate = measure_map(client, stack.endpoint_id, args.tasks)
            p50, p99 = measure_latency(client, stack.endpoint_id, args.samples)
        finally:
            stack.teardown()

    print(f"fx end to end, {args.workers} workers, Python {platform.python_version()}, "
          f"{platform.machine()}, {time.strftime('%Y-%m-%d')}")
    print(f"| measure | value |\n|---|---|")
    print(f"| batch_run of {args.tasks} no-op tasks | {batch_rate:,.0f} tasks/s |")
    print(f"| Executor.map of {args.tasks} no-op tasks | {map_rate:,.0f} tasks/s |")
    print(f"| Executor.submit(...).result() round trip p50 / p99 | {p50:.2f} / {p99:.2f} ms |")


if __name__ == "__main__":
    main()
