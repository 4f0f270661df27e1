"""The wire protocol rejects every malformed frame sequence with a ProtocolError."""

from __future__ import annotations

import json

import pytest

from fx_endpoint import protocol
from fx_endpoint.protocol import ProtocolError, decode, encode


def test_round_trip_keeps_payload_frames_untouched():
    payloads = [b"\x00\x01", b"x" * 1000]
    frames = encode(protocol.TASKS, {"tasks": [{"task_id": "a"}]}, payloads)
    msg = decode(frames, protocol.SERVICE_TO_ENDPOINT)
    assert msg.type == protocol.TASKS
    assert msg.body == {"tasks": [{"task_id": "a"}]}
    assert msg.frames == payloads


@pytest.mark.parametrize(
    "frames, message",
    [
        ([], "empty message"),
        ([b"\xff\xfe not json"], "not JSON"),
        ([b"[1, 2]"], "not a JSON object"),
        ([b'{"n": 0}'], "no message type"),
        ([json.dumps({"t": "hello", "n": 2}).encode(), b"only one"], "announces 2"),
        ([json.dumps({"t": "hello", "n": 0}).encode(), b"extra"], "announces 0"),
        ([json.dumps({"t": "tasks", "n": 0}).encode()], "unexpected message type"),
    ],
)
def test_malformed_frames_are_rejected(frames, message):
    with pytest.raises(ProtocolError, match=message):
        decode(frames, protocol.ENDPOINT_TO_SERVICE)


def test_require_names_the_field():
    with pytest.raises(ProtocolError, match="'credit'"):
        protocol.require({"credit": "3"}, "credit", int)
    with pytest.raises(ProtocolError, match="'credit'"):
        protocol.require({"credit": True}, "credit", int)
    assert protocol.require({"credit": 3}, "credit", int) == 3


def test_incompatible_peer_names_both_versions():
    with pytest.raises(ProtocolError) as err:
        protocol.check_compatible(999, "9.9.9", "endpoint", "service")
    text = str(err.value)
    assert "9.9.9" in text and protocol.__version__ in text
    protocol.check_compatible(protocol.PROTOCOL_VERSION, "x", "endpoint", "service")
