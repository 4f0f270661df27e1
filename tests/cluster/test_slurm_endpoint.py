"""An endpoint with the parsl engine on a real Slurm: the real `fx-endpoint` CLI against a real
Jupyter server with the fx service. Tasks make Parsl submit a block (a Slurm job), wait for it
(``waiting-for-nodes``), run on its workers, and the block is cancelled once idle."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fx_endpoint.protocol import TaskState
from fx_jupyter.testing import FxStack
from tests.support.slurm import SlurmCluster

ENGINE = {
    "type": "parsl",
    "provider": {"type": "slurm", "partition": "debug", "launcher": "srun", "walltime": "00:10:00"},
    "init_blocks": 0,
    "max_blocks": 1,
    "max_workers_per_node": 2,
    "max_idletime": 2,
    "strategy_period": 0.5,
    "address": "127.0.0.1",
}


def where_am_i(seconds):  # type: ignore[no-untyped-def]
    # Registered by value: the modules it uses are imported where it runs.
    import os
    import time

    time.sleep(seconds)
    return os.environ.get("SLURM_JOB_ID"), os.environ.get("PARSL_WORKER_BLOCK_ID")


def eventually(
    check: Callable[[], Any], what: str, timeout: float, explain: Callable[[], str]
) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s\n{explain()}")
        time.sleep(0.2)
    return found


@pytest.fixture
def slurm_stack(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[FxStack]:
    stack = FxStack(root=tmp_path / "stack")
    stack.root.mkdir()
    try:
        stack.start_server()
        stack.endpoint_id = stack.configure_endpoint(
            "slurm", engine=ENGINE, heartbeat_period=1, heartbeat_threshold=10
        )
        stack.fx_endpoint("start", "slurm")
        yield stack
    finally:
        stack.teardown()


@pytest.fixture
def client(slurm_stack: FxStack) -> Iterator[Any]:
    client = slurm_stack.client()
    yield client
    client.close()


def test_tasks_run_on_a_slurm_block_that_is_released_when_idle(slurm_cluster, slurm_stack, client):
    stack = slurm_stack
    ep_dir = stack.fx_home / "endpoints" / "slurm"

    def explain() -> str:
        log = (ep_dir / "endpoint.log").read_text(errors="replace")[-3000:]
        return f"squeue: {slurm_cluster.squeue()}\nendpoint.log:\n{log}\n{slurm_cluster.logs()}"

    def engine_status() -> dict[str, Any]:
        return client.get_endpoint_status(stack.endpoint_id)["details"]

    def results() -> dict[str, Any] | None:
        found = client.get_batch_result(task_ids)
        return None if any(r["pending"] for r in found.values()) else found

    assert slurm_cluster.squeue() == []  # init_blocks: 0
    function_id = client.register_function(where_am_i)
    batch = client.create_batch()
    for _ in range(4):
        batch.add(1.5, endpoint_id=stack.endpoint_id, function_id=function_id)
    task_ids = client.batch_run(batch)

    [job] = eventually(slurm_cluster.squeue, "Slurm job", 30, explain)
    status = eventually(
        lambda: engine_status().get("workers") and engine_status(), "workers", 45, explain
    )
    assert status["blocks"] == {"pending": 0, "running": 1}
    assert (status["type"], status["provider"], status["workers"]) == ("parsl", "slurm", 2)

    done = eventually(results, "results", 45, explain)
    assert {r["status"] for r in done.values()} == {TaskState.SUCCESS}, done
    assert {r["result"] for r in done.values()} == {(job, "0")}  # in the job, in block 0
    transitions = client.get_task(task_ids[0])["details"]["task_transitions"]
    assert transitions[TaskState.WAITING_FOR_NODES] <= transitions[TaskState.RUNNING]

    eventually(lambda: slurm_cluster.squeue() == [], "release of the idle block", 30, explain)
    idle = eventually(
        lambda: engine_status()["blocks"]["running"] == 0 and engine_status(), "idle", 10, explain
    )
    assert (idle["workers"], idle["queued"], idle["blocks"]["pending"]) == (0, 0, 0)
