"""A running fx deployment for tests and benchmarks: a Jupyter server process with the fx
service, and endpoints started through the real `fx-endpoint` CLI.

Every process is started with a timeout and stopped (or killed) on teardown; ports come from the
OS. The test suite's ``fx_stack`` fixture and ``bench/`` use it; so can users testing their own
fx code.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
START_TIMEOUT = 60


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FxStack:
    """A Jupyter server with the fx service in its own directories, plus endpoints."""

    root: Path
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    server: subprocess.Popen[bytes] | None = None
    endpoint_name: str = "test"
    endpoint_id: str = ""
    extra_server_args: list[str] = field(default_factory=list)
    #: Store URL (``FX_DB_URL``); None: SQLite in the stack's Jupyter data dir.
    db_url: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def service_url(self) -> str:
        return f"{self.base_url}fx/api/v2/"

    @property
    def fx_home(self) -> Path:
        return self.root / "fxhome"

    @property
    def env(self) -> dict[str, str]:
        """Environment for every process of this stack: isolated Jupyter dirs, FX_* set."""
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(self.root / "config"),
            JUPYTER_DATA_DIR=str(self.root / "data"),
            JUPYTER_RUNTIME_DIR=str(self.root / "runtime"),
            FX_HOME=str(self.fx_home),
            FX_SERVICE_URL=self.service_url,
            FX_TOKEN=self.token,
            FX_NO_WIDGETS="1",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        )
        env.pop("FX_DB_URL", None)
        if self.db_url:
            env["FX_DB_URL"] = self.db_url
        return env

    # --- the Jupyter server --------------------------------------------------------------
    def start_server(self) -> None:
        """Start (or restart, on the same store and port) the Jupyter server; wait until fx answers."""
        log = open(self.root / "server.log", "ab")
        self.server = subprocess.Popen(
            [
                str(BIN / "jupyter-server"),
                "--allow-root",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}",
                *self.extra_server_args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"jupyter server exited: {self.server_log()[-3000:]}")
            try:
                self.get("version")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise TimeoutError(f"fx service did not answer in {START_TIMEOUT}s: {self.server_log()[-3000:]}")

    def kill_server(self, sig: int = signal.SIGKILL) -> None:
        """Kill the server process (SIGKILL by default: a crash) and wait for it."""
        if self.server and self.server.poll() is None:
            os.killpg(self.server.pid, sig)
            self.server.wait(timeout=30)

    def stop_server(self) -> None:
        """Stop the server cleanly, falling back to SIGKILL."""
        if not self.server or self.server.poll() is not None:
            return
        self.server.send_signal(signal.SIGTERM)
        try:
            self.server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill_server()

    def server_log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")

    # --- HTTP --------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A raw authenticated request to the fx API: (status, parsed JSON body)."""
        return self.request_url(method, self.service_url + path, body)

    def request_url(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        """An authenticated JSON request to any URL of this server (fx's or Jupyter's own
        APIs): (status, parsed JSON body, or the text of an error that is not JSON)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise urllib.error.URLError(f"GET {path}: {status} {body}")
        return body

    # --- endpoints --------------------------------------------------------------------------
    def fx_endpoint(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """Run the real `fx-endpoint` CLI with this stack's environment."""
        proc = subprocess.run(
            [str(BIN / "fx-endpoint"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"fx-endpoint {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def configure_endpoint(self, name: str, max_workers: int = 2, **options: Any) -> str:
        """Configure (and register) an endpoint; returns its id."""
        self.fx_endpoint("configure", name, "--service-url", self.service_url)
        config = self.fx_home / "endpoints" / name / "config.yaml"
        import yaml

        data = yaml.safe_load(config.read_text())
        data.setdefault("engine", {})["max_workers"] = max_workers
        data.update(options)
        config.write_text(yaml.safe_dump(data))
        return json.loads((config.parent / "endpoint.json").read_text())["endpoint_id"]

    def endpoint_pid(self, name: str) -> int | None:
        pid_file = self.fx_home / "endpoints" / name / "daemon.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill_endpoint(self, name: str) -> None:
        """SIGKILL an endpoint daemon and its whole process group (workers included)."""
        pid = self.endpoint_pid(name)
        if pid is None:
            return
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def client(self):
        from fx_jupyter import Client

        return Client(service_url=self.service_url, token=self.token)

    def teardown(self) -> None:
        """Stop every endpoint (CLI, then SIGKILL of leftovers) and the server."""
        endpoints = self.fx_home / "endpoints"
        if endpoints.is_dir():
            for ep in endpoints.iterdir():
                try:
                    self.fx_endpoint("stop", ep.name, check=False, timeout=30)
                except subprocess.TimeoutExpired:
                    pass
                self.kill_endpoint(ep.name)
        self.stop_server()


def start_stack(
    root: Path, endpoint: str | None = "test", max_workers: int = 2, db_url: str | None = None
) -> FxStack:
    """A server (its store at ``db_url``, default SQLite) and, unless ``endpoint`` is None, one
    started endpoint."""
    stack = FxStack(root=root, db_url=db_url)
    root.mkdir(parents=True, exist_ok=True)
    try:
        stack.start_server()
        if endpoint:
            stack.endpoint_name = endpoint
            stack.endpoint_id = stack.configure_endpoint(endpoint, max_workers=max_workers)
            stack.fx_endpoint("start", endpoint)
    except BaseException:
        stack.teardown()
        raise
    return stack
