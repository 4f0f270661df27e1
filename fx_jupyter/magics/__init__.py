"""The notebook side of fx: the ``%%funcx`` cell magic, the ``%funcx`` line magics, and the
live task widgets.

``%load_ext fx_jupyter`` calls :func:`load_ipython_extension`.
"""

from __future__ import annotations

from typing import Any

from .magics import FxMagics
from .widgets import BatchWidget, TaskWidget

__all__ = [
    "BatchWidget",
    "FxMagics",
    "TaskWidget",
    "load_ipython_extension",
    "unload_ipython_extension",
]


def load_ipython_extension(ip: Any) -> None:
    """Register the fx magics with the IPython shell ``ip``."""
    ip.register_magics(FxMagics(ip))


def unload_ipython_extension(ip: Any) -> None:
    """Shut the fx magics' executors down (running tasks go on) and unregister nothing else:
    IPython has no way to remove a magic, so ``%%funcx`` stays until it is loaded again."""
    magics = ip.magics_manager.registry.get(FxMagics.__name__)
    if isinstance(magics, FxMagics):
        magics.close()
