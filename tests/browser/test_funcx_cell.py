"""A %%funcx cell in JupyterLab in a real browser: its task widget goes live to `success` and the
cell shows the result; the screenshot is kept in test-artifacts/browser/."""

from __future__ import annotations

from playwright.sync_api import expect


def test_funcx_cell_widget_shows_success_and_result(lab, lab_endpoint) -> None:
    lab.open_notebook("funcx_cell.ipynb")
    lab.run_cell("%load_ext fx_jupyter")
    lab.run_cell("a, b = 6, 7")
    out = lab.run_cell(f"%%funcx endpoint={lab_endpoint}\nproduct = a * b\nprint('remote says hi')\nproduct + 0.5")
    widget = out.locator(".widget-html-content").first
    expect(widget).to_contain_text("success", timeout=30_000)
    expect(widget).to_contain_text(lab_endpoint)
    expect(out.first).to_contain_text("remote says hi")
    expect(out.first).to_contain_text("42.5")
    # the assigned name came back into the notebook
    expect(lab.run_cell("print(product * 2)").first).to_contain_text("84")
