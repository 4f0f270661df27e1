"""Which names a %%funcx cell reads from the notebook and which it binds, on tricky cells."""

from __future__ import annotations

import ast
import textwrap

import pytest

from fx_jupyter.magics.analysis import UnsupportedCell, analyze_cell, notebook_arguments


def names_of(cell: str):
    return analyze_cell(ast.parse(textwrap.dedent(cell)))


# (id, cell, reads, assigned) — reads and assigned in first-occurrence order.
CASES = [
    ("reads then assigns", "y = x + 1", ["x"], ["y"]),
    ("assigned then read", "x = 1\ny = x", [], ["x", "y"]),
    ("self update reads", "x = x + 1", ["x"], ["x"]),
    ("augmented assignment reads and binds", "total += n", ["total", "n"], ["total"]),
    ("augmented attribute reads object", "obj.count += 1", ["obj"], []),
    ("subscript target reads container and index", "d[k] = v", ["v", "d", "k"], []),
    ("tuple unpacking", "a, (b, *c) = pair", ["pair"], ["a", "b", "c"]),
    ("comprehension variable is its own scope", "s = [i * k for i in data]", ["data", "k"], ["s"]),
    ("comprehension does not leak", "[i for i in data]\ni", ["data", "i"], []),
    ("nested comprehension", "[[a * b for b in bs] for a in xs]", ["xs", "bs"], []),
    ("dict comprehension", "{k: v + w for k, v in items}", ["items", "w"], []),
    (
        "walrus in comprehension binds the cell",
        "[y := f(i) for i in data]\ny",
        ["data", "f", "y"],
        ["y"],
    ),
    (
        "walrus in if test is definite",
        "if (m := rx.match(s)):\n    print(m)\nm",
        ["rx", "s", "print"],
        ["m"],
    ),
    (
        "walrus in second boolean operand is not definite",
        "ok = a and (b := 2)\nb",
        ["a", "b"],
        ["b", "ok"],
    ),
    ("del reads and removes", "del old", ["old"], []),
    ("del then read again", "x = 1\ndel x\nx", ["x"], ["x"]),
    ("import binds top package", "import os.path\nos.path.join(p)", ["p"], ["os"]),
    ("import as", "import numpy as np\nnp.zeros(n)", ["n"], ["np"]),
    ("from import", "from math import sqrt as r\nr(v)", ["v"], ["r"]),
    ("future import binds nothing", "from __future__ import annotations\nx = 1", [], ["x"]),
    ("function free names read", "def f(v):\n    return v + offset\nf(1)", ["offset"], ["f"]),
    (
        "function default and decorator read at def",
        "@deco\ndef f(v=dflt):\n    return v",
        ["deco", "dflt"],
        ["f"],
    ),
    (
        "recursion is not a read",
        "def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)",
        [],
        ["fact"],
    ),
    (
        "function reads name bound later (conservative)",
        "def f():\n    return helper()\nhelper = 1",
        ["helper"],
        ["f", "helper"],
    ),
    ("function local is not a read", "def f():\n    z = 1\n    return z", [], ["f"]),
    (
        "global in function writes the cell",
        "def bump():\n    global counter\n    counter += 1\nbump()",
        ["counter"],
        ["bump", "counter"],
    ),
    ("top-level global is a no-op", "global g\ng = 1", [], ["g"]),
    (
        "nonlocal resolves inside the cell",
        (
            "def outer():\n    v = 1\n    def inner():\n"
            "        nonlocal v\n        v += w\n    return inner"
        ),
        ["w"],
        ["outer"],
    ),
    ("lambda free names", "f = lambda q: q + w", ["w"], ["f"]),
    (
        "class body reads",
        "class A(Base):\n    x = y\n    def m(self):\n        return A, z",
        ["Base", "y", "z"],
        ["A"],
    ),
    (
        "for target is bound in body, not after",
        "for i in items:\n    s = i\nprint(s, i)",
        ["items", "print", "s", "i"],
        ["i", "s"],
    ),
    (
        "for body reads a name it assigns later",
        "for i in items:\n    total = total + i",
        ["items", "total"],
        ["i", "total"],
    ),
    ("while body may not run", "while cond():\n    v = 1\nv", ["cond", "v"], ["v"]),
    (
        "with as binds",
        "with open(fn) as fh:\n    data = fh.read()\ndata",
        ["open", "fn"],
        ["fh", "data"],
    ),
    (
        "except as is unbound after the handler",
        ("try:\n    x = f()\nexcept E as err:\n    x = None\nprint(x, err)"),
        ["f", "E", "print", "err"],
        ["x", "err"],
    ),
    ("both branches bind", "if c:\n    v = 1\nelse:\n    v = 2\nv", ["c"], ["v"]),
    ("one branch binds", "if c:\n    v = 1\nv", ["c", "v"], ["v"]),
    ("finally binds", "try:\n    pass\nfinally:\n    v = 1\nv", [], ["v"]),
    (
        "match capture patterns",
        (
            "match cmd:\n    case [a, *rest]:\n        pass\n"
            "    case {'k': v, **kw}:\n        pass\n    case Point(x=px) if px > lim:\n        pass\n"
            "print(a)"
        ),
        ["cmd", "Point", "lim", "print", "a"],
        ["a", "rest", "v", "kw", "px"],
    ),
    (
        "exhaustive match binds",
        ("match cmd:\n    case 1:\n        v = 1\n    case _:\n        v = 2\nv"),
        ["cmd"],
        ["v"],
    ),
    (
        "match value pattern reads",
        "match c:\n    case Color.RED:\n        pass",
        ["c", "Color"],
        [],
    ),
    ("builtins are reads (filtered later)", "print(len(a))", ["print", "len", "a"], []),
    ("annotated assignment binds, annotation unread", "x: Model = make()", ["make"], ["x"]),
    ("bare annotation binds nothing", "x: int\nx", ["x"], []),
    ("attribute read", "obj.attr.method()", ["obj"], []),
    (
        "lazy annotations are not read",
        ("from __future__ import annotations\ndef f(x: T) -> R:\n    return x"),
        [],
        ["f"],
    ),
    ("f-string reads", "s = f'{a}-{b!r}'", ["a", "b"], ["s"]),
]


@pytest.mark.parametrize("cell, reads, assigned", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reads_and_assigned(cell, reads, assigned):
    names = names_of(cell)
    assert list(names.reads) == reads
    assert sorted(names.assigned) == sorted(assigned)


def test_deleted_names_are_listed():
    assert names_of("del a, b[0]\nx = 1").deleted == ("a",)


def test_nested_globals_are_listed_for_the_rewrite():
    names = names_of("""
        def f():
            global a
            a = 1
        class C:
            def m(self):
                global b
                return b
    """)
    assert names.nested_globals == ("a", "b")
    assert "a" in names.assigned and "b" not in names.assigned


def test_class_body_early_reads_are_reported():
    names = names_of("class Config:\n    lr = lr\n    epochs = 3")
    assert names.class_early_reads == ("lr",)
    assert "lr" in names.reads


@pytest.mark.parametrize(
    "cell, message",
    [
        ("from os import *", "import \\*"),
        ("__fx_last = 1", "reserved"),
        ("def f(__fx_x):\n    pass", "reserved"),
        ("def outer():\n    v = 1\n    def inner():\n        global v\n        v = 2", "global v"),
    ],
)
def test_unsupported_cells_are_explained(cell, message):
    with pytest.raises(UnsupportedCell, match=message) as err:
        names_of(cell)
    assert err.value.lineno is not None


def test_notebook_arguments_skip_builtins_hidden_and_missing():
    import builtins

    namespace = {
        "x": 1,
        "len": builtins.len,  # a builtin seen through the namespace: not sent
        "list": [1],  # a user value shadowing a builtin: sent
        "In": [],
        "__name__": "__main__",
    }
    hidden = {"In": namespace["In"]}
    reads = ["x", "len", "list", "In", "__name__", "missing", "print"]
    assert notebook_arguments(reads, namespace, hidden) == ["x", "list"]
    # A hidden name the user rebound is theirs again.
    assert notebook_arguments(["In"], {"In": 5}, hidden) == ["In"]
