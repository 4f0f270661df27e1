"""Peer: dask.distributed's LocalCluster, 2 worker processes of 1 thread each, on loopback, no
dashboard. One-by-one is ``client.submit`` in a loop (``pure=False``: every call is a new task);
the bulk call is ``client.map``. LocalCluster runs its scheduler inside the client process, so
the client's peak RSS includes the scheduler and there is no separate service figure.
"""

from __future__ import annotations

import distributed
import measure
from distributed import Client, LocalCluster


def noop(x):
    return x


def main() -> None:
    measure.exit_on_sigterm()
    args = measure.parse_args(__doc__)
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        system = measure.System(
            submit=lambda fn, x: client.submit(fn, x, pure=False),
            gather=lambda futures: client.gather(futures),
            batch=lambda fn, items: client.gather(client.map(fn, items, pure=False)),
            batch_name="client.map",
        )
        figures = measure.run(system, noop, args)
    measure.emit(figures, f"dask.distributed {distributed.__version__}")


if __name__ == "__main__":
    main()
