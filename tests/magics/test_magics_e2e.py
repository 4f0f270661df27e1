"""%%funcx and %funcx against a real service and endpoint (the `fx_stack` fixture), driven
through an in-process IPython shell as a notebook would drive it."""

from __future__ import annotations

import io
import sys
import threading
import time

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from fx_jupyter.magics import BatchWidget, TaskWidget
from fx_jupyter.magics.tables import EndpointTable, TaskTable

WAIT = 30  # seconds: upper bound for anything asynchronous here


@pytest.fixture
def stack(ip, fx_stack, monkeypatch):
    """The shared stack, with the kernel environment pointing at it."""
    monkeypatch.setenv("FX_SERVICE_URL", fx_stack.service_url)
    monkeypatch.setenv("FX_TOKEN", fx_stack.token)
    monkeypatch.setenv("FX_NO_WIDGETS", "1")
    monkeypatch.setattr(ip, "colors", "nocolor")
    return fx_stack


def run(ip, source):
    with capture_output() as captured:
        result = ip.run_cell(source)
    return result, captured


def wait_for(predicate, what):
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_cell_sends_reads_returns_assignments_and_shows_last_value(ip, stack):
    ip.user_ns["x"] = 3
    result, out = run(
        ip,
        f"%%funcx endpoint={stack.endpoint_name}\n"
        "y = x * 2\nprint('hello from the endpoint')\ny + 1",
    )
    assert result.success, out.stderr
    assert result.result == 7
    assert ip.user_ns["y"] == 6
    assert "hello from the endpoint\n" in out.stdout
    assert "success" in out.stderr  # the text fallback of the task widget


def test_endpoint_by_id_out_variable_and_semicolon(ip, stack):
    result, out = run(ip, f"%%funcx endpoint={stack.endpoint_id} out=answer\n6 * 7;")
    assert result.success, out.stderr
    assert result.result is None  # silenced by the semicolon
    assert ip.user_ns["answer"] == 42


def test_options_expand_notebook_variables(ip, stack):
    ip.user_ns["where"] = stack.endpoint_name
    result, out = run(ip, "%%funcx endpoint=$where\n'expanded'")
    assert result.result == "expanded", out.stderr


def test_remote_output_and_stderr_are_replayed(ip, stack):
    result, out = run(
        ip,
        f"%%funcx endpoint={stack.endpoint_name}\n"
        "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)",
    )
    assert result.success
    assert "to stdout" in out.stdout and "to stderr" in out.stderr


def test_remote_exception_fails_the_cell_at_its_line(ip, stack):
    ip.user_ns["zero"] = 0
    result, out = run(
        ip, f"%%funcx endpoint={stack.endpoint_name}\nprint('before')\na = 1\nb = a / zero\n"
    )
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert "b" not in ip.user_ns  # nothing comes back from a failed cell
    shown = out.stdout + out.stderr
    assert "before" in out.stdout
    assert "----> 3 b = a / zero" in shown
    assert "Remote traceback:" in shown


def test_a_name_the_notebook_lacks_fails_like_locally(ip, stack):
    result, _ = run(ip, f"%%funcx endpoint={stack.endpoint_name}\nnot_defined_anywhere + 1")
    assert isinstance(result.error_in_exec, NameError)


def test_rerunning_a_cell_registers_it_once(ip, stack, magics):
    cell = f"%%funcx endpoint={stack.endpoint_name}\nv = 1\nv"
    for _ in range(3):
        result, out = run(ip, cell)
        assert result.success, out.stderr
    assert len(magics._function_ids) == 1
    tasks = stack.client().list_tasks(limit=3)
    assert len({task["details"]["function_id"] for task in tasks}) == 1


def test_nested_global_and_deletion_reach_the_notebook(ip, stack):
    ip.user_ns.update(counter=1, old="gone soon")
    result, out = run(
        ip,
        f"%%funcx endpoint={stack.endpoint_name}\n"
        "def bump():\n    global counter\n    counter += 10\nbump()\ndel old",
    )
    assert result.success, out.stderr
    assert ip.user_ns["counter"] == 11
    assert "old" not in ip.user_ns


def test_variable_that_cannot_be_sent_is_named(ip, stack):
    ip.user_ns["lock"] = threading.Lock()
    before = len(stack.client().list_tasks(limit=100))
    result, out = run(ip, f"%%funcx endpoint={stack.endpoint_name}\nlock.locked()")
    assert isinstance(result.error_in_exec, UsageError)
    assert "cannot be sent to the endpoint: `lock`" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(stack.client().list_tasks(limit=100)) == before  # nothing was submitted


def test_result_that_cannot_come_back_is_a_warning(ip, stack):
    result, out = run(
        ip,
        f"%%funcx endpoint={stack.endpoint_name}\n"
        "import threading\nremote_lock = threading.Lock()\nfine = 1",
    )
    assert result.success
    assert ip.user_ns["fine"] == 1 and "remote_lock" not in ip.user_ns
    assert "`remote_lock` was not brought back" in out.stderr


def test_block_false_returns_at_once_and_fills_later(ip, stack):
    start = time.monotonic()
    result, _ = run(
        ip,
        f"%%funcx endpoint={stack.endpoint_name} block=false out=late_out\n"
        "import time\ntime.sleep(0.5)\nlate = 'arrived'\nlate.upper()",
    )
    assert result.success and result.result is None
    assert time.monotonic() - start < 0.5
    assert "late" not in ip.user_ns
    wait_for(lambda: ip.user_ns.get("late_out") == "ARRIVED", "the detached cell")
    assert ip.user_ns["late"] == "arrived"


def test_timeout_gives_up_and_the_task_can_be_fetched(ip, stack):
    result, out = run(
        ip,
        f"%%funcx endpoint={stack.endpoint_name} timeout=0.1\n"
        "import time\ntime.sleep(0.6)\nslow = 'done'\nslow * 2",
    )
    assert result.success and result.result is None
    assert "gave up waiting after 0.1s" in out.stderr
    task_id = out.stderr.split("%funcx result ")[1].split("`")[0]
    wait_for(lambda: ip.user_ns.get("slow") == "done", "the timed-out cell")
    del ip.user_ns["slow"]
    result, out = run(ip, f"%funcx result {task_id}")
    assert result.success and result.result == "donedone"
    assert ip.user_ns["slow"] == "done"


def test_walltime_is_passed_with_the_task(ip, stack):
    result, _ = run(ip, f"%%funcx endpoint={stack.endpoint_name} walltime=30\nw = 1")
    assert result.success
    task = stack.client().list_tasks(limit=1)[0]
    assert task["details"]["walltime"] == 30


# A cell with a side effect on the endpoint's side: one line in `log` per run.
MEMO_CELL = (
    "with open(log, 'a') as f:\n"
    "    f.write(f'{n}\\n')\n"
    "print('ran', n)\n"
    "doubled = n * 2\n"
    "doubled + 1"
)


def test_memoize_answers_a_rerun_from_the_stored_result(ip, stack, tmp_path):
    log = tmp_path / "runs"
    ip.user_ns.update(log=str(log), n=3)
    memoized = f"%%funcx endpoint={stack.endpoint_name} memoize=true\n{MEMO_CELL}"
    outcomes = []
    for _ in range(2):
        ip.user_ns.pop("doubled", None)
        result, out = run(ip, memoized)
        assert result.success, out.stderr
        outcomes.append((result.result, ip.user_ns["doubled"], out.stdout.splitlines()[0]))
    assert outcomes == [(7, 6, "ran 3")] * 2  # output replayed from the stored result too
    assert log.read_text() == "3\n"
    ip.user_ns["n"] = 4  # other values: another call
    assert run(ip, memoized)[0].result == 9
    plain = f"%%funcx endpoint={stack.endpoint_name}\n{MEMO_CELL}"
    assert [run(ip, plain)[0].result for _ in range(2)] == [9, 9]
    assert log.read_text() == "3\n4\n4\n4\n"


def test_a_failed_memoized_cell_runs_again(ip, stack, tmp_path):
    log = tmp_path / "runs"
    ip.user_ns.update(log=str(log), n=0)
    cell = f"%%funcx endpoint={stack.endpoint_name} memoize=yes\n{MEMO_CELL}\n1 / n"
    for _ in range(2):
        result, _ = run(ip, cell)
        assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert log.read_text() == "0\n0\n"


def test_malformed_memoize_sends_nothing(ip, stack, tmp_path):
    log = tmp_path / "runs"
    ip.user_ns.update(log=str(log), n=1)
    before = stack.client().list_tasks(limit=1)
    result, out = run(ip, f"%%funcx endpoint={stack.endpoint_name} memoize=sometimes\n{MEMO_CELL}")
    assert isinstance(result.error_in_exec, UsageError)
    assert "memoize= must be true or false, got 'sometimes'" in out.stderr
    assert stack.client().list_tasks(limit=1) == before and not log.exists()


def test_unknown_endpoint_names_the_known_ones(ip, stack):
    result, out = run(ip, "%%funcx endpoint=no-such-endpoint\n1")
    assert isinstance(result.error_in_exec, UsageError)
    assert (
        f"no endpoint named 'no-such-endpoint'; known endpoints: {stack.endpoint_name}"
        in out.stderr
    )


def test_use_sets_the_default_endpoint(ip, stack):
    result, out = run(ip, f"%funcx use {stack.endpoint_name}")
    assert result.success and stack.endpoint_id in out.stdout
    result, out = run(ip, "%%funcx\n'default works'")
    assert result.result == "default works", out.stderr
    result, out = run(ip, "%funcx use")
    assert f"run on {stack.endpoint_name}" in out.stdout
    result, out = run(ip, "%funcx use nowhere")
    assert isinstance(result.error_in_exec, UsageError) and "no endpoint named" in out.stderr
    result, out = run(ip, "%funcx use")
    assert f"run on {stack.endpoint_name}" in out.stdout  # unchanged


def test_endpoints_and_tasks_tables(ip, stack):
    run(ip, f"%funcx use {stack.endpoint_name}")
    result, _ = run(ip, "%funcx endpoints")
    table = result.result
    assert isinstance(table, EndpointTable)
    row = table.rows()[0]
    assert row[:3] == [f"{stack.endpoint_name} *", stack.endpoint_id, "online"]
    assert stack.endpoint_id in table._repr_html_()

    run(ip, f"%%funcx endpoint={stack.endpoint_name}\nt = 1")
    result, _ = run(ip, "%funcx tasks 2")
    tasks = result.result
    assert isinstance(tasks, TaskTable) and len(tasks.rows()) == 2
    assert tasks.rows()[0][1:3] == ["success", stack.endpoint_name]
    assert "task" in repr(tasks).splitlines()[0]


def test_result_of_an_unknown_task_is_a_usage_error(ip, stack):
    result, out = run(ip, "%funcx result 00000000-0000-0000-0000-000000000000")
    assert isinstance(result.error_in_exec, UsageError)
    assert "Traceback" not in out.stderr


def test_result_of_a_failed_task_raises_its_exception(ip, stack):
    run(ip, f"%%funcx endpoint={stack.endpoint_name}\nraise KeyError('missing')")
    task_id = stack.client().list_tasks(limit=1)[0]["task_id"]
    result, out = run(ip, f"%funcx result {task_id}")
    assert isinstance(result.error_in_exec, KeyError)
    assert "----> 1 raise KeyError('missing')" in out.stdout + out.stderr


def test_offline_endpoint_warns_and_waits(ip, fx_private_stack, monkeypatch):
    stack = fx_private_stack
    monkeypatch.setenv("FX_SERVICE_URL", stack.service_url)
    monkeypatch.setenv("FX_TOKEN", stack.token)
    stack.configure_endpoint("idle")  # registered, never started: offline
    result, out = run(ip, "%%funcx endpoint=idle timeout=0.2\nx = 1")
    assert result.success
    assert "endpoint 'idle' is offline" in out.stderr
    assert "fx-endpoint start idle" in out.stderr
    assert "gave up waiting" in out.stderr
    task = stack.client().list_tasks(limit=1)[0]
    assert task["status"] == "waiting-for-ep"
    stack.client().cancel(task["task_id"])


def test_batch_widget_follows_executor_futures(stack):
    from fx_jupyter import Executor

    client = stack.client()
    with Executor(stack.endpoint_name, client) as executor:
        futures = [executor.submit(pow, i, 2) for i in range(8)]
        widget = BatchWidget.for_futures(futures, client, show=False, text_mode=False)
        assert [f.result(WAIT) for f in futures] == [i * i for i in range(8)]
    wait_for(lambda: widget.finished, "the batch widget")
    assert widget.counts == {"success": 8} and widget.done == 8
    assert widget.throughput > 0
    client.close()


def test_batch_widget_follows_batch_run_ids(stack):
    client = stack.client()
    function_id = client.register_function(abs)
    batch = client.create_batch()
    for i in range(5):
        batch.add(-i, endpoint_id=stack.endpoint_id, function_id=function_id)
    batch.add("not a number", endpoint_id=stack.endpoint_id, function_id=function_id)
    widget = BatchWidget.for_task_ids(client, client.batch_run(batch), show=False, text_mode=True)
    wait_for(lambda: widget.finished, "the batch widget")
    assert widget.counts == {"success": 5, "failed": 1}
    with pytest.raises(ValueError, match="knows no task"):
        BatchWidget.for_task_ids(client, ["00000000-0000-0000-0000-000000000000"], show=False)
    client.close()


def test_task_widget_records_the_states_of_a_real_task(stack):
    from fx_jupyter import Executor

    client = stack.client()
    with Executor(stack.endpoint_name, client) as executor:
        future = executor.submit(time.sleep, 0.3)
        widget = TaskWidget.for_future(future, client, endpoint="test", show=False, text_mode=False)
        future.result(WAIT)
    wait_for(lambda: widget.finished, "the task widget")
    assert widget.task_id == future.task_id
    assert widget.state == "success"
    assert "running" in widget.transitions
    running = dict(widget.durations())["running"]
    assert 0.2 < running < WAIT
    client.close()


def test_batch_widget_follows_a_map(stack):
    from fx_jupyter import Executor

    client = stack.client()
    with Executor(stack.endpoint_name, client) as executor:
        futures = executor.map_futures(pow, range(6), [2] * 6)
        widget = BatchWidget.for_futures(futures, client, show=False, text_mode=True)
        assert [f.result(WAIT) for f in futures] == [i * i for i in range(6)]
    wait_for(lambda: widget.finished, "the batch widget")
    assert widget.counts == {"success": 6} and widget.total == 6
    client.close()


def test_a_blocking_cell_ends_on_the_main_thread(ip, stack, monkeypatch):
    """The widget's last line and the error are written by the kernel's main thread, never by
    the event stream's thread, while IPython formats the cell's traceback."""
    writers = []

    class Recorder(io.StringIO):
        def write(self, text):
            writers.append(threading.current_thread().name)
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Recorder())
    monkeypatch.setattr(sys, "stderr", Recorder())
    result = ip.run_cell(f"%%funcx endpoint={stack.endpoint_name}\nraise KeyError('here')")
    assert isinstance(result.error_in_exec, KeyError)
    assert "fx task" in sys.stderr.getvalue() and "failed" in sys.stderr.getvalue()
    # The widget ticker may write a progress line if the task is slow; nothing else may.
    assert {name for name in writers if name != "fx-widgets"} == {"MainThread"}


def test_unload_ext_shuts_the_magics_down(ip, stack, magics):
    import fx_jupyter

    result, out = run(ip, f"%%funcx endpoint={stack.endpoint_name}\nu = 1")
    assert result.success, out.stderr
    executors = list(magics._executors.values())
    client = magics._client
    assert executors and client is not None
    fx_jupyter.unload_ipython_extension(ip)
    assert magics._executors == {} and magics._client is None
    assert all(executor._shutdown for executor in executors)
    assert not client.events.connected
