"""A million tasks queued for a stopped endpoint: the service's memory while they wait, then the
time they take to drain once the endpoint starts (issue #6: RSS under 1 GB, and they drain).

Starts its own Jupyter server with the fx service in a temporary directory, configures an
endpoint without starting it, submits ``--tasks`` no-op tasks with ``batch_run`` in chunks,
samples the server process's RSS all along, then starts the endpoint and waits until the store
counts every task ``success``. Completion is followed through ``GET stats`` (the store's counts
per state), not through a million futures, so the client does not weigh on what is measured.

    .venv/bin/python bench/queued.py [--tasks 1000000] [--chunk 50000] [--workers 2]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from fx_jupyter.testing import FxStack, start_stack

MB = 1024 * 1024
#: Seconds between RSS samples, and between polls of the store's counts while draining.
SAMPLE_PERIOD = 0.05
POLL_PERIOD = 1.0


def noop(x):
    return x


@dataclass
class RssSampler:
    """Samples a process's resident set size on a thread; ``peak`` since the last ``reset``."""

    process: psutil.Process
    peak: int = 0
    last: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD):
            self.sample()

    def sample(self) -> int:
        self.last = self.process.memory_info().rss
        self.peak = max(self.peak, self.last)
        return self.last

    def reset(self) -> None:
        self.peak = self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def task_counts(stack: FxStack) -> dict[str, int]:
    return stack.get("stats")["store"]["tasks"]


def submit(stack: FxStack, endpoint_id: str, tasks: int, chunk: int, sampler: RssSampler) -> float:
    """Queue ``tasks`` no-op tasks in ``batch_run`` chunks; returns the seconds it took."""
    client = stack.client()
    try:
        fid = client.register_function(noop)
        start = time.perf_counter()
        for first in range(0, tasks, chunk):
            batch = client.create_batch()
            for i in range(first, min(first + chunk, tasks)):
                batch.add(i, endpoint_id=endpoint_id, function_id=fid)
            client.batch_run(batch)
            done = min(first + chunk, tasks)
            print(
                f"  queued {done:>9,}  service RSS {sampler.last / MB:7.1f} MB "
                f"(peak {sampler.peak / MB:7.1f} MB)",
                flush=True,
            )
        return time.perf_counter() - start
    finally:
        client.close()


def drain(stack: FxStack, tasks: int, timeout: float, sampler: RssSampler) -> float:
    """Start the endpoint; returns the seconds until every task is ``success``."""
    start = time.perf_counter()
    stack.fx_endpoint("start", stack.endpoint_name)
    deadline = start + timeout
    while True:
        counts = task_counts(stack)
        succeeded = counts.get("success", 0)
        elapsed = time.perf_counter() - start
        print(
            f"  {elapsed:6.1f}s  success {succeeded:>9,}  service RSS {sampler.last / MB:7.1f} MB",
            flush=True,
        )
        if succeeded >= tasks:
            return elapsed
        unexpected = {k: v for k, v in counts.items() if k in ("failed", "cancelled") and v}
        if unexpected:
            raise RuntimeError(f"tasks ended otherwise than success: {unexpected}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"only {succeeded:,} of {tasks:,} tasks done after {timeout:g}s")
        time.sleep(POLL_PERIOD)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks to queue")
    parser.add_argument("--chunk", type=int, default=50_000, help="tasks per batch_run")
    parser.add_argument("--workers", type=int, default=2, help="endpoint workers")
    parser.add_argument(
        "--drain-timeout", type=float, default=1800, help="seconds the drain may take"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fx-bench-queued-") as tmp:
        stack = start_stack(Path(tmp), endpoint=None)
        sampler: RssSampler | None = None
        try:
            assert stack.server is not None
            stack.endpoint_name = "bench"
            endpoint_id = stack.configure_endpoint("bench", max_workers=args.workers)
            sampler = RssSampler(psutil.Process(stack.server.pid))
            idle = sampler.sample()
            print(f"service RSS idle: {idle / MB:.1f} MB; queueing {args.tasks:,} tasks")
            submit_s = submit(stack, endpoint_id, args.tasks, args.chunk, sampler)
            submit_peak, queued_rss = sampler.peak, sampler.sample()
            queued = task_counts(stack).get("waiting-for-ep", 0)
            if queued != args.tasks:
                raise RuntimeError(f"{queued:,} tasks waiting, {args.tasks:,} submitted")
            print(f"starting the endpoint; draining {args.tasks:,} tasks")
            sampler.reset()
            drain_s = drain(stack, args.tasks, args.drain_timeout, sampler)
            drain_peak, end_rss = sampler.peak, sampler.sample()
        finally:
            if sampler is not None:
                sampler.stop()
            stack.teardown()

    print()
    print(
        f"fx: {args.tasks:,} tasks queued for a stopped endpoint, then drained by "
        f"{args.workers} workers; Python {platform.python_version()}, {platform.machine()}, "
        f"{psutil.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print("| measure | value |\n|---|---|")
    print(f"| service RSS idle | {idle / MB:,.0f} MB |")
    print(f"| service RSS peak while queueing | {submit_peak / MB:,.0f} MB |")
    print(f"| service RSS with all tasks queued | {queued_rss / MB:,.0f} MB |")
    print(f"| service RSS peak while draining | {drain_peak / MB:,.0f} MB |")
    print(f"| service RSS at the end | {end_rss / MB:,.0f} MB |")
    print(f"| submit rate ({args.chunk:,} per batch_run) | {args.tasks / submit_s:,.0f} tasks/s |")
    print(f"| drain rate (endpoint start to all success) | {args.tasks / drain_s:,.0f} tasks/s |")


if __name__ == "__main__":
    main()
