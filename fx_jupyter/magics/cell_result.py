"""The value a ``%%funcx`` cell's function returns, on both sides of the wire.

The first two functions run *on the worker*: :mod:`.codegen` copies their source into every
generated cell module, so they must stay self-contained (imports inside, only the standard
library and cloudpickle, which every worker has). :class:`CellResult` opens their output in the
kernel.

Each name the cell binds is pickled on its own, on the worker: one value that does not pickle
(an open file, a lock) is then reported by name instead of failing the whole task, and one that
cannot be loaded in the kernel (a class only the worker can import) is reported likewise.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

#: Marks a task result as a ``%%funcx`` cell's, so ``%funcx result`` can fill the notebook
#: (:func:`pack_cell_result` writes the same literals: it cannot see module globals).
RESULT_MARKER = "fx_cell"
RESULT_VERSION = 1


def remember_cell_source(filename: str, text: str) -> None:
    """Let tracebacks on the worker show the lines of the cell (runs on the worker)."""
    import linecache

    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)


def pack_cell_result(
    given: dict[str, Any],
    assigned: tuple[str, ...],
    deleted: tuple[str, ...],
    last: Any,
    has_last: bool,
) -> dict[str, Any]:
    """Collect what the cell's frame bound, each value pickled apart (runs on the worker).

    ``given`` holds the arguments the cell may rebind; a name still bound to the very object it
    was given is unchanged and does not travel back.
    """
    import sys

    import cloudpickle  # type: ignore[import-untyped]

    scope = sys._getframe(1).f_locals
    names: dict[str, bytes] = {}
    failed: dict[str, str] = {}
    for name in assigned:
        if name not in scope:
            continue
        value = scope[name]
        if name in given and given[name] is value:
            continue
        try:
            names[name] = cloudpickle.dumps(value)
        except Exception as error:  # noqa: BLE001 - pickling raises anything; reported by name
            failed[name] = f"{type(error).__name__}: {error}"
    result: dict[str, Any] = {
        "fx_cell": 1,
        "names": names,
        "unpicklable": failed,
        "deleted": [name for name in deleted if name not in scope],
        "last": None,
        "last_repr": None,
        "last_error": None,
    }
    if has_last and last is not None:
        try:
            result["last"] = cloudpickle.dumps(last)
        except Exception as error:  # noqa: BLE001 - pickling raises anything; repr instead
            result["last_error"] = f"{type(error).__name__}: {error}"
            result["last_repr"] = repr(last)[:10_000]
    return result


#: The worker-side helpers copied into every generated cell module.
REMOTE_HELPERS = (remember_cell_source, pack_cell_result)


def is_cell_result(value: Any) -> bool:
    """Whether a task result came from a ``%%funcx`` cell."""
    return isinstance(value, dict) and value.get(RESULT_MARKER) == RESULT_VERSION


@dataclass
class CellResult:
    """A cell's outcome opened in the kernel."""

    #: Values to bind in the notebook.
    names: dict[str, Any] = field(default_factory=dict)
    #: Names that could not come back, with the reason (pickling on the worker, or loading here).
    failed: dict[str, str] = field(default_factory=dict)
    #: Names the cell deleted.
    deleted: list[str] = field(default_factory=list)
    #: The value of the cell's last expression (None when it has none).
    last: Any = None
    #: When the last value could not come back: its ``repr`` on the worker, and why.
    last_repr: str | None = None
    last_error: str | None = None

    @classmethod
    def from_task_result(cls, value: dict[str, Any]) -> CellResult:
        """Open the dict :func:`pack_cell_result` returned."""
        result = cls(
            failed={
                name: f"does not pickle on the endpoint ({why})"
                for name, why in value.get("unpicklable", {}).items()
            },
            deleted=list(value.get("deleted", [])),
            last_repr=value.get("last_repr"),
            last_error=value.get("last_error"),
        )
        for name, payload in value.get("names", {}).items():
            try:
                result.names[name] = pickle.loads(payload)
            except Exception as error:  # noqa: BLE001 - unpickling raises anything; reported
                result.failed[name] = f"cannot be loaded here ({type(error).__name__}: {error})"
        if value.get("last") is not None:
            try:
                result.last = pickle.loads(value["last"])
            except Exception as error:  # noqa: BLE001 - unpickling raises anything; reported
                result.last_error = f"{type(error).__name__}: {error}"
                result.last_repr = "<the value could not be loaded in this kernel>"
        return result

    def display_value(self) -> Any:
        """What to show as the cell's result: the value, or its remote ``repr`` as a stand-in."""
        if self.last_repr is not None:
            return RemoteRepr(self.last_repr)
        return self.last

    def apply(self, namespace: dict[str, Any], out: str | None = None) -> None:
        """Bind the names (and ``out``) in ``namespace`` and drop the deleted ones."""
        namespace.update(self.names)
        for name in self.deleted:
            namespace.pop(name, None)
        if out is not None:
            namespace[out] = self.last

    def warnings(self) -> list[str]:
        """What the user should be told did not come back, one message per problem."""
        messages = [f"`{name}` was not brought back: it {why}" for name, why in self.failed.items()]
        if self.last_error is not None:
            messages.append(
                f"the cell's last value could not be brought back ({self.last_error}); "
                f"its repr is shown instead"
            )
        return messages


class RemoteRepr:
    """Displays as the ``repr`` a value had on the endpoint, for values that cannot travel."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text
