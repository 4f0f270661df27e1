"""Engines side by side: no-op tasks/s through the process engine and through the parsl engine
(Parsl's HighThroughputExecutor with the local provider), at the engine level: the daemon's
poll loop drives each engine directly, with no service and no network in between.

Each engine gets the same number of workers; its workers are up before the clock starts, and a
short warm-up loads the function in every worker.

    .venv/bin/python bench/engines.py [--tasks 5000] [--workers 2]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import zmq

from fx_endpoint import serialize
from fx_endpoint.config import parse_config
from fx_endpoint.engines import Engine, Task, TaskOutcome, create_engine
from fx_endpoint.paths import EndpointDir

SERVICE = "service_url: http://127.0.0.1:9/fx/api/v2/\nheartbeat_period: 1\n"
CONFIGS = {
    "process": "engine:\n  type: process\n  max_workers: {workers}\n",
    "parsl (local provider)": (
        "engine:\n  type: parsl\n  init_blocks: 1\n  max_workers_per_node: {workers}\n"
    ),
}


def noop(x):  # type: ignore[no-untyped-def]
    return x


class Loop:
    """The daemon's side of an engine: its listener and its poll loop, nothing else."""

    def __init__(self, engine_dir: Path, config_text: str) -> None:
        engine_dir.mkdir()
        self.finished: dict[str, TaskOutcome] = {}
        self.engine: Engine = create_engine(
            parse_config(config_text), EndpointDir("bench", engine_dir), self
        )
        self.engine.start()
        self.poller = zmq.Poller()
        for item in self.engine.poll_items():
            self.poller.register(item, zmq.POLLIN)
        self.function = serialize.serialize_function(noop)
        self.args = serialize.serialize_args((None,), {})

    def task_waiting_for_nodes(self, task_id: str, ts: float) -> None:
        pass

    def task_waiting_for_launch(self, task_id: str, ts: float) -> None:
        pass

    def task_running(self, task_id: str, ts: float) -> None:
        pass

    def task_finished(self, outcome: TaskOutcome) -> None:
        self.finished[outcome.task_id] = outcome

    def turn_until(self, done: object, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise TimeoutError(f"the engine got stuck: {self.engine.status()}")
            timeout_ms = self.engine.next_timeout(time.time())
            wait = 100 if timeout_ms is None else min(100, int(timeout_ms * 1000))
            events = dict(self.poller.poll(wait))
            self.engine.process(set(events), time.time())

    def run(self, prefix: str, n: int) -> float:
        """Tasks/s for ``n`` no-op tasks submitted at once, all results in."""
        tasks = [Task(f"{prefix}{i}", "noop", self.function, self.args) for i in range(n)]
        self.finished.clear()
        start = time.perf_counter()
        self.engine.submit(tasks)
        self.turn_until(lambda: len(self.finished) == n)
        elapsed = time.perf_counter() - start
        assert all(o.status == "success" for o in self.finished.values())
        return n / elapsed


def measure(name: str, config_text: str, workers: int, n: int, root: Path) -> float:
    loop = Loop(root / name.split()[0], SERVICE + config_text.format(workers=workers))
    try:
        loop.turn_until(lambda: loop.engine.status()["workers"] == workers)
        loop.run("warm", 20 * workers)
        return loop.run("t", n)
    finally:
        loop.engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000, help="no-op tasks per engine")
    parser.add_argument("--workers", type=int, default=2, help="workers of each engine")
    args = parser.parse_args()
    print(f"fx engines, {args.workers} workers, {args.tasks} no-op tasks, engine level")
    print(f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="fx-bench-") as tmp:
        for name, config_text in CONFIGS.items():
            rate = measure(name, config_text, args.workers, args.tasks, Path(tmp))
            print(f"  {name:<24} {rate:>9,.0f} tasks/s")


if __name__ == "__main__":
    main()
