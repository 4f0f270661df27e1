"""`fx-endpoint` commands: what they print, their exit codes, and the four states."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import DEAD_SERVICE, make_endpoint
from peer import PeerBroker
from typer.testing import CliRunner

from fx_endpoint.cli import app
from fx_endpoint.paths import EndpointDir, EndpointState

runner = CliRunner()
COMMANDS = ["configure", "start", "stop", "restart", "list", "status", "logs", "delete"]


def fx(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def start_running(peer: PeerBroker, *args: str):
    """`fx-endpoint start` (or the given command) while the peer welcomes the daemon."""
    result: dict = {}
    command = args or ("start",)
    thread = threading.Thread(target=lambda: result.setdefault("r", fx(*command)))
    thread.start()
    peer.welcome()
    thread.join(60)
    assert result["r"].exit_code == 0, result["r"].output
    return result["r"]


def list_rows() -> dict[str, list[str]]:
    out = fx("list")
    assert out.exit_code == 0
    lines = out.stdout.strip().splitlines()
    assert lines[0].split() == ["NAME", "STATE", "ENDPOINT", "ID"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = fx(command, "--help")
    assert result.exit_code == 0
    assert "Usage: fx-endpoint" in result.stdout and command in result.stdout


def test_top_level_help_version_and_completion():
    result = fx("--help")
    assert result.exit_code == 0
    assert "--install-completion" in result.stdout
    for command in COMMANDS:
        assert command in result.stdout
    assert fx("--version").stdout.startswith("fx-endpoint ")


def test_configure_without_a_service_writes_the_config_and_says_so(fx_home):
    result = fx("configure", "--service-url", DEAD_SERVICE)
    assert result.exit_code == 0, result.output
    ep = EndpointDir.named("default")
    assert ep.config_file.read_text().startswith("# fx endpoint configuration (default).")
    assert f"service_url: {DEAD_SERVICE}" in ep.config_file.read_text()
    assert "Not registered yet: no token" in result.stdout
    assert "`fx-endpoint start default` registers it" in result.stdout
    info = json.loads(ep.endpoint_file.read_text())
    assert info["endpoint_id"] is None and len(info["public_key"]) == 40
    assert stat.S_IMODE(ep.endpoint_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(ep.path.stat().st_mode) == 0o700
    assert list_rows() == {"default": ["Initialized", "-"]}


def test_configure_with_a_token_but_no_service(fx_home, monkeypatch):
    monkeypatch.setenv("FX_TOKEN", "secret")
    monkeypatch.setenv("FX_SERVICE_URL", DEAD_SERVICE)
    result = fx("configure", "lab")
    assert result.exit_code == 0, result.output
    assert f"cannot reach the fx service at {DEAD_SERVICE}" in result.stdout


def test_configure_keeps_an_existing_config_and_updates_its_url(fx_home):
    fx("configure", "--service-url", DEAD_SERVICE, "--max-workers", "3")
    ep = EndpointDir.named("default")
    ep.config_file.write_text(ep.config_file.read_text() + "# my note\n")
    result = fx("configure", "--service-url", "http://127.0.0.1:10/fx/api/v2")
    assert result.exit_code == 0, result.output
    text = ep.config_file.read_text()
    assert "# my note" in text and "max_workers: 3" in text
    assert "service_url: http://127.0.0.1:10/fx/api/v2/" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["configure", "../evil", "--service-url", DEAD_SERVICE],
            "invalid endpoint name '../evil'",
        ),
        (["configure", "--service-url", "localhost:8888"], "--service-url: not an http(s) URL"),
        (["configure"], "which fx service should this endpoint serve? Pass --service-url"),
        (
            ["configure", "--max-workers", "0", "--service-url", DEAD_SERVICE],
            "Invalid value for '--max-workers'",
        ),
    ],
)
def test_configure_refuses_bad_input_and_changes_nothing(fx_home, args, message):
    result = fx(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert not (fx_home / "endpoints").exists() or not list((fx_home / "endpoints").iterdir())


def test_configure_refuses_an_invalid_existing_config(fx_home):
    fx("configure", "--service-url", DEAD_SERVICE)
    ep = EndpointDir.named("default")
    ep.config_file.write_text(f"service_url: {DEAD_SERVICE}\nengine:\n  max_wrkers: 2\n")
    before = ep.endpoint_file.read_text()
    result = fx("configure")
    assert result.exit_code == 1
    assert (
        "config.yaml:3: engine.max_wrkers: unknown key; did you mean 'max_workers'?"
        in result.stderr
    )
    assert ep.endpoint_file.read_text() == before


def test_start_refuses_a_bad_config_with_its_line(fx_home, peer):
    ep = make_endpoint("default", peer)
    lines = ep.config_file.read_text().splitlines()
    line = lines.index("heartbeat_period: 5") + 1
    lines[line - 1] = "heartbeat_period: soon"
    ep.config_file.write_text("\n".join(lines))
    result = fx("start")
    assert result.exit_code == 1
    assert (
        f"{ep.config_file}:{line}: heartbeat_period: must be a number of seconds > 0, got 'soon'"
    ) in result.stderr
    assert EndpointDir.named("default").state() is EndpointState.INITIALIZED


def test_start_of_an_unknown_or_unregistered_endpoint(fx_home):
    result = fx("start", "ghost")
    assert result.exit_code == 1
    assert (
        "there is no endpoint named 'ghost'; create it with `fx-endpoint configure ghost`"
        in result.stderr
    )
    fx("configure", "--service-url", DEAD_SERVICE)
    result = fx("start")
    assert result.exit_code == 1
    assert "is not registered with" in result.stderr and "FX_TOKEN" in result.stderr


def test_start_with_an_unreachable_service_fails_in_the_foreground(fx_home, monkeypatch):
    fx("configure", "--service-url", DEAD_SERVICE)
    monkeypatch.setenv("FX_TOKEN", "secret")
    result = fx("start")
    assert result.exit_code == 1
    assert f"Error: cannot reach the fx service at {DEAD_SERVICE}" in result.stderr
    assert EndpointDir.named("default").state() is EndpointState.INITIALIZED


def test_process_only_key_under_parsl_is_refused_clearly(fx_home, peer):
    ep = make_endpoint("default", peer)
    ep.config_file.write_text(ep.config_file.read_text().replace("type: process", "type: parsl"))
    result = fx("start")
    assert result.exit_code == 1
    assert (
        "engine.max_workers: applies only to engine type process; for parsl set max_workers_per_node"
        in result.stderr
    )


def test_four_states_second_start_status_and_logs(fx_home, peer):
    ep = make_endpoint("default", peer)
    assert list_rows() == {"default": ["Initialized", "id-default"]}

    started = start_running(peer)
    pid = ep.running_pid()
    assert f"Endpoint default is running (pid {pid}), id id-default." in started.stdout
    assert list_rows() == {"default": ["Running", "id-default"]}

    again = fx("start")
    assert again.exit_code == 1
    assert f"endpoint default is already running with pid {pid}" in again.stderr

    refused = fx("configure")
    assert refused.exit_code == 1 and f"is running (pid {pid}); stop it first" in refused.stderr

    status = fx("status")
    assert status.exit_code == 0
    assert f"Endpoint default: Running (pid {pid})" in status.stdout
    assert "workers:  2 of 2 up" in status.stdout and "0 queued, 0 running" in status.stdout
    as_json = json.loads(fx("status", "--json").stdout)
    assert as_json["daemon"]["connected"] is True and as_json["pid"] == pid

    logs = fx("logs")
    assert logs.exit_code == 0 and "endpoint default is ready" in logs.stdout
    assert fx("logs", "-n", "1").stdout.count("\n") == 1

    stopped = fx("stop")
    assert stopped.stdout == f"Stopped endpoint default (pid {pid}).\n"
    assert list_rows() == {"default": ["Stopped", "id-default"]}
    assert fx("stop").stdout == "Endpoint default is not running.\n"
    assert "Endpoint default: Stopped" in fx("status").stdout

    start_running(peer)
    pid = ep.running_pid()
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while ep.running_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list_rows() == {"default": ["Disconnected", "id-default"]}

    restarted = start_running(peer)
    assert "Cleaned up after the previous daemon of default" in restarted.stdout
    assert list_rows() == {"default": ["Running", "id-default"]}
    old = ep.running_pid()
    restarted = start_running(peer, "restart", "default")
    assert restarted.stdout.startswith(f"Stopped endpoint default (pid {old}).\n")
    assert ep.running_pid() not in (None, old)
    fx("stop")


def test_logs_follow(fx_home, peer):
    ep = make_endpoint("default", peer)
    ep.log_file.write_text("first line\n")
    env = dict(os.environ)
    follower = subprocess.Popen(
        [sys.executable, "-m", "fx_endpoint.cli", "logs", "-f"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout.readline() == "first line\n"
        with ep.log_file.open("a") as f:
            f.write("second line\n")
        assert follower.stdout.readline() == "second line\n"
        ep.log_file.rename(ep.log_file.with_suffix(".log.1"))  # rotation
        ep.log_file.write_text("after rotation\n")
        assert follower.stdout.readline() == "after rotation\n"
    finally:
        follower.kill()
        follower.wait(10)


def test_logs_of_a_new_endpoint(fx_home):
    fx("configure", "--service-url", DEAD_SERVICE)
    result = fx("logs")
    assert result.exit_code == 0 and "No log yet" in result.stdout
    assert fx("logs", "ghost").exit_code == 1


def test_delete(fx_home, peer):
    ep = make_endpoint("default", peer)
    start_running(peer)
    pid = ep.running_pid()
    aborted = fx("delete", input="n\n")
    assert aborted.exit_code == 1 and ep.path.exists()
    result = fx("delete", "--yes")
    assert result.exit_code == 0, result.output
    assert f"Stopped endpoint default (pid {pid})." in result.stdout
    assert "Warning: no token" in result.stdout
    assert f"Removed {ep.path}." in result.stdout
    assert not ep.path.exists()
    assert fx("list").stdout.startswith("No endpoints yet")
    missing = fx("delete", "--yes")
    assert missing.exit_code == 1 and "there is no endpoint named 'default'" in missing.stderr


def test_list_shows_several_endpoints_sorted(fx_home):
    for name in ("zeta", "alpha"):
        fx("configure", name, "--service-url", DEAD_SERVICE)
    (fx_home / "endpoints" / "not-configured").mkdir()
    assert list(list_rows()) == ["alpha", "zeta"]


def test_the_console_script_runs(fx_home):
    script = Path(sys.executable).parent / "fx-endpoint"
    result = subprocess.run(
        [str(script), "list"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0 and "No endpoints yet" in result.stdout


def test_configure_without_a_token_keeps_an_existing_registration(fx_home, peer):
    ep = make_endpoint("default", peer)
    before = ep.endpoint_file.read_text()
    result = fx("configure")
    assert result.exit_code == 0, result.output
    assert "Kept the existing registration (id id-default): no token for" in result.stdout
    assert ep.endpoint_file.read_text() == before
