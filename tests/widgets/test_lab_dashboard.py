"""Notebook 03 in a real JupyterLab, in headless Debian Chromium: run it as a user would,
click the dashboard's buttons and its gain, and see the components change in the page."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from dao.widgets.testing import Browser, JupyterLab, artifacts_dir, browser_available

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03_tune_the_loop.ipynb"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _click_text(browser: Browser, scope_css: str, text: str) -> None:
    """Click the button labelled ``text`` inside the element ``scope_css``."""
    browser.wait_for(lambda: browser.js(
        "const s = document.querySelector(arguments[0]);"
        "const b = s && [s, ...s.querySelectorAll('button')].find("
        "  x => x.tagName === 'BUTTON' && x.textContent.trim() === arguments[1] && !x.disabled);"
        "if (!b) return false; b.scrollIntoView({block: 'center'}); b.click(); return true;",
        scope_css, text), 30, message=f"an enabled {text!r} button in {scope_css}")


def _count(browser: Browser, index: int) -> int:
    counts = browser.texts(".dao-view-count")
    return int(counts[index]) if len(counts) > index and counts[index].isdigit() else -1


def test_dashboard_drives_the_loop_in_jupyterlab(tmp_path, stream_dir):
    missing = browser_available()
    assert missing is None, missing  # install Debian's chromium and chromium-driver
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    shots = artifacts_dir(tmp_path / "artifacts")
    with JupyterLab(tmp_path, env={"DAO_SHM_DIR": stream_dir}) as lab, \
            Browser(shots, timeout=90) as browser:
        browser.open_notebook(lab, NOTEBOOK.name)
        browser.run_cell(0)  # the title
        browser.run_cell(1, timeout=240)  # start the loop, show the dashboard
        browser.wait_for(".dao-dashboard", 120, message="the dashboard")
        browser.wait_for(lambda: len(browser.texts(".dao-view-count")) == 4, 60,
                         message="four live views")
        # a live view's frame counter advances in the page while the loop runs
        first = browser.wait_for(lambda: _count(browser, 0) > 0 and _count(browser, 0), 60,
                                 message="a first WFS frame drawn")
        browser.wait_for(lambda: _count(browser, 0) > first + 20, 60,
                         message="the WFS view's counter to advance")
        assert "open" in browser.text(".dao-loop-status")
        # Close loop: the gain of the slider goes to the controller, read back in the page
        _click_text(browser, ".dao-close-loop", "Close loop")
        browser.wait_for(lambda: "closed, gain 0.50" in (browser.text(".dao-loop-status") or ""),
                         30, message="the loop closed at gain 0.50")
        # the gain control in the page: type a new value in the slider's readout
        readout = browser.find(".dao-gain .widget-readout")
        browser.js("arguments[0].scrollIntoView({block: 'center'});", readout)
        readout.click()
        browser.js("document.execCommand('selectAll', false, null);")
        browser.press("0.25")
        browser.press("\ue007")  # Enter
        browser.wait_for(lambda: "closed, gain 0.25" in (browser.text(".dao-loop-status") or ""),
                         30, message="the gain 0.25 read back from the controller")
        # Idle and Run the controller from its panel: the state comes back in its events
        browser.js("const h = [...document.querySelectorAll('.dao-dashboard *')].find("
                   "e => e.children.length === 0 && /^controller: /.test(e.textContent.trim()));"
                   "h.scrollIntoView({block: 'center'}); h.click();")
        state = ".dao-panel-controller .dao-panel-state"
        browser.wait_for(lambda: (browser.text(state) or "").startswith("Running"), 30,
                         message="the controller's panel shows Running")
        _click_text(browser, ".dao-panel-controller", "Idle")
        browser.wait_for(lambda: (browser.text(state) or "").startswith("Idle"), 30,
                         message="the controller's panel shows Idle")
        # the loop stalls without its controller: the bench goes on late, without commands
        _click_text(browser, ".dao-panel-controller", "Run")
        browser.wait_for(lambda: (browser.text(state) or "").startswith("Running"), 30,
                         message="the controller running again")
        # the trend and histograms drawn by bokeh, and no widget failed to render
        browser.wait_for(".dao-dashboard .bk-Canvas, .dao-dashboard canvas", 30)
        assert browser.widget_errors() == []
        status = browser.text(".dao-view-status-text") or ""
        assert re.search(r"source [\d.e+]+ Hz", status) and "not shown" in status, status
        time.sleep(1.0)  # a few more frames and plot updates before the picture
        browser.scroll_to(".dao-dashboard")
        shot = browser.screenshot("dashboard")
        # the remaining cells, as a user would: close the loop from code, change the gain
        for index in range(2, len(browser.cells())):
            browser.run_cell(index, timeout=240)
        outputs = "\n".join(browser.texts(".jp-OutputArea-output"))  # not the cells' code
        strehl = {g: float(v) for g, v in re.findall(r"gain (0\.\d): Strehl ([\d.]+)", outputs)}
        assert set(strehl) == {"0.3", "0.1", "0.5"} and strehl["0.5"] > strehl["0.1"], strehl
    assert shot.exists() and shot.stat().st_size > 20000
    (shots / "dashboard.json").write_text(json.dumps({"screenshot": str(shot)}))
