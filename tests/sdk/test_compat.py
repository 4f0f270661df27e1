"""Version handshake: an incompatible service fails at the first call, naming both versions."""

from __future__ import annotations

from typing import Any

import pytest

from fx_endpoint.version import PROTOCOL_VERSION, __version__
from fx_jupyter import FxError, ServiceNotFound, VersionMismatch
from fx_jupyter.sdk.compat import check_service_version

from .conftest import COMPATIBLE_VERSION, Peer


def test_incompatible_protocol_names_both_versions(connect: Any, peer: Peer) -> None:
    peer.version(doc={"api": "v2", "fx_version": "9.1.0", "protocol": PROTOCOL_VERSION + 1})
    client = connect(peer.url + "fx/api/v2/", "t")
    with pytest.raises(VersionMismatch) as info:
        client.list_endpoints()
    message = str(info.value)
    assert f"fx SDK {__version__}" in message and "fx service 9.1.0" in message
    assert "wire protocol" in message
    assert (info.value.sdk_version, info.value.service_version) == (__version__, "9.1.0")
    assert peer.count("GET", "/fx/api/v2/endpoints") == 0  # failed before doing anything


def test_service_needing_a_newer_sdk(connect: Any, peer: Peer) -> None:
    peer.version(doc={**COMPATIBLE_VERSION, "fx_version": "3.0.0", "min_sdk_version": "2.0.0"})
    client = connect(peer.url + "fx/api/v2/", "t")
    with pytest.raises(VersionMismatch, match=r"needs an SDK of version 2\.0\.0 or newer"):
        client.version()


def test_compatible_service_is_checked_once_and_sees_our_version(connect: Any, peer: Peer) -> None:
    peer.answer("GET", "/fx/api/v2/endpoints", 200, {"endpoints": []})
    client = connect(peer.url + "fx/api/v2/", "t")
    assert client.list_endpoints() == []
    assert client.list_endpoints() == []
    assert peer.count("GET", "/fx/api/v2/version") == 1
    headers = next(h for m, p, h in peer.requests if p == "/fx/api/v2/endpoints")
    assert headers["X-Fx-Sdk-Version"] == __version__
    assert headers["X-Fx-Protocol"] == str(PROTOCOL_VERSION)
    assert headers["Authorization"] == "Bearer t"


def test_no_token_sends_no_authorization(connect: Any, peer: Peer) -> None:
    client = connect(peer.url + "fx/api/v2/", "")
    client.version()
    assert "Authorization" not in peer.requests[-1][2]


def test_a_jupyter_server_without_fx(connect: Any, peer_factory: Any) -> None:
    plain = peer_factory()
    client = connect(plain.url + "fx/api/v2/", "t")
    with pytest.raises(ServiceNotFound, match="server extension enabled"):
        client.version()


def test_something_else_answering_version(connect: Any, peer: Peer) -> None:
    peer.version(doc={"hello": "world"})  # type: ignore[dict-item]
    client = connect(peer.url + "fx/api/v2/", "t")
    with pytest.raises(FxError, match="did not answer with an fx version document"):
        client.version()


@pytest.mark.parametrize(
    "doc, fragment",
    [
        ({**COMPATIBLE_VERSION, "api": "v3"}, "speaks API 'v3'"),
        ({**COMPATIBLE_VERSION, "protocol": None}, "wire protocol None"),
        ({**COMPATIBLE_VERSION, "min_sdk_version": "not a version"}, "needs an SDK"),
    ],
)
def test_version_documents(doc: dict, fragment: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(VersionMismatch, match=fragment):
        check_service_version(doc, "http://x/fx/api/v2/")


def test_compatible_document_passes() -> None:
    assert check_service_version(dict(COMPATIBLE_VERSION), "u") == COMPATIBLE_VERSION
