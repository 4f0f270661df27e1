"""fx as one more peer of bench/compare.py: the measuring protocol of measure.py through a real
stack (Jupyter server with the fx service and its SQLite store, one endpoint of 2 process-engine
workers), plus Executor.map. Runs in the project's venv; the fx measuring code is in
bench/throughput.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import measure
import throughput  # bench/ is a script directory, not a package

import fx_jupyter


def main() -> None:
    measure.exit_on_sigterm()
    args = measure.parse_args(__doc__)
    figures = throughput.measure_fx(args)
    measure.emit(figures, f"fx-jupyter {fx_jupyter.__version__}")


if __name__ == "__main__":
    main()
