"""Exceptions that cross process boundaries; importable wherever fx runs."""

from __future__ import annotations


class TaskExecutionFailed(Exception):
    """A remote task raised an exception whose class cannot be rebuilt in the caller."""

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(type_name, message, remote_traceback)
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.remote_message}\n\nRemote traceback:\n{self.remote_traceback}"


class WorkerLost(Exception):
    """The worker running a task died (signal, exit code, OOM) more times than retries allow."""


class WalltimeExceeded(TimeoutError):
    """A task ran longer than the walltime it was submitted with; its worker was stopped."""


class ResultTooLarge(ValueError):
    """A task's result is larger than its endpoint's ``max_result_size``; it was not sent."""
