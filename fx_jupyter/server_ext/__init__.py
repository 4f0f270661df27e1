"""The fx service: a Jupyter Server extension (REST + WebSocket API, task store, ZeroMQ broker).

Enabled on install through ``jupyter_server_config.d/fx_jupyter.json``; ``fx-service`` runs it
alone. See ``docs/service.md`` for its options and ``docs/architecture.md`` for its interfaces.
"""

from __future__ import annotations

from typing import Any

from .app import FxService

__all__ = ["FxService"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Tell Jupyter Server which ExtensionApp this module provides."""
    return [{"module": "fx_jupyter.server_ext", "app": FxService}]
