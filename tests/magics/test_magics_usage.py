"""Misuse of %%funcx and %funcx, in an in-process IPython shell: a one-line UsageError (no
traceback), and nothing sent or changed. None of these needs a service."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output


def run_cell(ip, source):
    """Run a cell as the notebook would; return (result, captured output)."""
    with capture_output() as captured:
        result = ip.run_cell(source)
    return result, captured


@pytest.mark.parametrize(
    "line, body, message",
    [
        ("bogus=1", "x = 1", "unknown option 'bogus'; valid options are endpoint, block, timeout"),
        ("endpoint=a timeout=x", "x = 1", "timeout= must be a positive number"),
        ("endpoint=a", "   \n", "the cell is empty"),
        ("", "y = 1", "no endpoint given: add endpoint=NAME"),
        ("endpoint=a", "!ls\nx = 1", "line 1 uses IPython syntax"),
        ("endpoint=a", "x = 1\n%time y = 2", "line 2 uses IPython syntax"),
        ("endpoint=a", "from os import *", "import *"),
        ("endpoint=a", "__fx_given = 1", "reserved"),
        ("endpoint=a", "class Config:\n    lr = lr", "class body reads `lr`"),
    ],
)
def test_misuse_is_a_usage_error(ip, line, body, message):
    ip.user_ns["lr"] = 0.1
    ip.user_ns["x"] = "untouched"
    with pytest.raises(UsageError) as err:
        ip.run_cell_magic("funcx", line, body)
    assert message in str(err.value)
    assert ip.user_ns["x"] == "untouched"

    result, captured = run_cell(ip, f"%%funcx {line}\n{body}")
    assert isinstance(result.error_in_exec, UsageError)
    assert "Traceback" not in captured.stdout + captured.stderr
    assert message in captured.stderr


def test_syntax_error_is_shown_without_the_magics_stack(ip):
    result, captured = run_cell(ip, "%%funcx endpoint=a\nx = (1,\ny = 2")
    assert isinstance(result.error_in_exec, UsageError)
    assert "the cell is not valid Python" in captured.stderr
    assert "SyntaxError: '(' was never closed" in captured.stderr
    assert "    x = (1,\n" in captured.stderr
    assert "Traceback" not in captured.stderr


@pytest.mark.parametrize(
    "body, message",
    [
        ("return 1", "'return' outside function"),
        ("await something()", "'await' outside function"),
        ("yield 2", "'yield' outside function"),
    ],
)
def test_module_level_only_statements_are_refused(ip, body, message):
    with pytest.raises(UsageError, match=message):
        ip.run_cell_magic("funcx", "endpoint=a", body)


@pytest.mark.parametrize(
    "line, message",
    [
        ("", "%funcx needs a command"),
        ("endpont", "unknown command 'endpont'"),
        ("result", "one task id"),
        ("tasks -1", "LIMIT must be a positive integer"),
    ],
)
def test_line_magic_misuse(ip, line, message):
    result, captured = run_cell(ip, f"%funcx {line}")
    assert isinstance(result.error_in_exec, UsageError)
    assert message in captured.stderr
    assert "Traceback" not in captured.stderr


def test_use_without_a_default_says_so(ip):
    result, captured = run_cell(ip, "%funcx use")
    assert result.success
    assert "no default endpoint" in captured.stdout


def test_no_service_is_a_usage_error(ip, monkeypatch, tmp_path):
    # Nothing to discover: no FX_* variables, empty Jupyter runtime dir, no hub.
    for name in ("FX_SERVICE_URL", "FX_TOKEN", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    result, captured = run_cell(ip, "%funcx endpoints")
    assert isinstance(result.error_in_exec, UsageError)
    assert "no fx service found" in captured.stderr


def test_load_ext_registers_the_magics(ip):
    result, _ = run_cell(ip, "%reload_ext fx_jupyter")
    assert result.success
    assert ip.find_cell_magic("funcx") is not None
    assert ip.find_line_magic("funcx") is not None
    assert "%%funcx endpoint=NAME|ID" in ip.find_line_magic("funcx").__doc__


def test_public_names_are_exported():
    from fx_jupyter import magics

    public = {
        name
        for name, value in vars(magics).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("fx_jupyter")
    }
    assert set(magics.__all__) == public
