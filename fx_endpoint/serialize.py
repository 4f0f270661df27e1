"""Serialization of functions, arguments and results (cloudpickle, by value).

Only the SDK and the workers call these; the service treats every payload as opaque bytes.

A *function payload* is self-describing so a worker can fall back to the source text when it
cannot load the bytecode (another Python version)::

    b"FXF1" | u32 header length | JSON header {name, python, source} | cloudpickle bytes

Arguments are ``cloudpickle.dumps((args, kwargs))``. A result is ``cloudpickle.dumps(value)``
for a success and ``cloudpickle.dumps(RemoteError)`` for a failure.
"""

from __future__ import annotations

import inspect
import json
import pickle
import platform
import struct
import textwrap
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import cloudpickle

FUNCTION_MAGIC = b"FXF1"
_HEADER_LEN = struct.Struct("!I")
PYTHON_VERSION = platform.python_version()


class DeserializationError(Exception):
    """A payload could not be turned back into Python objects; the message says why."""


@dataclass
class FunctionInfo:
    """What a function payload says about itself."""

    name: str
    python: str
    source: str | None


def function_source(fn: Callable[..., Any]) -> str | None:
    """The dedented source text of ``fn``, or None when Python cannot find it (REPL, builtins)."""
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None


def serialize_function(fn: Callable[..., Any], source: str | None = None) -> bytes:
    """Pack ``fn`` by value, with its source text (found, or given, as a %%funcx cell does)."""
    if not callable(fn):
        raise TypeError(f"expected a callable, got {type(fn).__name__}")
    name = getattr(fn, "__name__", type(fn).__name__)
    if source is None:
        source = function_source(fn)
    header = json.dumps({"name": name, "python": PYTHON_VERSION, "source": source}).encode()
    return FUNCTION_MAGIC + _HEADER_LEN.pack(len(header)) + header + cloudpickle.dumps(fn)


def function_info(payload: bytes) -> FunctionInfo:
    """Read the header of a function payload without unpickling anything."""
    header, _ = _split_function(payload)
    return FunctionInfo(header.get("name", "?"), header.get("python", "?"), header.get("source"))


def _split_function(payload: bytes) -> tuple[dict[str, Any], memoryview]:
    view = memoryview(payload)
    if bytes(view[:4]) != FUNCTION_MAGIC or len(view) < 8:
        raise DeserializationError("not an fx function payload (bad magic)")
    (size,) = _HEADER_LEN.unpack(view[4:8])
    try:
        header = json.loads(bytes(view[8 : 8 + size]))
    except ValueError as e:
        raise DeserializationError(f"function payload header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise DeserializationError("function payload header is not a JSON object")
    return header, view[8 + size :]


def deserialize_function(payload: bytes) -> Callable[..., Any]:
    """Load a function: the pickled bytecode first, then its source text.

    Raises :class:`DeserializationError` naming both Python versions when neither works.
    """
    header, body = _split_function(payload)
    name = header.get("name", "?")
    registered_on = header.get("python", "?")
    try:
        fn = cloudpickle.loads(body)
        if callable(fn):
            return fn
        pickle_error = f"payload holds a {type(fn).__name__}, not a function"
    except Exception as e:
        pickle_error = f"{type(e).__name__}: {e}"
    source = header.get("source")
    if source:
        namespace: dict[str, Any] = {"__name__": "__fx_function__"}
        try:
            exec(compile(source, f"<fx function {name}>", "exec"), namespace)
            fn = namespace.get(name)
            if callable(fn):
                return fn
            source_error = f"the source does not define {name!r}"
        except Exception as e:
            source_error = f"{type(e).__name__}: {e}"
    else:
        source_error = "no source text was registered"
    raise DeserializationError(
        f"cannot load function {name!r} registered on Python {registered_on} in this worker's "
        f"Python {PYTHON_VERSION}: unpickling failed ({pickle_error}) and so did the source "
        f"fallback ({source_error})"
    )


def serialize_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pack call arguments by value."""
    return cloudpickle.dumps((tuple(args), dict(kwargs)))


def deserialize_args(payload: bytes | memoryview) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Unpack call arguments (any buffer: a received frame need not be copied to ``bytes``);
    malformed payloads raise :class:`DeserializationError`."""
    try:
        args, kwargs = pickle.loads(payload)
    except Exception as e:
        raise DeserializationError(f"cannot deserialize task arguments: {type(e).__name__}: {e}")
    if not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise DeserializationError("task arguments are not an (args, kwargs) pair")
    return args, kwargs


@dataclass
class RemoteError:
    """A failure shipped back to the caller.

    ``exception`` is the original exception pickled on its own, so a caller that cannot import
    its class still gets the type name and the remote traceback text.
    """

    type_name: str
    message: str
    traceback: str
    exception: bytes | None = None

    def reraise_value(self) -> BaseException:
        """The exception to raise in the caller: the original type when it can be rebuilt."""
        from .errors import TaskExecutionFailed

        original: BaseException | None = None
        if self.exception is not None:
            try:
                original = pickle.loads(self.exception)
            except Exception:
                original = None
        if not isinstance(original, BaseException):
            return TaskExecutionFailed(self.type_name, self.message, self.traceback)
        return with_remote_traceback(original, self.traceback)


def with_remote_traceback(exc: BaseException, remote_tb: str) -> BaseException:
    """Rebuild ``exc`` as an instance of a subclass of its own type whose ``str`` ends with the
    remote traceback, so ``except ZeroDivisionError`` still catches it and the message tells
    where it happened. Exceptions that cannot be rebuilt keep their type and get a note."""
    cls = type(exc)
    original_str = str(exc)
    try:
        sub = type(
            cls.__name__,
            (cls,),
            {
                "__str__": lambda self: f"{original_str}\n\nRemote traceback:\n{remote_tb}",
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
            },
        )
        rebuilt = sub(*exc.args)
        rebuilt.__dict__.update(getattr(exc, "__dict__", {}))
        return rebuilt
    except Exception:
        if hasattr(exc, "add_note"):
            exc.add_note(f"Remote traceback:\n{remote_tb}")
        return exc


def serialize_result(value: Any) -> bytes:
    """Pack a successful result."""
    return cloudpickle.dumps(value)


def serialize_exception(exc: BaseException, tb_text: str | None = None) -> bytes:
    """Pack a failure: type name, message, traceback text, and the exception if it pickles."""
    if tb_text is None:
        tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickled: bytes | None = cloudpickle.dumps(exc)
        pickle.loads(pickled)
    except Exception:
        pickled = None
    error = RemoteError(type(exc).__name__, str(exc), tb_text, pickled)
    return cloudpickle.dumps(error)


def deserialize_result(payload: bytes) -> Any:
    """Unpack a result payload (a value, or a :class:`RemoteError`)."""
    try:
        return pickle.loads(payload)
    except Exception as e:
        raise DeserializationError(
            f"cannot deserialize the task result here: {type(e).__name__}: {e}"
        ) from None
