"""HTML reprs for notebooks: small templates styled with JupyterLab's CSS variables, so they
follow the user's theme (light, dark, high contrast) instead of hard-coding colours."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from fx_endpoint.protocol import TaskState

_STATUS_COLOURS = {
    "online": "var(--jp-success-color1, #388e3c)",
    "offline": "var(--jp-error-color1, #d32f2f)",
    TaskState.SUCCESS: "var(--jp-success-color1, #388e3c)",
    TaskState.FAILED: "var(--jp-error-color1, #d32f2f)",
    TaskState.CANCELLED: "var(--jp-ui-font-color2, #757575)",
    TaskState.RUNNING: "var(--jp-brand-color1, #1976d2)",
}
_DEFAULT_COLOUR = "var(--jp-warn-color1, #f57c00)"

_TABLE = (
    '<table style="border-collapse: collapse; font-family: var(--jp-ui-font-family); '
    'font-size: var(--jp-ui-font-size1); color: var(--jp-ui-font-color1);">'
    "<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
)
_CELL = (
    '<{tag} style="text-align: left; padding: 2px 10px; '
    'border-bottom: var(--jp-border-width, 1px) solid var(--jp-border-color2, #e0e0e0);">'
    "{text}</{tag}>"
)


def status_badge(status: str) -> str:
    """A coloured ``● status`` span."""
    colour = _STATUS_COLOURS.get(status, _DEFAULT_COLOUR)
    return f'<span style="color: {colour};">&#9679;</span> {escape(status)}'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A themed HTML table; cells are HTML already (callers escape text with :func:`text`)."""
    head = "".join(_CELL.format(tag="th", text=escape(h)) for h in headers)
    body = "".join(
        "<tr>" + "".join(_CELL.format(tag="td", text=cell) for cell in row) + "</tr>"
        for row in rows
    )
    if not body:
        body = "<tr>" + _CELL.format(tag="td", text="<i>none</i>") + "</tr>"
    return _TABLE.format(head=head, body=body)


def text(value: Any) -> str:
    """Escaped text of a cell; ``None`` shows as an em dash."""
    return "&mdash;" if value is None else escape(str(value))


def mono(value: Any) -> str:
    """Escaped text in the code font (ids)."""
    return f'<code style="font-family: var(--jp-code-font-family);">{text(value)}</code>'


def queued_count(endpoint: dict[str, Any]) -> int | None:
    """Tasks waiting for an endpoint: the service's per-state counts, else the engine's queue."""
    counts = endpoint.get("tasks")
    if isinstance(counts, dict) and counts:
        waiting = (
            TaskState.WAITING_FOR_EP,
            TaskState.WAITING_FOR_NODES,
            TaskState.WAITING_FOR_LAUNCH,
        )
        return sum(int(counts.get(state) or 0) for state in waiting)
    queued = (endpoint.get("details") or {}).get("queued")
    return queued if isinstance(queued, int) else None


def endpoints_table(endpoints: Iterable[dict[str, Any]]) -> str:
    """Name, id, status, workers, queued for each endpoint."""
    rows = []
    for ep in endpoints:
        details = ep.get("details") or {}
        rows.append(
            [
                text(ep.get("name")),
                mono(ep.get("endpoint_id")),
                status_badge(str(ep.get("status", "unknown"))),
                text(details.get("workers")),
                text(queued_count(ep)),
            ]
        )
    return table(["name", "id", "status", "workers", "queued"], rows)


def tasks_table(tasks: Iterable[dict[str, Any]]) -> str:
    """Task id, status, endpoint and completion time for each task."""
    rows = []
    for task in tasks:
        details = task.get("details") or {}
        rows.append(
            [
                mono(task.get("task_id")),
                status_badge(str(task.get("status", "unknown"))),
                mono(details.get("endpoint_id")),
                text(task.get("completion_t")),
            ]
        )
    return table(["task", "status", "endpoint", "completed"], rows)


def future_html(task_id: str | None, status: str, endpoint_id: str | None) -> str:
    """One line for a future: which task, where it runs, how far it got."""
    task = mono(task_id) if task_id else "<i>submitting</i>"
    return (
        '<div style="font-family: var(--jp-ui-font-family); font-size: var(--jp-ui-font-size1); '
        f'color: var(--jp-ui-font-color1);">fx task {task} on {mono(endpoint_id)}: '
        f"{status_badge(status)}</div>"
    )
