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

The analysis only looks at syntax; :mod:`.magics` intersects :attr:`CellNames.reads` with the
notebook namespace to decide what is sent.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Identifiers the generated function uses for itself; a cell may not use them.
RESERVED_PREFIX = "__fx_"

_FUNCTION = "function"
_CLASS = "class"
_COMPREHENSION = "comprehension"

_Comprehension = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


class UnsupportedCell(Exception):
    """The cell uses something that cannot run as the body of a function on an endpoint.

    The message says what, where, and what to write instead.
    """

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno

    def __str__(self) -> str:
        where = f"line {self.lineno}: " if self.lineno else ""
        return f"{where}{self.args[0]}"


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


class _Ordered:
    """An insertion-ordered set of names."""

    def __init__(self) -> None:
        self._names: dict[str, None] = {}

    def add(self, name: str) -> None:
        self._names.setdefault(name, None)

    def update(self, names: Iterable[str]) -> None:
        for name in names:
            self.add(name)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._names)

    def as_tuple(self) -> tuple[str, ...]:
        return tuple(self._names)


# --------------------------------------------------------------------------------------------
# Nested scopes: flow-insensitive, like the compiler's symbol table.


class _Scope:
    """A function, lambda, class body or comprehension nested in the cell."""

    def __init__(self, kind: str, parent: _Scope | None) -> None:
        self.kind = kind
        self.parent = parent
        self.bound: set[str] = set()
        self.used = _Ordered()
        self.declared_global: dict[str, int] = {}
        self.declared_nonlocal: set[str] = set()
        self.children: list[_Scope] = []
        # Class bodies: names bound so far, and names read while not yet bound here.
        self.bound_so_far: set[str] = set()
        self.unbound_reads = _Ordered()

    def local_names(self) -> set[str]:
        return self.bound - set(self.declared_global) - self.declared_nonlocal


@dataclass
class _ScopeSummary:
    """What a nested scope needs from, and does to, the cell's top level."""

    free: _Ordered  # resolved lexically outwards; reaches the cell unless captured on the way
    global_reads: _Ordered  # go straight to the module level (``global`` names, class early reads)
    global_writes: _Ordered  # ``global`` names the scope binds
    global_decls: dict[str, int]  # every ``global`` declaration below, with its line
    class_early_reads: _Ordered


class _ScopeBuilder(ast.NodeVisitor):
    """Builds the :class:`_Scope` tree of one nested definition."""

    def __init__(self, scope: _Scope, lazy_annotations: bool) -> None:
        self.scope = scope
        self.lazy_annotations = lazy_annotations

    # -- entering nested scopes ---------------------------------------------------------------

    def _child(self, kind: str) -> _Scope:
        child = _Scope(kind, self.scope)
        self.scope.children.append(child)
        return child

    def _in(self, scope: _Scope, nodes: Iterable[ast.AST | None]) -> None:
        outer, self.scope = self.scope, scope
        try:
            for node in nodes:
                if node is not None:
                    self.visit(node)
        finally:
            self.scope = outer

    def _bind(self, name: str) -> None:
        self.scope.bound.add(name)
        self.scope.bound_so_far.add(name)

    def _bind_walrus(self, name: str) -> None:
        # PEP 572: an assignment expression in a comprehension binds in the nearest enclosing
        # scope that is not a comprehension.
        scope = self.scope
        while scope.kind == _COMPREHENSION and scope.parent is not None:
            scope = scope.parent
        scope.bound.add(name)
        scope.bound_so_far.add(name)

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> _Scope:
        """Analyse a function's body in a new scope (its defaults are the caller's business)."""
        child = self._child(_FUNCTION)
        outer, self.scope = self.scope, child
        try:
            for arg in _arguments(node.args):
                self._bind(arg.arg)
            body = node.body if isinstance(node.body, list) else [node.body]
            for stmt in body:
                self.visit(stmt)
        finally:
            self.scope = outer
        return child

    def class_body(self, node: ast.ClassDef) -> _Scope:
        child = self._child(_CLASS)
        self._in(child, node.body)
        return child

    def comprehension(self, node: ast.AST) -> _Scope:
        """Analyse a comprehension without its first iterable (evaluated outside it)."""
        child = self._child(_COMPREHENSION)
        generators: list[ast.comprehension] = node.generators  # type: ignore[attr-defined]
        outer, self.scope = self.scope, child
        try:
            for index, gen in enumerate(generators):
                if index:
                    self.visit(gen.iter)
                self.visit(gen.target)
                for cond in gen.ifs:
                    self.visit(cond)
            if isinstance(node, ast.DictComp):
                self.visit(node.key)
                self.visit(node.value)
            else:
                self.visit(node.elt)  # type: ignore[attr-defined]
        finally:
            self.scope = outer
        return child

    # -- definitions inside a nested scope ----------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expr in _definition_time_exprs(node, self.lazy_annotations):
            self.visit(expr)
        self.function(node)
        self._bind(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in _definition_time_exprs(node):
            self.visit(expr)
        self.function(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in _definition_time_exprs(node):
            self.visit(expr)
        self.class_body(node)
        self._bind(node.name)

    def _visit_comprehension(self, node: ast.AST) -> None:
        self.visit(node.generators[0].iter)  # type: ignore[attr-defined]
        self.comprehension(node)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension

    # -- names --------------------------------------------------------------------------------

    def _load(self, name: str) -> None:
        self.scope.used.add(name)
        if self.scope.kind == _CLASS and name not in self.scope.bound_so_far:
            self.scope.unbound_reads.add(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._load(node.id)
        else:  # Store, Del: both make the name local to this scope
            self._bind(node.id)

    # Statements whose fields are not in evaluation order; order matters for the reads a class
    # body makes before binding a name itself (`class A: x = x`).

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._bind_walrus(node.target.id)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self._load(node.target.id)
            self.visit(node.value)
            self._bind(node.target.id)
        else:
            self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        # Annotations of local variables are never evaluated in a function; in a class body
        # they are, so they count as reads there.
        if node.value is not None:
            self.visit(node.value)
        if self.scope.kind == _CLASS and not self.lazy_annotations:
            self.visit(node.annotation)
        if isinstance(node.target, ast.Name):
            self._bind(node.target.id)
        else:
            self.visit(node.target)

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            self.scope.declared_global.setdefault(name, node.lineno)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.scope.declared_nonlocal.update(node.names)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for name in _imported_names(node):
            self._bind(name)

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._bind(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self._bind(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._bind(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        for key in node.keys:
            self.visit(key)
        for pattern in node.patterns:
            self.visit(pattern)
        if node.rest:
            self._bind(node.rest)


def _summarize(scope: _Scope, with_children: bool = True) -> _ScopeSummary:
    """Free names and module-level effects of ``scope`` (and of its children unless told not).

    Raises :class:`UnsupportedCell` when a ``global`` declaration skips over a function that
    binds the same name: as ``nonlocal`` it would reach that function's variable instead.
    """
    local = scope.local_names()
    summary = _ScopeSummary(_Ordered(), _Ordered(), _Ordered(), {}, _Ordered())
    summary.free.update(
        name for name in scope.used if name not in scope.declared_global and name not in local
    )
    summary.free.update(scope.declared_nonlocal)
    if scope.kind == _CLASS:
        early = [name for name in scope.unbound_reads if name in local]
        summary.class_early_reads.update(early)
        summary.global_reads.update(early)
    summary.global_reads.update(scope.declared_global)
    summary.global_writes.update(name for name in scope.declared_global if name in scope.bound)
    summary.global_decls.update(scope.declared_global)
    if with_children:
        for child in scope.children:
            _merge_child(summary, _summarize(child), scope, local)
    return summary


def _merge_child(
    summary: _ScopeSummary, inner: _ScopeSummary, scope: _Scope, local: set[str]
) -> None:
    """Fold a child scope's summary into its parent's."""
    if scope.kind == _CLASS:
        # A class body does not capture names for the functions defined in it.
        summary.free.update(inner.free)
    else:
        for name, lineno in inner.global_decls.items():
            if name in local:
                raise UnsupportedCell(
                    f"`global {name}` in a function nested in another function that has its "
                    f"own `{name}` cannot run on an endpoint (the cell becomes a function "
                    f"there); rename one of them",
                    lineno,
                )
        summary.free.update(name for name in inner.free if name not in local)
    summary.global_reads.update(inner.global_reads)
    summary.global_writes.update(inner.global_writes)
    summary.class_early_reads.update(inner.class_early_reads)
    for name, lineno in inner.global_decls.items():
        summary.global_decls.setdefault(name, lineno)


# --------------------------------------------------------------------------------------------
# The cell's top level: flow-sensitive.

_Definite = frozenset[str]


def _cell_root() -> _Scope:
    """A scope standing for the cell's top level, parent of the scopes one statement creates."""
    return _Scope(_FUNCTION, None)


class _CellWalker:
    """Walks the cell's top-level statements, tracking which names are definitely bound."""

    def __init__(self, lazy_annotations: bool) -> None:
        self.lazy_annotations = lazy_annotations
        self.reads = _Ordered()
        self.assigned = _Ordered()
        self.deleted = _Ordered()
        self.nested_globals = _Ordered()
        self.class_early_reads = _Ordered()

    # -- helpers ------------------------------------------------------------------------------

    def _read(self, name: str, definite: Iterable[str]) -> None:
        if name not in definite:
            self.reads.add(name)

    def _bind(self, name: str, definite: set[str] | None) -> None:
        self.assigned.add(name)
        if definite is not None:
            definite.add(name)

    def _nested(self, root: _Scope, definite: Iterable[str], after: Iterable[str] = ()) -> None:
        """Account for scopes created at the top level while ``definite`` names are bound.

        ``root`` stands for the cell: its children are the new scopes, and what it binds
        (assignment expressions in comprehensions) is bound at the cell's top level. The
        functions defined in a top-level class body run later, when ``after`` is bound too.
        """
        for scope in root.children:
            if scope.kind == _CLASS:
                self._effects(_summarize(scope, with_children=False), definite)
                for method in scope.children:
                    self._effects(_summarize(method), {*definite, *after})
            else:
                self._effects(_summarize(scope), definite)
        for name in root.bound:
            self.assigned.add(name)

    def _effects(self, summary: _ScopeSummary, definite: Iterable[str]) -> None:
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
        for name in _imported_names(node):
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
        for expr in _definition_time_exprs(node, self.lazy_annotations):
            self.expr(expr, current)
        self._bind(node.name, current)
        # The body runs later, when its own name is bound: recursion is not a notebook read.
        root = _cell_root()
        _ScopeBuilder(root, self.lazy_annotations).function(node)
        self._nested(root, current)
        return frozenset(current)

    stmt_AsyncFunctionDef = stmt_FunctionDef

    def stmt_ClassDef(self, node: ast.ClassDef, definite: _Definite) -> _Definite:
        current = set(definite)
        for expr in _definition_time_exprs(node):
            self.expr(expr, current)
        root = _cell_root()
        _ScopeBuilder(root, self.lazy_annotations).class_body(node)
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
            for expr in _definition_time_exprs(node):
                self.expr(expr, definite)
            root = _cell_root()
            _ScopeBuilder(root, self.lazy_annotations).function(node)
            self._nested(root, definite)
        elif isinstance(node, _Comprehension):
            self.expr(node.generators[0].iter, definite)
            root = _cell_root()
            _ScopeBuilder(root, self.lazy_annotations).comprehension(node)
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


def _arguments(args: ast.arguments) -> list[ast.arg]:
    found = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if args.vararg is not None:
        found.append(args.vararg)
    if args.kwarg is not None:
        found.append(args.kwarg)
    return found


def _definition_time_exprs(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef,
    lazy_annotations: bool = False,
) -> list[ast.expr]:
    """Expressions evaluated where a function or class is defined, in evaluation order
    (annotations only without ``from __future__ import annotations``)."""
    if isinstance(node, ast.ClassDef):
        return [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]
    exprs: list[ast.expr] = []
    if not isinstance(node, ast.Lambda):
        exprs.extend(node.decorator_list)
    exprs.extend(node.args.defaults)
    exprs.extend(d for d in node.args.kw_defaults if d is not None)
    if not isinstance(node, ast.Lambda) and not lazy_annotations:
        exprs.extend(a.annotation for a in _arguments(node.args) if a.annotation is not None)
        if node.returns is not None:
            exprs.append(node.returns)
    return exprs


def _imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module == "__future__":
        return []  # compiler directives; the generated module carries them
    names = []
    for alias in node.names:
        if alias.name == "*":
            raise UnsupportedCell(
                "`from ... import *` cannot run inside a function on an endpoint; import the "
                "names you use explicitly",
                node.lineno,
            )
        names.append(alias.asname or alias.name.split(".")[0])
    return names


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
