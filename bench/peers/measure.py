"""The measuring protocol every peer of bench/compare.py follows, so that their figures compare.

A peer script starts its system (2 workers, loopback only), wraps it in a `System`, and hands it
to `run`, which times the same workload on every peer and prints one JSON line on stdout:

- one-by-one: ``tasks`` no-op tasks submitted one at a time (each gets its own future), then
  all results waited for;
- batch: the same count through the peer's own bulk call (``map`` and the like), where it has one;
- round trip: ``samples`` warm ``submit(f, x)`` then wait, one at a time (p50 and p99);
- large round trip: a ``large_mb`` MB ``bytes`` argument whose echo (the same size) comes back;
- peak RSS (the kernel's high-water mark, ``VmHWM``) of the client — this process — and of the
  peer's service processes, read just before the system stops.

A figure that cannot be had (the peer refuses a 10 MB result, has no bulk call...) is reported
as the error text, never as a number. Only the standard library is used here: this module runs
in the peers' venv and in the project's one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Round trips done before the clock starts, so workers have loaded the function.
WARMUP = 50


@dataclass
class System:
    """How `run` drives one peer.

    ``submit(fn, arg)`` starts one task and returns a handle; ``gather(handles)`` waits for them
    and returns their results in order. ``batch(fn, args)`` runs many tasks through the peer's
    bulk call and returns the results in order (None: the peer has none). ``service_pids()``
    names the processes whose peak RSS is the service's (empty: the peer has no service
    process). ``batch_name`` says what the bulk call is, for the table.
    """

    submit: Callable[[Callable[[Any], Any], Any], Any]
    gather: Callable[[list[Any]], list[Any]]
    batch: Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]] | None = None
    batch_name: str = ""
    service_pids: Callable[[], Iterable[int]] = lambda: ()
    extra_pids: dict[str, Callable[[], Iterable[int]]] = field(default_factory=dict)


def parse_args(description: str | None = None, argv: list[str] | None = None) -> argparse.Namespace:
    """The options compare.py passes to every peer (a peer may add its own through ``argv``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tasks", type=int, default=20000, help="tasks per throughput figure")
    parser.add_argument("--samples", type=int, default=1000, help="round trips for p50/p99")
    parser.add_argument(
        "--large-mb", type=int, default=10, help="size of the large argument and result"
    )
    parser.add_argument("--large-samples", type=int, default=5, help="large round trips (median)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the peer")
    parser.add_argument("--variant", default="", help="which flavour of the peer (peer-specific)")
    return parser.parse_args(argv)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so a peer's ``finally`` blocks stop its processes when
    compare.py gives up on it (timeout, Ctrl-C)."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident set size in MB (``VmHWM``), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_sum_mb(pids: Iterable[int]) -> float | None:
    """Sum of the peaks of ``pids`` (an upper bound of their joint peak); None if none is alive."""
    peaks = [p for p in (peak_rss_mb(pid) for pid in pids) if p is not None]
    return sum(peaks) if peaks else None


def children_of(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc (no psutil: the project's venv may lack it)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def _error(exc: BaseException) -> str:
    """One line naming what went wrong, for a table cell."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return text if len(text) <= 160 else text[:157] + "..."


def _measure(figures: dict[str, Any], key: str, fn: Callable[[], Any]) -> None:
    """Store ``fn()`` under ``key``, or the error it raised under ``key + '_error'``."""
    try:
        figures[key] = fn()
    except Exception as exc:  # noqa: BLE001 - a peer's failure is a figure of its own, shown in its row
        traceback.print_exc(file=sys.stderr)
        figures[key + "_error"] = _error(exc)


def one_by_one_rate(system: System, fn: Callable[[Any], Any], n: int) -> float:
    """Tasks/s submitting ``n`` tasks one at a time, then waiting for all."""
    start = time.perf_counter()
    handles = [system.submit(fn, i) for i in range(n)]
    results = system.gather(handles)
    elapsed = time.perf_counter() - start
    if results != list(range(n)):
        raise AssertionError("one-by-one results do not match their arguments")
    return n / elapsed


def batch_rate(system: System, fn: Callable[[Any], Any], n: int) -> float:
    """Tasks/s through the peer's bulk call over ``n`` tasks."""
    assert system.batch is not None
    start = time.perf_counter()
    results = system.batch(fn, range(n))
    elapsed = time.perf_counter() - start
    if list(results) != list(range(n)):
        raise AssertionError("batch results do not match their arguments")
    return n / elapsed


def round_trips_ms(system: System, fn: Callable[[Any], Any], samples: int) -> dict[str, float]:
    """p50 and p99 in ms of a warm submit-then-wait of one task."""
    for i in range(WARMUP):
        system.gather([system.submit(fn, i)])
    times = []
    for i in range(samples):
        start = time.perf_counter()
        system.gather([system.submit(fn, i)])
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"p50": statistics.median(times), "p99": times[round(0.99 * (len(times) - 1))]}


def large_round_trip_ms(system: System, fn: Callable[[Any], Any], mb: int, samples: int) -> float:
    """Median ms of sending ``mb`` MB of random bytes and getting them back (one warm-up first)."""
    payload = os.urandom(mb * 2**20)
    times = []
    for i in range(samples + 1):
        start = time.perf_counter()
        (result,) = system.gather([system.submit(fn, payload)])
        elapsed = (time.perf_counter() - start) * 1000
        if result != payload:
            raise AssertionError("the large result is not the argument echoed")
        if i:
            times.append(elapsed)
    return statistics.median(times)


def run(system: System, fn: Callable[[Any], Any], args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of one run of one peer (errors included), ready for `emit`.

    Peak RSS is read at the end, while the system still runs; the caller stops it afterwards."""
    figures: dict[str, Any] = {}
    for i in range(10):
        system.gather([system.submit(fn, i)])
    _measure(figures, "one_by_one", lambda: one_by_one_rate(system, fn, args.tasks))
    if system.batch is not None:
        _measure(figures, "batch", lambda: batch_rate(system, fn, args.tasks))
        figures["batch_name"] = system.batch_name
    _measure(figures, "round_trip", lambda: round_trips_ms(system, fn, args.samples))
    _measure(
        figures, "large", lambda: large_round_trip_ms(system, fn, args.large_mb, args.large_samples)
    )
    figures["rss_service"] = peak_rss_sum_mb(system.service_pids())
    figures["rss_extra"] = {
        name: peak_rss_sum_mb(pids()) for name, pids in system.extra_pids.items()
    }
    return figures


def emit(figures: dict[str, Any], version: str) -> None:
    """Print the run's figures as the one JSON line compare.py reads (client RSS added here,
    as late as possible)."""
    figures["version"] = version
    figures["rss_client"] = peak_rss_mb(os.getpid())
    print("FIGURES " + json.dumps(figures), flush=True)
