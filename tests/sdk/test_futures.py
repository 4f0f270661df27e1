"""FxFuture on its own: cancellation wakes waiters, late results after a cancel are ignored."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError, as_completed, wait

import pytest

from fx_jupyter import FxFuture
from fx_jupyter.sdk.tasks import Outcome


def test_local_cancel_wakes_wait_and_as_completed() -> None:
    future = FxFuture()
    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(wait([future], timeout=10)))
    waiter.start()
    assert future.cancel() is True
    waiter.join(10)
    assert results and future in results[0].done  # type: ignore[attr-defined]
    assert list(as_completed([future], timeout=1)) == [future]
    assert future.cancelled() and future.status == "cancelled"
    with pytest.raises(CancelledError):
        future.result(timeout=1)
    assert future.cancel() is True  # idempotent


def test_result_after_cancel_is_ignored() -> None:
    future = FxFuture()
    future.mark_cancelled()
    future.resolve(Outcome("success", value=1))
    assert future.cancelled()


def test_resolve_success_failure_and_remote_cancel() -> None:
    ok, bad, gone = FxFuture(), FxFuture(), FxFuture()
    ok.resolve(Outcome("success", value=42))
    bad.resolve(Outcome("failed", exception=KeyError("k")))
    gone.resolve(Outcome("cancelled"))
    assert ok.result() == 42 and ok.status == "success"
    with pytest.raises(KeyError):
        bad.result()
    assert gone.cancelled()
    assert ok.cancel() is False


def test_running_reflects_the_remote_state() -> None:
    future = FxFuture(endpoint_id="ep")
    assert not future.running() and future.status == "submitting"
    future.note_event({"status": "running", "stdout": "x"})
    assert future.running() and future.stdout == "x"
    future.resolve(Outcome("success", value=None))
    assert not future.running()


def test_html_repr_escapes_and_shows_the_state() -> None:
    future = FxFuture(endpoint_id="<ep>")
    assert "submitting" in future._repr_html_()
    future.task_id = "abc-123"
    future.note_event({"status": "running"})
    html = future._repr_html_()
    assert "abc-123" in html and "running" in html and "&lt;ep&gt;" in html and "<ep>" not in html
    assert "task_id=abc-123" in repr(future)
