"""Helpers of the fault-injection suite: a function that squares slowly, submitting many tasks
in one batch, and waiting for every one of them to finish."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from fx_jupyter.testing import FxStack

# The workers cannot import this module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def slow_square(i: int) -> int:
    """Long enough (5 ms) that thousands of tasks are in flight when a process is killed."""
    import time

    time.sleep(0.005)
    return i * i


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def submit_squares(stack: FxStack, endpoint_id: str, n: int) -> tuple[Any, list[str]]:
    """Submit ``slow_square(i)`` for i in range(n) in one batch; (client, task ids)."""
    client = stack.client()
    function_id = client.register_function(slow_square)
    batch = client.create_batch()
    for i in range(n):
        batch.add(i, endpoint_id=endpoint_id, function_id=function_id)
    return client, client.batch_run(batch)


def count_done(stack: FxStack, task_ids: list[str]) -> int:
    """How many of ``task_ids`` are in a final state, from one raw ``POST batch_status``."""
    status, body = stack.request("POST", "batch_status", {"task_ids": task_ids})
    assert status == 200, body
    return sum(t["status"] in ("success", "failed", "cancelled") for t in body["results"].values())


def assert_all_squares(client: Any, task_ids: list[str], timeout: float = 90.0) -> None:
    """Wait until every task finished; each must hold exactly its own square."""

    def all_done() -> dict[str, dict[str, Any]] | None:
        results = client.get_batch_result(task_ids)
        return results if not any(r["pending"] for r in results.values()) else None

    results = wait_for(all_done, timeout, "every task to finish")
    wrong = {
        i: results[t]
        for i, t in enumerate(task_ids)
        if results[t]["status"] != "success" or results[t].get("result") != i * i
    }
    assert not wrong, f"{len(wrong)} tasks without their result, e.g. {list(wrong.items())[:3]}"
