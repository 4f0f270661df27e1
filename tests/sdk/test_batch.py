"""Batches on the wire: arguments encoded once, option checks, splitting above the limits."""

from __future__ import annotations

import base64
import json
import threading
import uuid

import pytest

from fx_endpoint.serialize import deserialize_args
from fx_jupyter import Batch
from fx_jupyter.sdk.batch import encode_task, submit_bodies


def tasks_of(body: bytes) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(body)["tasks"]


def test_add_encodes_arguments_by_value_and_keeps_options_apart() -> None:
    batch = Batch()
    items = [1, 2]
    batch.add(
        items, 3, endpoint_id="ep", function_id=uuid.UUID(int=5), walltime=30, memoize=True, k="v"
    )
    items.append(99)  # a later change does not reach the task already added
    ((body, count),) = submit_bodies(batch.fragments)
    assert count == 1
    (task,) = tasks_of(body)
    assert task["endpoint_id"] == "ep"
    assert task["function_id"] == str(uuid.UUID(int=5))
    assert task["walltime"] == 30.0 and task["memoize"] is True
    args, kwargs = deserialize_args(base64.b64decode(task["payload"]))
    assert args == ([1, 2], 3) and kwargs == {"k": "v"}


def test_functions_and_closures_travel_by_value() -> None:
    offset = 10
    batch = Batch()
    batch.add(lambda x: x + offset, endpoint_id="e", function_id="f")
    ((body, _),) = submit_bodies(batch.fragments)
    (fn,), _ = deserialize_args(base64.b64decode(tasks_of(body)[0]["payload"]))
    assert fn(1) == 11


@pytest.mark.parametrize(
    "options, error, fragment",
    [
        ({"endpoint_id": ""}, TypeError, "endpoint_id must be a non-empty string"),
        ({"endpoint_id": None}, TypeError, "endpoint_id must be"),
        ({"function_id": 7}, TypeError, "function_id must be"),
        ({"walltime": 0}, ValueError, "walltime must be a positive number"),
        ({"walltime": float("inf")}, ValueError, "walltime must be a positive number"),
        ({"walltime": "10"}, TypeError, "walltime must be a number"),
        ({"walltime": True}, TypeError, "walltime must be a number"),
        ({"memoize": "yes"}, TypeError, "memoize must be True or False"),
    ],
)
def test_bad_options_raise_and_add_nothing(options: dict, error: type, fragment: str) -> None:  # type: ignore[type-arg]
    batch = Batch()
    kwargs = {"endpoint_id": "e", "function_id": "f", **options}
    with pytest.raises(error, match=fragment):
        batch.add(1, **kwargs)
    assert len(batch) == 0


def test_unpicklable_arguments_are_named() -> None:
    batch = Batch()
    with pytest.raises(TypeError, match="cannot serialize the task's arguments"):
        batch.add(threading.Lock(), endpoint_id="e", function_id="f")
    assert len(batch) == 0


def test_one_body_below_the_limits() -> None:
    fragments = [encode_task("e", "f", b"A") for _ in range(1000)]
    bodies = list(submit_bodies(fragments, "group-1"))
    assert len(bodies) == 1
    assert json.loads(bodies[0][0])["task_group_id"] == "group-1"


def test_split_by_count_and_size_keeps_order_and_one_group() -> None:
    fragments = [encode_task("e", f"f{i}", b"AAA" * (50 if i == 3 else 1)) for i in range(10)]
    bodies = list(submit_bodies(fragments, max_tasks=4, max_bytes=300))
    sent = [t["function_id"] for body, _ in bodies for t in tasks_of(body)]
    assert sent == [f"f{i}" for i in range(10)]
    assert [n for _, n in bodies] == [len(tasks_of(b)) for b, _ in bodies]
    assert all(n <= 4 for _, n in bodies) and len(bodies) > 3
    groups = {json.loads(body)["task_group_id"] for body, _ in bodies}
    assert len(groups) == 1 and uuid.UUID(groups.pop())


def test_a_task_larger_than_the_byte_limit_goes_alone() -> None:
    fragments = [encode_task("e", "f", b"A" * 750), encode_task("e", "g", b"A")]
    bodies = list(submit_bodies(fragments, max_bytes=100))
    assert [n for _, n in bodies] == [1, 1]


def test_repr_and_len() -> None:
    batch = Batch()
    batch.add(endpoint_id="e", function_id="f")
    assert len(batch) == 1 and repr(batch) == "<Batch of 1 tasks>"


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((1, 2.5, "x", b"y", None, True, 3j), {"k": -1}),
        ((), {}),
        (([1, 2],), {}),  # a container: cloudpickle's own path
        ((lambda: 1,), {}),
    ],
)
def test_scalar_shortcut_writes_what_serialize_args_writes(args: tuple, kwargs: dict) -> None:  # type: ignore[type-arg]
    from fx_endpoint.serialize import serialize_args
    from fx_jupyter.sdk.batch import encode_args

    encoded = encode_args(args, kwargs)
    if any(callable(a) for a in args):
        assert deserialize_args(encoded)[0][0]() == 1
    else:
        assert encoded == serialize_args(args, kwargs)
