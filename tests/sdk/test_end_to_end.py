"""The SDK through a running service and endpoint (the shared ``fx_stack``): the seed examples,
results and remote exceptions, batches of thousands, large results, cancel of a running task,
re-attaching futures."""

from __future__ import annotations

import time
from concurrent.futures import as_completed, wait
from typing import Any

import pytest

from fx_jupyter import Executor, FuncXClient, FuncXExecutor, TaskPending


@pytest.fixture
def stack_env(fx_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The stack's FX_SERVICE_URL/FX_TOKEN, so ``FuncXClient()`` finds it as a kernel would."""
    monkeypatch.setenv("FX_SERVICE_URL", fx_stack.service_url)
    monkeypatch.setenv("FX_TOKEN", fx_stack.token)
    return fx_stack


def test_seed_examples_verbatim(stack_env: Any) -> None:
    endpoint_uuid = stack_env.endpoint_id
    fxc = FuncXClient()

    def funcx_sum(items):  # type: ignore[no-untyped-def]
        return sum(items)

    func_uuid = fxc.register_function(funcx_sum, description="A summation function")
    res = fxc.run([1, 2, 3, 4, 5], endpoint_id=endpoint_uuid, function_id=func_uuid)
    deadline = time.monotonic() + 60
    while True:
        try:
            assert fxc.get_result(res) == 15
            break
        except TaskPending:
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def hello_world():  # type: ignore[no-untyped-def]
        return "Hello World!"

    with FuncXExecutor(endpoint_id=endpoint_uuid) as fxe:
        future = fxe.submit(hello_world)
        assert future.result(timeout=60) == "Hello World!"
    fxc.close()


def add(a, b=0):  # type: ignore[no-untyped-def]
    return a + b


def fail(message):  # type: ignore[no-untyped-def]
    def inner():  # type: ignore[no-untyped-def]
        return {}[message]

    return inner()


def shout(text):  # type: ignore[no-untyped-def]
    import sys

    print(text)
    print("warn", file=sys.stderr)
    return len(text)


@pytest.fixture
def executor(fx_stack: Any) -> Any:
    client = fx_stack.client()
    ex = Executor(fx_stack.endpoint_name, client)
    yield ex
    ex.shutdown(cancel_futures=True)
    client.close()


def test_submit_map_and_kwargs(executor: Executor) -> None:
    assert executor.submit(add, 1, b=2).result(timeout=60) == 3
    assert list(executor.map(add, range(100), range(100), timeout=60)) == [
        2 * i for i in range(100)
    ]


def test_remote_exception_type_and_traceback(executor: Executor) -> None:
    future = executor.submit(fail, "missing")
    with pytest.raises(KeyError) as info:
        future.result(timeout=60)
    text = str(info.value)
    assert "missing" in text and "Remote traceback" in text and "inner" in text
    assert future.status == "failed"


def test_output_of_the_function(executor: Executor) -> None:
    future = executor.submit(shout, "hello")
    assert future.result(timeout=60) == 5
    assert "hello" in future.stdout and "warn" in future.stderr


def test_large_result_is_fetched(executor: Executor) -> None:
    size = 2 * 1024 * 1024  # above the inline limit of events
    assert len(executor.submit(bytes, size).result(timeout=60)) == size


def test_thousands_in_one_batch(fx_stack: Any) -> None:
    client = fx_stack.client()
    fid = client.register_function(add)
    batch = client.create_batch()
    for i in range(5000):
        batch.add(i, 1, endpoint_id=fx_stack.endpoint_id, function_id=fid)
    task_ids = client.batch_run(batch)
    with Executor(fx_stack.endpoint_id, client) as ex:
        futures = ex.get_futures(task_ids)
        _, not_done = wait(futures, timeout=90)
        assert not not_done
        assert [f.result() for f in futures] == [i + 1 for i in range(5000)]
    results = client.get_batch_result(task_ids[:100])
    assert [results[t]["result"] for t in task_ids[:100]] == [i + 1 for i in range(100)]
    client.close()


def test_reattach_after_a_kernel_restart(fx_stack: Any) -> None:
    first = fx_stack.client()
    ex = Executor(fx_stack.endpoint_id, first)
    futures = [ex.submit(time.sleep, 0.5) for _ in range(4)] + [ex.submit(add, 40, 2)]
    ids = [f.task_id for f in futures if f.task_id] or None
    while ids is None or len(ids) < len(futures):
        time.sleep(0.01)
        ids = [f.task_id for f in futures if f.task_id]
    ex.shutdown(wait=False)
    first.close()  # the old kernel is gone
    second = fx_stack.client()
    with Executor(fx_stack.endpoint_id, second) as again:
        reattached = again.get_futures(ids)
        assert [f.result(timeout=60) for f in reattached] == [None] * 4 + [42]
    second.close()


def test_cancel_a_running_task(executor: Executor) -> None:
    future = executor.submit(time.sleep, 60)
    deadline = time.monotonic() + 30
    while not future.running():
        assert time.monotonic() < deadline, future.status
        time.sleep(0.02)
    started = time.monotonic()
    assert future.cancel() is True
    assert future.cancelled()
    # The worker is stopped: the endpoint serves the next task soon.
    assert executor.submit(add, 1, 1).result(timeout=30) == 2
    assert time.monotonic() - started < 30


def test_as_completed_and_callbacks(executor: Executor) -> None:
    seen: list[int] = []
    futures = [executor.submit(add, i) for i in range(20)]
    for f in futures:
        f.add_done_callback(lambda f: seen.append(f.result()))
    assert sorted(f.result() for f in as_completed(futures, timeout=60)) == list(range(20))
    assert sorted(seen) == list(range(20))
