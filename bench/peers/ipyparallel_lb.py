"""Peer: ipyparallel's LoadBalancedView over 2 local engines, controller on loopback. One-by-one
is ``view.apply_async`` in a loop; the bulk call is ``view.map_async`` (one task per item). The
service is the controller process with the scheduler processes it starts.
"""

from __future__ import annotations

import tempfile

import ipyparallel as ipp
import measure


def noop(x):
    return x


def main() -> None:
    measure.exit_on_sigterm()
    args = measure.parse_args(__doc__)
    with tempfile.TemporaryDirectory(prefix="bench-ipp-") as profile_dir:
        cluster = ipp.Cluster(
            n=args.workers, controller_ip="127.0.0.1", profile_dir=profile_dir, log_level=40
        )
        with cluster as client:
            view = client.load_balanced_view()
            system = measure.System(
                submit=view.apply_async,
                gather=lambda results: [r.get(timeout=300) for r in results],
                batch=lambda fn, items: view.map_async(fn, items, chunksize=1).get(timeout=3600),
                batch_name="view.map_async(chunksize=1)",
                service_pids=lambda: measure.children_of(cluster.controller.pid),
            )
            figures = measure.run(system, noop, args)
    measure.emit(figures, f"ipyparallel {ipp.__version__}")


if __name__ == "__main__":
    main()
