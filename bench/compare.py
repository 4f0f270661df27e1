"""fx side by side with its peers, on this machine, in one run: the same no-op workload with 2
workers each, figures as medians of ``--runs`` runs, printed as one markdown table.

Peers (bench/peers/<peer>.py, each run in its own process so that a crash or a hang of one is a
row that says so, not the end of the run): concurrent.futures.ProcessPoolExecutor, a raw pyzmq
DEALER/ROUTER pool with cloudpickle, Parsl's HighThroughputExecutor (through a python_app and
directly), Globus Compute's endpoint engines (driven locally, no cloud hop), dask.distributed's
LocalCluster and ipyparallel's LoadBalancedView. They are installed by this script into
``.venv-bench`` from bench/requirements-peers.txt, never into the project's venv; a first run
installs, later runs reuse it until the requirements file changes. fx runs in ``.venv``.

Runs are interleaved (run 1 of every system, then run 2...) so that the noise of a shared
machine falls on all of them alike. Every process a system starts carries a marker in its
environment; whatever is left of it after its run (or on a timeout, or Ctrl-C) is killed.

    .venv/bin/python bench/compare.py [--runs 3] [--quick] [--only fx,dask]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / "peers"
REQUIREMENTS = BENCH / "requirements-peers.txt"
PEER_VENV = ROOT / ".venv-bench"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
MARKER = "FX_BENCH_RUN"
INSTALL_TIMEOUT = 1800
#: Seconds a system gets to stop on SIGTERM before its processes are killed.
GRACE = 20


@dataclass(frozen=True)
class Peer:
    """One row of the table: which script runs it, in which venv, and how to read its figures."""

    key: str
    label: str  # "{version}" is filled in from what the peer reports, else with ``product``
    product: str
    script: str
    variant: str = ""
    in_project_venv: bool = False
    slow: bool = False  # well under 1,000 tasks/s: its rates are measured over --slow-tasks
    no_service: str = "—"  # the service cell when the peer has no service process


PEER_TABLE = [
    Peer(
        "fx",
        "**{version}**: SDK → Jupyter service + SQLite store → endpoint",
        "fx-jupyter",
        "fx.py",
        in_project_venv=True,
    ),
    Peer(
        "process-pool",
        "concurrent.futures.ProcessPoolExecutor(2) ({version})",
        "Python",
        "process_pool.py",
        no_service="— (none)",
    ),
    Peer(
        "raw-zmq",
        "raw DEALER/ROUTER pool, 2 workers ({version})",
        "pyzmq",
        "raw_zmq.py",
        no_service="— (none)",
    ),
    Peer(
        "parsl-app",
        "{version} HTEX, local provider: python_app",
        "Parsl",
        "parsl_htex.py",
        variant="app",
        slow=True,
    ),
    Peer(
        "parsl-htex",
        "{version} HTEX, local provider: HTEX.submit directly",
        "Parsl",
        "parsl_htex.py",
        variant="executor",
        slow=True,
    ),
    Peer(
        "gc-engine",
        "{version}: GlobusComputeEngine, no cloud hop",
        "globus-compute-endpoint",
        "globus_compute.py",
        variant="gce",
        slow=True,
    ),
    Peer(
        "gc-processpool",
        "{version}: ProcessPoolEngine, no cloud hop",
        "globus-compute-endpoint",
        "globus_compute.py",
        variant="processpool",
        slow=True,
        no_service="— (none)",
    ),
    Peer(
        "dask",
        "{version} LocalCluster (2 workers × 1 thread)",
        "dask.distributed",
        "dask_local.py",
        slow=True,
        no_service="— (scheduler in client)",
    ),
    Peer(
        "ipyparallel",
        "{version} LoadBalancedView (2 engines)",
        "ipyparallel",
        "ipyparallel_lb.py",
        slow=True,
    ),
]


# --- the peers' venv -------------------------------------------------------------------------
def ensure_peer_venv() -> Path:
    """The peers' venv, created and filled from the requirements file unless its stamp says it
    already holds exactly that file's packages. Returns its python."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp = PEER_VENV / f".installed-{digest}"
    python = PEER_VENV / "bin" / "python"
    if stamp.exists():
        return python
    print(f"Installing the peers into {PEER_VENV.name} (first run only) ...", file=sys.stderr)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True, timeout=300)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, timeout=INSTALL_TIMEOUT)
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True, timeout=INSTALL_TIMEOUT)
    for old in PEER_VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return python


# --- running one system, and cleaning up after it ---------------------------------------------
def marked_pids(token: str) -> list[int]:
    """Processes whose environment carries ``MARKER=token``: all that one run started."""
    needle = f"{MARKER}={token}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def kill_marked(token: str) -> int:
    """SIGTERM what is left of one run, then SIGKILL what outlives a few seconds; returns how
    many processes were left."""
    leftovers = marked_pids(token)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and marked_pids(token):
        time.sleep(0.2)
    for pid in marked_pids(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(leftovers)


def stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM a system's process group (its script cleans up on it), SIGKILL after GRACE."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=GRACE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def run_peer(
    peer: Peer, python: Path, options: list[str], timeout: float, log_dir: Path
) -> dict[str, Any]:
    """One run of one system: its figures, or ``{"failed": why}``. Nothing it started survives."""
    token = uuid.uuid4().hex
    env = dict(os.environ, **{MARKER: token, "PYTHONUNBUFFERED": "1"})
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    cmd = [str(python), str(PEERS / peer.script), *options]
    if peer.variant:
        cmd += ["--variant", peer.variant]
    log = log_dir / f"{peer.key}-{token[:8]}.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
            cwd=log_dir,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            return {"failed": f"timed out after {timeout:.0f} s"}
        finally:
            stop_group(proc)
            left = kill_marked(token)
            if left:
                print(f"  ({peer.key}: killed {left} leftover process(es))", file=sys.stderr)
    for line in out.splitlines():
        if line.startswith("FIGURES "):
            return json.loads(line[len("FIGURES ") :])
    tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return {"failed": f"exited {proc.returncode}: {tail[-1] if tail else 'no output'} (log: {log})"}


# --- the table ------------------------------------------------------------------------------------
def median_of(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for figures in runs:
        value: Any = figures
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            values.append(value)
    return statistics.median(values) if values else None


def first_error(runs: list[dict[str, Any]], key: str) -> str:
    for figures in runs:
        if key + "_error" in figures:
            return f"fails: {figures[key + '_error']}"
    return "—"


def rate_cell(runs: list[dict[str, Any]], key: str) -> str:
    value = median_of(runs, key)
    return f"{value:,.0f}" if value is not None else first_error(runs, key)


def row(peer: Peer, runs: list[dict[str, Any]]) -> str:
    """The markdown row of one system from its runs (the failed ones say why when all failed)."""
    ok = [r for r in runs if "failed" not in r]
    if not ok:
        label = peer.label.format(version=peer.product)
        return f"| {label} | did not run: {runs[0]['failed']} | | | | | |"
    label = peer.label.format(version=ok[0].get("version", peer.product))
    if len(ok) < len(runs):
        why = next(r for r in runs if "failed" in r)["failed"]
        label += f" ({len(ok)} of {len(runs)} runs; the others: {why})"

    if "batch" in ok[0] or "batch_error" in ok[0]:
        batch = f"{ok[0].get('batch_name', 'batch')} {rate_cell(ok, 'batch')}"
        if "map" in ok[0] or "map_error" in ok[0]:
            batch += f"; Executor.map {rate_cell(ok, 'map')}"
    else:
        batch = "— (no bulk call)"

    p50, p99 = median_of(ok, "round_trip", "p50"), median_of(ok, "round_trip", "p99")
    latency = (
        f"{p50:.2f} / {p99:.2f}"
        if p50 is not None and p99 is not None
        else first_error(ok, "round_trip")
    )
    large = median_of(ok, "large")
    large_cell = f"{large:,.0f}" if large is not None else first_error(ok, "large")

    service = median_of(ok, "rss_service")
    service_cell = f"{service:,.0f}" if service is not None else peer.no_service
    for name in ok[0].get("rss_extra", {}):
        extra = median_of(ok, "rss_extra", name)
        if extra is not None:
            service_cell += f" ({name} {extra:,.0f})"
    client = median_of(ok, "rss_client")
    client_cell = f"{client:,.0f}" if client is not None else "—"
    return (
        f"| {label} | {rate_cell(ok, 'one_by_one')} | {batch} | {latency} | {large_cell} "
        f"| {service_cell} | {client_cell} |"
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per system; the table shows medians (3)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 run, small counts (a few minutes)"
    )
    parser.add_argument(
        "--tasks", type=int, default=None, help="tasks per throughput figure (20000)"
    )
    parser.add_argument(
        "--slow-tasks",
        type=int,
        default=None,
        help="tasks per throughput figure for peers well under 1,000 tasks/s (4000)",
    )
    parser.add_argument("--samples", type=int, default=None, help="round trips for p50/p99 (1000)")
    parser.add_argument(
        "--large-mb", type=int, default=10, help="size of the large argument and result (10)"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds one run of one system may take (900)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated systems to run: " + ",".join(p.key for p in PEER_TABLE),
    )
    args = parser.parse_args()
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    tasks = args.tasks or (2000 if quick else 20000)
    slow_tasks = args.slow_tasks or (500 if quick else 4000)
    samples = args.samples or (200 if quick else 1000)
    timeout = args.timeout or (300 if quick else 900)
    wanted = {k.strip() for k in args.only.split(",") if k.strip()}
    unknown = wanted - {p.key for p in PEER_TABLE}
    if unknown:
        parser.error(f"unknown system(s) in --only: {', '.join(sorted(unknown))}")
    peers = [p for p in PEER_TABLE if not wanted or p.key in wanted]

    peer_python = ensure_peer_venv() if any(not p.in_project_venv for p in peers) else None
    project_python = PROJECT_PYTHON if PROJECT_PYTHON.exists() else Path(sys.executable)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    results: dict[str, list[dict[str, Any]]] = {p.key: [] for p in peers}
    with tempfile.TemporaryDirectory(prefix="fx-compare-") as tmp:
        for run in range(runs):
            for peer in peers:
                n = slow_tasks if peer.slow else tasks
                options = [
                    "--tasks",
                    str(n),
                    "--samples",
                    str(samples),
                    "--large-mb",
                    str(args.large_mb),
                    "--workers",
                    "2",
                ]
                python = project_python if peer.in_project_venv else peer_python
                assert python is not None
                print(f"run {run + 1}/{runs}: {peer.key} ...", file=sys.stderr, flush=True)
                t0 = time.monotonic()
                figures = run_peer(peer, python, options, timeout, Path(tmp))
                print(
                    f"  {peer.key}: {time.monotonic() - t0:.0f} s"
                    + (f", FAILED: {figures['failed']}" if "failed" in figures else ""),
                    file=sys.stderr,
                )
                results[peer.key].append(figures)

    print(
        f"Machine: {os.cpu_count()} CPUs, {cpu_model()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}; run {started}"
    )
    print(f"No-op tasks, 2 workers each, loopback only; medians of {runs} run(s).\n")
    print(
        "| system | one-by-one submit, tasks/s | batch / map, tasks/s | round trip p50 / p99, ms "
        f"| {args.large_mb} MB round trip, ms | peak RSS service, MB | peak RSS client, MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for peer in peers:
        print(row(peer, results[peer.key]))
    print(f"""
- Throughput: {tasks:,} tasks per figure ({slow_tasks:,} for the peers well under 1,000 tasks/s:
  Parsl, Globus Compute, dask, ipyparallel). One-by-one: each task submitted on its own, with its
  own future, then all waited for. Batch / map: the system's bulk call (fx: one `batch_run`, and
  `Executor.map`), all results collected.
- Round trip: a warm `submit(f, x)` then its result, one at a time, {samples:,} samples.
  {args.large_mb} MB: a {args.large_mb} MB `bytes` argument whose echo comes back (median of 5).
- Peak RSS: the kernel's high-water mark (VmHWM) of each process, read before the system stops.
  Client: the process that submits (it also hosts ProcessPoolExecutor's and the Globus Compute
  engines' management, and dask's scheduler). Service: fx, the Jupyter server process (the
  endpoint daemon in brackets); Parsl and GlobusComputeEngine, the HTEX interchange;
  ipyparallel, the controller and the scheduler processes it starts (sum of their peaks).
  Workers are counted nowhere.
- Only fx stores tasks durably, and the Globus Compute figures leave out its cloud service hop.""")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
