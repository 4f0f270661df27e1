"""The Task document written as JSON text straight from a store row."""

from __future__ import annotations

import json

from fx_jupyter.server_ext.models import task_json


def row(status: str, data: bytes | None = None, **fields: object) -> tuple[object, ...]:
    base = {
        "task_id": "t-1",
        "status": status,
        "endpoint_id": "e-1",
        "function_id": "f-1",
        "created": 1.5,
        "transitions": '{"waiting-for-ep":1.5}',
        "retries": 2,
        "walltime": None,
        "completion_t": None,
        "exception_text": None,
        "stdout": None,
        "stderr": None,
        "data": data,
    }
    base.update(fields)
    return tuple(base.values())


def test_a_pending_task():
    assert json.loads(task_json(row("waiting-for-ep"))) == {
        "task_id": "t-1",
        "status": "waiting-for-ep",
        "pending": True,
        "completion_t": None,
        "details": {
            "endpoint_id": "e-1",
            "function_id": "f-1",
            "created": 1.5,
            "task_transitions": {"waiting-for-ep": 1.5},
            "retries": 2,
            "stdout": None,
            "stderr": None,
            "walltime": None,
        },
    }


def test_finished_tasks_carry_payloads_and_any_text_safely():
    text = 'quote " backslash \\ newline \n tab \t unicode é ✓ \x00'
    done = json.loads(
        task_json(row("success", b"\x00\xff", completion_t=3.25, stdout=text, walltime=9))
    )
    assert done["pending"] is False and done["result"] == "AP8=" and done["completion_t"] == 3.25
    assert done["details"]["stdout"] == text and done["details"]["walltime"] == 9.0
    assert "exception" not in done and "exception_text" not in done
    failed = json.loads(task_json(row("failed", b"err", exception_text=text)))
    assert failed["exception"] == "ZXJy" and failed["exception_text"] == text
    assert "result" not in failed
    cancelled = json.loads(task_json(row("cancelled", exception_text="cancelled by the user")))
    assert cancelled["exception_text"] == "cancelled by the user" and "exception" not in cancelled
    listed = json.loads(task_json(row("success", None)))
    assert "result" not in listed
