"""Payload packing: functions by value with a source fallback, arguments, results, errors."""

from __future__ import annotations

import pickle
import struct

import pytest

from fx_endpoint import serialize
from fx_endpoint.errors import TaskExecutionFailed
from fx_endpoint.serialize import DeserializationError


def double(x):
    return 2 * x


def test_function_round_trip_and_info():
    payload = serialize.serialize_function(double)
    info = serialize.function_info(payload)
    assert info.name == "double"
    assert info.python == serialize.PYTHON_VERSION
    assert "return 2 * x" in info.source
    assert serialize.deserialize_function(payload)(21) == 42


def _with_broken_pickle(payload: bytes) -> bytes:
    """The same payload with its bytecode part replaced by garbage (as another Python sees it)."""
    (size,) = struct.unpack("!I", payload[4:8])
    return payload[: 8 + size] + b"not a pickle"


def test_source_fallback_when_bytecode_cannot_load():
    broken = _with_broken_pickle(serialize.serialize_function(double))
    assert serialize.deserialize_function(broken)(4) == 8


def test_both_failing_names_both_python_versions():
    broken = _with_broken_pickle(serialize.serialize_function(lambda: 1, source=None))
    header_len = struct.unpack("!I", broken[4:8])[0]
    header = broken[8 : 8 + header_len].replace(
        serialize.PYTHON_VERSION.encode(), b"3.99.0".ljust(len(serialize.PYTHON_VERSION))
    )
    broken = broken[:8] + header + broken[8 + header_len :]
    with pytest.raises(DeserializationError) as err:
        serialize.deserialize_function(broken)
    assert "3.99.0" in str(err.value) and serialize.PYTHON_VERSION in str(err.value)


@pytest.mark.parametrize("garbage", [b"", b"FXF1", b"XXXX\x00\x00\x00\x01{", b"FXF1\x00\x00\x00\x03abc"])
def test_garbage_function_payloads(garbage):
    with pytest.raises(DeserializationError):
        serialize.deserialize_function(garbage)


def test_args_round_trip_and_garbage():
    payload = serialize.serialize_args((1, [2]), {"k": "v"})
    assert serialize.deserialize_args(payload) == ((1, [2]), {"k": "v"})
    with pytest.raises(DeserializationError):
        serialize.deserialize_args(b"garbage")
    with pytest.raises(DeserializationError, match="not an"):
        serialize.deserialize_args(pickle.dumps([1, 2]))


def test_exception_keeps_type_and_carries_remote_traceback():
    try:
        {}["missing"]
    except KeyError as e:
        payload = serialize.serialize_exception(e)
    error = serialize.deserialize_result(payload)
    rebuilt = error.reraise_value()
    assert isinstance(rebuilt, KeyError)
    assert "Remote traceback" in str(rebuilt) and "missing" in str(rebuilt)


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no")


def test_unpicklable_exception_still_reports():
    payload = serialize.serialize_exception(Unpicklable("boom"))
    rebuilt = serialize.deserialize_result(payload).reraise_value()
    assert isinstance(rebuilt, TaskExecutionFailed)
    assert "Unpicklable" in str(rebuilt) and "boom" in str(rebuilt)


def test_undecodable_result():
    with pytest.raises(DeserializationError):
        serialize.deserialize_result(b"\x80\x05garbage")
