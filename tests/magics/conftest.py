"""An in-process IPython shell with the fx extension loaded, for the magic tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

import fx_jupyter
from fx_jupyter.magics import FxMagics


@pytest.fixture
def ip() -> Iterator[InteractiveShell]:
    """The shell, with `%load_ext fx_jupyter` done afresh and the user namespace restored after."""
    shell = InteractiveShell.instance()
    before = dict(shell.user_ns)
    fx_jupyter.load_ipython_extension(shell)
    yield shell
    magics = shell.magics_manager.registry.get(FxMagics.__name__)
    if isinstance(magics, FxMagics):
        magics.close()
    shell.user_ns.clear()
    shell.user_ns.update(before)


@pytest.fixture
def magics(ip: InteractiveShell) -> FxMagics:
    """The FxMagics instance the shell uses."""
    instance = ip.magics_manager.registry[FxMagics.__name__]
    assert isinstance(instance, FxMagics)
    return instance
