"""The keep-alive fast path: one connection reused, same answers and errors as globus-sdk's
transport, which takes over for what the fast path leaves to it."""

from __future__ import annotations

from typing import Any

import pytest

from fx_jupyter import FxAPIError

from .conftest import Peer


def ports(peer: Peer) -> list[str]:
    return [h["X-Peer-Port"] for _, _, h in peer.requests]


def test_sequential_requests_share_one_connection(connect: Any, peer: Peer) -> None:
    peer.answer("GET", "/fx/api/v2/endpoints", 200, {"endpoints": [{"name": "a"}]})
    client = connect(peer.url + "fx/api/v2/", "t")
    assert client._direct is not None
    for _ in range(5):
        assert client.list_endpoints().names() == ["a"]
    assert len(peer.requests) == 6 and len(set(ports(peer))) == 1


def test_query_and_body_travel_as_json(connect: Any, peer: Peer) -> None:
    peer.answer("GET", "/fx/api/v2/tasks", 200, {"tasks": []})
    peer.answer("POST", "/fx/api/v2/batch_status", 200, {"results": {}, "unknown": ["x"]})
    client = connect(peer.url + "fx/api/v2/", "t")
    client.list_tasks(limit=7, endpoint_id="ep one")
    assert client.get_batch_result(["x"])["x"]["status"] == "unknown"
    methods = [(m, p) for m, p, _ in peer.requests]
    assert ("GET", "/fx/api/v2/tasks") in methods and ("POST", "/fx/api/v2/batch_status") in methods
    post = next(h for m, _, h in peer.requests if m == "POST")
    assert post["Content-Type"] == "application/json" and post["Authorization"] == "Bearer t"


def test_transient_errors_go_through_the_globus_transport(connect: Any, peer: Peer) -> None:
    peer.answer("GET", "/fx/api/v2/endpoints", 503, {"error": "busy", "message": "try later"})
    client = connect(peer.url + "fx/api/v2/", "t")
    client.retry_config.max_retries = 0
    with pytest.raises(FxAPIError, match="503 busy: try later"):
        client.list_endpoints()
    assert [p for _, p, _ in peer.requests].count(
        "/fx/api/v2/endpoints"
    ) == 2  # direct, then globus


def test_client_errors_are_raised_from_the_direct_answer(connect: Any, peer: Peer) -> None:
    peer.answer(
        "GET", "/fx/api/v2/tasks/t1", 404, {"error": "not_found", "message": "no task 't1'"}
    )
    client = connect(peer.url + "fx/api/v2/", "t")
    with pytest.raises(FxAPIError) as info:
        client.get_task("t1")
    assert info.value.http_status == 404 and info.value.code == "not_found"
    assert "no task 't1'" in str(info.value) and "GET" in str(info.value)
    assert [p for _, p, _ in peer.requests].count("/fx/api/v2/tasks/t1") == 1  # not repeated


def test_tls_and_proxies_use_the_globus_transport(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert connect("https://example.invalid/fx/api/v2/", "t")._direct is None
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert connect("http://example.invalid/fx/api/v2/", "t")._direct is None


def test_close_releases_connections(connect: Any, peer: Peer) -> None:
    client = connect(peer.url + "fx/api/v2/", "t")
    client.version()
    client.close()
    peer.answer("GET", "/fx/api/v2/endpoints", 200, {"endpoints": []})
    assert client.list_endpoints() == []  # like a requests.Session: usable again
    assert len(set(ports(peer))) == 2  # on a new connection
