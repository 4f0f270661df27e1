"""``fx-endpoint``: configure, run and inspect fx endpoints on this machine.

A thin typer layer over :mod:`fx_endpoint.control`: it parses arguments, prints what a command
reports, and turns a :class:`~fx_endpoint.control.ControlError` into ``Error: ...`` on stderr
and exit code 1.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from . import control
from .paths import DEFAULT_NAME, EndpointDir
from .version import __version__

app = typer.Typer(
    name="fx-endpoint",
    help="Run fx endpoints: daemons that execute fx tasks on this machine or its cluster.\n\n"
    "Endpoints live in $FX_HOME/endpoints/NAME/ (FX_HOME defaults to ~/.fx).",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

# Arguments and options several commands share, declared once so they read the same everywhere.
Name = Annotated[
    str, typer.Argument(metavar="NAME", help="The endpoint's name.", show_default=True)
]
StartTimeout = Annotated[
    float, typer.Option(min=1, help="Seconds to wait for the endpoint to connect.")
]
StopTimeout = Annotated[float, typer.Option(min=0, help="Seconds to wait before killing it.")]


@contextmanager
def _errors() -> Iterator[None]:
    """Print a command's failure the way a user wants to read it, and exit 1."""
    try:
        yield
    except control.ControlError as e:
        typer.echo(f"Error: {e}", err=True)
        raise typer.Exit(1) from None


def _print(report: control.Report) -> None:
    for line in report.lines:
        typer.echo(line)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fx-endpoint {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = None,
) -> None:
    """Run fx endpoints."""


@app.command()
def configure(
    name: Name = DEFAULT_NAME,
    service_url: Annotated[
        str | None,
        typer.Option(
            envvar="FX_SERVICE_URL",
            help="The fx service's URL, e.g. http://127.0.0.1:8888/fx/api/v2/. Default: the "
            "one already configured, else the Jupyter server running on this machine.",
        ),
    ] = None,
    max_workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes to write into a new config (default: CPUs)."),
    ] = None,
) -> None:
    """Create NAME's config.yaml (or keep it) and register NAME with the service.

    The token comes from FX_TOKEN, or from the Jupyter server's runtime files when it runs on
    this machine. If the service is unreachable, the config is still written and `start`
    registers the endpoint later.
    """
    with _errors():
        _print(control.configure(name, service_url, max_workers))


@app.command()
def start(name: Name = DEFAULT_NAME, timeout: StartTimeout = control.DEFAULT_START_TIMEOUT) -> None:
    """Start NAME in the background; return once it is connected to the service.

    A start that fails (bad config, service unreachable, credential refused, incompatible
    versions) says why and exits with code 1.
    """
    with _errors():
        _print(control.start(name, timeout))


@app.command()
def stop(name: Name = DEFAULT_NAME, timeout: StopTimeout = control.DEFAULT_STOP_TIMEOUT) -> None:
    """Stop NAME: its workers stop, its unfinished tasks run again at the next start."""
    with _errors():
        _print(control.stop(name, timeout))


@app.command()
def restart(
    name: Name = DEFAULT_NAME, timeout: StartTimeout = control.DEFAULT_START_TIMEOUT
) -> None:
    """Stop NAME if it runs, then start it (e.g. after editing config.yaml)."""
    with _errors():
        _print(control.restart(name, timeout))


@app.command("list")
def list_() -> None:
    """Show every endpoint: name, state (Initialized, Running, Stopped, Disconnected), id."""
    rows = control.listing()
    if not rows:
        typer.echo("No endpoints yet; create one with `fx-endpoint configure`.")
        return
    table = [("NAME", "STATE", "ENDPOINT ID")]
    table += [(r["name"], r["state"], r["endpoint_id"] or "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(2)]
    for row in table:
        typer.echo(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}")


@app.command()
def status(
    name: Name = DEFAULT_NAME,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show NAME's state, its workers, and its queued and running tasks."""
    with _errors():
        info = control.status(name)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    pid = f" (pid {info['pid']})" if info["pid"] else ""
    typer.echo(f"Endpoint {info['name']}: {info['state']}{pid}")
    typer.echo(f"  id:       {info['endpoint_id'] or '- (not registered yet)'}")
    typer.echo(f"  service:  {info['service_url'] or '-'}")
    daemon = info.get("daemon")
    if info["state"] == "Running" and daemon:
        _print_daemon(daemon)
    elif info["state"] == "Running":
        typer.echo("  (no status reported yet)")


def _print_daemon(d: dict[str, Any]) -> None:
    now = time.time()
    heard = d.get("last_heard")
    heard_text = f"last heard {now - heard:.1f} s ago" if heard else "never heard"
    typer.echo(f"  connected: {'yes' if d.get('connected') else 'no'} ({heard_text})")
    typer.echo(
        f"  workers:  {d.get('workers', 0)} of {d.get('max_workers', '?')} up, "
        f"{d.get('idle_workers', 0)} idle"
    )
    blocks = d.get("blocks")
    if isinstance(blocks, dict):
        typer.echo(
            f"  blocks:   {blocks.get('running', 0)} running, {blocks.get('pending', 0)} pending "
            f"(at most {d.get('max_blocks', '?')})"
        )
    typer.echo(
        f"  tasks:    {d.get('queued', 0)} queued, {d.get('running', 0)} running, "
        f"{d.get('completed', 0)} completed since start"
    )
    typer.echo(f"  results waiting for the service: {d.get('results_unacknowledged', 0)}")
    typer.echo(f"  status as of {now - d.get('updated', now):.1f} s ago")


@app.command()
def logs(
    name: Name = DEFAULT_NAME,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="Lines to show first (0: all).")
    ] = 50,
) -> None:
    """Print NAME's log (endpoint.log), optionally following it like `tail -f`."""
    with _errors():
        try:
            ep = EndpointDir.named(name)
        except ValueError as e:
            raise control.ControlError(str(e)) from None
        if not ep.path.is_dir():
            raise control.ControlError(f"there is no endpoint named {name!r}")
    if not ep.log_file.exists() and not follow:
        typer.echo(f"No log yet ({ep.log_file}); it starts with the first `fx-endpoint start`.")
        return
    _show_log(ep, lines, follow)


def _show_log(ep: EndpointDir, lines: int, follow: bool) -> None:
    position = 0
    inode = None
    if ep.log_file.exists():
        text = ep.log_file.read_bytes()
        position, inode = len(text), os.stat(ep.log_file).st_ino
        shown = text.decode(errors="replace").splitlines()
        for line in shown[-lines:] if lines else shown:
            typer.echo(line)
    while follow:
        try:
            stat = os.stat(ep.log_file)
        except FileNotFoundError:
            time.sleep(0.2)
            continue
        if stat.st_ino != inode or stat.st_size < position:
            inode, position = stat.st_ino, 0  # rotated or truncated: read the new file
        if stat.st_size > position:
            with open(ep.log_file, "rb") as f:
                f.seek(position)
                chunk = f.read()
            position += len(chunk)
            typer.echo(chunk.decode(errors="replace"), nl=False)
        else:
            time.sleep(0.2)


@app.command()
def delete(
    name: Name = DEFAULT_NAME,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop NAME, delete it on the service (when reachable) and remove its directory."""
    with _errors():
        control.status(name)  # fails clearly if there is no such endpoint
        if not yes:
            typer.confirm(f"Delete endpoint {name} and its directory?", abort=True)
        _print(control.delete(name))


def main() -> None:
    """Entry point of the ``fx-endpoint`` console script."""
    app()


if __name__ == "__main__":
    main()
