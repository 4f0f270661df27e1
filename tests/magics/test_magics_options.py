"""Parsing of the %%funcx options and the %funcx line commands: good and malformed input."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from fx_jupyter.magics.options import CellOptions, parse_cell_options, parse_line_command


@pytest.mark.parametrize(
    "line, expected",
    [
        ("", CellOptions()),
        ("endpoint=gpu", CellOptions(endpoint="gpu")),
        ("endpoint='my ep' block=false", CellOptions(endpoint="my ep", block=False)),
        ("block=True", CellOptions(block=True)),
        ("block=no", CellOptions(block=False)),
        ("block=0", CellOptions(block=False)),
        ("timeout=2.5", CellOptions(timeout=2.5)),
        ("timeout=10 walltime=60", CellOptions(timeout=10.0, walltime=60.0)),
        ("out=result", CellOptions(out="result")),
        ("  endpoint=a   out=_x  ", CellOptions(endpoint="a", out="_x")),
        ("memoize=true", CellOptions(memoize=True)),
        ("memoize=OFF walltime=5", CellOptions(memoize=False, walltime=5.0)),
    ],
)
def test_good_cell_options(line, expected):
    assert parse_cell_options(line) == expected


@pytest.mark.parametrize(
    "line, message",
    [
        ("gpu", "expected key=value, got 'gpu'"),
        (
            "endpont=gpu",
            (
                "unknown option 'endpont'; valid options are endpoint, block, timeout, out, "
                "walltime, memoize"
            ),
        ),
        ("endpoint=a endpoint=b", "'endpoint' is given twice"),
        ("endpoint=", "needs an endpoint name or id"),
        ("block=maybe", "block= must be true or false, got 'maybe'"),
        ("timeout=soon", "timeout= must be a positive number of seconds, got 'soon'"),
        ("timeout=0", "positive number"),
        ("timeout=-3", "positive number"),
        ("timeout=nan", "positive number"),
        ("timeout=inf", "positive number"),
        ("walltime=", "walltime= must be a positive number"),
        ("memoize=please", "memoize= must be true or false, got 'please'"),
        ("memoize=", "memoize= must be true or false, got ''"),
        ("memoize=true memoize=false", "'memoize' is given twice"),
        ("memoise=true", "unknown option 'memoise'"),
        ("out=1x", "out= must be a Python variable name, got '1x'"),
        ("out=class", "variable name"),
        ("out=a.b", "variable name"),
        ("out=__fx_last", "variable name"),
        ("endpoint='unclosed", "cannot parse"),
    ],
)
def test_malformed_cell_options(line, message):
    with pytest.raises(UsageError) as err:
        parse_cell_options(line)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "line, expected",
    [
        ("endpoints", ("endpoints", [])),
        ("tasks", ("tasks", [])),
        ("tasks 5", ("tasks", ["5"])),
        ("use gpu", ("use", ["gpu"])),
        ("use", ("use", [])),
        ("result 1234", ("result", ["1234"])),
    ],
)
def test_good_line_commands(line, expected):
    assert parse_line_command(line) == expected


@pytest.mark.parametrize(
    "line, message",
    [
        ("", "needs a command"),
        ("endpoint", "unknown command 'endpoint'; use one of: %funcx endpoints"),
        ("endpoints x", "takes no arguments"),
        ("tasks many", "LIMIT must be a positive integer"),
        ("tasks 0", "LIMIT must be a positive integer"),
        ("tasks 1 2", "at most one argument"),
        ("use a b", "one endpoint name or id"),
        ("result", "one task id"),
        ("result a b", "one task id"),
    ],
)
def test_malformed_line_commands(line, message):
    with pytest.raises(UsageError) as err:
        parse_line_command(line)
    assert message in str(err.value)
