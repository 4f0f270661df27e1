"""Faults inside a task, seen end to end through the service: a worker that dies is replaced and
its task retried up to ``max_retries_on_system_failure``; an exception is a result (no retry);
an overrunning task is stopped at its walltime; arguments that cannot be loaded fail the task,
not the worker. The process engine's own tests (tests/endpoint/test_process_engine.py) cover
the engine alone; these cover what the user sees."""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Iterator
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest
from support.databases import Databases

from fx_jupyter.testing import FxStack, start_stack

from .conftest import wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])

RETRIES = 2
MAX_RESULT = 100_000


def kill_own_worker() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def exit_own_worker() -> None:
    import os

    os._exit(3)


def raise_value_error() -> None:
    raise ValueError("a task's own error")


def square(x: int) -> int:
    return x * x


def big_result(size: int) -> bytes:
    return b"x" * size


def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, databases: Databases, db_backend: str
) -> Iterator[FxStack]:
    root = tmp_path_factory.mktemp("faults")
    stack = start_stack(root, endpoint=None, db_url=databases.new(db_backend, root))
    try:
        stack.endpoint_id = stack.configure_endpoint(
            "faulty",
            max_workers=2,
            max_retries_on_system_failure=RETRIES,
            max_result_size=MAX_RESULT,
        )
        stack.fx_endpoint("start", "faulty")
        yield stack
    finally:
        stack.teardown()


@pytest.fixture(scope="module")
def client(stack: FxStack) -> Iterator[Any]:
    client = stack.client()
    yield client
    client.close()


def finished(client: Any, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """The funcX-shaped task document once the task is no longer pending."""
    return wait_for(
        lambda: (t := client.get_task(task_id)) and not t["pending"] and t, timeout, task_id
    )


def run(client: Any, stack: FxStack, function: Any, *args: Any, **options: Any) -> dict[str, Any]:
    function_id = client.register_function(function)
    return finished(
        client, client.run(*args, endpoint_id=stack.endpoint_id, function_id=function_id, **options)
    )


@pytest.mark.parametrize(
    ("function", "how"),
    [(kill_own_worker, "killed by signal SIGKILL"), (exit_own_worker, "exited with code 3")],
)
def test_dead_worker_is_retried_then_fails_saying_how(client, stack, function, how) -> None:
    task = run(client, stack, function)
    assert task["status"] == "failed"
    assert task["details"]["retries"] == RETRIES
    message = str(task["exception"])
    assert how in message and f"tried {RETRIES + 1} time(s)" in message, message
    assert type(task["exception"]).__name__ == "WorkerLost"
    assert run(client, stack, square, 7)["result"] == 49, "the pool stopped serving"


def test_an_exception_is_a_result_not_retried(client, stack) -> None:
    task = run(client, stack, raise_value_error)
    assert task["status"] == "failed" and task["details"]["retries"] == 0
    assert isinstance(task["exception"], ValueError)
    assert "a task's own error" in str(task["exception"])


def test_a_result_over_max_result_size_fails_naming_both_sizes(client, stack) -> None:
    task = run(client, stack, big_result, 2 * MAX_RESULT)
    assert task["status"] == "failed" and task["details"]["retries"] == 0
    message = str(task["exception"])
    assert type(task["exception"]).__name__ == "ResultTooLarge", message
    sizes = re.search(r"result is (\d+) bytes.*max_result_size of (\d+) bytes", message)
    assert sizes, message
    assert int(sizes[1]) > 2 * MAX_RESULT and int(sizes[2]) == MAX_RESULT  # a pickle: a bit more
    assert run(client, stack, big_result, MAX_RESULT // 2)["result"] == b"x" * (MAX_RESULT // 2)


def test_walltime_stops_an_overrunning_task(client, stack) -> None:
    task = run(client, stack, nap, 30, walltime=1)
    assert task["status"] == "failed"
    assert isinstance(task["exception"], TimeoutError)
    assert "walltime of 1" in str(task["exception"]), str(task["exception"])
    assert run(client, stack, nap, 0.01)["result"] == 0.01


@pytest.mark.parametrize(
    "payload",
    [b"not a pickle", cloudpickle.dumps(((3,), {}))[:-4], cloudpickle.dumps("not (args, kwargs)")],
    ids=["garbage", "truncated", "wrong-shape"],
)
def test_arguments_that_do_not_load_fail_the_task_not_the_worker(client, stack, payload) -> None:
    function_id = client.register_function(square)
    status, body = stack.request(
        "POST",
        "submit",
        {
            "tasks": [
                {
                    "endpoint_id": stack.endpoint_id,
                    "function_id": function_id,
                    "payload": base64.b64encode(payload).decode(),
                }
            ]
        },
    )
    assert status == 200, body
    task = finished(client, body["task_ids"][0])
    assert task["status"] == "failed" and task["details"]["retries"] == 0
    assert "argument" in str(task["exception"]).lower(), str(task["exception"])
    assert run(client, stack, square, 3)["result"] == 9


def print_unstorable_text() -> str:
    import sys

    print("nul\x00here")
    sys.stderr.write("lone\ud800surrogate\n")
    raise ValueError("error with a nul\x00 too")


def test_output_no_text_column_can_hold_is_kept_readable(client, stack) -> None:
    """A NUL or an unpaired surrogate in a task's output or error (PostgreSQL refuses the first,
    every UTF-8 encoder the second) must not lose the result: it arrives with U+FFFD instead."""
    task = run(client, stack, print_unstorable_text)
    assert task["status"] == "failed" and isinstance(task["exception"], ValueError)
    assert "nul\ufffdhere" in task["details"]["stdout"], task["details"]
    assert "lone\ufffdsurrogate" in task["details"]["stderr"], task["details"]
    assert run(client, stack, square, 4)["result"] == 16
