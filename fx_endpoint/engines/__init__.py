"""Engines run tasks on workers for the endpoint daemon; see :mod:`.base` for the interface."""

from __future__ import annotations

from ..config import EndpointConfig
from ..paths import EndpointDir
from .base import Engine, EngineError, EngineListener, Task, TaskOutcome


def create_engine(
    config: EndpointConfig, endpoint_dir: EndpointDir, listener: EngineListener
) -> Engine:
    """The engine ``config.engine.type`` names, or :class:`EngineError` saying why not."""
    # Imported on demand: the parsl engine imports Parsl, which the process engine never needs.
    if config.engine.type == "process":
        from .process import ProcessEngine

        return ProcessEngine(config, endpoint_dir, listener)
    if config.engine.type == "parsl":
        from .parsl import ParslEngine

        return ParslEngine(config, endpoint_dir, listener)
    raise EngineError(f"unknown engine type {config.engine.type!r}; use process or parsl")


__all__ = ["Engine", "EngineError", "EngineListener", "Task", "TaskOutcome", "create_engine"]
