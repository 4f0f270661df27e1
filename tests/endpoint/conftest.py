"""Fixtures for the endpoint's tests: an isolated FX_HOME, a broker peer, an engine driver.

Every daemon a test starts is killed (with its workers) when the test ends, whatever happened.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

sys.path.insert(0, str(Path(__file__).parent))

from peer import PeerBroker

from fx_endpoint import serialize
from fx_endpoint.config import parse_config, render_template
from fx_endpoint.engines.base import Task, TaskOutcome
from fx_endpoint.engines.process import ProcessEngine
from fx_endpoint.paths import EndpointDir
from fx_endpoint.registration import EndpointInfo

#: A service URL where nothing listens (port 9 is "discard", closed on loopback).
DEAD_SERVICE = "http://127.0.0.1:9/fx/api/v2/"


def kill_daemons(root: Path) -> None:
    """SIGKILL every daemon (and its process group) whose pid file is under ``root``."""
    for pid_file in root.glob("endpoints/*/daemon.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue


@pytest.fixture
def fx_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """FX_HOME in a temporary directory, no token, no Jupyter server to find."""
    home = tmp_path / "fx"
    runtime = tmp_path / "jupyter-runtime"
    runtime.mkdir()
    monkeypatch.setenv("FX_HOME", str(home))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("FX_TOKEN", raising=False)
    monkeypatch.delenv("FX_SERVICE_URL", raising=False)
    yield home
    kill_daemons(home)


@pytest.fixture
def peer() -> Iterator[PeerBroker]:
    broker = PeerBroker()
    yield broker
    broker.close()


def make_endpoint(
    name: str, broker: PeerBroker | None = None, config: str | None = None, allow: bool = True
) -> EndpointDir:
    """An endpoint directory as `configure` leaves it, registered with ``broker`` if given."""
    ep = EndpointDir.named(name)
    ep.path.mkdir(parents=True, mode=0o700)
    ep.config_file.write_text(config or render_template(name, DEAD_SERVICE, 2))
    info = EndpointInfo.new(name, DEAD_SERVICE)
    if broker is not None:
        info.endpoint_id = f"id-{name}"
        info.broker_url = broker.url
        info.server_key = broker.public_key.decode()
        if allow:
            broker.allowed.add(info.public_key.encode())
    info.save(ep.endpoint_file)
    return ep


# --- payloads -----------------------------------------------------------------------------


def fn_payload(fn: Any) -> bytes:
    return serialize.serialize_function(fn)


def args_payload(*args: Any, **kwargs: Any) -> bytes:
    return serialize.serialize_args(args, kwargs)


# --- driving an engine without a daemon -----------------------------------------------------


class EngineDriver:
    """Runs a real ProcessEngine in this process: the poll loop the daemon would run."""

    def __init__(self, engine_dir: Path, config_text: str) -> None:
        self.running: list[str] = []
        self.outcomes: dict[str, TaskOutcome] = {}
        engine_dir.mkdir(parents=True, exist_ok=True)
        self.config = parse_config(config_text)
        self.engine = ProcessEngine(self.config, EndpointDir("engine", engine_dir), self)
        self.engine.start()
        self.poller = zmq.Poller()
        for item in self.engine.poll_items():
            self.poller.register(item, zmq.POLLIN)
        self.run_until(lambda: self.engine.ready)

    # EngineListener
    def task_running(self, task_id: str, ts: float) -> None:
        self.running.append(task_id)

    def task_finished(self, outcome: TaskOutcome) -> None:
        assert outcome.task_id not in self.outcomes, f"{outcome.task_id} reported twice"
        self.outcomes[outcome.task_id] = outcome

    def turn(self, max_wait: float = 0.05) -> None:
        timeout = self.engine.next_timeout(time.time())
        wait = max_wait if timeout is None else min(max_wait, timeout)
        events = dict(self.poller.poll(int(wait * 1000)))
        self.engine.process(set(events), time.time())

    def run_until(self, condition: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"engine did not get there in {timeout} s: {self.engine.status()}"
                )
            self.turn()

    def submit(
        self,
        task_id: str,
        fn: Any,
        *args: Any,
        walltime: float | None = None,
        function_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        payload = fn if isinstance(fn, bytes) else fn_payload(fn)
        fid = function_id or getattr(fn, "__name__", "raw")
        self.engine.submit([Task(task_id, fid, payload, args_payload(*args, **kwargs), walltime)])

    def submit_raw(self, task_id: str, function_id: str, function: bytes, args: bytes) -> None:
        """A task with payloads exactly as given (malformed ones included)."""
        self.engine.submit([Task(task_id, function_id, function, args)])

    def wait(self, *task_ids: str, timeout: float = 20.0) -> list[TaskOutcome]:
        self.run_until(lambda: all(t in self.outcomes for t in task_ids), timeout)
        return [self.outcomes[t] for t in task_ids]

    def worker_pids(self) -> list[int]:
        return self.engine.status()["worker_pids"]

    def stop(self) -> None:
        self.engine.stop(timeout=2)


@pytest.fixture
def engine_factory(tmp_path: Path) -> Iterator[Any]:
    drivers: list[EngineDriver] = []

    def make(config_extra: str = "", max_workers: int = 2) -> EngineDriver:
        text = (
            f"service_url: {DEAD_SERVICE}\nengine:\n  max_workers: {max_workers}\n" + config_extra
        )
        driver = EngineDriver(tmp_path / f"engine{len(drivers)}", text)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.stop()
