"""Executor task ids against the real service: ``task_id`` is there as soon as the service accepted
the task (reading it waits for that), nothing queued is lost when a script exits, re-attaching
refuses bad ids up front, and ``map_futures`` hands out the futures of a map."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import wait
from typing import Any

import pytest

from fx_jupyter import Client, Executor, FxAPIError, FxFuture

from .conftest import Peer


def square(x):  # type: ignore[no-untyped-def]
    return x * x


def test_task_ids_right_after_submit(
    service: Any, offline_endpoint: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FX_SERVICE_URL", service.service_url)
    monkeypatch.setenv("FX_TOKEN", service.token)
    fxe = Executor(endpoint_id=offline_endpoint["name"])
    futures = [fxe.submit(square, x) for x in range(4)]
    ids = [f.task_id for f in futures]  # waits for the service to accept each task
    fxe.shutdown(wait=False)
    assert all(isinstance(i, str) for i in ids) and len(set(ids)) == 4
    assert all(f"task_id={i}" in repr(f) for f, i in zip(futures, ids))
    check = service.client()
    statuses = check.get_batch_result(ids)
    assert {statuses[i]["status"] for i in ids} == {"waiting-for-ep"}
    for future in futures:
        assert future.cancel() is True  # after shutdown(wait=False), still reachable
    assert {check.get_task(i)["status"] for i in ids} == {"cancelled"}
    check.close()


def test_a_refused_submit_raises_from_task_id(client: Client) -> None:
    with Executor("no-such-endpoint", client) as ex:
        future = ex.submit(square, 2)
        with pytest.raises(FxAPIError, match="no endpoint 'no-such-endpoint'"):
            future.task_id  # noqa: B018 - the read under test
        assert isinstance(future.exception(timeout=1), FxAPIError)
        assert future.known_task_id is None


def test_task_id_waits_boundedly_and_repr_never_waits(connect: Any, peer: Peer) -> None:
    """A service slow to answer the submit (a peer: the real one answers at once)."""

    async def slow_submit(handler: Any) -> tuple[int, Any]:
        await asyncio.sleep(1.0)
        count = len(json.loads(handler.request.body)["tasks"])
        return 200, {"task_ids": [f"task-{i}" for i in range(count)]}

    peer.answer("POST", "/fx/api/v2/functions", 200, {"function_id": str(uuid.uuid4())})
    peer.routes[("POST", "/fx/api/v2/submit")] = slow_submit
    client = connect(peer.url + "fx/api/v2/", "t")
    ex = Executor("ep", client)
    ex.task_id_timeout = 0.2
    started = time.monotonic()
    future = ex.submit(square, 3)
    assert repr(future) == "<FxFuture task_id=None status=submitting>"
    assert "submitting" in future._repr_html_()
    assert time.monotonic() - started < 0.5  # neither submit nor the reprs waited
    with pytest.raises(TimeoutError, match="not accepted the task within 0.2s"):
        future.task_id  # noqa: B018 - the read under test
    ex.task_id_timeout = 10
    assert future.task_id == "task-0"
    ex.shutdown(wait=False, cancel_futures=True)


EXITING_SCRIPT = """
import sys
import time
from fx_jupyter import Client, Executor

def square(x):
    return x * x

fxe = Executor("ep", Client(sys.argv[1], "t"))
fxe.submit(square, 0)
time.sleep(0.2)  # that submit is in flight now: the next ones queue behind it
for x in range(1, int(sys.argv[2])):
    fxe.submit(square, x)
fxe.shutdown(wait=False)
"""


def test_nothing_queued_is_lost_when_a_script_exits(peer: Peer) -> None:
    """A script that submits and exits at once: its first submit is slow to answer (a peer),
    so the later tasks are still queued behind it when the interpreter starts to exit."""
    received: list[int] = []

    async def slow_first_submit(handler: Any) -> tuple[int, Any]:
        count = len(json.loads(handler.request.body)["tasks"])
        if not received:
            received.append(count)
            await asyncio.sleep(1.0)
        else:
            received.append(count)
        return 200, {"task_ids": [str(uuid.uuid4()) for _ in range(count)]}

    peer.answer("POST", "/fx/api/v2/functions", 200, {"function_id": str(uuid.uuid4())})
    peer.routes[("POST", "/fx/api/v2/submit")] = slow_first_submit
    done = subprocess.run(
        [sys.executable, "-c", EXITING_SCRIPT, peer.url + "fx/api/v2/", "50"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert received == [1, 49]


def test_get_futures_refuses_bad_ids_up_front(executor: Executor) -> None:
    good = str(uuid.uuid4())
    with pytest.raises(TypeError, match=r"task_ids\[0\] must be a task id string, got NoneType"):
        executor.get_futures([None, good])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"task_ids\[1\] must be a task id string"):
        executor.get_futures([good, 17])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"task_ids\[1\] is not a task id: ''"):
        executor.get_futures([good, ""])
    with pytest.raises(ValueError, match=r"task_ids\[0\] is not a task id: 'a/b'"):
        executor.get_futures(["a/b"])
    with pytest.raises(TypeError, match="not one str"):
        executor.get_futures(good)
    assert "unfinished=0" in repr(executor)  # nothing was attached


def test_get_futures_gives_one_future_per_task(executor: Executor) -> None:
    submitted = executor.submit(square, 5)
    task_id = submitted.task_id
    assert task_id is not None
    first, again = executor.get_futures([task_id, uuid.UUID(task_id)])  # type: ignore[list-item]
    assert first is submitted and again is submitted
    submitted.cancel()


def test_get_futures_fails_them_when_the_service_cannot_answer(connect: Any, peer: Peer) -> None:
    peer.answer(
        "POST",
        "/fx/api/v2/batch_status",
        400,
        {"error": "bad_request", "message": "batch_status is broken today"},
    )
    client = connect(peer.url + "fx/api/v2/", "t")
    ex = Executor("ep", client)
    futures = ex.get_futures([str(uuid.uuid4()), str(uuid.uuid4())])
    done, _ = wait(futures, timeout=10)
    assert len(done) == 2
    for future in futures:
        assert isinstance(future.exception(), FxAPIError)
        assert "batch_status is broken today" in str(future.exception())
    ex.shutdown()


def test_map_futures_submits_at_once_in_one_request(executor: Executor) -> None:
    futures = executor.map_futures(square, range(30))
    assert len(futures) == 30 and all(isinstance(f, FxFuture) for f in futures)
    assert len({f.task_id for f in futures}) == 30
    assert executor.stats == {"submit_requests": 1, "tasks_submitted": 30}
    nowhere = Executor(None, executor.client)
    with pytest.raises(ValueError, match="no endpoint"):
        nowhere.map_futures(square, [1])
    nowhere.shutdown()
