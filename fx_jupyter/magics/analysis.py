"""Which names a ``%%funcx`` cell takes from the notebook, and which it gives back.

A cell runs on an endpoint as the body of a generated function (see :mod:`.codegen`), so the
notebook values it *reads* must travel as arguments and the names it *binds* must travel back.
This module finds both with a scope-aware walk of the cell's AST:

* At the cell's top level the walk is flow-sensitive: a name counts as read when some read can
  happen while the name is not *definitely* bound by earlier code of the cell (both branches of
  an ``if``, a loop body that may run zero times, an ``except`` that may run instead of the
  ``try`` body...). Reading a notebook value the cell may not need only costs bandwidth, while
  missing one breaks the cell, so every uncertainty resolves towards "read".
* Nested scopes (functions, lambdas, classes, comprehensions) are analysed like the compiler's
  symbol table does, and their free names count as reads at the point the scope is created: a
  function's body may run any time after its ``def``, so that is the conservative choice.
* Names a nested scope declares ``global`` refer to the cell's top level (the notebook's module
  scope); the code generator turns them into ``nonlocal`` of the generated function.

Nested definitions are summarised by :mod:`.scopes`. The analysis only looks at syntax; :mod:`.magics` intersects :attr:`CellNames.reads` with the
notebook namespace to decide what is sent.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .scopes import (
    CLASS,
    FUNCTION,
    Ordered,
    Scope,
    ScopeBuilder,
    ScopeSummary,
    UnsupportedCell,
    definition_time_exprs,
    imported_names,
    summarize,
)

#: Identifiers the generated function uses for itself; a cell may not use them.
RESERVED_PREFIX = "__fx_"

_Comprehension = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(frozen=True)
class CellNames:
    """The result of :func:`analyze_cell`; every tuple is in first-occurrence order."""

    #: Names the cell may read before it has bound them itself: candidates for arguments.
    reads: tuple[str, ...]
    #: Names the cell binds at its top level, directly or from a nested ``global`` declaration:
    #: these come back into the notebook.
    assigned: tuple[str, ...]
    #: Names the cell unbinds at its top level with ``del``: removed from the notebook when they
    #: are unbound at the end of the cell.
    deleted: tuple[str, ...]
    #: Names nested scopes declare ``global``: the generated code makes them ``nonlocal``.
    nested_globals: tuple[str, ...]
    #: Names some class body reads before binding them itself. Python looks these up in the
    #: module globals, which the generated function cannot give the cell's own values.
    class_early_reads: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# The cell's top level: flow-sensitive.

_Definite = frozenset[str]


def _cell_root() -> Scope:
    """A scope standing for the cell's top level, parent of the scopes one statement creates."""
    return Scope(FUNCTION, None)


class _CellWalker:
    """Walks the cell's top-level statements, tracking which names are definitely bound."""

    def __init__(self, lazy_annotations: bool) -> None:
        self.lazy_annotations = lazy_annotations
        self.reads = Ordered()
        self.assigned = Ordered()
        self.deleted = Ordered()
        self.nested_globals = Ordered()
        self.class_early_reads = Ordered()

    # -- helpers ------------------------------------------------------------------------------

    def _read(self, name: str, definite: Iterable[str]) -> None:
        if name not in definite:
            self.reads.add(name)

    def _bind(self, name: str, definite: set[str] | None) -> None:
        self.assigned.add(name)
        if definite is not None:
            definite.add(name)

    def _nested(self, root: Scope, definite: Iterable[str], after: Iterable[str] = ()) -> None:
        """Account for scopes created at the top level while ``definite`` names are bound.

        ``root`` stands for the cell: its children are the new scopes, and what it binds
        (assignment expressions in comprehensions) is bound at the cell's top level. The
        functions defined in a top-level class body run later, when ``after`` is bound too.
        """
        for scope in root.children:
            if scope.kind == CLASS:
                self._effects(summarize(scope, with_children=False), definite)
                for method in scope.children:
                    self._effects(summarize(method), {*definite, *after})
            else:
                self._effects(summarize(scope), definite)
        for name in root.bound:
            self.assigned.add(name)

    def _effects(self, summary: ScopeSummary, definite: Iterable[str]) -> None:
        definite = set(definite)
        for name in [*summary.free, *summary.global_reads]:
            self._read(name, definite)
        self.assigned.update(summary.global_writes)
        self.nested_globals.update(summary.global_decls)
        self.class_early_reads.update(summary.class_early_reads)

    # -- statements ---------------------------------------------------------------------------

    def block(self, body: list[ast.stmt], definite: _Definite) -> _Definite:
        for stmt in body:
            definite = self.stmt(stmt, definite)
        return definite

    def stmt(self, node: ast.stmt, definite: _Definite) -> _Definite:
        handler = getattr(self, f"stmt_{type(node).__name__}", None)
        if handler is not None:
            return handler(node, definite)
        # Statements without bindings of their own (Expr, Return-less simple statements,
        # Raise, Assert, Pass, Break, Continue...): their expressions are read in order.
        current = set(definite)
        for child in ast.iter_child_nodes(node):
            self.expr(child, current)
        return frozenset(current)

    def stmt_Assign(self, node: ast.Assign, definite: _Definite) -> _Definite:
        current = set(definite)
        self.expr(node.value, current)
        for target in node.targets:
            self.target(target, current)
        return frozenset(current)

    def stmt_AugAssign(self, node: ast.AugAssign, definite: _Definite) -> _Definite:
        current = set(definite)
        if isinstance(node.target, ast.Name):
            self._read(node.target.id, current)
            self.expr(node.value, current)
            self._bind(node.target.id, current)
        else:
            self.target(node.target, current)
            self.expr(node.value, current)
        return frozenset(current)

    def stmt_AnnAssign(self, node: ast.AnnAssign, definite: _Definite) -> _Definite:
        # In a function body a variable's annotation is not evaluated, and a bare annotation
        # (`x: int`) binds nothing: later reads of `x` stay reads of the notebook's value.
        current = set(definite)
        if node.value is None:
            if not isinstance(node.target, ast.Name):
                self.expr(node.target, current)
            return frozenset(current)
        self.expr(node.value, current)
        self.target(node.target, current)
        return frozenset(current)

    def stmt_Delete(self, node: ast.Delete, definite: _Definite) -> _Definite:
        current = set(definite)
        for target in node.targets:
            for name in _target_names(target, current, self):
                self._read(name, current)
                self.deleted.add(name)
                current.discard(name)
        return frozenset(current)

    def stmt_Import(self, node: ast.Import | ast.ImportFrom, definite: _Definite) -> _Definite:
        current = set(definite)
        for name in imported_names(node):
            self._bind(name, current)
        return frozenset(current)

    stmt_ImportFrom = stmt_Import

    def stmt_Global(self, node: ast.Global, definite: _Definite) -> _Definite:
        # At module level `global` changes nothing; the code generator drops it.
        return definite

    def stmt_FunctionDef(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef, definite: _Definite
    ) -> _Definite:
        current = set(definite)
        for expr in definition_time_exprs(node, self.lazy_annotations):
            self.expr(expr, current)
        self._bind(node.name, current)
        # The body runs later, when its own name is bound: recursion is not a notebook read.
        root = _cell_root()
        ScopeBuilder(root, self.lazy_annotations).function(node)
        self._nested(root, current)
        return frozenset(current)

    stmt_AsyncFunctionDef = stmt_FunctionDef

    def stmt_ClassDef(self, node: ast.ClassDef, definite: _Definite) -> _Definite:
        current = set(definite)
        for expr in definition_time_exprs(node):
            self.expr(expr, current)
        root = _cell_root()
        ScopeBuilder(root, self.lazy_annotations).class_body(node)
        before = frozenset(current)
        self._bind(node.name, current)
        self._nested(root, before, after=current)
        return frozenset(current)

    def stmt_If(self, node: ast.If, definite: _Definite) -> _Definite:
        current = set(definite)
        self.expr(node.test, current)
        after_test = frozenset(current)
        return self.block(node.body, after_test) & self.block(node.orelse, after_test)

    def stmt_For(self, node: ast.For | ast.AsyncFor, definite: _Definite) -> _Definite:
        current = set(definite)
        self.expr(node.iter, current)
        before = frozenset(current)
        self.target(node.target, current)
        self.block(node.body, frozenset(current))
        # The body may run zero times; `else` runs after the last iteration (or none).
        return self.block(node.orelse, before)

    stmt_AsyncFor = stmt_For

    def stmt_While(self, node: ast.While, definite: _Definite) -> _Definite:
        current = set(definite)
        self.expr(node.test, current)
        before = frozenset(current)
        self.block(node.body, before)
        return self.block(node.orelse, before)

    def stmt_With(self, node: ast.With | ast.AsyncWith, definite: _Definite) -> _Definite:
        current = set(definite)
        for item in node.items:
            self.expr(item.context_expr, current)
            if item.optional_vars is not None:
                self.target(item.optional_vars, current)
        return self.block(node.body, frozenset(current))

    stmt_AsyncWith = stmt_With

    def stmt_Try(self, node: ast.Try, definite: _Definite) -> _Definite:
        after_body = self.block(node.body, definite)
        outcomes = [self.block(node.orelse, after_body)]
        for handler in node.handlers:
            # The exception can come from anywhere in the body: only `definite` holds.
            current = set(definite)
            if handler.type is not None:
                self.expr(handler.type, current)
            if handler.name:
                self._bind(handler.name, current)
            after = set(self.block(handler.body, frozenset(current)))
            if handler.name:
                after.discard(handler.name)  # Python deletes it at the end of the handler
            outcomes.append(frozenset(after))
        normal = frozenset.intersection(*outcomes)
        after_finally = self.block(node.finalbody, definite)
        return normal | after_finally

    stmt_TryStar = stmt_Try

    def stmt_Match(self, node: ast.Match, definite: _Definite) -> _Definite:
        current = set(definite)
        self.expr(node.subject, current)
        before = frozenset(current)
        outcomes = []
        exhaustive = False
        for case in node.cases:
            bound = set(before)
            self.pattern(case.pattern, bound)
            if case.guard is not None:
                self.expr(case.guard, bound)
            outcomes.append(self.block(case.body, frozenset(bound)))
            if case.guard is None and _irrefutable(case.pattern):
                exhaustive = True
        if not exhaustive:
            outcomes.append(before)
        return frozenset.intersection(*outcomes) if outcomes else before

    # -- targets and patterns -----------------------------------------------------------------

    def target(self, node: ast.expr, definite: set[str]) -> None:
        """Bind the names of an assignment target; read what the target evaluates."""
        if isinstance(node, ast.Name):
            self._bind(node.id, definite)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                self.target(element, definite)
        elif isinstance(node, ast.Starred):
            self.target(node.value, definite)
        else:  # Attribute or Subscript: `obj.attr = ...` reads `obj`
            self.expr(node, definite)

    def pattern(self, node: ast.pattern, definite: set[str]) -> None:
        if isinstance(node, ast.MatchAs):
            if node.pattern is not None:
                self.pattern(node.pattern, definite)
            if node.name:
                self._bind(node.name, definite)
        elif isinstance(node, ast.MatchStar):
            if node.name:
                self._bind(node.name, definite)
        elif isinstance(node, ast.MatchOr):
            # Every alternative binds the same names (the compiler checks this).
            for alternative in node.patterns:
                self.pattern(alternative, set(definite))
            names = _pattern_names(node.patterns[0])
            for name in names:
                self._bind(name, definite)
        elif isinstance(node, ast.MatchMapping):
            for key in node.keys:
                self.expr(key, definite)
            for sub in node.patterns:
                self.pattern(sub, definite)
            if node.rest:
                self._bind(node.rest, definite)
        elif isinstance(node, ast.MatchClass):
            self.expr(node.cls, definite)
            for sub in [*node.patterns, *node.kwd_patterns]:
                self.pattern(sub, definite)
        elif isinstance(node, ast.MatchSequence):
            for sub in node.patterns:
                self.pattern(sub, definite)
        elif isinstance(node, ast.MatchValue):
            self.expr(node.value, definite)
        # MatchSingleton reads nothing.

    # -- expressions: children in evaluation order --------------------------------------------

    def expr(self, node: ast.AST, definite: set[str]) -> None:
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self._read(node.id, definite)
            else:
                self._bind(node.id, definite)
        elif isinstance(node, ast.NamedExpr):
            self.expr(node.value, definite)
            self._bind(node.target.id, definite)
        elif isinstance(node, ast.BoolOp):
            # Only the first operand is always evaluated.
            self.expr(node.values[0], definite)
            for value in node.values[1:]:
                self.expr(value, set(definite))
        elif isinstance(node, ast.IfExp):
            self.expr(node.test, definite)
            for branch in (node.body, node.orelse):
                self.expr(branch, set(definite))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if key is not None:
                    self.expr(key, definite)
                self.expr(value, definite)
        elif isinstance(node, ast.Lambda):
            for expr in definition_time_exprs(node):
                self.expr(expr, definite)
            root = _cell_root()
            ScopeBuilder(root, self.lazy_annotations).function(node)
            self._nested(root, definite)
        elif isinstance(node, _Comprehension):
            self.expr(node.generators[0].iter, definite)
            root = _cell_root()
            ScopeBuilder(root, self.lazy_annotations).comprehension(node)
            self._nested(root, definite)
        else:
            for child in ast.iter_child_nodes(node):
                self.expr(child, definite)


def _target_names(node: ast.expr, definite: set[str], walker: _CellWalker) -> list[str]:
    """Names a ``del`` target unbinds; other parts of the target are read."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        names: list[str] = []
        for element in node.elts:
            names.extend(_target_names(element, definite, walker))
        return names
    walker.expr(node, definite)
    return []


def _pattern_names(node: ast.pattern) -> list[str]:
    names = []
    for sub in ast.walk(node):
        if isinstance(sub, (ast.MatchAs, ast.MatchStar)) and sub.name:
            names.append(sub.name)
        elif isinstance(sub, ast.MatchMapping) and sub.rest:
            names.append(sub.rest)
    return names


def _irrefutable(node: ast.pattern) -> bool:
    if isinstance(node, ast.MatchAs):
        return node.pattern is None or _irrefutable(node.pattern)
    if isinstance(node, ast.MatchOr):
        return any(_irrefutable(p) for p in node.patterns)
    return False


def _has_lazy_annotations(tree: ast.Module) -> bool:
    return any(
        isinstance(stmt, ast.ImportFrom)
        and stmt.module == "__future__"
        and any(alias.name == "annotations" for alias in stmt.names)
        for stmt in tree.body
    )


def _check_reserved(tree: ast.Module) -> None:
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.arg):
            names.append(node.arg)
        elif isinstance(node, ast.alias):
            names.append(node.asname or node.name.split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.extend(node.names)
        for name in names:
            if name.startswith(RESERVED_PREFIX):
                raise UnsupportedCell(
                    f"`{name}`: names starting with {RESERVED_PREFIX} are reserved for the "
                    f"function %%funcx generates; rename it",
                    getattr(node, "lineno", None),
                )


def analyze_cell(tree: ast.Module) -> CellNames:
    """Find what a parsed cell reads from and gives back to the notebook.

    Raises :class:`UnsupportedCell` for constructs a function body cannot express
    (``import *``, reserved names, a ``global`` shadowed by an enclosing function).
    """
    _check_reserved(tree)
    walker = _CellWalker(_has_lazy_annotations(tree))
    walker.block(tree.body, frozenset())
    return CellNames(
        reads=walker.reads.as_tuple(),
        assigned=walker.assigned.as_tuple(),
        deleted=walker.deleted.as_tuple(),
        nested_globals=walker.nested_globals.as_tuple(),
        class_early_reads=walker.class_early_reads.as_tuple(),
    )


def notebook_arguments(
    reads: Iterable[str], namespace: Mapping[str, Any], hidden: Mapping[str, Any]
) -> list[str]:
    """The names among ``reads`` whose notebook values the cell should be given.

    Skipped: names the notebook does not have (the cell fails on them remotely as it would
    here), builtins (the worker has its own), the notebook module's dunders, and IPython's own
    variables (``In``, ``Out``, ``get_ipython``...) while the user has not rebound them.
    """
    selected = []
    for name in reads:
        if name not in namespace or (name.startswith("__") and name.endswith("__")):
            continue
        value = namespace[name]
        if name in hidden and hidden[name] is value:
            continue
        if name in vars(builtins) and vars(builtins)[name] is value:
            continue
        selected.append(name)
    return selected
