"""The parsl engine on its own, with the local provider: a real HighThroughputExecutor, real
interchange, blocks and workers. One engine serves the module (Parsl takes seconds to start a
block); the tests run in file order, and the one that watches its block go and come back
comes after the others, which keep it busy."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import zmq

from fx_endpoint import serialize
from fx_endpoint.config import parse_config
from fx_endpoint.engines import EngineError, create_engine
from fx_endpoint.engines.base import Engine, Task, TaskOutcome
from fx_endpoint.engines.parsl import ParslEngine
from fx_endpoint.errors import WalltimeExceeded, WorkerLost
from fx_endpoint.paths import EndpointDir
from fx_endpoint.protocol import TaskState

# Test functions travel by value, as a notebook's would: workers cannot import this module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CONFIG = """\
service_url: http://127.0.0.1:9/fx/api/v2/
heartbeat_period: 1
heartbeat_threshold: 4
max_retries_on_system_failure: 1
available_accelerators: ["0", "1"]
engine:
  type: parsl
  max_idletime: 2
  strategy_period: 0.2
"""


def double(x):
    print("doubling", x)
    print("to stderr", file=sys.stderr)
    return 2 * x


def fail():
    raise ValueError("bad input")


def count_calls():
    g = count_calls.__globals__
    g["calls"] = g.get("calls", 0) + 1
    return g["calls"]


def exit_worker(code):
    os._exit(code)


def nap(seconds):
    print("napping")
    time.sleep(seconds)
    return os.getpid()


def touch(path):
    Path(path).touch()


def accelerator():
    time.sleep(0.05)
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def value(outcome: TaskOutcome) -> Any:
    return serialize.deserialize_result(outcome.payload)


class Driver:
    """An EngineListener that records what the engine reports, and runs the daemon's loop."""

    def __init__(self, engine_dir: Path, config_text: str) -> None:
        engine_dir.mkdir(parents=True, exist_ok=True)
        self.states: list[tuple[str, str]] = []
        self.outcomes: dict[str, TaskOutcome] = {}
        self.engine: Engine = create_engine(
            parse_config(config_text), EndpointDir("test", engine_dir), self
        )
        self.engine.start()
        self.poller = zmq.Poller()
        for item in self.engine.poll_items():
            self.poller.register(item, zmq.POLLIN)

    def task_waiting_for_nodes(self, task_id: str, ts: float) -> None:
        self.states.append((task_id, TaskState.WAITING_FOR_NODES))

    def task_waiting_for_launch(self, task_id: str, ts: float) -> None:
        self.states.append((task_id, TaskState.WAITING_FOR_LAUNCH))

    def task_running(self, task_id: str, ts: float) -> None:
        self.states.append((task_id, TaskState.RUNNING))

    def task_finished(self, outcome: TaskOutcome) -> None:
        assert outcome.task_id not in self.outcomes, f"{outcome.task_id} reported twice"
        self.outcomes[outcome.task_id] = outcome

    def states_of(self, task_id: str) -> list[str]:
        return [state for t, state in self.states if t == task_id]

    def run_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not there in {timeout} s: {self.engine.status()}")
            events = dict(self.poller.poll(50))
            self.engine.process(set(events), time.time())

    def submit(
        self, task_id: str, fn: Callable[..., Any], *args: Any, walltime: float | None = None
    ) -> None:
        task = Task(
            task_id,
            fn.__name__,
            serialize.serialize_function(fn),
            serialize.serialize_args(args, {}),
            walltime,
        )
        self.engine.submit([task])

    def wait(self, *task_ids: str, timeout: float = 30.0) -> list[TaskOutcome]:
        self.run_until(lambda: all(t in self.outcomes for t in task_ids), timeout)
        return [self.outcomes[t] for t in task_ids]


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    d = Driver(tmp_path_factory.mktemp("parsl-engine"), CONFIG)
    yield d
    d.engine.stop(timeout=5)


def test_tasks_wait_for_nodes_until_a_block_starts(driver):
    assert isinstance(driver.engine, ParslEngine) and driver.engine.ready
    status = driver.engine.status()
    assert status["blocks"] == {"pending": 0, "running": 0} and status["workers"] == 0
    for i in range(4):
        driver.submit(f"t{i}", double, i)
    assert driver.states_of("t0") == [TaskState.WAITING_FOR_NODES]
    # The engine samples Parsl's view twice a second: a block may be seen pending, or only once
    # it runs already.
    driver.run_until(lambda: sum(driver.engine.status()["blocks"].values()) == 1)
    outcomes = driver.wait("t0", "t1", "t2", "t3")
    assert [value(o) for o in outcomes] == [0, 2, 4, 6]
    for task_id in ("t0", "t1", "t2", "t3"):
        # Waiting for nodes, then running; in between, waiting for one of the two workers (one
        # per accelerator) once the block was up: the engine may look while the interchange is
        # handing out the tasks. A task over between two looks is running all the same.
        first, *between, last = driver.states_of(task_id)
        assert (first, last) == (TaskState.WAITING_FOR_NODES, TaskState.RUNNING), task_id
        assert set(between) <= {TaskState.WAITING_FOR_LAUNCH}, task_id
    status = driver.engine.status()
    assert status["blocks"] == {"pending": 0, "running": 1}
    assert (status["workers"], status["max_workers"], status["queued"]) == (2, 2, 0)


def test_results_stdout_stderr_and_exceptions(driver):
    driver.submit("ok", double, 21)
    driver.submit("bad", fail)
    ok, bad = driver.wait("ok", "bad")
    assert (ok.status, value(ok), ok.exception_text) == ("success", 42, None)
    assert (ok.stdout, ok.stderr) == ("doubling 21\n", "to stderr\n")
    assert ok.started is not None and ok.started <= ok.finished
    assert bad.status == "failed" and bad.retries == 0
    assert "ValueError: bad input" in bad.exception_text and "in fail" in bad.exception_text
    with pytest.raises(ValueError, match="bad input"):
        raise value(bad).reraise_value()


def test_a_function_is_loaded_once_per_worker(driver):
    for i in range(6):
        driver.submit(f"c{i}", count_calls)
    counts = [value(o) for o in driver.wait(*[f"c{i}" for i in range(6)])]
    assert max(counts) > 1, counts  # a function loaded for each task would count 1 each time


def test_one_accelerator_per_worker(driver):
    for i in range(8):
        driver.submit(f"a{i}", accelerator)
    assert {value(o) for o in driver.wait(*[f"a{i}" for i in range(8)])} <= {"0", "1"}


def test_a_lost_worker_is_retried_then_fails_with_worker_lost(driver):
    driver.submit("die", exit_worker, 3)
    [outcome] = driver.wait("die")
    assert outcome.status == "failed" and outcome.retries == 1
    assert outcome.exception_text.startswith("WorkerLost: the worker running task die was lost")
    assert (
        "the task was tried 2 time(s) (max_retries_on_system_failure: 1)" in outcome.exception_text
    )
    assert isinstance(value(outcome).reraise_value(), WorkerLost)
    driver.submit("after", double, 1)
    assert value(driver.wait("after")[0]) == 2


def test_walltime_interrupts_the_task(driver):
    started = time.monotonic()
    driver.submit("slow", nap, 30, walltime=0.5)
    [outcome] = driver.wait("slow")
    assert time.monotonic() - started < 10
    assert outcome.status == "failed"
    assert outcome.exception_text == (
        "WalltimeExceeded: task slow exceeded its walltime of 0.5 s; it was interrupted"
    )
    assert outcome.stdout == "napping\n"
    assert isinstance(value(outcome).reraise_value(), WalltimeExceeded)
    driver.submit("quick", nap, 0, walltime=5)
    assert value(driver.wait("quick")[0]) > 0


def stubborn(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(deadline - time.monotonic())
        except BaseException:  # noqa: BLE001 - a task that will not be interrupted
            print("not stopping")


def test_a_task_that_ignores_its_walltime_loses_its_worker(driver):
    driver.submit("stubborn", stubborn, 60, walltime=0.5)
    [outcome] = driver.wait("stubborn", timeout=20)
    assert outcome.exception_text == (
        "WalltimeExceeded: task stubborn exceeded its walltime of 0.5 s and kept running 5 s "
        "after it was interrupted; its worker was stopped"
    )
    assert outcome.retries == 0


def test_cancel_drops_a_waiting_task_and_reports_a_running_one(driver, tmp_path):
    marker = tmp_path / "ran"
    busy = [f"busy{i}" for i in range(4)]  # 2 running and 2 queued in HTEX: all it takes
    for task_id in busy:
        driver.submit(task_id, nap, 1)
    driver.submit("waiting", touch, str(marker))
    driver.run_until(lambda: TaskState.RUNNING in driver.states_of("busy0"))
    driver.engine.cancel(["waiting", "busy0", "unknown"])
    assert driver.outcomes["waiting"].status == "cancelled"
    assert driver.outcomes["busy0"].status == "cancelled"
    assert "CancelledError" in driver.outcomes["busy0"].exception_text
    driver.wait(*busy[1:])
    driver.submit("next", double, 5)
    driver.wait("next")
    assert not marker.exists()  # never handed to a worker
    assert driver.engine.status()["queued"] == 0


def test_idle_blocks_are_released_and_requested_again(driver):
    driver.run_until(lambda: driver.engine.status()["blocks"]["running"] == 0, timeout=20)
    assert driver.engine.status()["workers"] == 0
    driver.submit("again", double, 4)
    driver.run_until(lambda: driver.states_of("again") != [])
    assert driver.states_of("again")[0] == TaskState.WAITING_FOR_NODES
    assert value(driver.wait("again")[0]) == 8
    assert driver.states_of("again")[-1] == TaskState.RUNNING


def test_blocks_that_cannot_start_stop_the_engine_with_the_reason(tmp_path):
    text = (
        CONFIG.replace("max_idletime: 2", "init_blocks: 1")
        + 'worker_init: "echo no scratch space >&2; exit 3"\n'
    )
    driver = Driver(tmp_path / "broken", text)
    try:
        with pytest.raises(EngineError, match="Parsl gave up on this endpoint's blocks") as info:
            driver.run_until(lambda: False, timeout=30)
        assert "submit_scripts" in str(info.value)
    finally:
        driver.engine.stop(timeout=5)
