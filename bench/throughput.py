"""fx end to end: no-op tasks/s submitted one by one, through one batch and through
Executor.map; the warm round-trip latency of Executor.submit(...).result(); and the round trip of
a 10 MB argument whose 10 MB echo comes back.

Starts its own Jupyter server with the fx service and one endpoint (process engine) in a
temporary directory, measures, prints a table, and stops everything. The measuring protocol is
the one every peer of bench/compare.py follows (bench/peers/measure.py), so the figures compare.

    .venv/bin/python bench/throughput.py [--tasks 20000] [--samples 1000] [--workers 2]
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import measure  # bench/peers is a script directory, not a package

from fx_jupyter import Client, Executor
from fx_jupyter.testing import FxStack, start_stack

#: How long one task or one batch may take before the run is called stuck.
RESULT_TIMEOUT = 600


def noop(x):
    return x


def measure_map(ex: Executor, n: int) -> float:
    """Tasks/s through Executor.map over ``n`` items."""
    list(ex.map(noop, range(10)))  # registers the function, warms the workers
    start = time.perf_counter()
    results = list(ex.map(noop, range(n), timeout=RESULT_TIMEOUT))
    elapsed = time.perf_counter() - start
    assert results == list(range(n))
    return n / elapsed


def fx_system(stack: FxStack, client: Client, ex: Executor) -> measure.System:
    """fx as `measure.run` drives a peer: Executor.submit one by one, one batch_run as the bulk
    call, the Jupyter server as the service and the endpoint daemon (workers excluded) beside."""
    function_ids: dict[Any, str] = {}

    def batch(fn: Any, items: Any) -> list[Any]:
        function_id = function_ids.get(fn) or function_ids.setdefault(
            fn, client.register_function(fn)
        )
        task_ids = client.batch_run(_batch_of(client, stack.endpoint_id, function_id, items))
        futures = ex.get_futures(task_ids)
        return [f.result(timeout=RESULT_TIMEOUT) for f in futures]

    endpoint_pid = stack.endpoint_pid(stack.endpoint_name)
    return measure.System(
        submit=ex.submit,
        gather=lambda futures: [f.result(timeout=RESULT_TIMEOUT) for f in futures],
        batch=batch,
        batch_name="batch_run",
        service_pids=lambda: [stack.server.pid] if stack.server else [],
        extra_pids={"endpoint daemon": lambda: [endpoint_pid] if endpoint_pid else []},
    )


def _batch_of(client: Client, endpoint_id: str, function_id: str, items: Any) -> Any:
    batch = client.create_batch()
    for item in items:
        batch.add(item, endpoint_id=endpoint_id, function_id=function_id)
    return batch


def measure_fx(args: Any) -> dict[str, Any]:
    """Every figure of one fx run (the peers' protocol plus Executor.map), on a fresh stack."""
    with tempfile.TemporaryDirectory(prefix="fx-bench-") as tmp:
        stack = start_stack(Path(tmp), endpoint="bench", max_workers=args.workers)
        try:
            client = stack.client()
            try:
                with Executor(endpoint_id=stack.endpoint_id, client=client) as ex:
                    system = fx_system(stack, client, ex)
                    figures = measure.run(system, noop, args)
                    try:
                        figures["map"] = measure_map(ex, args.tasks)
                    except Exception as exc:  # noqa: BLE001 - shown in the row like any failure
                        figures["map_error"] = f"{type(exc).__name__}: {exc}"
            finally:
                client.close()
        finally:
            stack.teardown()
    return figures


def main() -> None:
    args = measure.parse_args(__doc__)
    figures = measure_fx(args)

    def cell(key: str, fmt: str) -> str:
        """The figure formatted, or why it could not be had."""
        return (
            fmt.format(figures[key]) if key in figures else f"fails: {figures.get(key + '_error')}"
        )

    print(
        f"fx end to end, {args.workers} workers, Python {platform.python_version()}, "
        f"{platform.machine()}, {time.strftime('%Y-%m-%d')}"
    )
    if "round_trip" in figures:
        latency = "{p50:.2f} / {p99:.2f} ms".format(**figures["round_trip"])
    else:
        latency = f"fails: {figures.get('round_trip_error')}"
    rows = [
        (
            f"Executor.submit of {args.tasks} no-op tasks, one by one",
            cell("one_by_one", "{:,.0f} tasks/s"),
        ),
        (f"batch_run of {args.tasks} no-op tasks", cell("batch", "{:,.0f} tasks/s")),
        (f"Executor.map of {args.tasks} no-op tasks", cell("map", "{:,.0f} tasks/s")),
        ("Executor.submit(...).result() round trip p50 / p99", latency),
        (f"{args.large_mb} MB argument and result round trip", cell("large", "{:,.1f} ms")),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
