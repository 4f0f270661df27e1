"""The large-payload path at the endpoint: payloads split into parts on the broker connection
(only with a peer that said it takes them), and journal files written on the journal's own
thread, in pieces, before the commit that names them and removed once forgotten."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import cloudpickle
from conftest import args_payload, fn_payload, make_endpoint
from peer import PeerBroker

from fx_endpoint import control, protocol, serialize
from fx_endpoint.engines.base import Task
from fx_endpoint.journal import FILE_BYTES, WRITE_PIECE, Journal
from fx_endpoint.version import PROTOCOL_VERSION, __version__

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Several parts (and journal write pieces), the last one short.
BIG = os.urandom(3 * protocol.PART_BYTES + 12_345)


def echo(data):
    return data


def payload_files(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(tmp_path / "journal-payloads"))


def test_parts_are_views_of_at_most_part_bytes() -> None:
    assert protocol.parts(b"small") == [b"small"]
    pieces = protocol.parts(BIG)
    assert [len(p) for p in pieces] == [protocol.PART_BYTES] * 3 + [12_345]
    assert b"".join(pieces) == BIG
    assert all(isinstance(p, memoryview) and p.obj is BIG for p in pieces)  # no copies


def test_journal_files_are_complete_before_their_commit_and_go_once_forgotten(
    tmp_path: Path,
) -> None:
    assert len(BIG) > FILE_BYTES and len(BIG) > 2 * WRITE_PIECE
    journal = Journal(tmp_path / "journal.db")
    journal.accept(Task("big", "fn", b"function", memoryview(BIG)), 1.0)
    journal.store_result({"task_id": "done"}, BIG[::-1])
    journal.commit()
    assert len(payload_files(tmp_path)) == 2
    assert [task.args for task, _ in journal.pending_tasks()] == [BIG]
    assert [payload for _, payload in journal.results(["done"])] == [BIG[::-1]]
    journal.forget(["big", "done"])
    journal.commit()
    assert payload_files(tmp_path) == []
    journal.close()


def test_a_task_forgotten_before_its_commit_leaves_no_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.accept(Task("quick", "fn", b"function", BIG), 1.0)
    journal.forget(["quick"])
    journal.commit()
    journal.close()  # finishes the file thread's work
    assert payload_files(tmp_path) == []
    reopened = Journal(tmp_path / "journal.db")
    assert reopened.pending_tasks() == []
    reopened.close()


def test_close_stops_the_file_thread(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.accept(Task("big", "fn", b"function", BIG), 1.0)
    journal.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("fx-journal-files")]
    reopened = Journal(tmp_path / "journal.db")
    assert [task.args for task, _ in reopened.pending_tasks()] == [BIG]
    reopened.close()


def welcome_with_parts(peer: PeerBroker) -> protocol.Message:
    """Answer the daemon's hello with a welcome that says the service takes parts."""
    hello = peer.expect(protocol.HELLO, timeout=30)
    peer.send(
        protocol.WELCOME,
        {
            "fx_version": __version__,
            "protocol": PROTOCOL_VERSION,
            "heartbeat_period": 5,
            "heartbeat_threshold": 30,
            protocol.PARTS_KEY: True,
        },
    )
    return hello


def test_the_daemon_takes_arguments_and_sends_results_in_parts(fx_home, peer) -> None:
    make_endpoint("default", peer)
    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.update(report=control.start("default", 30)))
    thread.start()
    try:
        hello = welcome_with_parts(peer)
        thread.join(45)
        assert "report" in outcome
        assert hello.body[protocol.PARTS_KEY] is True
        pieces = protocol.parts(args_payload(BIG))
        header = {
            "task_id": "big",
            "function_id": "echo",
            "function": 0,
            "args": 1,
            protocol.PARTS_KEY: len(pieces),
            "walltime": None,
            "retries": 0,
        }
        peer.send(protocol.TASKS, {"tasks": [header]}, [fn_payload(echo), *pieces])
        msg = peer.expect(protocol.RESULTS, timeout=30)
        [result] = msg.body["results"]
        assert result["task_id"] == "big" and result["status"] == "success"
        assert result[protocol.PARTS_KEY] == len(msg.frames) > 1
        assert all(len(f) <= protocol.PART_BYTES for f in msg.frames)
        assert serialize.deserialize_result(b"".join(msg.frames)) == BIG
        peer.send(protocol.RESULTS_ACK, {"task_ids": ["big"]})
    finally:
        thread.join(45)
        control.stop("default")


def test_a_service_that_does_not_take_parts_gets_one_frame(fx_home, peer) -> None:
    make_endpoint("default", peer)
    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.update(report=control.start("default", 30)))
    thread.start()
    try:
        peer.welcome()  # says nothing about parts
        thread.join(45)
        assert "report" in outcome
        peer.send_tasks(
            [
                {
                    "task_id": "big",
                    "function_id": "echo",
                    "function": fn_payload(echo),
                    "args": args_payload(BIG),
                }
            ]
        )
        msg = peer.expect(protocol.RESULTS, timeout=30)
        [result] = msg.body["results"]
        assert protocol.PARTS_KEY not in result and len(msg.frames) == 1
        assert serialize.deserialize_result(msg.frames[0]) == BIG
        peer.send(protocol.RESULTS_ACK, {"task_ids": ["big"]})
    finally:
        thread.join(45)
        control.stop("default")
