"""kill -9 of either side while thousands of tasks are in flight: every task still ends with
exactly its own result (the endpoint's journal and the service's store make delivery
at-least-once; the service keeps the first result of a task)."""

from __future__ import annotations

import json

from fx_jupyter.testing import FxStack

from .conftest import assert_all_squares, count_done, submit_squares, wait_for

N = 3000


def list_line(stack: FxStack, name: str) -> str:
    """The endpoint's state as `fx-endpoint list` prints it."""
    out = stack.fx_endpoint("list").stdout
    line = next(line for line in out.splitlines() if line.split() and line.split()[0] == name)
    return line


def test_endpoint_killed_mid_way_loses_and_doubles_nothing(fx_private_stack: FxStack) -> None:
    stack = fx_private_stack
    endpoint_id = stack.configure_endpoint("crashy", max_workers=2)
    stack.fx_endpoint("start", "crashy")
    client, task_ids = submit_squares(stack, endpoint_id, N)
    try:
        wait_for(lambda: count_done(stack, task_ids) >= N // 4, 60, "a quarter of the tasks")
        stack.kill_endpoint("crashy")
        assert count_done(stack, task_ids) < N, "the kill came too late to test anything"
        assert "Disconnected" in list_line(stack, "crashy")
        stack.fx_endpoint("start", "crashy")
        assert_all_squares(client, task_ids)
        stats = stack.get("stats")
        assert stats["store"]["tasks"].get("success") == N
    finally:
        client.close()


def test_server_killed_mid_way_endpoint_reconnects_by_itself(fx_private_stack: FxStack) -> None:
    stack = fx_private_stack
    endpoint_id = stack.configure_endpoint("steady", max_workers=2)
    stack.fx_endpoint("start", "steady")
    daemon_pid = stack.endpoint_pid("steady")
    client, task_ids = submit_squares(stack, endpoint_id, N)
    try:
        wait_for(lambda: count_done(stack, task_ids) >= N // 4, 60, "a quarter of the tasks")
        stack.kill_server()
        stack.start_server()
        assert count_done(stack, task_ids) < N, "the kill came too late to test anything"
        assert_all_squares(client, task_ids)
        assert stack.endpoint_pid("steady") == daemon_pid, "the endpoint was restarted"
        status = stack.get(f"endpoints/{endpoint_id}/status")
        assert status["status"] == "online", json.dumps(status)
        assert stack.get("stats")["store"]["tasks"].get("success") == N
    finally:
        client.close()
