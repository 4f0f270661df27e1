"""Memoization end to end (the shared ``fx_stack``): an identical memoized call is answered from
the stored result without running, whichever SDK path submitted it.

The functions append a line to a file per run, so "ran once" is counted on the worker's side,
not inferred from the service's records.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fx_jupyter import Client, Executor, TaskPending

WAIT = 60  # seconds: upper bound for any task here


def record(path: str, n: int) -> int:
    """Append a line per run to ``path``; the value depends on ``n`` only."""
    print(f"ran with {n}")
    with open(path, "a") as f:
        f.write(f"{n}\n")
    return n * 2


def record_and_fail(path: str, n: int) -> int:
    with open(path, "a") as f:
        f.write(f"{n}\n")
    raise ValueError(f"failed on {n}")


def runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def memo_executor(fx_stack: Any) -> Iterator[Executor]:
    """A memoizing Executor on the stack's endpoint, with a client of its own."""
    ex = Executor(fx_stack.endpoint_id, fx_stack.client(), memoize=True)
    yield ex
    ex.shutdown(cancel_futures=True)
    ex.client.close()


def test_identical_memoized_calls_run_once(
    fx_stack: Any, memo_executor: Executor, tmp_path: Path
) -> None:
    client = memo_executor.client
    log = tmp_path / "runs"
    first = memo_executor.submit(record, str(log), 3)
    assert first.result(timeout=WAIT) == 6
    second = memo_executor.submit(record, str(log), 3)
    assert second.result(timeout=WAIT) == 6
    assert runs(log) == ["3"]
    # The stored output comes with the stored result; the copy never reached a worker.
    assert second.stdout == first.stdout == "ran with 3\n"
    transitions = client.get_task(second.task_id)["details"]["task_transitions"]
    assert "running" not in transitions and "success" in transitions
    assert second.task_id != first.task_id

    # Other arguments are another call.
    assert memo_executor.submit(record, str(log), 4).result(timeout=WAIT) == 8
    assert runs(log) == ["3", "4"]

    # Without memoize, the same call runs every time.
    with Executor(fx_stack.endpoint_id, client) as plain:
        assert [plain.submit(record, str(log), 3).result(timeout=WAIT) for _ in range(2)] == [6, 6]
    assert runs(log) == ["3", "4", "3", "3"]

    # The attribute is read at each submit: switched off, the call runs again.
    memo_executor.memoize = False
    assert memo_executor.submit(record, str(log), 3).result(timeout=WAIT) == 6
    assert runs(log) == ["3", "4", "3", "3", "3"]


def test_a_failed_task_is_not_memoized(memo_executor: Executor, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    for _ in range(2):
        with pytest.raises(ValueError, match="failed on 7"):
            memo_executor.submit(record_and_fail, str(log), 7).result(timeout=WAIT)
    assert runs(log) == ["7", "7"]


def test_client_run_and_batch_memoize(
    fx_stack: Any, memo_executor: Executor, tmp_path: Path
) -> None:
    client: Client = memo_executor.client
    log = tmp_path / "runs"
    fid = client.register_function(record)

    def result_of(task_id: str) -> Any:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                return client.get_result(task_id)
            except TaskPending:
                assert time.monotonic() < deadline, f"task {task_id} did not finish"
                time.sleep(0.02)

    endpoint = fx_stack.endpoint_id
    first = client.run(str(log), 5, endpoint_id=endpoint, function_id=fid, memoize=True)
    assert result_of(first) == 10
    again = client.run(str(log), 5, endpoint_id=endpoint, function_id=fid, memoize=True)
    assert result_of(again) == 10
    batch = client.create_batch()
    for n in (5, 5, 6):
        batch.add(str(log), n, endpoint_id=endpoint, function_id=fid, memoize=True)
    assert [result_of(t) for t in client.batch_run(batch)] == [10, 10, 12]
    assert runs(log) == ["5", "6"]


def test_malformed_memoize_is_refused_before_anything_is_sent(
    fx_stack: Any, memo_executor: Executor
) -> None:
    with pytest.raises(TypeError, match="memoize must be True or False, got 'yes'"):
        Executor(fx_stack.endpoint_id, memoize="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="memoize must be True or False, got 1"):
        memo_executor.memoize = 1  # type: ignore[assignment]
    assert memo_executor.memoize is True
    assert memo_executor.stats["tasks_submitted"] == 0
