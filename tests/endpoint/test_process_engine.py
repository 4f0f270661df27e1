"""The process engine on its own, with real worker processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import cloudpickle
import pytest

from fx_endpoint import serialize
from fx_endpoint.engines.base import EngineError
from fx_endpoint.errors import WalltimeExceeded, WorkerLost

# Test functions travel by value, as a notebook's would: workers cannot import this module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def double(x):
    print("doubling", x)
    print("to stderr", file=sys.stderr)
    return 2 * x


def count_calls():
    g = count_calls.__globals__
    g["calls"] = g.get("calls", 0) + 1
    return g["calls"]


def fail():
    raise ValueError("bad input")


def exit_worker(code):
    os._exit(code)


def nap(seconds):
    time.sleep(seconds)
    return os.getpid()


def env_of(name):
    time.sleep(0.05)
    return os.getpid(), os.environ.get(name)


def shout(chars):
    sys.stdout.write("x" * chars)


def unpicklable():
    return threading.Lock()


def call_exit():
    sys.exit(2)


def noop():
    return None


def triple(x):
    return 3 * x


def value(outcome):
    return serialize.deserialize_result(outcome.payload)


def test_results_stdout_and_stderr(engine_factory):
    engine = engine_factory()
    for i in range(10):
        engine.submit(f"t{i}", double, i)
    outcomes = engine.wait(*[f"t{i}" for i in range(10)])
    assert [value(o) for o in outcomes] == [2 * i for i in range(10)]
    assert all(o.status == "success" and o.exception_text is None for o in outcomes)
    assert outcomes[3].stdout == "doubling 3\n"
    assert outcomes[3].stderr == "to stderr\n"
    assert outcomes[3].started <= outcomes[3].finished


def test_function_is_loaded_once_per_worker(engine_factory):
    engine = engine_factory(max_workers=1)
    for i in range(5):
        engine.submit(f"c{i}", count_calls)
    assert [value(o) for o in engine.wait(*[f"c{i}" for i in range(5)])] == [1, 2, 3, 4, 5]


def test_exception_is_the_result_and_not_retried(engine_factory):
    engine = engine_factory(max_workers=1)
    pids = engine.worker_pids()
    engine.submit("bad", fail)
    [outcome] = engine.wait("bad")
    assert outcome.status == "failed" and outcome.retries == 0
    assert "ValueError: bad input" in outcome.exception_text
    assert "in fail" in outcome.exception_text
    assert "fx_endpoint/worker.py" not in outcome.exception_text
    error = value(outcome)
    assert isinstance(error, serialize.RemoteError)
    with pytest.raises(ValueError, match="bad input"):
        raise error.reraise_value()
    assert engine.worker_pids() == pids


def test_sys_exit_in_a_task_fails_the_task_not_the_worker(engine_factory):
    engine = engine_factory(max_workers=1)
    pids = engine.worker_pids()
    engine.submit("exit", call_exit)
    [outcome] = engine.wait("exit")
    assert outcome.status == "failed" and "SystemExit: 2" in outcome.exception_text
    assert engine.worker_pids() == pids


def test_dead_worker_is_replaced_and_task_fails_after_retries(engine_factory):
    engine = engine_factory(config_extra="max_retries_on_system_failure: 1\n")
    engine.submit("die", exit_worker, 3)
    [outcome] = engine.wait("die")
    assert outcome.status == "failed" and outcome.retries == 1
    assert "exited with code 3" in outcome.exception_text
    assert "tried 2 time(s)" in outcome.exception_text
    assert isinstance(value(outcome).reraise_value(), WorkerLost)
    engine.run_until(lambda: len(engine.worker_pids()) == 2)
    engine.submit("after", double, 1)
    assert value(engine.wait("after")[0]) == 2


def test_killed_worker_task_is_retried(engine_factory):
    engine = engine_factory(max_workers=1, config_extra="max_retries_on_system_failure: 1\n")
    [pid] = engine.worker_pids()
    engine.submit("victim", nap, 1.0)
    engine.run_until(lambda: "victim" in engine.running)
    os.kill(pid, signal.SIGKILL)
    [outcome] = engine.wait("victim")
    assert outcome.status == "success" and outcome.retries == 1
    assert value(outcome) != pid


def test_killed_again_names_the_signal(engine_factory):
    engine = engine_factory(max_workers=1, config_extra="max_retries_on_system_failure: 0\n")
    [pid] = engine.worker_pids()
    engine.submit("victim", nap, 5.0)
    engine.run_until(lambda: "victim" in engine.running)
    os.kill(pid, signal.SIGKILL)
    [outcome] = engine.wait("victim")
    assert outcome.status == "failed"
    assert "was killed by signal SIGKILL" in outcome.exception_text


def test_worker_death_among_many_tasks_blames_the_right_one(engine_factory):
    engine = engine_factory(max_workers=1, config_extra="max_retries_on_system_failure: 0\n")
    for i in range(30):  # teaches the engine that tasks are short, so it sends them in batches
        engine.submit(f"warm{i}", noop)
    engine.wait(*[f"warm{i}" for i in range(30)])
    ids = [f"a{i}" for i in range(10)] + ["die"] + [f"b{i}" for i in range(10)]
    for task_id in ids:
        if task_id == "die":
            engine.submit(task_id, exit_worker, 5)
        else:
            engine.submit(task_id, noop)
    outcomes = dict(zip(ids, engine.wait(*ids)))
    assert outcomes.pop("die").status == "failed"
    assert all(o.status == "success" for o in outcomes.values())


def test_walltime_kills_the_worker(engine_factory):
    engine = engine_factory(max_workers=1)
    start = time.monotonic()
    engine.submit("slow", nap, 30, walltime=0.5)
    engine.submit("next", double, 2)
    slow, nxt = engine.wait("slow", "next")
    assert time.monotonic() - start < 10
    assert slow.status == "failed"
    assert "exceeded its walltime of 0.5 s" in slow.exception_text
    assert isinstance(value(slow).reraise_value(), WalltimeExceeded)
    assert value(nxt) == 4


def test_cancel_queued_and_running(engine_factory):
    engine = engine_factory(max_workers=1)
    [pid] = engine.worker_pids()
    engine.submit("running", nap, 30)
    engine.submit("queued", nap, 30)
    engine.run_until(lambda: "running" in engine.running)
    engine.engine.cancel(["queued", "unknown-id"])
    [queued] = engine.wait("queued")
    assert queued.status == "cancelled"
    engine.engine.cancel(["running"])
    [running] = engine.wait("running")
    assert running.status == "cancelled"
    engine.run_until(lambda: engine.worker_pids() and engine.worker_pids() != [pid])
    engine.submit("after", double, 5)
    assert value(engine.wait("after")[0]) == 10
    assert set(engine.outcomes) == {"queued", "running", "after"}


def test_cancel_a_task_waiting_at_a_worker(engine_factory):
    engine = engine_factory(max_workers=1)
    for i in range(30):
        engine.submit(f"warm{i}", noop)
    engine.wait(*[f"warm{i}" for i in range(30)])
    engine.submit("first", nap, 0.5)
    engine.submit("second", nap, 0.5)  # sent to the worker ahead: tasks look short
    engine.run_until(lambda: "first" in engine.running)
    engine.engine.cancel(["second"])
    first, second = engine.wait("first", "second")
    assert first.status == "success" and second.status == "cancelled"


def test_accelerators_one_per_worker(engine_factory):
    engine = engine_factory(config_extra='available_accelerators: ["0", "1"]\n')
    for i in range(12):
        engine.submit(f"g{i}", env_of, "CUDA_VISIBLE_DEVICES")
    seen = {value(o) for o in engine.wait(*[f"g{i}" for i in range(12)])}
    by_pid = dict(seen)
    assert len(by_pid) == len(seen), "a worker saw two accelerators"
    assert set(by_pid.values()) == {"0", "1"}


def test_worker_init_runs_before_the_worker(engine_factory):
    engine = engine_factory(max_workers=1, config_extra="worker_init: export FX_TEST_VAR=hello\n")
    engine.submit("env", env_of, "FX_TEST_VAR")
    assert value(engine.wait("env")[0])[1] == "hello"


def test_failing_worker_init_fails_the_start(engine_factory):
    with pytest.raises(EngineError, match=r"exited with code 7.*\n.*nope"):
        engine_factory(config_extra="worker_init: |\n  echo nope\n  exit 7\n")


def test_malformed_payloads_fail_the_task_not_the_worker(engine_factory):
    engine = engine_factory(max_workers=1)
    pids = engine.worker_pids()
    good_fn = serialize.serialize_function(double)
    engine.submit_raw("garbage-fn", "g", b"garbage", serialize.serialize_args((1,), {}))
    engine.submit_raw("garbage-args", "double", good_fn, b"not a pickle")
    # The pickle is broken, the source intact: the worker falls back to the source.
    corrupt = serialize.serialize_function(triple)[:-20] + b"\x00" * 20
    engine.submit_raw("corrupt-with-source", "c", corrupt, serialize.serialize_args((14,), {}))
    header = json.dumps({"name": "f", "python": "2.7.18", "source": None}).encode()
    other_python = serialize.FUNCTION_MAGIC + struct.pack("!I", len(header)) + header + b"junk"
    engine.submit_raw("other-python", "o", other_python, serialize.serialize_args((), {}))
    ids = ["garbage-fn", "garbage-args", "corrupt-with-source", "other-python"]
    outcomes = dict(zip(ids, engine.wait(*ids)))
    assert "not an fx function payload" in outcomes["garbage-fn"].exception_text
    assert "cannot deserialize task arguments" in outcomes["garbage-args"].exception_text
    assert value(outcomes["corrupt-with-source"]) == 42
    text = outcomes["other-python"].exception_text
    assert "2.7.18" in text and serialize.PYTHON_VERSION in text
    assert all(
        outcomes[k].status == "failed" for k in ("garbage-fn", "garbage-args", "other-python")
    )
    assert engine.worker_pids() == pids
    engine.submit("fine", double, 1)
    assert value(engine.wait("fine")[0]) == 2


def test_output_is_capped(engine_factory):
    engine = engine_factory(max_workers=1)
    engine.submit("loud", shout, 3 * 1024 * 1024)
    [outcome] = engine.wait("loud")
    assert outcome.stdout.startswith("x" * 1000)
    assert len(outcome.stdout) < 1024 * 1024 + 100
    assert f"[output truncated: {2 * 1024 * 1024} more characters]" in outcome.stdout


def test_unpicklable_result_fails_with_a_reason(engine_factory):
    engine = engine_factory(max_workers=1)
    engine.submit("lock", unpicklable)
    [outcome] = engine.wait("lock")
    assert outcome.status == "failed"
    assert "pickle" in outcome.exception_text and "lock" in outcome.exception_text


def test_status_counts(engine_factory):
    engine = engine_factory(max_workers=2)
    assert engine.engine.status() | {"worker_pids": None} == {
        "type": "process",
        "max_workers": 2,
        "workers": 2,
        "idle_workers": 2,
        "queued": 0,
        "running": 0,
        "worker_pids": None,
    }
    engine.submit("a", nap, 30)
    engine.submit("b", nap, 30)
    engine.submit("c", nap, 30)
    engine.run_until(lambda: engine.engine.status()["running"] == 2)
    status = engine.engine.status()
    assert status["queued"] == 1 and status["idle_workers"] == 0


def sandbox_probe(port):
    import socket
    import tempfile

    report = {"cwd_writable": False, "root_writable": True, "network": True}
    with open("probe.txt", "w") as f:
        f.write("ok")
    report["cwd_writable"] = True
    try:
        open("/fx-sandbox-probe", "w").close()
    except OSError:
        report["root_writable"] = False
    report["tmp"] = sorted(os.listdir(tempfile.gettempdir()))
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        report["network"] = False
    return report


def _bwrap_problem() -> str | None:
    """Why bubblewrap cannot sandbox here, or None: `make test` installs it (`make
    system-deps`), so a missing or unusable bwrap fails the sandbox test rather than hiding it."""
    import shutil
    import subprocess

    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not on the PATH; install it with `make system-deps`"
    probe = subprocess.run(
        ["bwrap", "--ro-bind", "/", "/", "--unshare-net", "true"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"bwrap cannot make a sandbox here (exit {probe.returncode}): {probe.stderr.strip()}"
    return None


def test_bwrap_sandbox(engine_factory, tmp_path):
    problem = _bwrap_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    marker = Path(tempfile.gettempdir()) / f"fx-host-tmp-marker-{os.getpid()}"
    marker.write_text("host")
    listener = socket.create_server(("127.0.0.1", 0))  # reachable from here, not from inside
    try:
        engine = engine_factory(max_workers=1, config_extra="sandbox: bwrap\n")
        engine.submit("probe", sandbox_probe, listener.getsockname()[1])
        [outcome] = engine.wait("probe")
    finally:
        listener.close()
        marker.unlink()
    report = value(outcome)
    assert report["cwd_writable"] is True
    assert report["root_writable"] is False
    assert marker.name not in report["tmp"]
    assert report["network"] is False


def test_bwrap_missing_is_a_clear_error(engine_factory, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EngineError, match="sandbox: bwrap needs bubblewrap"):
        engine_factory(config_extra="sandbox: bwrap\n")
