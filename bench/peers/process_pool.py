"""Peer: concurrent.futures.ProcessPoolExecutor with 2 workers, the floor every pool is judged
against (no service, no durability; pickle over pipes). One-by-one is ``submit`` in a loop; the
bulk call is ``map(chunksize=1)``, one task per work item like everyone else."""

from __future__ import annotations

import platform
from concurrent.futures import ProcessPoolExecutor

import measure


def noop(x):
    return x


def main() -> None:
    measure.exit_on_sigterm()
    args = measure.parse_args(__doc__)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        system = measure.System(
            submit=pool.submit,
            gather=lambda futures: [f.result(timeout=120) for f in futures],
            batch=lambda fn, items: list(pool.map(fn, items, chunksize=1)),
            batch_name="map(chunksize=1)",
        )
        figures = measure.run(system, noop, args)
    measure.emit(figures, f"Python {platform.python_version()}")


if __name__ == "__main__":
    main()
