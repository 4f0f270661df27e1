"""Task operations behind the REST handlers: submit, cancel, look up.

A submission is all-or-nothing: every task's endpoint and function are resolved for the
submitting user first, then all tasks are stored in one operation, and only after that commit
are their ids answered (DESIGN.md invariant 2) and the tasks handed to the dispatcher.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from typing import Any

from .dispatch import Dispatcher, OutTask
from .endpoints import EndpointRegistry
from .events import EventHub
from .functions import FunctionRegistry
from .models import task_json
from .records import Change, NewTask, new_id
from .store import TaskStore
from .validation import ApiError, TaskRequest, bad_request


def not_found(what: str, ident: str) -> ApiError:
    """The 404 for an id that is unknown — or another user's, which must look the same."""
    return ApiError(404, "not_found", f"no {what} {ident!r} (unknown, or not yours)")


class TaskManager:
    """Submits, cancels and reads tasks on behalf of a user."""

    def __init__(
        self,
        store: TaskStore,
        registry: EndpointRegistry,
        functions: FunctionRegistry,
        dispatcher: Dispatcher,
        events: EventHub,
        log: logging.Logger,
    ) -> None:
        self.store = store
        self.registry = registry
        self.functions = functions
        self.dispatcher = dispatcher
        self.events = events
        self.log = log

    async def submit(self, owner: str, items: list[TaskRequest]) -> list[str]:
        """Store a batch of tasks and queue them for their endpoints; returns their ids."""
        endpoint_ids: dict[str, str] = {}
        for i, item in enumerate(items):
            if item.endpoint not in endpoint_ids:
                record = self.registry.resolve(owner, item.endpoint)
                if record is None:
                    raise bad_request(
                        f"tasks[{i}].endpoint_id: no endpoint {item.endpoint!r} (unknown, or not "
                        "yours); list yours with GET endpoints"
                    )
                endpoint_ids[item.endpoint] = record.endpoint_id
        visible = await self.functions.visible(owner, (item.function_id for item in items))
        for i, item in enumerate(items):
            if item.function_id not in visible:
                raise bad_request(
                    f"tasks[{i}].function_id: no function {item.function_id!r} (unknown, or "
                    "neither yours nor public); register it first"
                )
        new = [
            NewTask(
                new_id(),
                endpoint_ids[item.endpoint],
                item.function_id,
                item.payload,
                item.walltime,
                item.memoize,
            )
            for item in items
        ]
        # Dated before the commit: the tasks are dispatched right after it, and a task may
        # start before this coroutine runs again (its waiting-for-ep must not come later).
        submitted = time.time()
        seqs, memoized = await self.store.insert_tasks(owner, new, submitted)
        self._dispatch(new, seqs, memoized)
        self._publish(owner, new, memoized, submitted)
        return [t.task_id for t in new]

    def _dispatch(self, new: list[NewTask], seqs: list[int], memoized: dict[str, Any]) -> None:
        by_endpoint: defaultdict[str, list[OutTask]] = defaultdict(list)
        for seq, t in zip(seqs, new):
            if t.task_id not in memoized:
                by_endpoint[t.endpoint_id].append(
                    OutTask(seq, t.task_id, t.function_id, t.payload, t.walltime, 0)
                )
        for endpoint_id, out in by_endpoint.items():
            self.dispatcher.tasks_added(endpoint_id, out)

    def _publish(
        self,
        owner: str,
        new: list[NewTask],
        memoized: dict[str, tuple[Change, dict[str, Any]]],
        submitted: float,
    ) -> None:
        if not self.events.wants(owner):
            return
        self.events.tasks_submitted(
            owner,
            ((t.task_id, t.endpoint_id) for t in new if t.task_id not in memoized),
            submitted,
        )
        for change, result in memoized.values():
            self.events.task_result(
                change, result["data"], result["exception_text"], result["stdout"], result["stderr"]
            )

    async def cancel(self, owner: str, task_id: str) -> str:
        """Cancel a task: dropped if queued, stopped at its endpoint if sent; then its Task."""
        change = await self.store.cancel_task(owner, task_id)
        if change is not None:
            self.dispatcher.cancelled(change.endpoint_id, [task_id])
            self.events.task_result(
                change, None, f"task {task_id} was cancelled by the user", None, None
            )
        return await self.get(owner, task_id)

    async def get(self, owner: str, task_id: str) -> str:
        """The owner's Task (with its result payload) as JSON, or 404."""
        found = await self.store.get_tasks(owner, [task_id])
        if task_id not in found:
            raise not_found("task", task_id)
        return task_json(found[task_id])

    async def batch_status(self, owner: str, task_ids: list[str]) -> str:
        """``{"results": {id: Task}, "unknown": [ids]}`` as JSON; ids that are unknown (or not the
        owner's) are listed apart."""
        found = await self.store.get_tasks(owner, task_ids)
        tasks = ",".join(f'"{tid}":{task_json(row)}' for tid, row in found.items())
        unknown = [tid for tid in dict.fromkeys(task_ids) if tid not in found]
        return f'{{"results":{{{tasks}}},"unknown":{json.dumps(unknown)}}}'

    async def recent(self, owner: str, limit: int, endpoint: str | None, status: str | None) -> str:
        """``{"tasks": [Task...]}`` as JSON: the owner's newest tasks, without payloads,
        optionally for one endpoint or state."""
        endpoint_id = None
        if endpoint is not None:
            record = self.registry.resolve(owner, endpoint)
            # A deleted endpoint's tasks remain listable by its id.
            endpoint_id = record.endpoint_id if record is not None else endpoint
        rows = await self.store.list_tasks(owner, limit, endpoint_id, status)
        return '{"tasks":[' + ",".join(task_json(row) for row in rows) + "]}"
