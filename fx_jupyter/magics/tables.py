"""The tables ``%funcx endpoints`` and ``%funcx tasks`` show.

Each is a small object IPython displays as the magic's result: an HTML table in a notebook
(themed like the SDK's own reprs), aligned plain text in a terminal or a log.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from fx_endpoint.protocol import TaskState

from ..sdk import reprs
from .widgets import format_seconds


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines
    )


def _show(value: Any) -> str:
    return "-" if value is None else str(value)


class EndpointTable:
    """``%funcx endpoints``: name, id, state, workers (idle), queued; ``*`` marks the default."""

    headers = ("name", "id", "state", "workers", "queued")

    def __init__(self, endpoints: Iterable[dict[str, Any]], default_id: str | None = None) -> None:
        self.endpoints = list(endpoints)
        self.default_id = default_id

    def rows(self) -> list[list[str]]:
        """One row of plain strings per endpoint."""
        rows = []
        for ep in self.endpoints:
            details = ep.get("details") or {}
            workers = details.get("workers")
            idle = details.get("idle_workers")
            name = _show(ep.get("name"))
            if self.default_id is not None and ep.get("endpoint_id") == self.default_id:
                name += " *"
            rows.append(
                [
                    name,
                    _show(ep.get("endpoint_id")),
                    _show(ep.get("status", "unknown")),
                    _show(workers)
                    + (f" ({idle} idle)" if workers is not None and idle is not None else ""),
                    _show(reprs.queued_count(ep)),
                ]
            )
        return rows

    def __repr__(self) -> str:
        if not self.endpoints:
            return "no endpoints yet: run `fx-endpoint configure NAME` and `fx-endpoint start NAME`"
        footer = "\n* the default endpoint of %%funcx cells" if self.default_id else ""
        return _text_table(self.headers, self.rows()) + footer

    def _repr_html_(self) -> str:
        rows = [
            [
                reprs.text(name),
                reprs.mono(ep_id),
                reprs.status_badge(state),
                reprs.text(workers),
                reprs.text(queued),
            ]
            for name, ep_id, state, workers, queued in self.rows()
        ]
        return reprs.table(self.headers, rows)


class TaskTable:
    """``%funcx tasks``: id, state, endpoint, when it was submitted and how long it took."""

    headers = ("task", "state", "endpoint", "submitted", "duration")

    def __init__(
        self, tasks: Iterable[dict[str, Any]], endpoint_names: dict[str, str] | None = None
    ) -> None:
        self.tasks = list(tasks)
        self.endpoint_names = endpoint_names or {}

    def rows(self, now: float | None = None) -> list[list[str]]:
        """One row of plain strings per task; unfinished tasks count up to ``now``."""
        now = time.time() if now is None else now
        rows = []
        for task in self.tasks:
            details = task.get("details") or {}
            transitions = {
                state: ts
                for state, ts in (details.get("task_transitions") or {}).items()
                if isinstance(ts, (int, float))
            }
            status = str(task.get("status", "unknown"))
            submitted = duration = "-"
            if transitions:
                start = min(transitions.values())
                end = max(transitions.values()) if status in TaskState.TERMINAL else now
                submitted = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start))
                duration = format_seconds(end - start)
            endpoint_id = details.get("endpoint_id")
            rows.append(
                [
                    _show(task.get("task_id")),
                    status,
                    self.endpoint_names.get(str(endpoint_id), _show(endpoint_id)),
                    submitted,
                    duration,
                ]
            )
        return rows

    def __repr__(self) -> str:
        if not self.tasks:
            return "no tasks yet"
        return _text_table(self.headers, self.rows())

    def _repr_html_(self) -> str:
        rows = [
            [
                reprs.mono(task_id),
                reprs.status_badge(state),
                reprs.text(endpoint),
                reprs.text(submitted),
                reprs.text(duration),
            ]
            for task_id, state, endpoint, submitted, duration in self.rows()
        ]
        return reprs.table(self.headers, rows)
