"""TaskWidget and BatchWidget: trait values after feeding them task events and futures, in
widget mode and in the plain-text fallback."""

from __future__ import annotations

import pytest

from fx_endpoint.protocol import TaskState
from fx_jupyter.magics.widgets import (
    BatchWidget,
    TaskWidget,
    format_seconds,
    preview,
    widgets_enabled,
)
from fx_jupyter.sdk import FxFuture

T0 = 1_700_000_000.0


def event(task_id, status, ts, **extra):
    return {"task_id": task_id, "status": status, "ts": ts, "endpoint_id": "ep-1", **extra}


@pytest.fixture(params=[False, True], ids=["widget", "text"])
def text_mode(request):
    return request.param


def test_task_widget_follows_the_lifecycle(text_mode):
    w = TaskWidget("gpu", "t1", text_mode=text_mode)
    assert w.state == TaskState.WAITING_FOR_EP and not w.finished
    w.handle_event(event("t1", TaskState.WAITING_FOR_EP, T0))
    w.handle_event(event("t1", TaskState.WAITING_FOR_LAUNCH, T0 + 0.5))
    w.handle_event(event("other", TaskState.FAILED, T0 + 0.6))  # another task: ignored
    w.handle_event(event("t1", TaskState.RUNNING, T0 + 0.75))
    assert w.state == TaskState.RUNNING
    assert w.durations(now=T0 + 2) == [
        (TaskState.WAITING_FOR_EP, 0.5),
        (TaskState.WAITING_FOR_LAUNCH, 0.25),
        (TaskState.RUNNING, 1.25),
    ]
    w.handle_event(event("t1", TaskState.SUCCESS, T0 + 3))
    assert w.finished and w.state == TaskState.SUCCESS
    assert w.transitions == {
        TaskState.WAITING_FOR_EP: T0,
        TaskState.WAITING_FOR_LAUNCH: T0 + 0.5,
        TaskState.RUNNING: T0 + 0.75,
        TaskState.SUCCESS: T0 + 3,
    }
    assert w.durations()[-1] == (TaskState.RUNNING, 2.25)
    assert w.elapsed() == 3.0
    w.set_result({"answer": 42})
    assert w.result_preview == "{'answer': 42}"


def test_task_widget_events_out_of_order_and_terminal_is_final():
    w = TaskWidget("ep", "t1", text_mode=False)
    w.handle_event(event("t1", TaskState.RUNNING, T0 + 1))
    w.handle_event(event("t1", TaskState.WAITING_FOR_EP, T0))  # late: recorded, not current
    assert w.state == TaskState.RUNNING
    w.handle_event(event("t1", TaskState.FAILED, T0 + 2))
    w.handle_event(event("t1", TaskState.RUNNING, T0 + 3))  # after the end: ignored as state
    assert w.state == TaskState.FAILED
    w.handle_event({"task_id": "t1", "status": "bogus", "ts": T0})  # unknown state: ignored
    w.handle_event({"task_id": "t1"})
    assert set(w.transitions) == {TaskState.WAITING_FOR_EP, TaskState.RUNNING, TaskState.FAILED}


def test_task_widget_shows_error_without_the_remote_traceback():
    w = TaskWidget("ep", "t1", text_mode=False)
    w.set_error(ZeroDivisionError("division by zero\n\nRemote traceback:\nTraceback ..."))
    assert w.state == TaskState.FAILED
    assert w.error == "ZeroDivisionError: division by zero"
    html = w.children[0].value
    assert "failed" in html and "ZeroDivisionError: division by zero" in html


def test_task_widget_renders_html_with_state_and_times():
    w = TaskWidget("gpu <1>", "t1", text_mode=False)
    w.set_transitions({TaskState.WAITING_FOR_EP: T0, TaskState.RUNNING: T0 + 1, "junk": "x"})
    html = w.children[0].value
    assert "gpu &lt;1&gt;" in html and "t1" in html
    assert "waiting-for-ep 1.0" in html and "running" in html
    assert "var(--jp-" in html  # themed with JupyterLab's CSS variables


def test_task_widget_makes_its_child_widgets_only_when_needed():
    text = TaskWidget("gpu", "t1", text_mode=True)
    text.set_transitions({TaskState.WAITING_FOR_EP: T0, TaskState.SUCCESS: T0 + 1})
    assert text.children == () and text.comm is None  # nothing to draw, nothing to talk to
    assert text._repr_mimebundle_() == {"text/plain": text.summary()}
    drawn = TaskWidget("gpu", "t1", text_mode=False)
    drawn.set_transitions({TaskState.WAITING_FOR_EP: T0})
    (header,) = drawn.children  # the state line; no output area until something goes there
    assert drawn.comm is not None
    drawn.output.append_stdout("late output\n")
    assert drawn.children == (header, drawn.output)
    drawn.set_transitions({TaskState.SUCCESS: T0 + 1})
    assert drawn.children[0] is header and "success" in header.value


def test_task_widget_follows_a_future(text_mode):
    future = FxFuture(endpoint_id="ep-1")
    w = TaskWidget.for_future(future, endpoint="gpu", show=False, text_mode=text_mode)
    assert w.task_id == ""
    future.task_id = "t9"
    w.handle_event(event("t9", TaskState.RUNNING, T0))  # adopts the id on the next event
    assert w.task_id == "t9" and w.state == TaskState.RUNNING
    future.set_result([1, 2, 3])
    assert w.state == TaskState.SUCCESS and w.result_preview == "[1, 2, 3]"

    failing = FxFuture()
    w = TaskWidget.for_future(failing, endpoint="gpu", show=False, text_mode=text_mode)
    failing.set_exception(ValueError("bad"))
    assert w.state == TaskState.FAILED and w.error == "ValueError: bad"

    cancelled = FxFuture()
    w = TaskWidget.for_future(cancelled, endpoint="gpu", show=False, text_mode=text_mode)
    cancelled.mark_cancelled()
    assert w.state == TaskState.CANCELLED


def test_task_widget_keeps_events_that_overtake_the_task_id(text_mode):
    """A task's first states can arrive before the submit's answer names the task: the widget
    keeps them until it knows its id, and drops those of other tasks."""
    future = FxFuture(endpoint_id="ep-1")
    w = TaskWidget.for_future(future, endpoint="gpu", show=False, text_mode=text_mode)
    w.handle_event(event("t9", TaskState.WAITING_FOR_EP, T0))
    w.handle_event(event("other", TaskState.RUNNING, T0 + 0.05))
    w.handle_event(event("t9", TaskState.RUNNING, T0 + 0.1))
    assert w.task_id == "" and w.transitions == {}
    future.task_id = "t9"
    w.handle_event(event("t9", TaskState.SUCCESS, T0 + 0.4))
    assert w.transitions == {
        TaskState.WAITING_FOR_EP: T0,
        TaskState.RUNNING: T0 + 0.1,
        TaskState.SUCCESS: T0 + 0.4,
    }
    assert dict(w.durations())[TaskState.RUNNING] == pytest.approx(0.3)


def test_task_widget_finished_by_its_caller(text_mode):
    """finish_when_done=False: the end waits for finish() (a blocking cell's main thread),
    keeping the time the terminal event reported."""
    future = FxFuture(endpoint_id="ep-1")
    future.task_id = "t3"
    w = TaskWidget("gpu", text_mode=text_mode)
    w.follow(future, finish_when_done=False)
    w.handle_event(event("t3", TaskState.RUNNING, T0))
    w.handle_event(event("t3", TaskState.FAILED, T0 + 2))
    future.set_exception(ValueError("bad"))
    assert w.state == TaskState.RUNNING  # held: nothing ended on the completing thread
    w.finish(future)
    assert w.state == TaskState.FAILED and w.error == "ValueError: bad"
    assert w.transitions[TaskState.FAILED] == T0 + 2 and w.elapsed() == 2

    later = FxFuture()
    w = TaskWidget("gpu", text_mode=text_mode)
    w.follow(later, finish_when_done=False)
    w.finish_when_done()  # the caller gave up waiting: the widget finishes by itself
    later.set_result(1)
    assert w.state == TaskState.SUCCESS


def test_text_mode_writes_one_line_for_a_quick_task(capsys):
    w = TaskWidget("gpu", "t1", text_mode=True)
    w.show()
    w.handle_event(event("t1", TaskState.WAITING_FOR_EP, T0))
    w.handle_event(event("t1", TaskState.RUNNING, T0 + 0.1))
    w.handle_event(event("t1", TaskState.SUCCESS, T0 + 0.2))
    w.set_result(1)  # the end is written once
    assert capsys.readouterr().err.splitlines() == [
        "fx task t1 on gpu: success after 0.20s (waiting-for-ep 0.10s, running 0.10s)",
    ]


def test_text_mode_writes_progress_of_a_slow_task(capsys, monkeypatch):
    from fx_jupyter.magics import widgets

    monkeypatch.setattr(widgets, "TICK", 0.0)  # every change is a second later
    w = TaskWidget("gpu", "t1", text_mode=True)
    w.show()
    w.handle_event(event("t1", TaskState.WAITING_FOR_EP, T0))
    w.handle_event(event("t1", TaskState.RUNNING, T0 + 5))
    w.refresh()  # a tick without news writes nothing
    w.handle_event(event("t1", TaskState.FAILED, T0 + 65))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("fx task t1 on gpu: waiting-for-ep")
    assert lines[1].startswith("fx task t1 on gpu: running (waiting-for-ep 5.0s, running")
    assert lines[2] == "fx task t1 on gpu: failed after 1m05s (waiting-for-ep 5.0s, running 1m00s)"
    assert len(lines) == 3


def test_batch_widget_counts_states_and_throughput(text_mode):
    futures = [FxFuture() for _ in range(4)]
    futures[0].task_id, futures[1].task_id = "a", "b"
    w = BatchWidget.for_futures(futures, show=False, text_mode=text_mode)
    assert w.total == 4 and w.done == 0
    assert w.counts == {TaskState.WAITING_FOR_EP: 4}
    w.handle_event(event("a", TaskState.RUNNING, T0))
    w.handle_event(event("zzz", TaskState.RUNNING, T0))  # not ours
    assert w.counts == {TaskState.WAITING_FOR_EP: 3, TaskState.RUNNING: 1}
    futures[2].task_id = "c"  # its submit returned meanwhile
    w.handle_event(event("c", TaskState.WAITING_FOR_LAUNCH, T0))
    assert w.counts == {
        TaskState.WAITING_FOR_EP: 2,
        TaskState.WAITING_FOR_LAUNCH: 1,
        TaskState.RUNNING: 1,
    }
    futures[0].set_result(1)
    futures[1].set_exception(RuntimeError("x"))
    futures[2].mark_cancelled()
    w.handle_event(event("a", TaskState.RUNNING, T0 + 1))  # after its end: ignored
    assert w.done == 3 and not w.finished
    assert w.counts == {
        TaskState.WAITING_FOR_EP: 1,
        TaskState.SUCCESS: 1,
        TaskState.FAILED: 1,
        TaskState.CANCELLED: 1,
    }
    futures[3].set_result(None)  # never got a task id (e.g. it was submitted elsewhere)
    assert w.finished and w.done == 4
    assert w.throughput > 0
    if not text_mode:
        assert w.children[0].value == 4 and w.children[0].max == 4
        assert w.children[0].bar_style == "danger"  # one failed
        assert "4/4 done" in w.children[1].value


def test_batch_widget_text_summary(capsys):
    futures = [FxFuture() for _ in range(2)]
    w = BatchWidget.for_futures(futures, text_mode=True)
    for f in futures:
        f.set_result(0)
    assert w.finished
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("fx batch: 2/2 done (success 2), ")
    assert err[0].endswith(" tasks/s")


def test_widgets_fall_back_to_text_outside_a_kernel(monkeypatch):
    assert not widgets_enabled()  # pytest has no kernel
    assert TaskWidget("ep").text_mode


def test_fx_no_widgets_turns_widgets_off(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    monkeypatch.setattr(shell, "kernel", object(), raising=False)
    monkeypatch.delenv("FX_NO_WIDGETS", raising=False)  # the nbval stack exports it
    assert widgets_enabled()
    monkeypatch.setenv("FX_NO_WIDGETS", "1")
    assert not widgets_enabled()
    monkeypatch.setenv("FX_NO_WIDGETS", "0")
    assert widgets_enabled()


@pytest.mark.parametrize(
    "seconds, text",
    [(0.123, "0.12s"), (4.56, "4.6s"), (42, "42s"), (65, "1m05s"), (7384, "2h03m"), (-1, "0.00s")],
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_preview_is_one_short_line_even_for_broken_reprs():
    class Table:
        def __repr__(self):
            return "   a  b\n0  1  2\n1  3  4"

    assert preview(Table()) == "a b 0 1 2 1 3 4"
    assert len(preview("x" * 1000)) == 200

    class Broken:
        def __repr__(self):
            raise RuntimeError("no")

    assert "repr failed" in preview(Broken())


def test_plain_text_repr_is_the_status_line():
    """What a notebook viewer without widgets shows."""
    w = TaskWidget("gpu", "t1", text_mode=False)
    w.handle_event(event("t1", TaskState.RUNNING, T0))
    assert repr(w).startswith("fx task t1 on gpu: running")
    assert w._repr_mimebundle_()["text/plain"].startswith("fx task t1 on gpu: running")
    assert repr(BatchWidget(3, text_mode=False)).startswith("fx batch: 0/3 done")


def test_a_view_must_implement_every_hook():
    from fx_jupyter.magics.widgets import _LiveView

    class Incomplete(_LiveView):  # finished, summary and _snapshot, but no _render
        finished = True

        def summary(self):
            return ""

        def _snapshot(self):
            return None

    with pytest.raises(TypeError, match="abstract method _render"):
        Incomplete(text_mode=True)
