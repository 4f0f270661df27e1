"""`make run`: JupyterLab with the fx service, a local endpoint named `local`, the tutorial open.

`--headless` instead executes notebooks/Tutorial.ipynb top to bottom against a private service and
endpoint, prints every cell's output, and exits non-zero if a cell fails.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TUTORIAL = ROOT / "notebooks" / "Tutorial.ipynb"
ENDPOINT = "local"


def pick_port(preferred: int = 8888) -> int:
    """The preferred port when it is free, else one the OS picks."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def fx_endpoint(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(BIN / "fx-endpoint"), *args], env=env, text=True, capture_output=True, timeout=120)
    if check and proc.returncode != 0:
        sys.exit(f"fx-endpoint {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def print_outputs(nb) -> None:
    """Each code cell's source head and its outputs, as text."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        print(f"--- [{i}] {first}")
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                print(out.text, end="")
            elif out.output_type in ("execute_result", "display_data"):
                print(out.data.get("text/plain", ""))
            elif out.output_type == "error":
                print("\n".join(out.traceback))


def headless(save: bool = False) -> int:
    """Run the notebooks against a private service + endpoint; print the tutorial's outputs.

    With ``save``, every notebook in notebooks/ is run and written back with its outputs (what
    nbval then checks in `make test`)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from fx_jupyter.testing import start_stack

    with tempfile.TemporaryDirectory(prefix="fx-run-") as tmp:
        stack = start_stack(Path(tmp), endpoint=ENDPOINT)
        try:
            os.environ.update(FX_SERVICE_URL=stack.service_url, FX_TOKEN=stack.token, FX_NO_WIDGETS="1")
            status = 0
            for path in sorted(TUTORIAL.parent.glob("*.ipynb")) if save else [TUTORIAL]:
                nb = nbformat.read(path, as_version=4)
                client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
                try:
                    client.execute()
                except CellExecutionError as e:
                    print(f"{path.name}: cell failed: {e}", file=sys.stderr)
                    status = 1
                if path == TUTORIAL:
                    print_outputs(nb)
                if save and status == 0:
                    nbformat.write(nb, path)
            return status
        finally:
            stack.teardown()


def interactive() -> int:
    """JupyterLab in the foreground; the `local` endpoint started against it."""
    port = pick_port()
    token = secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, FX_SERVICE_URL=f"{url}fx/api/v2/", FX_TOKEN=token, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    lab = subprocess.Popen(
        [str(BIN / "jupyter-lab"), "--allow-root", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT / 'notebooks'}", str(TUTORIAL)],
        env=env,
    )
    started_endpoint = False
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{url}fx/api/v2/version", headers={"Authorization": f"token {token}"}), timeout=2)
                break
            except OSError:
                if lab.poll() is not None or time.monotonic() > deadline:
                    sys.exit("JupyterLab did not start; see its output above")
                time.sleep(0.3)
        # (Re)configure so the endpoint points at this server; a running one is restarted.
        fx_endpoint("stop", ENDPOINT, env=env, check=False)
        fx_endpoint("configure", ENDPOINT, "--service-url", env["FX_SERVICE_URL"], env=env)
        fx_endpoint("start", ENDPOINT, env=env)
        started_endpoint = True
        print(f"\nfx is ready: endpoint '{ENDPOINT}' is running.\nOpen {url}lab/tree/Tutorial.ipynb?token={token}\n", flush=True)
        return lab.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if started_endpoint:
            fx_endpoint("stop", ENDPOINT, env=env, check=False)
        if lab.poll() is None:
            lab.send_signal(signal.SIGTERM)
            try:
                lab.wait(timeout=15)
            except subprocess.TimeoutExpired:
                lab.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--headless", action="store_true", help="run the tutorial and print its outputs")
    parser.add_argument("--save", action="store_true", help="run every notebook and save its outputs")
    args = parser.parse_args()
    return headless(args.save) if args.headless or args.save else interactive()


if __name__ == "__main__":
    sys.exit(main())
