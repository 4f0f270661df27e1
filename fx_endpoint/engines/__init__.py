"""Engines run tasks on workers for the endpoint daemon; see :mod:`.base` for the interface."""

from __future__ import annotations

from ..config import EndpointConfig
from ..paths import EndpointDir
from .base import Engine, EngineError, EngineListener, Task, TaskOutcome


def create_engine(
    config: EndpointConfig, endpoint_dir: EndpointDir, listener: EngineListener
) -> Engine:
    """The engine ``config.engine.type`` names, or :class:`EngineError` saying why not."""
    if config.engine.type == "process":
        from .process import ProcessEngine

        return ProcessEngine(config, endpoint_dir, listener)
    raise EngineError(
        f"engine type {config.engine.type!r} is not available yet in this version of fx; "
        "use `type: process` in the engine section of config.yaml"
    )


__all__ = ["Engine", "EngineError", "EngineListener", "Task", "TaskOutcome", "create_engine"]
