"""The fx side panel in a real JupyterLab: it lists what the service knows and follows changes
live over the events WebSocket, without a reload."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import pytest
import zmq
from playwright.sync_api import Locator, expect

from fx_endpoint.serialize import function_source, serialize_args, serialize_function

pytestmark = pytest.mark.timeout(90)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def register_endpoint(stack: Any, name: str) -> str:
    """Register an endpoint over REST with a fresh Curve key (it never connects)."""
    public_key, _secret = zmq.curve_keypair()
    status, body = stack.request(
        "POST", "endpoints", {"name": name, "public_key": public_key.decode()}
    )
    assert status == 200, body
    return body["endpoint_id"]


def register_function(stack: Any, fn: Callable[..., Any]) -> str:
    status, body = stack.request(
        "POST",
        "functions",
        {
            "function_name": fn.__name__,
            "function_code": b64(serialize_function(fn)),
            "source": function_source(fn),
        },
    )
    assert status == 200, body
    return body["function_id"]


def submit(stack: Any, endpoint_id: str, function_id: str, *args: Any) -> str:
    status, body = stack.request(
        "POST",
        "submit",
        {
            "tasks": [
                {
                    "endpoint_id": endpoint_id,
                    "function_id": function_id,
                    "payload": b64(serialize_args(args, {})),
                }
            ]
        },
    )
    assert status == 200, body
    return body["task_ids"][0]


def double(x: int) -> int:
    return 2 * x


def explode(x: int) -> int:
    raise ValueError(f"boom {x}")


def cell(row: Locator, field: str) -> Locator:
    return row.locator(f'[data-field="{field}"]')


def expect_theme_color(badge: Locator, variable: str) -> None:
    """``badge`` is (or soon becomes: the row may be drawn again) drawn in the color of
    JupyterLab's CSS ``variable``."""
    expected = badge.page.evaluate(
        """(variable) => {
            const probe = document.createElement('span');
            probe.style.color = `var(${variable})`;
            document.body.append(probe);
            const color = getComputedStyle(probe).color;
            probe.remove();
            return color;
        }""",
        variable,
    )
    expect(badge).to_have_css("color", expected, timeout=10_000)


def test_panel_lists_endpoint_and_task_and_follows_a_cancel(lab, lab_stack) -> None:
    endpoint_id = register_endpoint(lab_stack, "panel-offline")
    function_id = register_function(lab_stack, double)
    task_id = submit(lab_stack, endpoint_id, function_id, 21)

    panel = lab.open_fx_panel()
    endpoint = panel.locator(f'.fx-EndpointRow[data-endpoint-id="{endpoint_id}"]')
    expect(endpoint.locator(".fx-Name")).to_have_text("panel-offline")
    expect(endpoint.locator(".fx-Status")).to_have_text("offline")
    expect(cell(endpoint, "queued")).to_have_text("1")

    task = panel.locator(f'.fx-TaskRow[data-task-id="{task_id}"]')
    expect(task).to_contain_text(task_id.split("-")[0])
    expect(task).to_contain_text("double")
    expect(task).to_contain_text("panel-offline")
    expect(task.locator(".fx-Status")).to_have_text("waiting-for-ep")

    # A change made elsewhere reaches the open panel through the events WebSocket.
    status, body = lab_stack.request("DELETE", f"tasks/{task_id}")
    assert status == 200, body
    expect(task.locator(".fx-Status")).to_have_text("cancelled")
    expect(cell(endpoint, "queued")).to_have_text("0")

    # The toolbar's refresh button runs the command "fx: refresh", which reloads over REST.
    later_id = register_endpoint(lab_stack, "panel-later")
    panel.locator('.jp-Toolbar [data-command="fx:refresh"]').click()
    later = panel.locator(f'.fx-EndpointRow[data-endpoint-id="{later_id}"]')
    expect(later).to_contain_text("panel-later")

    # A deleted endpoint leaves the list live.
    status, body = lab_stack.request("DELETE", f"endpoints/{later_id}")
    assert status == 200, body
    expect(later).to_have_count(0)


def test_panel_reports_a_failed_request_and_recovers_on_refresh(lab) -> None:
    """A proxy's HTML 404 instead of the fx API (the server extension is not enabled) is
    reported in the toolbar in words; the next refresh that succeeds clears it."""
    tasks_route = "**/fx/api/v2/tasks?*"
    lab.page.route(
        tasks_route,
        lambda route: route.fulfill(status=404, content_type="text/html", body="<h1>404</h1>"),
    )
    lab.page.locator('.jp-SideBar [data-id="fx-jupyter-panel"]').click()
    connection = lab.page.locator("#fx-jupyter-panel .fx-Connection")
    expect(connection).to_have_attribute("data-state", "error")
    expect(connection).to_contain_text("fx service not found")

    lab.page.unroute(tasks_route)
    lab.page.locator('#fx-jupyter-panel .jp-Toolbar [data-command="fx:refresh"]').click()
    expect(connection).to_have_attribute("data-state", "live")
    expect(connection).to_have_text("live")


def test_failed_task_goes_live_to_failed_and_expands_to_its_exception(
    lab, lab_stack, request: pytest.FixtureRequest
) -> None:
    panel = lab.open_fx_panel()
    # Started with the panel open (unless an earlier test started it): it appears and goes
    # online through endpoint events.
    request.getfixturevalue("lab_endpoint")
    endpoint = panel.locator(f'.fx-EndpointRow[data-endpoint-id="{lab_stack.endpoint_id}"]')
    expect(endpoint.locator(".fx-Status")).to_have_text("online", timeout=30_000)
    expect(cell(endpoint, "workers")).to_have_text("2", timeout=30_000)

    task_id = submit(lab_stack, lab_stack.endpoint_id, register_function(lab_stack, explode), 3)
    task = panel.locator(f'.fx-TaskRow[data-task-id="{task_id}"]')
    badge = task.locator(".fx-Status")
    expect(badge).to_have_text("failed", timeout=30_000)
    expect_theme_color(badge, "--jp-error-color1")

    task.click()
    expect(task).to_have_attribute("aria-expanded", "true")
    details = panel.locator(f'.fx-TaskDetails[data-task-id="{task_id}"]')
    transitions = details.locator(".fx-Transitions li .fx-Status")
    expect(transitions.first).to_have_text("waiting-for-ep")
    expect(transitions.last).to_have_text("failed")
    expect(transitions.filter(has_text=re.compile("^running$"))).to_have_count(1)
    expect(details.locator(".fx-Exception")).to_contain_text("ValueError")
    expect(details.locator(".fx-Exception")).to_contain_text("boom 3")

    task.press("Enter")
    expect(details).to_have_count(0)


def test_notebook_cell_output_shows_an_ipywidget(lab) -> None:
    """The harness other browser tests build on: run a cell, assert on its widget output."""
    lab.open_notebook("widget.ipynb")
    out = lab.run_cell("import ipywidgets as w\nw.IntProgress(value=7, max=10, description='work')")
    progress = out.locator(".jupyter-widgets.widget-hprogress")
    expect(progress.locator(".widget-label")).to_have_text("work")
    expect(progress.locator(".progress-bar")).to_have_attribute("style", re.compile(r"width: 70%"))
    # Indented lines arrive as typed (the editor's auto-indent must not double them).
    out = lab.run_cell("def f(x):\n    if x:\n        return x + 1\n\nprint(f(41))")
    expect(out).to_contain_text("42")
