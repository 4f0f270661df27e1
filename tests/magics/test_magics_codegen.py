"""The function generated from a %%funcx cell: last-value capture, names coming back, source
fallback, and tracebacks pointing at the cell's lines."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import traceback

import cloudpickle
import pytest

from fx_endpoint.serialize import deserialize_function, serialize_function
from fx_jupyter.magics.analysis import UnsupportedCell, analyze_cell
from fx_jupyter.magics.cell_result import CellResult, RemoteRepr, is_cell_result
from fx_jupyter.magics.codegen import build_cell_function, parse_cell


def build(cell: str, params=None):
    cell = textwrap.dedent(cell)
    tree = parse_cell(cell)
    names = analyze_cell(tree)
    return build_cell_function(cell, tree, names, names.reads if params is None else params)


def run(cell: str, **kwargs) -> CellResult:
    function = build(cell, list(kwargs))
    value = function.function(**kwargs)
    assert is_cell_result(value)
    return CellResult.from_task_result(value)


def test_last_expression_is_captured():
    result = run("y = x * 2\ny + 1", x=3)
    assert result.names == {"y": 6}
    assert result.last == 7


def test_cell_ending_in_an_assignment_has_no_value():
    function = build("y = 2")
    assert not function.has_last
    result = CellResult.from_task_result(function.function())
    assert result.names == {"y": 2} and result.last is None


def test_cell_with_only_imports():
    function = build("import json\nimport os.path as osp")
    assert function.params == () and not function.has_last
    result = CellResult.from_task_result(function.function())
    import json
    import os.path

    assert result.names == {"json": json, "osp": os.path}


def test_return_inside_a_nested_def_stays_there():
    function = build("""
        def pick(v):
            if v:
                return "yes"
            return "no"
        pick(flag)
    """)
    assert function.has_last
    assert CellResult.from_task_result(function.function(flag=1)).last == "yes"
    assert function.source.count("return 'yes'") == 1


@pytest.mark.parametrize(
    "cell", ["return 1", "yield 1", "x = await f()", "nonlocal x", "def f(:\n    pass"]
)
def test_code_invalid_at_module_level_is_a_syntax_error(cell):
    with pytest.raises(SyntaxError):
        parse_cell(cell)


def test_nested_global_becomes_the_cells_variable():
    function = build("""
        def bump():
            global counter
            counter += step
        bump()
        bump()
    """)
    assert "nonlocal counter" in function.source
    result = CellResult.from_task_result(function.function(counter=1, step=10))
    assert result.names["counter"] == 21


def test_nested_global_of_a_new_name_is_declared():
    result = run("def make():\n    global created\n    created = 'here'\nmake()")
    assert result.names["created"] == "here"


def test_top_level_global_is_dropped():
    function = build("global g\ng = 1")
    assert "    global g\n" not in function.source
    assert CellResult.from_task_result(function.function()).names == {"g": 1}


def test_unchanged_arguments_do_not_travel_back():
    big = list(range(10))
    result = run("if retrain:\n    model = [0]\nmodel", retrain=False, model=big)
    assert result.names == {}
    assert result.last == big
    result = run("if retrain:\n    model = [0]\nmodel", retrain=True, model=big)
    assert result.names == {"model": [0]}


def test_deleted_names_are_reported_and_except_names_are_not():
    result = run("del old\ntry:\n    1/0\nexcept ZeroDivisionError as err:\n    pass", old=1)
    assert result.deleted == ["old"]
    assert "err" not in result.names


def test_unpicklable_names_are_reported_by_name():
    result = run("import threading\nlock = threading.Lock()\nx = 1")
    assert result.names["x"] == 1
    assert set(result.failed) == {"lock"}
    assert "does not pickle on the endpoint" in result.failed["lock"]
    assert any("`lock`" in message for message in result.warnings())


def test_unpicklable_last_value_shows_its_repr():
    result = run("import threading\nthreading.Lock()")
    shown = result.display_value()
    assert isinstance(shown, RemoteRepr) and "lock" in repr(shown)
    assert result.last_error is not None


def test_future_imports_open_the_module():
    function = build(
        "from __future__ import annotations\ndef f(x: Undefined) -> Nope:\n    return x\nf(2)"
    )
    assert function.source.startswith("from __future__ import annotations")
    assert CellResult.from_task_result(function.function()).last == 2


def test_same_cell_and_arguments_give_the_same_function():
    assert build("y = x", ["x"]).source == build("y = x", ["x"]).source
    assert build("y = x", ["x"]).name != build("y = x", []).name


def test_class_reading_a_cell_name_before_binding_it_is_refused():
    with pytest.raises(UnsupportedCell, match="class body reads `lr`"):
        build("class Config:\n    lr = lr", ["lr"])
    # Without a cell-level `lr` Python reads the builtin or global, as in the notebook.
    build("class Config:\n    len = len", [])


def test_traceback_points_at_the_cells_line():
    function = build("a = 1\nb = 2\nc = a / zero\n", ["zero"])
    with pytest.raises(ZeroDivisionError) as err:
        cloudpickle.loads(cloudpickle.dumps(function.function))(zero=0)
    frame = traceback.extract_tb(err.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno, frame.line) == (function.filename, 3, "c = a / zero")


def test_worker_falls_back_to_the_source_text():
    function = build("import math\nr = math.sqrt(x)\nr * 2", ["x"])
    payload = serialize_function(function.function, function.source)
    # Break the pickled bytecode (as another Python version would fail to load it).
    broken = payload[:-8] + b"\x00" * 8
    loaded = deserialize_function(broken)
    assert CellResult.from_task_result(loaded(x=16.0)).last == 8.0


def test_function_runs_in_a_fresh_interpreter():
    """Pickled by value: a worker without fx_jupyter's magics can run it."""
    function = build("total = sum(values)\ntotal / len(values)", ["values"])
    payload = serialize_function(function.function, function.source)
    script = (
        "import sys, pickle\n"
        "from fx_endpoint.serialize import deserialize_function\n"
        "fn = deserialize_function(sys.stdin.buffer.read())\n"
        "out = fn(values=[1, 2, 3])\n"
        "assert 'fx_jupyter.magics' not in sys.modules, 'magics were imported'\n"
        "print(pickle.loads(out['last']), pickle.loads(out['names']['total']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], input=payload, capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == ["2.0", "6"]


def remote_failure(function, **kwargs) -> BaseException:
    """Run the cell function as a worker does and rebuild its exception as the SDK does."""
    from fx_endpoint.serialize import deserialize_result, serialize_exception

    try:
        function.function(**kwargs)
    except Exception as e:  # noqa: BLE001 - the worker catches everything too
        return deserialize_result(serialize_exception(e)).reraise_value()
    raise AssertionError("the cell did not fail")


def test_remote_exception_is_raised_at_the_cells_line():
    from fx_jupyter.magics.cell_run import raise_in_cell, remote_cell_line

    function = build("a = 1\nb = 2\nc = a / zero\nprint(c)\n", ["zero"])
    error = remote_failure(function, zero=0)
    assert remote_cell_line(error, function.filename) == 3
    with pytest.raises(ZeroDivisionError) as err:
        raise_in_cell(error, function)
    frame = traceback.extract_tb(err.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno, frame.line) == (function.filename, 3, "c = a / zero")
    assert "Remote traceback" in str(err.value)


def test_remote_exception_in_a_nested_function_points_at_its_line():
    from fx_jupyter.magics.cell_run import remote_cell_line

    function = build("def f(v):\n    return v[5]\nf([])\n")
    assert remote_cell_line(remote_failure(function), function.filename) == 2


def test_ipython_shows_the_remote_line_like_a_local_error(ip, monkeypatch):
    from IPython.utils.capture import capture_output

    from fx_jupyter.magics.cell_run import raise_in_cell

    monkeypatch.setattr(ip, "colors", "nocolor")
    function = build("a = 1\nb = 2\nc = a / zero\nprint(c)\n", ["zero"])
    error = remote_failure(function, zero=0)
    ip.user_ns["fail_like_remote"] = lambda: raise_in_cell(error, function)
    with capture_output() as captured:
        result = ip.run_cell("fail_like_remote()")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    shown = captured.stdout + captured.stderr
    assert "----> 3 c = a / zero" in shown
    assert "Remote traceback:" in shown
    assert "exec(code" not in shown  # our own frames are hidden
