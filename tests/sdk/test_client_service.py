"""Client against the real service, with an endpoint that is registered but offline: tasks stay
queued, so pending, cancel and error paths are deterministic."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from globus_sdk import GlobusAPIError

from fx_jupyter import (
    Client,
    EndpointNotFound,
    FxAPIError,
    ServiceNotFound,
    TaskCancelled,
    TaskPending,
)


def double(x):  # type: ignore[no-untyped-def]
    return 2 * x


def triple(x):  # type: ignore[no-untyped-def]
    return 3 * x


def test_register_returns_a_stable_id(client: Client, service: Any) -> None:
    fid = client.register_function(double, description="doubles")
    assert uuid.UUID(fid)
    assert client.get_function(fid)["description"] == "doubles"
    assert client.register_function(double) == fid
    fresh = service.client()  # no local cache: the service itself dedupes
    assert fresh.register_function(double) == fid
    fresh.close()
    assert client.register_function(triple) != fid
    stored = client.get_function(fid)
    assert stored["function_name"] == "double"
    assert "return 2 * x" in stored["source"]


def test_register_with_given_source(client: Client) -> None:
    namespace: dict[str, Any] = {}
    exec("def cell(a):\n    return a + 1\n", namespace)  # noqa: S102 - a cell, as %%funcx has
    fid = client.register_function(namespace["cell"], source="def cell(a):\n    return a + 1\n")
    assert client.get_function(fid)["source"].startswith("def cell(a):")


def test_register_refuses_non_callables(client: Client) -> None:
    with pytest.raises(TypeError, match="needs a callable"):
        client.register_function(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="description must be a string"):
        client.register_function(double, description=3)  # type: ignore[arg-type]


def test_task_on_an_offline_endpoint_stays_pending(
    client: Client, offline_endpoint: dict[str, str]
) -> None:
    fid = client.register_function(double)
    task_id = client.run(21, endpoint_id=offline_endpoint["id"], function_id=fid)
    task = client.get_task(task_id)
    assert task["task_id"] == task_id and task["pending"] is True
    assert task["status"] == "waiting-for-ep"
    assert task["details"]["endpoint_id"] == offline_endpoint["id"]
    assert "waiting-for-ep" in task["details"]["task_transitions"]
    with pytest.raises(TaskPending, match="waiting-for-ep") as info:
        client.get_result(task_id)
    assert info.value.status == "waiting-for-ep"


def test_endpoint_by_name(client: Client, offline_endpoint: dict[str, str]) -> None:
    fid = client.register_function(double)
    task_id = client.run(1, endpoint_id=offline_endpoint["name"], function_id=fid)
    assert client.get_task(task_id)["details"]["endpoint_id"] == offline_endpoint["id"]
    assert client.resolve_endpoint(offline_endpoint["name"]) == offline_endpoint["id"]
    assert client.resolve_endpoint(offline_endpoint["id"]) == offline_endpoint["id"]


def test_unknown_endpoint_name_lists_the_known(
    client: Client, offline_endpoint: dict[str, str]
) -> None:
    with pytest.raises(EndpointNotFound) as info:
        client.resolve_endpoint("nosuch")
    assert "offline" in info.value.known and "offline" in str(info.value)


def test_cancel_a_queued_task(client: Client, offline_endpoint: dict[str, str]) -> None:
    fid = client.register_function(double)
    task_id = client.run(1, endpoint_id=offline_endpoint["id"], function_id=fid)
    assert client.cancel(task_id)["status"] == "cancelled"
    with pytest.raises(TaskCancelled, match=task_id):
        client.get_result(task_id)
    assert client.get_task(task_id)["pending"] is False


def test_batch_run_and_batch_results(client: Client, offline_endpoint: dict[str, str]) -> None:
    fid = client.register_function(double)
    batch = client.create_batch()
    for i in range(1000):
        batch.add(i, endpoint_id=offline_endpoint["id"], function_id=fid, walltime=60)
    task_ids = client.batch_run(batch)
    assert len(task_ids) == len(set(task_ids)) == 1000
    unknown = str(uuid.uuid4())
    results = client.get_batch_result([*task_ids[:10], unknown])
    assert all(results[t] == {"pending": True, "status": "waiting-for-ep"} for t in task_ids[:10])
    assert results[unknown]["status"] == "unknown" and "knows no task" in str(
        results[unknown]["exception"]
    )
    assert client.batch_run(client.create_batch()) == []


def test_list_tasks_and_endpoints(client: Client, offline_endpoint: dict[str, str]) -> None:
    fid = client.register_function(double)
    newest = client.run(5, endpoint_id=offline_endpoint["id"], function_id=fid)
    tasks = client.list_tasks(limit=3, endpoint_id=offline_endpoint["id"])
    assert len(tasks) <= 3 and tasks[0]["task_id"] == newest
    assert "result" not in tasks[0]
    assert newest in tasks._repr_html_()
    endpoints = client.list_endpoints()
    (ep,) = [e for e in endpoints if e["endpoint_id"] == offline_endpoint["id"]]
    assert ep["name"] == "offline" and ep["status"] == "offline"
    assert "offline" in endpoints._repr_html_()
    status = client.get_endpoint_status(offline_endpoint["name"])
    assert status["status"] == "offline" and status["tasks"].get("waiting-for-ep", 0) >= 1


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda c, ep: c.run(1, endpoint_id=ep, function_id=str(uuid.uuid4())), "function"),
        (
            lambda c, ep: c.run(
                1, endpoint_id="no-such-endpoint", function_id=c.register_function(double)
            ),
            "endpoint",
        ),
        (lambda c, ep: c.get_task(str(uuid.uuid4())), "task"),
        (lambda c, ep: c.get_endpoint_status("no-such-endpoint"), "endpoint"),
        (lambda c, ep: c.cancel(str(uuid.uuid4())), "task"),
    ],
)
def test_service_errors_carry_the_service_message(
    client: Client, offline_endpoint: dict[str, str], call: Any, fragment: str
) -> None:
    with pytest.raises(FxAPIError) as info:
        call(client, offline_endpoint["id"])
    err = info.value
    assert isinstance(err, GlobusAPIError) and 400 <= err.http_status < 500
    assert err.message and fragment in str(err).lower()


def test_bad_task_options_are_refused_before_sending(
    client: Client, offline_endpoint: dict[str, str]
) -> None:
    before = len(client.list_tasks(limit=1000))
    with pytest.raises(ValueError, match="walltime"):
        client.run(
            1, endpoint_id=offline_endpoint["id"], function_id=str(uuid.uuid4()), walltime=-1
        )
    with pytest.raises(ValueError, match="limit"):
        client.list_tasks(limit=0)
    with pytest.raises(ValueError, match="status must be one of"):
        client.list_tasks(status="done")
    assert len(client.list_tasks(limit=1000)) == before


def test_discovery_finds_the_real_server(
    service: Any, monkeypatch: pytest.MonkeyPatch, clean_env: Any
) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(service.root / "runtime"))
    found = Client()
    assert found.base_url == service.service_url
    assert found.token == service.token
    assert found.version()["api"] == "v2"


def test_a_wrong_token_is_an_api_error(service: Any, connect: Any) -> None:
    stranger = connect(service.service_url, "not-the-token")
    with pytest.raises(FxAPIError) as info:
        stranger.list_endpoints()
    assert info.value.http_status == 403


def test_service_not_found_when_the_server_lacks_the_path(service: Any, connect: Any) -> None:
    wrong = connect(service.base_url + "nothing/here/", service.token)
    with pytest.raises(ServiceNotFound, match="404"):
        wrong.version()
    server_url = connect(service.base_url, service.token)
    with pytest.raises(ServiceNotFound, match=f"the fx service is at {service.service_url}"):
        server_url.version()


def test_a_dropped_client_closes_its_connections(service: Any) -> None:
    """Left to the garbage collector, an open socket is a ResourceWarning raised on whatever
    thread collects it (in a test run: formatted there, racing the main thread)."""
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = service.client()
        client.list_endpoints()  # leaves a keep-alive connection open
        del client
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
