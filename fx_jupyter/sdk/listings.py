"""Lists the client returns that render as tables in a notebook and stay plain lists elsewhere."""

from __future__ import annotations

from typing import Any

from . import reprs


class EndpointList(list[dict[str, Any]]):
    """``Client.list_endpoints()``: EndpointStatus dicts; a table in a notebook."""

    def _repr_html_(self) -> str:
        return reprs.endpoints_table(self)

    def names(self) -> list[str]:
        """The endpoints' names."""
        return [str(ep.get("name")) for ep in self]


class TaskList(list[dict[str, Any]]):
    """``Client.list_tasks()``: task records, newest first; a table in a notebook."""

    def _repr_html_(self) -> str:
        return reprs.tasks_table(self)
