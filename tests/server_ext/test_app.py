"""FxService configuration, single-user ownership, and the standalone ``fx-service``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from traitlets import TraitError
from traitlets.config import Config

from fx_jupyter.server_ext.app import FxService
from fx_jupyter.testing import free_port

from .peer import keypair


def test_options_come_from_the_environment_unless_configured(monkeypatch, tmp_path):
    monkeypatch.setenv("FX_DB_URL", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("FX_BROKER_PORT", "5999")
    monkeypatch.setenv("FX_EVENT_INLINE_LIMIT", "1024")
    monkeypatch.setenv("FX_SINGLE_USER", "false")
    app = FxService()
    assert app.db_url == f"sqlite:///{tmp_path}/env.db"
    assert (app.broker_port, app.event_inline_limit, app.single_user) == (5999, 1024, False)
    assert app.broker_ip == "127.0.0.1" and app.heartbeat_threshold == 30.0
    configured = FxService(config=Config({"FxService": {"broker_port": 6001}}))
    assert configured.broker_port == 6001


def test_default_store_is_in_the_jupyter_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("FX_DB_URL", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path))
    assert FxService().db_url == f"sqlite:///{tmp_path}/fx/fx.db"


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("FX_BROKER_PORT", "many", "FX_BROKER_PORT"),
        ("FX_BROKER_PORT", "70000", "not a TCP port"),
        ("FX_SINGLE_USER", "perhaps", "FX_SINGLE_USER"),
        ("FX_READ_THREADS", "0", "must be positive"),
        ("FX_DB_URL", "sqlite://", "needs a file"),
        ("FX_DB_URL", "no url at all", "not a database URL"),
        ("FX_DB_URL", "mysql://fx@127.0.0.1/fx", "'mysql' is not a supported store backend"),
    ],
)
def test_bad_options_are_refused_with_their_name(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    app = FxService()
    trait = {
        "FX_BROKER_PORT": "broker_port",
        "FX_SINGLE_USER": "single_user",
        "FX_READ_THREADS": "read_threads",
        "FX_DB_URL": "db_url",
    }[env]
    with pytest.raises(TraitError, match=message):
        getattr(app, trait)


class TestPersonalServer:
    """With jupyter_server's stock identity provider every token request is one person."""

    @pytest.fixture
    def jp_server_config(self, tmp_path: Path) -> Config:
        return Config(
            {
                "ServerApp": {"jpserver_extensions": {"fx_jupyter.server_ext": True}},
                "FxService": {"db_url": f"sqlite:///{tmp_path / 'fx.db'}"},
            }
        )

    async def test_records_belong_to_the_server_user(self, jp_fetch, jp_serverapp):
        service = jp_serverapp.extension_manager.extension_points["fx"].app
        assert service.single_user_mode is True
        body = json.dumps({"name": "laptop", "public_key": keypair()[0].decode()})
        await jp_fetch("fx", "api", "v2", "endpoints", method="POST", body=body)
        # A new request is a new "anonymous" user for jupyter_server, but the same owner for fx.
        listing = json.loads((await jp_fetch("fx", "api", "v2", "endpoints")).body)
        assert [e["name"] for e in listing["endpoints"]] == ["laptop"]
        assert service.registry.owned(service.single_owner)


def _request(port: int, token: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/fx/api/v2/{path}",
        data=data,
        method=method,
        headers={"Authorization": f"token {token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _start(root: Path, port: int, token: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        JUPYTER_DATA_DIR=str(root / "data"),
        JUPYTER_CONFIG_DIR=str(root / "config"),
        JUPYTER_RUNTIME_DIR=str(root / "runtime"),
    )
    env.pop("FX_DB_URL", None)
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "fx-service"),
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
        ],
        env=env,
        stdout=(root / "service.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((root / "service.log").read_text())
        try:
            _request(port, token, "GET", "version")
            return proc
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    _stop(proc)
    raise TimeoutError((root / "service.log").read_text())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_fx_service_runs_alone_and_comes_back_on_the_same_broker_address(tmp_path):
    token = "standalone-token"
    key = keypair()[0].decode()
    port = free_port()
    proc = _start(tmp_path, port, token)
    try:
        first = _request(port, token, "POST", "endpoints", {"name": "ep", "public_key": key})
        with pytest.raises(urllib.error.HTTPError) as info:  # no JupyterLab or other extension
            urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10)
        assert info.value.code == 404
    finally:
        _stop(proc)
    assert proc.returncode == 0
    assert (tmp_path / "data" / "fx" / "fx.db").exists()
    proc = _start(tmp_path, port, token)
    try:
        again = _request(port, token, "POST", "endpoints", {"name": "ep", "public_key": key})
        assert again == first  # same id, same broker URL (port) and server key
    finally:
        _stop(proc)


@pytest.mark.parametrize("fx_config", [{"db_url": "sqlite:////proc/no-such-dir/fx.db"}])
async def test_a_store_that_cannot_open_answers_503_with_the_reason(api, fx_config):
    status, body = await api("GET", "version")
    assert status == 503 and body["error"] == "unavailable"
    assert "could not start" in body["message"] and "/proc/no-such-dir" in body["message"]
