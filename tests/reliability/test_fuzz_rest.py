"""Schemathesis fuzzes the REST API from its own OpenAPI document (`GET openapi.json`) against a
live service: no 5xx, and every answer conforms to the document (status code, content type,
schema). Bounded: 20 examples per operation, a fixed seed (reproducible: `st replay`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from fx_jupyter.testing import FxStack

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_fuzzed_requests_get_no_5xx_and_conforming_answers(
    fx_private_stack: FxStack, tmp_path: Path
) -> None:
    assert SCHEMATHESIS is not None, "schemathesis is a test dependency: pip install -e '.[test]'"
    stack = fx_private_stack
    stack.configure_endpoint("fuzzed", max_workers=1)
    run = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            stack.service_url + "openapi.json",
            "--url",
            stack.service_url.rstrip("/"),
            "--header",
            f"Authorization: token {stack.token}",
            "--checks",
            CHECKS,
            "--max-examples",
            "20",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout
    assert stack.get("version")["api"] == "v2"
    assert "Traceback" not in stack.server_log(), stack.server_log()[-4000:]
