"""Executor against the real service with an offline endpoint: futures stay pending until
cancelled, from here or from elsewhere; re-attaching; the event stream."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import CancelledError, wait
from typing import Any

import pytest

from fx_jupyter import Client, Executor, FxError, FxFuture

from .conftest import wait_for


def square(x):  # type: ignore[no-untyped-def]
    return x * x


def test_future_waits_and_cancel_stops_the_remote_task(executor: Executor, client: Client) -> None:
    future = executor.submit(square, 3)
    assert isinstance(future, FxFuture)
    task_id = wait_for(lambda: future.task_id)
    assert not future.done() and future.status == "waiting-for-ep"
    assert "waiting-for-ep" in future._repr_html_()
    done, _ = wait([future], timeout=0.2)
    assert not done
    assert future.cancel() is True
    assert future.cancelled()
    with pytest.raises(CancelledError):
        future.result(timeout=1)
    assert client.get_task(task_id)["status"] == "cancelled"


def test_cancel_from_elsewhere_reaches_the_future(executor: Executor, client: Client) -> None:
    future = executor.submit(square, 4)
    task_id = wait_for(lambda: future.task_id)
    client.cancel(task_id)
    wait([future], timeout=10)
    assert future.cancelled()


def test_get_futures_reattaches_by_id(
    client: Client, offline_endpoint: dict[str, str], service: Any
) -> None:
    fid = client.register_function(square)
    waiting = client.run(2, endpoint_id=offline_endpoint["id"], function_id=fid)
    cancelled = client.run(3, endpoint_id=offline_endpoint["id"], function_id=fid)
    client.cancel(cancelled)
    unknown = str(uuid.uuid4())
    # A new client and executor: what a notebook has after a kernel restart.
    fresh = service.client()
    with Executor(offline_endpoint["id"], fresh) as ex:
        f_wait, f_cancelled, f_unknown = ex.get_futures([waiting, cancelled, unknown])
        assert f_cancelled.cancelled()
        with pytest.raises(FxError, match="knows no task"):
            f_unknown.result(timeout=10)
        assert not f_wait.done() and f_wait.task_id == waiting
        client.cancel(waiting)  # its event completes the re-attached future
        wait([f_wait], timeout=10)
        assert f_wait.cancelled()
    fresh.close()


def test_submits_from_many_threads_are_batched(executor: Executor) -> None:
    futures: list[FxFuture] = []
    lock = threading.Lock()

    def submit_some() -> None:
        for i in range(50):
            f = executor.submit(square, i)
            with lock:
                futures.append(f)

    threads = [threading.Thread(target=submit_some) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    wait_for(lambda: all(f.task_id for f in futures), timeout=30)
    assert len({f.task_id for f in futures}) == 400
    assert executor.stats["tasks_submitted"] == 400
    assert executor.stats["submit_requests"] < 400  # batches formed while requests were in flight


def test_map_sends_one_request(executor: Executor) -> None:
    results = executor.map(square, range(500), timeout=0.5)
    wait_for(lambda: executor.stats["tasks_submitted"] == 500)
    assert executor.stats["submit_requests"] == 1
    with pytest.raises(TimeoutError):
        next(results)  # offline: nothing comes back, and the rest is cancelled


def test_shutdown_with_cancel_futures(client: Client, offline_endpoint: dict[str, str]) -> None:
    ex = Executor(offline_endpoint["id"], client)
    futures = [ex.submit(square, i) for i in range(5)]
    wait_for(lambda: all(f.task_id for f in futures))
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in futures)
    assert {client.get_task(f.task_id)["status"] for f in futures} == {"cancelled"}  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)


def test_executor_refuses_bad_input(client: Client, offline_endpoint: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="walltime"):
        Executor(offline_endpoint["id"], client, walltime=0)
    ex = Executor(None, client)
    with pytest.raises(ValueError, match="no endpoint"):
        ex.submit(square, 1)
    with pytest.raises(TypeError, match="cannot serialize"):
        Executor(offline_endpoint["id"], client).submit(square, threading.Lock())
    ex.shutdown()


def test_event_listeners_see_task_events(client: Client, offline_endpoint: dict[str, str]) -> None:
    seen: list[dict[str, Any]] = []
    stream = client.events
    handle = stream.add_listener(seen.append)
    assert stream.wait_connected(10)
    fid = client.register_function(square)
    task_id = client.run(7, endpoint_id=offline_endpoint["id"], function_id=fid)
    client.cancel(task_id)
    wait_for(lambda: any(e["task_id"] == task_id and e["status"] == "cancelled" for e in seen))
    stream.remove_listener(handle)
    with pytest.raises(ValueError, match="kind must be one of"):
        stream.add_listener(seen.append, kind="nope")
