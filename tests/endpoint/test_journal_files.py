"""The endpoint journal keeps payloads over ``FILE_BYTES`` as files beside ``journal.db``:
written before the commit that names them, read back after a restart, unlinked once the
service acknowledged the result, and swept when a crash left them unnamed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fx_endpoint.engines.base import Task
from fx_endpoint.journal import FILE_BYTES, Journal

BIG = os.urandom(FILE_BYTES + 1)


def payload_files(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(tmp_path / "journal-payloads"))


def test_large_arguments_and_results_live_in_files_and_survive_a_restart(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.accept(Task("big", "fn", b"function", memoryview(BIG)), 1.0)
    journal.accept(Task("small", "fn", b"function", b"args"), 2.0)
    journal.store_result({"task_id": "done", "status": "success"}, memoryview(BIG[::-1]))
    journal.commit()
    assert len(payload_files(tmp_path)) == 2
    journal.close()

    reopened = Journal(tmp_path / "journal.db")
    reopened.collect_garbage()
    pending = {task.task_id: task.args for task, _received in reopened.pending_tasks()}
    assert pending == {"big": BIG, "small": b"args"}
    [(header, payload)] = reopened.results(["done"])
    assert header["task_id"] == "done" and payload == BIG[::-1]

    reopened.forget(["big", "done"])
    reopened.commit()
    assert payload_files(tmp_path) == []
    assert [task.task_id for task, _ in reopened.pending_tasks()] == ["small"]
    reopened.close()


def test_files_no_row_names_are_swept_at_start(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.accept(Task("kept", "fn", b"function", BIG), 1.0)
    journal.commit()
    (tmp_path / "journal-payloads" / "left-by-a-crash.args").write_bytes(b"partial")
    journal.collect_garbage()
    assert len(payload_files(tmp_path)) == 1
    assert [task.args for task, _ in journal.pending_tasks()] == [BIG]
    journal.close()


def test_a_small_payload_that_looks_like_nothing_special_stays_a_row(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.store_result({"task_id": "t"}, json.dumps({"x": 1}).encode())
    journal.commit()
    assert payload_files(tmp_path) == []
    assert [payload for _, payload in journal.results(["t"])] == [b'{"x": 1}']
    journal.close()
