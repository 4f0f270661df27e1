"""Large arguments and results: ``Executor.submit(echo, data).result()`` for 10 MB and 500 MB,
next to the same round trip over raw pyzmq + cloudpickle (the floor: serialize, send to another
process, run, send back, deserialize), measured in the same run so a busy machine shows in both.

Starts its own Jupyter server with the fx service and one endpoint (process engine, one worker)
in a temporary directory, measures, prints a table, and stops everything.

    .venv/bin/python bench/large_payloads.py [--sizes 10,500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import cloudpickle
import zmq

from fx_jupyter import Executor
from fx_jupyter.testing import start_stack

MB = 1_000_000


def echo(data):
    return data


def _raw_worker(url: str) -> None:
    """The raw baseline's other process: unpickle a call, run it, pickle the result back."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.connect(url)
    while True:
        frame = sock.recv(copy=False)
        if frame.bytes == b"stop":
            sock.send(b"bye")
            break
        fn, args = cloudpickle.loads(frame.buffer)
        sock.send(cloudpickle.dumps(fn(*args)), copy=False)
    sock.close()
    ctx.term()


def raw_round_trips(size: int, repeat: int) -> list[float]:
    """Seconds per round trip of ``echo(b"x" * size)`` over a REQ/REP pair on loopback TCP."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    worker = multiprocessing.get_context("spawn").Process(
        target=_raw_worker, args=(f"tcp://127.0.0.1:{port}",), daemon=True
    )
    worker.start()
    data = b"x" * size
    times = []
    try:
        for _ in range(repeat + 1):  # the first one warms up
            start = time.perf_counter()
            sock.send(cloudpickle.dumps((echo, (data,))), copy=False)
            result = cloudpickle.loads(sock.recv(copy=False).buffer)
            times.append(time.perf_counter() - start)
            assert len(result) == size
        sock.send(b"stop")
        sock.recv()
    finally:
        worker.join(10)
        if worker.is_alive():
            worker.kill()
        sock.close(linger=0)
        ctx.term()
    return times[1:]


def fx_round_trips(executor: Executor, size: int, repeat: int) -> list[float]:
    """Seconds per ``submit(echo, b"x" * size).result()``."""
    data = b"x" * size
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = executor.submit(echo, data).result(timeout=600)
        times.append(time.perf_counter() - start)
        assert len(result) == size
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,500", help="payload sizes in MB, comma separated")
    parser.add_argument("--repeat", type=int, default=5, help="round trips per size")
    args = parser.parse_args()
    sizes = [int(float(s) * MB) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fx-bench-large-") as tmp:
        stack = start_stack(Path(tmp), max_workers=1)
        try:
            client = stack.client()
            with Executor(endpoint_id=stack.endpoint_id, client=client) as executor:
                executor.submit(echo, b"warm").result(timeout=60)
                for size in sizes:
                    repeat = args.repeat if size <= 50 * MB else max(1, args.repeat // 2)
                    raw = raw_round_trips(size, repeat)
                    fx = fx_round_trips(executor, size, repeat)
                    rows.append((size, statistics.median(raw), statistics.median(fx), min(fx)))
            client.close()
        finally:
            stack.teardown()
    print(f"{'payload':>10} {'raw pyzmq':>12} {'fx median':>12} {'fx best':>10} {'ratio':>7}")
    for size, raw, fx, best in rows:
        print(
            f"{size / MB:>8.0f}MB {raw * 1000:>10.0f}ms {fx * 1000:>10.0f}ms "
            f"{best * 1000:>8.0f}ms {fx / raw:>6.1f}x"
        )


if __name__ == "__main__":
    main()
