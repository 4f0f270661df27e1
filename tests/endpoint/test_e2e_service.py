"""`fx-endpoint` against the real fx service in a real Jupyter server process.

One server for the module (``fx_jupyter.testing.FxStack``: isolated Jupyter directories, a free
port, a token); each test has its own FX_HOME and endpoint names, and its daemons are killed at
the end whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
import zmq
from conftest import kill_daemons

from fx_jupyter.testing import FxStack

cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLI = str(Path(sys.executable).parent / "fx-endpoint")


def triple(x):
    print("tripling")
    return 3 * x


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FxStack]:
    stack = FxStack(root=tmp_path_factory.mktemp("service"))
    stack.start_server()
    yield stack
    stack.teardown()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "fx"
    yield home
    kill_daemons(home)


def cli(
    stack: FxStack,
    home: Path,
    *args: str,
    token: bool = True,
    runtime: bool = True,
    url: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the real console script. Without ``token``/``runtime``/``url`` the command gets no
    FX_TOKEN, no Jupyter runtime files to find one in, no FX_SERVICE_URL."""
    env = stack.env
    env["FX_HOME"] = str(home)
    if not token:
        del env["FX_TOKEN"]
    if not runtime:
        env["JUPYTER_RUNTIME_DIR"] = str(home.parent / "no-runtime")
    if not url:
        del env["FX_SERVICE_URL"]
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, check=False, timeout=90
    )


def endpoint_info(home: Path, name: str) -> dict:
    return json.loads((home / "endpoints" / name / "endpoint.json").read_text())


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def run_task(stack: FxStack, endpoint_id: str, x: int) -> int:
    client = stack.client()
    function_id = client.register_function(triple)
    task_id = client.run(x, endpoint_id=endpoint_id, function_id=function_id)
    deadline = time.monotonic() + 30
    while True:
        task = client.get_task(task_id)
        if not task["pending"]:
            return client.get_result(task_id)
        assert time.monotonic() < deadline, task
        time.sleep(0.05)


def test_configure_from_runtime_files_start_run_stop(stack, home):
    # No FX_TOKEN and no URL: both come from the Jupyter server's runtime file.
    configured = cli(stack, home, "configure", "lab", token=False, url=False)
    assert configured.returncode == 0, configured.stderr
    info = endpoint_info(home, "lab")
    assert info["service_url"] == stack.service_url
    assert f"Registered endpoint lab with {stack.service_url}: id {info['endpoint_id']}" in (
        configured.stdout
    )
    assert info["broker_url"].startswith("tcp://127.0.0.1:")

    started = cli(stack, home, "start", "lab", token=False)
    assert started.returncode == 0, started.stderr
    assert cli(stack, home, "list").stdout.split("\n")[1].split() == [
        "lab",
        "Running",
        info["endpoint_id"],
    ]
    status = stack.get(f"endpoints/{info['endpoint_id']}/status")
    assert status["status"] == "online" and status["name"] == "lab"

    assert run_task(stack, info["endpoint_id"], 14) == 42

    stopped = cli(stack, home, "stop", "lab")
    assert stopped.returncode == 0 and stopped.stdout.startswith("Stopped endpoint lab")
    wait_for(lambda: stack.get(f"endpoints/{info['endpoint_id']}/status")["status"] == "offline")
    assert cli(stack, home, "list").stdout.split("\n")[1].split()[1] == "Stopped"


def test_registering_again_keeps_the_id(stack, home):
    assert cli(stack, home, "configure", "again").returncode == 0
    first = endpoint_info(home, "again")
    assert cli(stack, home, "configure", "again").returncode == 0
    second = endpoint_info(home, "again")
    assert second["endpoint_id"] == first["endpoint_id"]
    assert second["public_key"] != first["public_key"]


def test_tampered_credential_is_refused_in_the_foreground(stack, home):
    assert cli(stack, home, "configure", "tampered").returncode == 0
    path = home / "endpoints" / "tampered" / "endpoint.json"
    info = json.loads(path.read_text())
    public, secret = zmq.curve_keypair()
    info.update(public_key=public.decode(), secret_key=secret.decode())
    path.write_text(json.dumps(info))
    started = cli(stack, home, "start", "tampered", "--timeout", "10", token=False, runtime=False)
    assert started.returncode == 1
    assert started.stderr.strip() == (
        "Error: credential refused by the service; run `fx-endpoint configure tampered` again"
    )
    assert cli(stack, home, "list").stdout.split("\n")[1].split()[1] == "Initialized"
    # What the message says to do fixes it.
    assert cli(stack, home, "configure", "tampered").returncode == 0
    restarted = cli(stack, home, "start", "tampered")
    assert restarted.returncode == 0, restarted.stderr
    assert cli(stack, home, "stop", "tampered").returncode == 0


def test_start_refreshes_the_registration(stack, home):
    # Configured while the token was missing: `start` registers once it has one.
    configured = cli(stack, home, "configure", "late", token=False, runtime=False)
    assert configured.returncode == 0 and "Not registered yet" in configured.stdout
    assert endpoint_info(home, "late")["endpoint_id"] is None
    started = cli(stack, home, "start", "late")
    assert started.returncode == 0, started.stderr
    endpoint_id = endpoint_info(home, "late")["endpoint_id"]
    assert endpoint_id and run_task(stack, endpoint_id, 2) == 6
    assert cli(stack, home, "stop", "late").returncode == 0


def test_wrong_token_is_refused(stack, home):
    env_token = stack.token
    stack.token = "wrong"
    try:
        result = cli(stack, home, "configure", "badtoken", runtime=False)
    finally:
        stack.token = env_token
    assert result.returncode == 1
    assert "the service refused the token" in result.stderr


def test_delete_removes_it_on_the_service(stack, home):
    assert cli(stack, home, "configure", "doomed").returncode == 0
    endpoint_id = endpoint_info(home, "doomed")["endpoint_id"]
    assert cli(stack, home, "start", "doomed").returncode == 0
    deleted = cli(stack, home, "delete", "doomed", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert f"Deleted endpoint {endpoint_id} on {stack.service_url}." in deleted.stdout
    assert not (home / "endpoints" / "doomed").exists()
    assert endpoint_id not in [e["endpoint_id"] for e in stack.get("endpoints")["endpoints"]]


def test_endpoint_reconnects_after_the_service_restarts(stack, home):
    assert cli(stack, home, "configure", "survivor").returncode == 0
    endpoint_id = endpoint_info(home, "survivor")["endpoint_id"]
    assert cli(stack, home, "start", "survivor").returncode == 0
    stack.kill_server()
    stack.start_server()
    assert run_task(stack, endpoint_id, 5) == 15
    pid = int((home / "endpoints" / "survivor" / "daemon.pid").read_text())
    os.kill(pid, 0)  # the same daemon, reconnected by itself
    assert cli(stack, home, "stop", "survivor").returncode == 0
