"""Errors the service answers with become FxAPIError carrying the service's own message."""

from __future__ import annotations

from typing import Any

import pytest
from globus_sdk import GlobusAPIError

from fx_jupyter import FxAPIError

from .conftest import Peer


def test_json_error_message_is_the_exception_text(connect: Any, peer: Peer) -> None:
    peer.answer(
        "POST",
        "/fx/api/v2/functions",
        400,
        {"error": "bad_request", "message": "function_code is not an fx function payload"},
    )
    client = connect(peer.url + "fx/api/v2/", "t")
    with pytest.raises(FxAPIError) as info:
        client.register_function(len)
    err = info.value
    assert isinstance(err, GlobusAPIError)
    assert err.http_status == 400 and err.code == "bad_request"
    assert str(err).startswith("400 bad_request: function_code is not an fx function payload")
    assert "POST" in str(err) and "/fx/api/v2/functions" in str(err)


def test_error_without_json_body(connect: Any, peer: Peer) -> None:
    peer.answer("GET", "/fx/api/v2/tasks/abc", 502, "upstream exploded")
    client = connect(peer.url + "fx/api/v2/", "t")
    client.retry_config.max_retries = 0
    with pytest.raises(FxAPIError, match=r"^502: Bad Gateway"):
        client.get_task("abc")


@pytest.mark.parametrize("bad", ["", "a/b", None, 17])
def test_ids_that_would_change_the_route_are_refused(connect: Any, peer: Peer, bad: object) -> None:
    client = connect(peer.url + "fx/api/v2/", "t")
    with pytest.raises(ValueError, match="task_id must be a non-empty string"):
        client.get_task(bad)  # type: ignore[arg-type]
    assert peer.requests == []  # refused before any request


def test_batch_run_needs_a_batch(connect: Any, peer: Peer) -> None:
    client = connect(peer.url + "fx/api/v2/", "t")
    with pytest.raises(TypeError, match="needs a Batch"):
        client.batch_run([("args",)])  # type: ignore[arg-type]
    assert client.get_batch_result([]) == {}
    assert [p for _, p, _ in peer.requests] == []  # nothing was sent
