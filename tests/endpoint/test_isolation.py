"""The endpoint runs on cluster nodes without Jupyter: importing it must not import Jupyter."""

from __future__ import annotations

import subprocess
import sys


def test_endpoint_modules_do_not_import_jupyter_or_fx_jupyter():
    code = (
        "import sys\n"
        "import fx_endpoint.cli, fx_endpoint.daemon, fx_endpoint.worker, fx_endpoint.control\n"
        "import fx_endpoint.engines.process\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('fx_jupyter', 'jupyter_server', 'jupyter_core', 'jupyter_client', 'tornado', 'IPython')]\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
