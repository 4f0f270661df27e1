"""An endpoint that goes silent (SIGSTOP of its daemon, as a dropped network looks to the
service): past ``heartbeat_threshold`` the service marks it offline and returns its unfinished
tasks to ``waiting-for-ep``; when it wakes up (SIGCONT) it reconnects by itself and every task
ends with exactly its own result."""

from __future__ import annotations

import os
import signal

from fx_jupyter.testing import FxStack

from .conftest import assert_all_squares, count_done, submit_squares, wait_for

N = 1500


def states(stack: FxStack, task_ids: list[str]) -> dict[str, int]:
    status, body = stack.request("POST", "batch_status", {"task_ids": task_ids})
    assert status == 200, body
    counts: dict[str, int] = {}
    for task in body["results"].values():
        counts[task["status"]] = counts.get(task["status"], 0) + 1
    return counts


def test_silent_endpoint_goes_offline_and_its_tasks_come_back(fx_private_stack: FxStack) -> None:
    stack = fx_private_stack
    endpoint_id = stack.configure_endpoint(
        "flaky", max_workers=2, heartbeat_period=0.5, heartbeat_threshold=2
    )
    stack.fx_endpoint("start", "flaky")
    pid = stack.endpoint_pid("flaky")
    assert pid is not None
    client, task_ids = submit_squares(stack, endpoint_id, N)
    stopped = False
    try:
        wait_for(lambda: count_done(stack, task_ids) >= N // 10, 60, "a tenth of the tasks")
        os.kill(pid, signal.SIGSTOP)
        stopped = True
        wait_for(
            lambda: stack.get(f"endpoints/{endpoint_id}/status")["status"] == "offline",
            15,
            "the service to mark the endpoint offline",
        )
        counts = states(stack, task_ids)
        assert counts.get("waiting-for-ep", 0) > 0, counts
        assert set(counts) <= {"success", "waiting-for-ep"}, counts
        os.kill(pid, signal.SIGCONT)
        stopped = False
        assert_all_squares(client, task_ids)
        assert stack.get(f"endpoints/{endpoint_id}/status")["status"] == "online"
        assert stack.endpoint_pid("flaky") == pid
        assert stack.get("stats")["store"]["tasks"].get("success") == N
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        client.close()
