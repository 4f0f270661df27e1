"""Real-browser tests: JupyterLab with the fx service in a subprocess, driven by Playwright in
Debian's chromium (never a browser Playwright downloads).

Fixtures (``lab_stack``, ``lab_endpoint`` and the browser live as long as this package's tests):

- ``lab_stack``: a :class:`LabStack` — JupyterLab + fx service, no endpoint.
- ``lab_endpoint``: the name of an endpoint started with the real ``fx-endpoint`` CLI
  against ``lab_stack`` (started on first use only).
- ``lab``: a :class:`JupyterLab` page logged in to ``lab_stack`` with a fresh workspace. Its
  helpers open a notebook, wait for the kernel, run a cell and return the cell's output area, so
  tests can assert on what a person sees (ipywidgets included)::

      lab.open_notebook("progress.ipynb")
      out = lab.run_cell("import ipywidgets as w; w.IntProgress(value=7, max=10)")
      expect(out.locator(".widget-hprogress .progress-bar")).to_have_attribute("style", re.compile("70"))

A screenshot of every browser test is saved in ``test-artifacts/browser/`` (``-passed`` or
``-failed`` in its name), with the browser console and the server's log next to it when the test
failed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from fx_jupyter.testing import FxStack

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Playwright's wait for any one step or `expect`, in ms: Lab starts in ~2.5 s and a kernel in
#: ~1 s on an idle machine, several times that on a busy 2-core CI runner.
STEP_TIMEOUT_MS = 20_000
expect.set_options(timeout=STEP_TIMEOUT_MS)
LAB_EXTENSION = ROOT / "fx_jupyter" / "labextension" / "package.json"


class LabStack(FxStack):
    """An :class:`FxStack` for a browser: JupyterLab settings without the news pop-up, and
    kernels that show ipywidgets (``FxStack`` turns them off for headless tests)."""

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env.pop("FX_NO_WIDGETS", None)
        return env

    def start_server(self) -> None:
        settings = (
            self.root / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        )
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        super().start_server()

    def contents(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """A request to this server's Jupyter Contents API (test set-up): (status, body)."""
        return self.request_url(method, f"{self.base_url}api/contents/{path}", body)

    def lab_url(self, path: str = "lab") -> str:
        """A URL of this server that logs the browser in (the token becomes a cookie)."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"


@dataclass
class JupyterLab:
    """A JupyterLab page and the actions tests need, written as a person would do them."""

    page: Page
    stack: LabStack
    console: list[str] = field(default_factory=list)

    def goto(self, path: str = "lab?reset") -> None:
        """Load Lab (by default with a fresh workspace) and wait until its shell is up."""
        self.page.goto(self.stack.lab_url(path))
        expect(self.page.locator("#jp-main-dock-panel")).to_be_visible()
        expect(self.page.locator("#jupyterlab-splash")).to_have_count(0)

    # --- notebooks ---------------------------------------------------------------------------
    def open_notebook(self, name: str, kernel: str = "python3") -> Locator:
        """Create an empty notebook ``name`` in the server's root, open it, and wait until its
        kernel is idle. Returns the notebook panel."""
        status, body = self.stack.contents(
            "PUT",
            name,
            {
                "type": "notebook",
                "format": "json",
                "content": {
                    "cells": [],
                    "metadata": {
                        "kernelspec": {"name": kernel, "display_name": kernel, "language": "python"}
                    },
                    "nbformat": 4,
                    "nbformat_minor": 5,
                },
            },
        )
        assert status in (200, 201), body
        self.page.goto(self.stack.lab_url(f"lab/tree/{name}?reset"))
        panel = self.page.locator(".jp-NotebookPanel:visible")
        expect(panel).to_have_count(1)
        self.wait_for_kernel_idle()
        return panel

    def wait_for_kernel_idle(self, timeout_ms: float = 60_000) -> None:
        """Wait until the current notebook's kernel has started and is idle.

        The execution indicator says ``idle`` before any kernel exists, so the status bar must
        also name the kernel (``Python 3 (ipykernel) | Idle``, not ``No Kernel``).
        """
        panel = self.page.locator(".jp-NotebookPanel:visible")
        expect(panel.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')).to_have_count(
            1, timeout=timeout_ms
        )
        expect(
            self.page.locator(".jp-StatusBar-TextItem").filter(has_text=re.compile(r"\S \| Idle$"))
        ).to_have_count(1, timeout=timeout_ms)

    def run_cell(self, code: str, timeout_ms: float = 60_000) -> Locator:
        """Type ``code`` into the last cell of the current notebook, run it with Shift+Enter, wait
        until it has finished, and return its output area (``.jp-OutputArea``)."""
        cells = self.page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-CodeCell")
        if cells.count() == 0:
            self.page.locator(".jp-NotebookPanel:visible .jp-Notebook").click()
            self.page.keyboard.press("b")
        # Pinned by index: Shift+Enter appends a new last cell.
        cell = cells.nth(cells.count() - 1)
        editor = cell.locator(".cm-content")
        editor.click()
        editor.fill(code)
        self.page.keyboard.press("Shift+Enter")
        # The prompt reads "[*]:" while the cell runs and "[n]:" once it is done.
        expect(cell.locator(".jp-InputPrompt")).to_have_text(
            re.compile(r"\[\d+\]"), timeout=timeout_ms
        )
        return cell.locator(".jp-OutputArea")

    # --- the fx panel ------------------------------------------------------------------------
    def open_fx_panel(self) -> Locator:
        """Click the fx tab of the left side bar and return the panel once it is live."""
        panel = self.page.locator("#fx-jupyter-panel")
        if not panel.is_visible():
            self.page.locator('.jp-SideBar [data-id="fx-jupyter-panel"]').click()
        expect(panel).to_be_visible()
        expect(panel.locator('.fx-Connection[data-state="live"]')).to_be_visible()
        return panel

    # --- evidence ----------------------------------------------------------------------------
    def save_artifacts(self, name: str, failed: bool) -> None:
        """Screenshot (and, after a failure, the browser console and the server's log) into
        ``test-artifacts/``."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        stem = f"{name}-{'failed' if failed else 'passed'}"
        try:
            self.page.screenshot(path=str(ARTIFACTS / f"{stem}.png"), full_page=True)
        except PlaywrightError as e:  # a crashed page must not hide the test's own error
            (ARTIFACTS / f"{stem}.png.error.txt").write_text(repr(e))
        if failed:
            (ARTIFACTS / f"{stem}.console.txt").write_text("\n".join(self.console))
            (ARTIFACTS / f"{stem}.server.log").write_text(self.stack.server_log()[-50_000:])


# pytest-jupyter's autouse fixtures (enabled suite-wide in tests/conftest.py) would close the
# event loop that Playwright's sync API keeps running in this thread, and clean up an in-process
# Jupyter server these tests do not have. Their server is a subprocess; they need neither.
@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> None:
    """Replaces pytest-jupyter's fixture of the same name: no event loop here."""


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> None:
    """Replaces pytest-jupyter's fixture of the same name: no in-process server here."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item so fixtures know whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# --- fixtures ------------------------------------------------------------------------------------
# Package scope, not session: Playwright's sync API runs an event loop in this thread while it is
# open, and the async tests of other packages (pytest-jupyter) must not find it running.
@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    """Debian's chromium driven by Playwright, headless."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make system-deps`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (no cookies or storage from other tests)."""
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="package")
def lab_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabStack]:
    """JupyterLab with the fx service and fx's prebuilt panel, for this package's tests."""
    if not LAB_EXTENSION.exists():
        pytest.fail(
            "fx's lab extension is not built: run scripts/build-labextension.sh (make setup)"
        )
    stack = LabStack(root=tmp_path_factory.mktemp("lab"))
    try:
        stack.start_server()
        yield stack
    finally:
        stack.teardown()


@pytest.fixture(scope="package")
def lab_endpoint(lab_stack: LabStack) -> str:
    """An endpoint named ``lab`` with two workers, started through the real CLI; its id is
    ``lab_stack.endpoint_id`` afterwards."""
    lab_stack.endpoint_id = lab_stack.configure_endpoint("lab", max_workers=2)
    lab_stack.endpoint_name = "lab"
    lab_stack.fx_endpoint("start", "lab")
    return "lab"


@pytest.fixture
def lab(page: Page, lab_stack: LabStack, request: pytest.FixtureRequest) -> Iterator[JupyterLab]:
    """A logged-in JupyterLab page with a fresh workspace; evidence saved after the test."""
    lab = JupyterLab(page, lab_stack)

    def record(message: ConsoleMessage) -> None:
        lab.console.append(f"[{message.type}] {message.text}")

    page.on("console", record)
    page.on("pageerror", lambda error: lab.console.append(f"[pageerror] {error}"))
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    try:
        lab.goto()
    except Exception:
        lab.save_artifacts(name, failed=True)
        raise
    yield lab
    failed = getattr(getattr(request.node, "rep_call", None), "failed", False)
    lab.save_artifacts(name, failed)
