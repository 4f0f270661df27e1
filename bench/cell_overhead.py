"""What ``%%funcx`` adds to a task's round trip (issue #6: at most 5 ms p50 for a re-run cell).

Starts its own Jupyter server with the fx service and one endpoint in a temporary directory,
loads the fx extension into an in-process IPython shell pointed at it, then times, interleaved
so that drift on a shared machine hits all alike:

* ``executor``: ``Executor.submit(f, x).result()`` of the function the cell amounts to;
* ``cell``: ``shell.run_cell`` of the same ``%%funcx`` cell, re-run (what a user waits for);
* ``magic``: ``shell.run_cell_magic`` of that cell (the magic alone, without IPython's own
  cell machinery);
* ``local cell``: ``shell.run_cell`` of an ordinary cell, IPython's own cost per cell.

The cell's overhead is ``cell`` minus ``executor``. Widgets are in text mode (``FX_NO_WIDGETS``,
as in any shell without a frontend) and the cell's output goes to a buffer.

    .venv/bin/python bench/cell_overhead.py [--samples 500] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import platform
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.interactiveshell import InteractiveShell

import fx_jupyter
from fx_jupyter import Executor
from fx_jupyter.testing import start_stack

WARMUP = 30


def add_one(x: int) -> int:
    return x + 1


def percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=500, help="timed runs of each kind")
    parser.add_argument("--workers", type=int, default=2, help="endpoint workers")
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of the re-run cells"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fx-bench-cell-") as tmp:
        stack = start_stack(Path(tmp), endpoint="bench", max_workers=args.workers)
        saved_env = {k: os.environ.get(k) for k in ("FX_SERVICE_URL", "FX_TOKEN", "FX_NO_WIDGETS")}
        os.environ.update(FX_SERVICE_URL=stack.service_url, FX_TOKEN=stack.token, FX_NO_WIDGETS="1")
        shell = InteractiveShell.instance()
        fx_jupyter.load_ipython_extension(shell)
        shell.user_ns["x"] = 41
        line, cell = f"endpoint={stack.endpoint_name}", "x + 1"
        source = f"%%funcx {line}\n{cell}"
        client = stack.client()
        executor = Executor(stack.endpoint_id, client)
        sink = io.StringIO()
        kinds: dict[str, Callable[[], Any]] = {
            "executor": lambda: executor.submit(add_one, 41).result(timeout=30),
            "cell": lambda: shell.run_cell(source, store_history=False).raise_error(),
            "magic": lambda: shell.run_cell_magic("funcx", line, cell),
            "local cell": lambda: shell.run_cell("x + 1", store_history=False).raise_error(),
        }
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        profile = cProfile.Profile()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                for _ in range(WARMUP):
                    for action in kinds.values():
                        action()
                for _ in range(args.samples):
                    for kind, action in kinds.items():
                        times[kind].append(timed(action))
                if args.profile:
                    for _ in range(args.samples):
                        profile.runcall(kinds["cell"])
        finally:
            fx_jupyter.unload_ipython_extension(shell)
            executor.shutdown()
            client.close()
            stack.teardown()
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    stats = {kind: percentiles(values) for kind, values in times.items()}
    print(
        f"fx %%funcx cell overhead, {args.samples} interleaved samples each, "
        f"{args.workers} workers; Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print("| measure | p50 ms | p99 ms |\n|---|---|---|")
    for kind, (p50, p99) in stats.items():
        print(f"| {kind} | {p50:.2f} | {p99:.2f} |")
    overhead = stats["cell"][0] - stats["executor"][0]
    print(f"| cell overhead over the Executor round trip (p50 difference) | {overhead:.2f} | |")
    if args.profile:
        print()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
