"""Peer: Parsl's HighThroughputExecutor with the local provider (one block of 2 workers), on
loopback, with its defaults otherwise (CurveZMQ on).

``--variant app`` goes through the DataFlowKernel, as users do: a ``python_app`` called in a
loop. ``--variant executor`` calls ``HighThroughputExecutor.submit`` directly, which leaves the
DataFlowKernel's own cost out. Parsl has no bulk call. The service is the interchange process.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import measure
import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider


def noop(x):
    return x


def main() -> None:
    measure.exit_on_sigterm()
    args = measure.parse_args(__doc__)
    with tempfile.TemporaryDirectory(prefix="bench-parsl-") as run_dir:
        htex = HighThroughputExecutor(
            label="htex",
            address="127.0.0.1",
            max_workers_per_node=args.workers,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
        )
        dfk = parsl.load(
            Config(executors=[htex], run_dir=run_dir, strategy="none", usage_tracking=0)
        )
        try:
            if args.variant == "executor":
                submit: Callable[[Callable[[Any], Any], Any], Any] = lambda fn, x: htex.submit(
                    fn, {}, x
                )
            else:
                apps: dict[Callable[[Any], Any], Callable[[Any], Any]] = {}

                def submit(fn: Callable[[Any], Any], x: Any) -> Any:
                    app = apps.get(fn)
                    if app is None:
                        app = apps[fn] = parsl.python_app(fn, executors=["htex"])
                    return app(x)

            system = measure.System(
                submit=submit,
                gather=lambda futures: [f.result(timeout=300) for f in futures],
                service_pids=lambda: [htex.interchange_proc.pid] if htex.interchange_proc else [],
            )
            figures = measure.run(system, noop, args)
        finally:
            dfk.cleanup()
            parsl.clear()
    measure.emit(figures, f"Parsl {parsl.__version__}")


if __name__ == "__main__":
    main()
