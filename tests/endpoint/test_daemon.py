"""The endpoint daemon against a broker peer: the wire protocol, the journal, the start checks."""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import CancelledError
from typing import Any

import cloudpickle
import pytest
from conftest import args_payload, fn_payload, make_endpoint
from peer import PeerBroker

from fx_endpoint import control, protocol, serialize
from fx_endpoint.config import render_template
from fx_endpoint.paths import EndpointState
from fx_endpoint.protocol import TaskState
from fx_endpoint.version import __version__

cloudpickle.register_pickle_by_value(sys.modules[__name__])

FAST_HEARTBEAT = render_template("default", "http://127.0.0.1:9/fx/api/v2/", 2).replace(
    "heartbeat_period: 5", "heartbeat_period: 0.2"
)


def add(a, b):
    print("adding")
    return a + b


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def task(task_id: str, fn: Any = add, *args: Any, **extra: Any) -> dict[str, Any]:
    args = args or (1, 2)
    return {
        "task_id": task_id,
        "function_id": fn.__name__,
        "function": fn_payload(fn),
        "args": args_payload(*args),
        **extra,
    }


def start(peer: PeerBroker, name: str = "default", timeout: float = 15) -> tuple[Any, Any]:
    """`fx-endpoint start` in a thread while the peer welcomes the daemon; (report, hello)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["report"] = control.start(name, timeout)
        except control.ControlError as e:
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    hello = peer.welcome()
    thread.join(timeout + 15)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["report"], hello


def start_fails(name: str = "default", timeout: float = 15) -> str:
    with pytest.raises(control.ControlError) as info:
        control.start(name, timeout)
    return str(info.value)


def test_hello_tasks_statuses_results(fx_home, peer):
    ep = make_endpoint("default", peer)
    report, hello = start(peer)
    assert report.pid == ep.running_pid()
    assert ep.state() is EndpointState.RUNNING
    body = hello.body
    assert body["endpoint_id"] == "id-default" and body["protocol"] == protocol.PROTOCOL_VERSION
    assert body["engine"] == {"type": "process", "max_workers": 2}
    assert body["credit"] == 2 + 32
    assert body["heartbeat_period"] == 5 and body["heartbeat_threshold"] == 30

    peer.send_tasks([task("slow", nap, 0.5), task("quick")])
    states: dict[str, set[str]] = {}
    credit = 0
    results = {}
    while len(results) < 2:
        msg = peer.recv()
        credit += msg.body.get("credit", 0)
        if msg.type == protocol.TASK_STATUS:
            for task_id, state, ts in msg.body["updates"]:
                states.setdefault(task_id, set()).add(state)
        elif msg.type == protocol.RESULTS:
            for header, frame in zip(msg.body["results"], msg.frames):
                results[header["task_id"]] = (header, frame)
            peer.send(
                protocol.RESULTS_ACK, {"task_ids": [h["task_id"] for h in msg.body["results"]]}
            )
    assert states["slow"] == {TaskState.WAITING_FOR_LAUNCH, TaskState.RUNNING}
    assert credit == 2, "one credit back per finished task"
    header, frame = results["quick"]
    assert header["status"] == "success" and header["stdout"] == "adding\n"
    assert header["exception_text"] is None and header["retries"] == 0
    assert set(header["transitions"]) == {TaskState.WAITING_FOR_LAUNCH, TaskState.RUNNING}
    assert serialize.deserialize_result(frame) == 3
    assert serialize.deserialize_result(results["slow"][1]) == 0.5
    stop = control.stop("default")
    assert stop.lines == [f"Stopped endpoint default (pid {report.pid})."]
    peer.expect(protocol.GOODBYE)
    assert ep.state() is EndpointState.STOPPED


def test_duplicates_malformed_and_cancel(fx_home, peer):
    make_endpoint("default", peer)
    start(peer)
    peer.send_tasks([task("long", nap, 30), task("long", nap, 30)])  # the same task twice
    peer.send_raw([b"not json"])
    peer.send_raw([b'{"t": "tasks", "n": 0, "tasks": "nope"}'])
    peer.send(
        protocol.TASKS,
        {
            "tasks": [
                {"task_id": "no-frames", "function_id": "f", "function": 0, "args": 1},
                {"function_id": "anonymous"},
                {
                    "task_id": "bad-walltime",
                    "function_id": "f",
                    "function": 0,
                    "args": 0,
                    "walltime": -1,
                },
                {
                    "task_id": "bad-retries",
                    "function_id": "f",
                    "function": 0,
                    "args": 0,
                    "retries": "x",
                },
            ]
        },
        [b"x"],
    )
    results = peer.results(3)
    assert "function frame 0 does not exist" not in results["no-frames"][0]["exception_text"]
    assert "args frame 1 does not exist" in results["no-frames"][0]["exception_text"]
    assert "walltime must be a positive number" in results["bad-walltime"][0]["exception_text"]
    assert "retries must be an integer >= 0, got 'x'" in results["bad-retries"][0]["exception_text"]
    assert all(r[0]["status"] == "failed" for r in results.values())
    peer.send(protocol.CANCEL, {"task_ids": ["long", "never-sent"]})
    [(header, frame)] = peer.results(1).values()
    assert header["task_id"] == "long" and header["status"] == "cancelled"
    error = serialize.deserialize_result(frame).reraise_value()
    assert isinstance(error, CancelledError)
    peer.send_tasks([task("after")])
    assert peer.results(1)["after"][0]["status"] == "success"
    status = control.status("default")
    assert status["state"] == "Running"
    control.stop("default")


def test_unacknowledged_results_and_unfinished_tasks_survive_a_restart(fx_home, peer):
    ep = make_endpoint("default", peer)
    start(peer)
    peer.send_tasks([task("done-unacked"), task("interrupted", nap, 30)])
    first = peer.results(1, ack=False)
    assert list(first) == ["done-unacked"]
    control.stop("default")
    assert ep.state() is EndpointState.STOPPED
    start(peer)
    resent = peer.expect(protocol.RESULTS)
    assert [h["task_id"] for h in resent.body["results"]] == ["done-unacked"]
    assert serialize.deserialize_result(resent.frames[0]) == 3
    peer.send(protocol.RESULTS_ACK, {"task_ids": ["done-unacked"]})
    updates = peer.expect(protocol.TASK_STATUS).body["updates"]
    assert ["interrupted", TaskState.WAITING_FOR_LAUNCH] in [u[:2] for u in updates]
    peer.send(protocol.CANCEL, {"task_ids": ["interrupted"]})
    assert peer.results(1)["interrupted"][0]["status"] == "cancelled"
    time.sleep(0.3)  # let the acknowledgement arrive: a stop before it would keep the result
    control.stop("default")
    start(peer)
    with pytest.raises(TimeoutError):  # nothing left to resend or to run
        peer.expect(protocol.RESULTS, timeout=0.5)
    control.stop("default")


def test_reconnects_to_a_restarted_broker_and_resends(fx_home, peer):
    make_endpoint("default", peer)
    start(peer)
    peer.send_tasks([task("t1")])
    peer.results(1, ack=False)
    port, keys, allowed = peer.port, (peer.public_key, peer.secret_key), peer.allowed
    peer.close()
    again = PeerBroker(port, keys)
    again.allowed = allowed
    try:
        again.welcome()
        assert list(again.results(1)) == ["t1"]
        again.send_tasks([task("t2")])
        assert list(again.results(1)) == ["t2"]
        control.stop("default")
    finally:
        again.close()


def test_heartbeats_and_status_file(fx_home, peer):
    ep = make_endpoint("default", peer, config=FAST_HEARTBEAT)
    start(peer)
    heartbeat = peer.expect(protocol.HEARTBEAT)
    peer.send(protocol.HEARTBEAT_ACK, {})
    assert heartbeat.body["status"]["max_workers"] == 2
    while heartbeat.body["status"]["workers"] < 2:  # the first may precede the workers
        heartbeat = peer.expect(protocol.HEARTBEAT)
    status = json.loads(ep.status_file.read_text())
    assert status["connected"] is True and status["endpoint_id"] == "id-default"
    assert status["workers"] == 2 and status["queued"] == 0
    control.stop("default")
    assert not ep.status_file.exists()


def test_rejected_hello_fails_the_start_in_the_foreground(fx_home, peer):
    ep = make_endpoint("default", peer)
    outcome: dict[str, str] = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("error", start_fails()))
    thread.start()
    peer.expect(protocol.HELLO)
    peer.send(protocol.REJECT, {"reason": "endpoint default was deleted"})
    thread.join(30)
    assert outcome["error"] == "the service refused this endpoint: endpoint default was deleted"
    assert ep.state() is EndpointState.INITIALIZED
    assert ep.read_pid() is None


def test_incompatible_service_fails_the_start_naming_both_versions(fx_home, peer):
    make_endpoint("default", peer)
    outcome: dict[str, str] = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("error", start_fails()))
    thread.start()
    peer.expect(protocol.HELLO)
    peer.send(protocol.WELCOME, {"fx_version": "9.0.0", "protocol": 99})
    thread.join(30)
    assert (
        "the fx service 9.0.0 (protocol 99) is not compatible with this endpoint"
        in outcome["error"]
    )


def test_refused_credential_fails_the_start_in_the_foreground(fx_home, peer):
    ep = make_endpoint("default", peer, allow=False)
    message = start_fails()
    assert message == (
        "credential refused by the service; run `fx-endpoint configure default` again"
    )
    assert ep.state() is EndpointState.INITIALIZED


def test_unreachable_broker_fails_the_start_with_the_reason(fx_home, peer):
    ep = make_endpoint("default", peer)
    url = peer.url
    peer.close()
    started = time.monotonic()
    message = start_fails(timeout=2)
    assert time.monotonic() - started < 10
    assert message.startswith(f"cannot connect to the service's broker at {url} within 2 s")
    assert ep.state() is EndpointState.INITIALIZED
    assert "cannot connect" in ep.log_file.read_text()


def test_a_silent_service_is_left_and_reconnected(fx_home, peer):
    config = FAST_HEARTBEAT.replace("heartbeat_threshold: 30", "heartbeat_threshold: 1")
    make_endpoint("default", peer, config=config)
    start(peer)
    peer.send_tasks([task("kept")])
    first_identity = peer.identity
    assert list(peer.results(1, ack=False)) == ["kept"]
    # The peer now ignores the endpoint (no heartbeat_ack): after 1 s it reconnects.
    hello = peer.expect(protocol.HELLO, timeout=10)
    assert peer.identity != first_identity, "a new connection"
    assert hello.body["credit"] == 2 + 32
    peer.send(protocol.WELCOME, {"fx_version": __version__, "protocol": protocol.PROTOCOL_VERSION})
    assert list(peer.results(1)) == ["kept"]  # resent on the new connection
    control.stop("default")
