"""Turning a ``%%funcx`` cell into a function an endpoint can run.

A cell such as::

    y = x * k
    y + 1

becomes, for arguments ``x`` and ``k``, a module holding the worker-side helpers of
:mod:`.cell_result` and::

    def __fx_cell_<hash>(x, k):
        __fx_remember_cell_source('<funcx cell …>', '<the cell>')
        __fx_given = {}
        y = x * k
        __fx_last = y + 1
        return __fx_pack_cell_result(__fx_given, ('y',), (), __fx_last, True)

The rewriting works on the AST and the text is ``ast.unparse`` of it: that text is registered
with the function so a worker on another Python can rebuild it from source. The function object
itself is compiled here from the same AST, keeping the cell's own line numbers, so a remote
traceback points at the cell's lines.

Module code and function bodies differ in a few ways the rewriting takes care of: a top-level
``global`` is a no-op and is dropped; ``global x`` in a nested function means the cell's ``x``
and becomes ``nonlocal x``; an argument the cell rebinds is compared with what it was given so
unchanged values do not travel back.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import inspect
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .analysis import RESERVED_PREFIX, CellNames, UnsupportedCell
from .cell_result import REMOTE_HELPERS

#: ``__name__`` of the generated module. It is not importable, so cloudpickle ships the function
#: (and the helpers it calls) by value.
MODULE_NAME = "__fx_cell__"

#: Python 3.12 added type parameters to function definitions.
_NO_TYPE_PARAMS: dict[str, Any] = (
    {"type_params": []} if "type_params" in ast.FunctionDef._fields else {}
)

_LAST = f"{RESERVED_PREFIX}last"
_GIVEN = f"{RESERVED_PREFIX}given"


@dataclass(frozen=True)
class CellFunction:
    """A cell made into a function, ready to register."""

    #: ``__fx_cell_<hash>``; the hash covers the cell text and the argument names.
    name: str
    #: Argument names, in the order the cell first reads them.
    params: tuple[str, ...]
    #: The generated module's source text (registered as the function's ``source``).
    source: str
    #: The compiled function; it returns the dict of :func:`.cell_result.pack_cell_result`.
    function: Callable[..., dict[str, Any]]
    #: Whether the cell ends with an expression whose value is the cell's result.
    has_last: bool
    #: The filename of the cell's code in tracebacks.
    filename: str
    #: The cell's text.
    cell: str


def parse_cell(cell: str, filename: str = "<funcx cell>") -> ast.Module:
    """Parse a cell and check it compiles as module code.

    Compiling catches what a function body would silently accept: a top-level ``return``,
    ``yield``, ``nonlocal`` or ``await`` is a :class:`SyntaxError` here, as it would be in a
    plain notebook cell (IPython's top-level ``await`` has no equivalent on an endpoint).
    """
    tree = ast.parse(cell, filename, "exec")
    compile(tree, filename, "exec", dont_inherit=True)
    return tree


def build_cell_function(
    cell: str, tree: ast.Module, names: CellNames, params: Sequence[str]
) -> CellFunction:
    """Generate, compile and return the function for ``cell``.

    ``tree`` is ``parse_cell(cell)`` (left unchanged), ``names`` its analysis, and ``params``
    the names read from the notebook that will be passed as keyword arguments.
    """
    params = tuple(params)
    local = {*params, *names.assigned, *names.nested_globals, *names.deleted}
    clashes = [name for name in names.class_early_reads if name in local]
    if clashes:
        name = clashes[0]
        raise UnsupportedCell(
            f"a class body reads `{name}` before assigning its own `{name}`; on an endpoint the "
            f"cell runs as a function and that class body cannot see the cell's `{name}`. "
            f"Give the class attribute another name, or read `{name}` into a differently named "
            f"variable before the class"
        )

    digest = hashlib.sha256(f"{cell}\0{','.join(params)}".encode()).hexdigest()[:16]
    name = f"{RESERVED_PREFIX}cell_{digest}"
    filename = f"<funcx cell {digest[:8]}>"

    body = copy.deepcopy(tree.body)
    futures = _split_future_imports(body)
    body = [_GlobalRewriter().visit(stmt) for stmt in body]
    has_last = bool(body) and isinstance(body[-1], ast.Expr)
    if has_last:
        last = body[-1]
        assert isinstance(last, ast.Expr)
        body[-1] = ast.copy_location(
            ast.Assign(targets=[ast.Name(_LAST, ast.Store())], value=last.value), last
        )
    if not body:  # a cell of only `from __future__` imports
        body = [ast.Pass()]

    anchor = body[0]
    prologue: list[ast.stmt] = [
        _call_statement(f"{RESERVED_PREFIX}remember_cell_source", [filename, cell]),
        ast.Assign(
            targets=[ast.Name(_GIVEN, ast.Store())],
            value=ast.Dict(
                keys=[ast.Constant(p) for p in params if p in names.assigned],
                values=[ast.Name(p, ast.Load()) for p in params if p in names.assigned],
            ),
        ),
    ]
    # `nonlocal x` needs an `x` local to the generated function; a bare annotation declares
    # one without binding it.
    prologue += [
        ast.AnnAssign(
            target=ast.Name(glob, ast.Store()),
            annotation=ast.Name("object", ast.Load()),
            value=None,
            simple=1,
        )
        for glob in names.nested_globals
        if glob not in params
    ]
    for stmt in prologue:
        ast.copy_location(stmt, anchor)
    epilogue = ast.Return(
        value=ast.Call(
            func=ast.Name(f"{RESERVED_PREFIX}pack_cell_result", ast.Load()),
            args=[
                ast.Name(_GIVEN, ast.Load()),
                _string_tuple(names.assigned),
                _string_tuple(names.deleted),
                ast.Name(_LAST, ast.Load()) if has_last else ast.Constant(None),
                ast.Constant(has_last),
            ],
            keywords=[],
        )
    )
    ast.copy_location(epilogue, body[-1])

    function = ast.FunctionDef(
        name=name,
        args=ast.arguments(
            posonlyargs=[],
            args=[ast.arg(p) for p in params],
            vararg=None,
            kwonlyargs=[],
            kw_defaults=[],
            kwarg=None,
            defaults=[],
        ),
        body=[*prologue, *body, epilogue],
        decorator_list=[],
        returns=None,
        **_NO_TYPE_PARAMS,
    )
    ast.copy_location(function, anchor)
    function.lineno = 1
    module = ast.Module(body=[*futures, *_remote_helpers(), function], type_ignores=[])
    ast.fix_missing_locations(module)

    source = ast.unparse(module) + "\n"
    namespace: dict[str, Any] = {"__name__": MODULE_NAME}
    # Defines the function (and its helpers) in a module namespace of its own; runs no cell code.
    exec(compile(module, filename, "exec", dont_inherit=True), namespace)  # noqa: S102
    return CellFunction(name, params, source, namespace[name], has_last, filename, cell)


class _GlobalRewriter(ast.NodeTransformer):
    """Drops the cell's own ``global`` statements; makes nested ones ``nonlocal``."""

    def __init__(self) -> None:
        self.depth = 0

    def _scope(self, node: ast.AST) -> ast.AST:
        self.depth += 1
        try:
            self.generic_visit(node)
        finally:
            self.depth -= 1
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scope

    def visit_Global(self, node: ast.Global) -> ast.AST:
        if self.depth == 0:
            return ast.copy_location(ast.Pass(), node)
        return ast.copy_location(ast.Nonlocal(names=list(node.names)), node)


def _split_future_imports(body: list[ast.stmt]) -> list[ast.stmt]:
    """Remove the leading ``from __future__`` imports from ``body`` and return them: they must
    open the generated module, not the function."""
    futures: list[ast.stmt] = []
    index = 0
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        index = 1  # a leading string (docstring) may precede them
    while index < len(body):
        stmt = body[index]
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            futures.append(body.pop(index))
        else:
            break
    return futures


def _remote_helpers() -> list[ast.stmt]:
    """The worker-side helpers as definitions named ``__fx_<name>``, without annotations (the
    generated module has no imports to evaluate them with)."""
    helpers: list[ast.stmt] = []
    for helper in REMOTE_HELPERS:
        tree = ast.parse(textwrap.dedent(inspect.getsource(helper)))
        definition = tree.body[0]
        assert isinstance(definition, ast.FunctionDef)
        definition.name = f"{RESERVED_PREFIX}{helper.__name__}"
        definition.returns = None
        for arg in [
            *definition.args.posonlyargs,
            *definition.args.args,
            *definition.args.kwonlyargs,
        ]:
            arg.annotation = None
        helpers.append(definition)
    return helpers


def _call_statement(function: str, args: list[Any]) -> ast.stmt:
    return ast.Expr(
        ast.Call(
            func=ast.Name(function, ast.Load()),
            args=[ast.Constant(a) for a in args],
            keywords=[],
        )
    )


def _string_tuple(names: Sequence[str]) -> ast.Tuple:
    return ast.Tuple(elts=[ast.Constant(n) for n in names], ctx=ast.Load())
