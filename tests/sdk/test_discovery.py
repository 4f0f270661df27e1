"""Finding the service: explicit settings, JupyterHub env, Jupyter runtime files, and the error
that lists what was tried when nothing answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fx_jupyter import Client, ServiceNotFound
from fx_jupyter.sdk.discovery import locate_service

from .conftest import Peer


def write_server_file(
    runtime: Path, pid: int, url: str, token: str = "", mtime: float | None = None
) -> Path:
    """A jpserver-*.json as Jupyter Server writes it."""
    path = runtime / f"jpserver-{pid}-{len(list(runtime.iterdir()))}.json"
    path.write_text(
        json.dumps(
            {
                "url": url,
                "base_url": "/",
                "token": token,
                "pid": pid,
                "sock": "",
                "hostname": "127.0.0.1",
                "port": 0,
                "secure": False,
                "root_dir": "/",
                "password": False,
                "version": "2",
            }
        )
    )
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def stranger_pid() -> Iterator[int]:
    """A live process that is not an ancestor of this one (a child)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait(10)


def test_explicit_url_and_token_are_used_as_given(clean_env: Path) -> None:
    loc = locate_service("http://example.invalid:1/fx/api/v2", "tok")
    assert (loc.url, loc.token, loc.source) == (
        "http://example.invalid:1/fx/api/v2/",
        "tok",
        "service_url argument",
    )


def test_env_variables(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FX_SERVICE_URL", "http://127.0.0.1:9/x/fx/api/v2/")
    monkeypatch.setenv("FX_TOKEN", "secret")
    loc = locate_service()
    assert (loc.url, loc.token, loc.source) == (
        "http://127.0.0.1:9/x/fx/api/v2/",
        "secret",
        "FX_SERVICE_URL",
    )


def test_explicit_url_takes_the_token_of_the_local_server(clean_env: Path, peer: Peer) -> None:
    write_server_file(clean_env, os.getpid(), f"http://localhost:{peer.port}/", token="filetoken")
    loc = locate_service(f"http://127.0.0.1:{peer.port}/fx/api/v2/")
    assert loc.token == "filetoken"


def test_runtime_file_of_a_running_server(
    clean_env: Path, peer: Peer, stranger_pid: int, connect: Any
) -> None:
    write_server_file(clean_env, stranger_pid, peer.url, token="abc")
    client = connect()
    assert client.base_url == peer.url + "fx/api/v2/"
    assert client.located_by.startswith("jpserver-")
    client.version()
    auth = [h.get("Authorization") for m, p, h in peer.requests if p == "/fx/api/v2/version"]
    assert auth and all(a == "Bearer abc" for a in auth)


def test_ancestor_server_wins_over_a_newer_one(
    clean_env: Path, peer_factory: Callable[[], Peer], stranger_pid: int
) -> None:
    mine, other = peer_factory(), peer_factory()
    mine.version()
    other.version()
    write_server_file(clean_env, os.getppid(), mine.url, mtime=1_000_000)
    write_server_file(clean_env, stranger_pid, other.url)
    assert locate_service().url == mine.url + "fx/api/v2/"


def test_newest_answering_server_without_an_ancestor(
    clean_env: Path, peer_factory: Callable[[], Peer], stranger_pid: int
) -> None:
    old, new, silent = peer_factory(), peer_factory(), peer_factory()
    old.version()
    new.version()  # `silent` has no fx service: a plain Jupyter server
    write_server_file(clean_env, stranger_pid, old.url, mtime=1_000_000)
    write_server_file(clean_env, stranger_pid, new.url, mtime=2_000_000)
    write_server_file(clean_env, stranger_pid, silent.url, mtime=3_000_000)
    assert locate_service().url == new.url + "fx/api/v2/"


def test_nothing_found_lists_what_was_tried(
    clean_env: Path, peer_factory: Callable[[], Peer], stranger_pid: int
) -> None:
    without_fx = peer_factory()
    write_server_file(clean_env, stranger_pid, without_fx.url)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    write_server_file(clean_env, dead.pid, "http://127.0.0.1:9/")
    with pytest.raises(ServiceNotFound) as info:
        Client()  # the constructor is what raises
    text = str(info.value)
    assert "FX_SERVICE_URL: not set" in text
    assert "not in a JupyterHub" in text
    assert "no fx service (404" in text
    assert "stale file" in text
    assert "FX_SERVICE_URL and FX_TOKEN" in text  # what to do about it
    assert len(info.value.tried) == 4


def test_empty_runtime_dir_is_named(clean_env: Path) -> None:
    with pytest.raises(ServiceNotFound) as info:
        locate_service()
    assert f"no jpserver-*.json in {clean_env}" in str(info.value)


def test_refused_token_is_reported(
    clean_env: Path, peer_factory: Callable[[], Peer], stranger_pid: int
) -> None:
    locked = peer_factory()
    locked.answer("GET", "/fx/api/v2/version", 403, {"message": "Forbidden"})
    write_server_file(clean_env, stranger_pid, locked.url, token="wrong")
    with pytest.raises(ServiceNotFound, match=r"token was refused \(403\)"):
        locate_service()


def test_jupyterhub_single_user_server(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, peer: Peer
) -> None:
    peer.version("/user/alice/fx/api/v2/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hubtoken")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:1/hub/api")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", f"http://0.0.0.0:{peer.port}/user/alice/")
    loc = locate_service()
    assert loc.url == f"http://127.0.0.1:{peer.port}/user/alice/fx/api/v2/"
    assert (loc.token, loc.source) == ("hubtoken", "JUPYTERHUB_SERVICE_URL")


def test_jupyterhub_through_the_public_url(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, peer: Peer
) -> None:
    peer.version("/user/bob/fx/api/v2/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hubtoken")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/bob/")
    monkeypatch.setenv("JUPYTERHUB_HOST", f"http://127.0.0.1:{peer.port}")
    loc = locate_service()
    assert loc.url == f"http://127.0.0.1:{peer.port}/user/bob/fx/api/v2/"


def test_hub_admin_service_url_uses_the_hub_token(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hubtoken")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/carol/")
    monkeypatch.setenv("FX_SERVICE_URL", "http://127.0.0.1:9/services/fx/fx/api/v2/")
    loc = locate_service()
    assert (loc.url, loc.token) == ("http://127.0.0.1:9/services/fx/fx/api/v2/", "hubtoken")


def test_unreadable_runtime_files_are_skipped(
    clean_env: Path, peer: Peer, stranger_pid: int
) -> None:
    (clean_env / "jpserver-1.json").write_text("{not json")
    (clean_env / "jpserver-2.json").write_text('["a list"]')
    write_server_file(clean_env, stranger_pid, peer.url)
    assert locate_service().url == peer.url + "fx/api/v2/"


def test_hub_without_a_way_to_reach_the_server(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hubtoken")
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:1/hub/api")
    with pytest.raises(ServiceNotFound, match="none of JUPYTERHUB_SERVICE_URL"):
        locate_service()


def test_hub_server_that_does_not_answer(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hubtoken")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/dan/")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:9/user/dan/")
    with pytest.raises(
        ServiceNotFound,
        match=r"JUPYTERHUB_SERVICE_URL http://127\.0\.0\.1:9/user/dan/fx/api/v2/: cannot connect",
    ):
        locate_service()
