"""The options of ``%%funcx`` and the arguments of the ``%funcx`` line magics.

Everything a user types on a magic's line is checked here, before anything is sent, and every
mistake is a :class:`~IPython.core.error.UsageError` that says what was wrong and what would be
right: IPython shows those as one line, without a traceback.
"""

from __future__ import annotations

import keyword
import math
import shlex
from dataclasses import dataclass

from IPython.core.error import UsageError

from .analysis import RESERVED_PREFIX

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

#: ``%funcx`` subcommands and their usage lines.
LINE_COMMANDS = {
    "endpoints": "%funcx endpoints",
    "tasks": "%funcx tasks [LIMIT]",
    "use": "%funcx use [ENDPOINT]",
    "result": "%funcx result TASK_ID",
}
DEFAULT_TASK_LIMIT = 20


@dataclass(frozen=True)
class CellOptions:
    """Parsed ``%%funcx`` options."""

    #: Endpoint name or id; None means the one chosen with ``%funcx use``.
    endpoint: str | None = None
    #: Wait for the result (True) or return at once and fill the variables later.
    block: bool = True
    #: Seconds to wait when blocking before giving up (the task keeps running).
    timeout: float | None = None
    #: Notebook variable that receives the value of the cell's last expression.
    out: str | None = None
    #: Seconds the task may run on the endpoint before it is stopped.
    walltime: float | None = None
    #: Answer with the stored result of an earlier identical memoized run instead of running.
    memoize: bool = False


#: The valid options, in the order the usage line lists them.
CELL_OPTIONS = ("endpoint", "block", "timeout", "out", "walltime", "memoize")
CELL_USAGE = (
    "%%funcx endpoint=NAME|ID [block=true|false] [timeout=SECONDS] [out=VAR] "
    "[walltime=SECONDS] [memoize=true|false]"
)


def parse_cell_options(line: str) -> CellOptions:
    """Parse the ``key=value`` words after ``%%funcx``; raise :class:`UsageError` if malformed."""
    values: dict[str, str] = {}
    for word in _split(line):
        key, sep, value = word.partition("=")
        if not sep:
            raise UsageError(f"%%funcx: expected key=value, got {word!r}. Usage: {CELL_USAGE}")
        if key not in CELL_OPTIONS:
            raise UsageError(
                f"%%funcx: unknown option {key!r}; valid options are {', '.join(CELL_OPTIONS)}"
            )
        if key in values:
            raise UsageError(f"%%funcx: option {key!r} is given twice")
        values[key] = value

    endpoint = values.get("endpoint")
    if endpoint is not None and not endpoint.strip():
        raise UsageError("%%funcx: endpoint= needs an endpoint name or id")
    return CellOptions(
        endpoint=endpoint,
        block=_boolean("block", values["block"]) if "block" in values else True,
        timeout=_seconds("timeout", values["timeout"]) if "timeout" in values else None,
        out=_variable("out", values["out"]) if "out" in values else None,
        walltime=_seconds("walltime", values["walltime"]) if "walltime" in values else None,
        memoize=_boolean("memoize", values["memoize"]) if "memoize" in values else False,
    )


def parse_line_command(line: str) -> tuple[str, list[str]]:
    """Split ``%funcx`` arguments into a known subcommand and its checked arguments."""
    words = _split(line)
    if not words:
        raise UsageError(f"%funcx needs a command: {_line_usage()}")
    command, args = words[0], words[1:]
    if command not in LINE_COMMANDS:
        raise UsageError(f"%funcx: unknown command {command!r}; use one of: {_line_usage()}")
    usage = LINE_COMMANDS[command]
    if command == "endpoints" and args:
        raise UsageError(f"%funcx endpoints takes no arguments. Usage: {usage}")
    if command == "tasks":
        if len(args) > 1:
            raise UsageError(f"%funcx tasks takes at most one argument. Usage: {usage}")
        if args and (not args[0].isdigit() or int(args[0]) < 1):
            raise UsageError(f"%funcx tasks: LIMIT must be a positive integer, got {args[0]!r}")
    if command == "use" and len(args) > 1:
        raise UsageError(f"%funcx use takes one endpoint name or id. Usage: {usage}")
    if command == "result" and len(args) != 1:
        raise UsageError(f"%funcx result takes one task id. Usage: {usage}")
    return command, args


def _line_usage() -> str:
    return "; ".join(LINE_COMMANDS.values())


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as e:  # an unclosed quote
        raise UsageError(f"%funcx: cannot parse {line!r}: {e}") from None


def _boolean(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise UsageError(f"%%funcx: {key}= must be true or false, got {value!r}")


def _seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"%%funcx: {key}= must be a positive number of seconds, got {value!r}")
    return seconds


def _variable(key: str, value: str) -> str:
    if not value.isidentifier() or keyword.iskeyword(value) or value.startswith(RESERVED_PREFIX):
        raise UsageError(f"%%funcx: {key}= must be a Python variable name, got {value!r}")
    return value
