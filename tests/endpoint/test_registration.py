"""Finding the service and its token, endpoint.json, and the HTTP errors users see."""

from __future__ import annotations

import http.server
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from fx_endpoint.registration import (
    EndpointInfo,
    ServiceClient,
    ServiceError,
    ServiceUnreachable,
    discover_service_url,
    find_token,
    running_servers,
)


def write_server(runtime: Path, name: str, url: str, token: str, pid: int | None = None) -> None:
    info = {"url": url, "token": token, "pid": pid or os.getpid(), "base_url": "/"}
    (runtime / f"jpserver-{name}.json").write_text(json.dumps(info))


@pytest.fixture
def runtime(fx_home: Path) -> Path:
    return Path(os.environ["JUPYTER_RUNTIME_DIR"])


def test_token_from_the_runtime_file_of_the_matching_server(runtime, monkeypatch):
    write_server(runtime, "1", "http://localhost:8888/", "tok-8888")
    write_server(runtime, "2", "http://127.0.0.1:9999/lab/", "tok-9999")
    write_server(runtime, "dead", "http://127.0.0.1:7777/", "tok-dead", pid=2**22 + 12345)
    (runtime / "jpserver-broken.json").write_text("{not json")
    assert find_token("http://127.0.0.1:8888/fx/api/v2/") == "tok-8888"
    assert find_token("http://localhost:9999/lab/fx/api/v2/") == "tok-9999"
    assert find_token("http://127.0.0.1:9999/other/fx/api/v2/") is None
    assert find_token("http://127.0.0.1:7777/fx/api/v2/") is None
    assert find_token("https://127.0.0.1:8888/fx/api/v2/") is None
    assert len(running_servers()) == 2
    assert discover_service_url() is None  # two servers: ambiguous
    monkeypatch.setenv("FX_TOKEN", "from-env")
    assert find_token("http://127.0.0.1:8888/fx/api/v2/") == "from-env"


def test_the_one_running_server_gives_the_service_url(runtime):
    assert discover_service_url() is None
    write_server(runtime, "1", "http://127.0.0.1:8888/base/", "t")
    assert discover_service_url() == "http://127.0.0.1:8888/base/fx/api/v2/"


def test_endpoint_json_is_private_and_checked(tmp_path):
    info = EndpointInfo.new("lab", "http://127.0.0.1:1/fx/api/v2/")
    assert not info.registered and len(info.secret_key) == 40
    path = tmp_path / "endpoint.json"
    info.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert EndpointInfo.load(path) == info
    path.write_text("[]")
    with pytest.raises(ValueError, match="is incomplete; run `fx-endpoint configure` again"):
        EndpointInfo.load(path)
    path.write_text("{oops")
    with pytest.raises(ValueError, match="is not readable JSON"):
        EndpointInfo.load(path)
    with pytest.raises(ValueError, match="does not exist"):
        EndpointInfo.load(tmp_path / "missing.json")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers as a misconfigured or foreign server would."""

    routes: ClassVar[dict[str, tuple[int, bytes]]] = {}

    def do_GET(self) -> None:
        status, body = self.routes.get(self.path, (404, b'{"message": ""}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({}, "no fx service there; is http://127.0.0.1"),
        ({"/fx/api/v2/version": (403, b"{}")}, "the service refused the token"),
        ({"/fx/api/v2/version": (200, b"<html>")}, "answered something that is not JSON"),
        (
            {"/fx/api/v2/version": (200, b'{"protocol": 99, "fx_version": "9.9"}')},
            "the fx service 9.9 (protocol 99) is not compatible with this endpoint",
        ),
        (
            {
                "/fx/api/v2/version": (200, b'{"protocol": 1, "fx_version": "0.1.0"}'),
                "/fx/api/v2/endpoints": (200, b'{"endpoint_id": "x"}'),
            },
            "without an endpoint id and broker address",
        ),
        (
            {
                "/fx/api/v2/version": (200, b'{"protocol": 1, "fx_version": "0.1.0"}'),
                "/fx/api/v2/endpoints": (400, b'{"error": "bad", "message": "name is taken"}'),
            },
            "(HTTP 400): name is taken",
        ),
    ],
)
def test_service_errors_say_what_to_do(http_server, routes, message):
    _Handler.routes = routes
    info = EndpointInfo.new("lab", http_server + "fx/api/v2/")
    with pytest.raises(ServiceError) as error:
        ServiceClient(http_server + "fx/api/v2/", "token").register(info)
    assert message in str(error.value)
    assert not info.registered


def test_no_token_and_unreachable(http_server):
    info = EndpointInfo.new("lab", "http://127.0.0.1:9/fx/api/v2/")
    with pytest.raises(ServiceError, match="no token for"):
        ServiceClient("http://127.0.0.1:9/fx/api/v2/", None).register(info)
    with pytest.raises(ServiceUnreachable, match="cannot reach the fx service"):
        ServiceClient("http://127.0.0.1:9/fx/api/v2/", "t").register(info)
