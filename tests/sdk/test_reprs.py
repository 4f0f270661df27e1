"""Notebook tables of endpoints and tasks."""

from __future__ import annotations

from fx_jupyter import EndpointList, TaskList


def test_endpoint_table_columns_and_escaping() -> None:
    endpoints = EndpointList(
        [
            {
                "endpoint_id": "id-1",
                "name": "<b>laptop</b>",
                "status": "online",
                "details": {"workers": 4},
                "tasks": {"waiting-for-ep": 2, "waiting-for-launch": 1, "running": 5},
            },
            {"endpoint_id": "id-2", "name": "hpc", "status": "offline", "details": {"queued": 7}},
        ]
    )
    html = endpoints._repr_html_()
    for column in ("name", "id", "status", "workers", "queued"):
        assert f">{column}</th>" in html
    assert "&lt;b&gt;laptop&lt;/b&gt;" in html and "<b>laptop" not in html
    assert ">3</td>" in html  # queued = waiting states only
    assert ">7</td>" in html  # falls back to the engine's queue
    assert "var(--jp-" in html
    assert endpoints.names() == ["<b>laptop</b>", "hpc"]
    assert endpoints == list(endpoints)  # still a plain list


def test_empty_tables_say_so() -> None:
    assert "none" in EndpointList()._repr_html_()
    assert "none" in TaskList()._repr_html_()


def test_task_table() -> None:
    html = TaskList(
        [
            {
                "task_id": "t-1",
                "status": "failed",
                "completion_t": 1.5,
                "details": {"endpoint_id": "e"},
            }
        ]
    )._repr_html_()
    assert "t-1" in html and "failed" in html and "1.5" in html
