"""The symbol table of the definitions nested in a ``%%funcx`` cell.

Functions, lambdas, class bodies and comprehensions defined in a cell get the compiler's
treatment here, flow-insensitively: which names each binds, which it leaves free for an
enclosing scope to provide, and which it reaches at the module level directly (``global``
declarations, and the names a class body reads before binding them itself). :mod:`.analysis`
asks for a :class:`ScopeSummary` of each definition at the point the cell creates it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

FUNCTION = "function"
CLASS = "class"
COMPREHENSION = "comprehension"


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


class Ordered:
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

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def as_tuple(self) -> tuple[str, ...]:
        return tuple(self._names)


class Scope:
    """A function, lambda, class body or comprehension nested in the cell."""

    def __init__(self, kind: str, parent: Scope | None) -> None:
        self.kind = kind
        self.parent = parent
        self.bound: set[str] = set()
        self.used = Ordered()
        self.declared_global: dict[str, int] = {}
        self.declared_nonlocal: set[str] = set()
        self.children: list[Scope] = []
        # Class bodies: names bound so far, and names read while not yet bound here.
        self.bound_so_far: set[str] = set()
        self.unbound_reads = Ordered()

    def local_names(self) -> set[str]:
        return self.bound - set(self.declared_global) - self.declared_nonlocal


@dataclass
class ScopeSummary:
    """What a nested scope needs from, and does to, the cell's top level."""

    free: Ordered  # resolved lexically outwards; reaches the cell unless captured on the way
    global_reads: Ordered  # go straight to the module level (``global`` names, class early reads)
    global_writes: Ordered  # ``global`` names the scope binds
    global_decls: dict[str, int]  # every ``global`` declaration below, with its line
    class_early_reads: Ordered


class ScopeBuilder(ast.NodeVisitor):
    """Builds the :class:`Scope` tree of one nested definition."""

    def __init__(self, scope: Scope, lazy_annotations: bool) -> None:
        self.scope = scope
        self.lazy_annotations = lazy_annotations

    # -- entering nested scopes ---------------------------------------------------------------

    def _child(self, kind: str) -> Scope:
        child = Scope(kind, self.scope)
        self.scope.children.append(child)
        return child

    def _in(self, scope: Scope, nodes: Iterable[ast.AST | None]) -> None:
        outer, self.scope = self.scope, scope
        try:
            for node in nodes:
                if node is not None:
                    self.visit(node)
        finally:
            self.scope = outer

    def _bind(self, name: str, scope: Scope | None = None) -> None:
        scope = scope or self.scope
        scope.bound.add(name)
        scope.bound_so_far.add(name)

    def _bind_walrus(self, name: str) -> None:
        # PEP 572: an assignment expression in a comprehension binds in the nearest enclosing
        # scope that is not a comprehension.
        scope = self.scope
        while scope.kind == COMPREHENSION and scope.parent is not None:
            scope = scope.parent
        self._bind(name, scope)

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> Scope:
        """Analyse a function's body in a new scope (its defaults are the caller's business)."""
        child = self._child(FUNCTION)
        for arg in arguments(node.args):
            self._bind(arg.arg, child)
        self._in(child, node.body if isinstance(node.body, list) else [node.body])
        return child

    def class_body(self, node: ast.ClassDef) -> Scope:
        child = self._child(CLASS)
        self._in(child, node.body)
        return child

    def comprehension(self, node: ast.AST) -> Scope:
        """Analyse a comprehension without its first iterable (evaluated outside it)."""
        child = self._child(COMPREHENSION)
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
        for expr in definition_time_exprs(node, self.lazy_annotations):
            self.visit(expr)
        self.function(node)
        self._bind(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in definition_time_exprs(node):
            self.visit(expr)
        self.function(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in definition_time_exprs(node):
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
        if self.scope.kind == CLASS and name not in self.scope.bound_so_far:
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
        if self.scope.kind == CLASS and not self.lazy_annotations:
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
        for name in imported_names(node):
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


def summarize(scope: Scope, with_children: bool = True) -> ScopeSummary:
    """Free names and module-level effects of ``scope`` (and of its children unless told not).

    Raises :class:`UnsupportedCell` when a ``global`` declaration skips over a function that
    binds the same name: as ``nonlocal`` it would reach that function's variable instead.
    """
    local = scope.local_names()
    summary = ScopeSummary(Ordered(), Ordered(), Ordered(), {}, Ordered())
    summary.free.update(
        name for name in scope.used if name not in scope.declared_global and name not in local
    )
    summary.free.update(scope.declared_nonlocal)
    if scope.kind == CLASS:
        early = [name for name in scope.unbound_reads if name in local]
        summary.class_early_reads.update(early)
        summary.global_reads.update(early)
    summary.global_reads.update(scope.declared_global)
    summary.global_writes.update(name for name in scope.declared_global if name in scope.bound)
    summary.global_decls.update(scope.declared_global)
    if with_children:
        for child in scope.children:
            _merge_child(summary, summarize(child), scope, local)
    return summary


def _merge_child(summary: ScopeSummary, inner: ScopeSummary, scope: Scope, local: set[str]) -> None:
    """Fold a child scope's summary into its parent's."""
    if scope.kind == CLASS:
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


def arguments(args: ast.arguments) -> list[ast.arg]:
    found = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if args.vararg is not None:
        found.append(args.vararg)
    if args.kwarg is not None:
        found.append(args.kwarg)
    return found


def definition_time_exprs(
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
        exprs.extend(a.annotation for a in arguments(node.args) if a.annotation is not None)
        if node.returns is not None:
            exprs.append(node.returns)
    return exprs


def imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
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
