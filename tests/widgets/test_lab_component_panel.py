"""A ComponentPanel with a 60-value array parameter in a real JupyterLab, in headless Debian
Chromium: the bar chart drawn by BokehJS, its summary, and an edit typed in the page reaching
the component and coming back in the chart."""

from __future__ import annotations

import pytest

from dao.widgets.testing import (
    Browser,
    JupyterLab,
    artifacts_dir,
    browser_available,
    write_notebook,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SETUP = '''
import numpy as np
from dao.runtime import Component, Parameter
from dao.testing import unique_name
from dao.widgets import ComponentPanel

class Controller(Component):
    timing_depth = 0
    gain = Parameter(0.5, float, bounds=(0, 1), doc="loop gain")
    modal_gains = Parameter(np.round(np.clip(1.3 - 1.2 * np.linspace(0, 1, 60) ** 1.5, 0, 2), 4),
                            np.ndarray, bounds=(0, 2), doc="gain factor of each control mode")

ctrl = Controller(unique_name("ctrl"))
panel = ComponentPanel(ctrl)
panel
'''

READ = '''
print("GAINS", json.dumps(ctrl.modal_gains.tolist()))
'''

CLOSE = '''
panel.close()
ctrl.close()
'''

SUMMARY = ".dao-array-param .dao-array-summary"
# the bokeh figure's canvas, in the shadow DOM BokehJS renders into
CANVAS = """
const box = document.querySelector('.dao-array-param');
if (!box) return null;
const found = [];
const walk = (n) => { if (n.tagName === 'CANVAS') found.push(n);
  if (n.shadowRoot) walk(n.shadowRoot); for (const c of n.children || []) walk(c); };
walk(box);
const c = found.find(c => c.width > 100 && c.height > 50);
return c ? [c.getBoundingClientRect().width, c.getBoundingClientRect().height] : null;
"""


def test_array_parameter_chart_renders_and_takes_an_edit(tmp_path, stream_dir):
    missing = browser_available()
    assert missing is None, missing  # install Debian's chromium and chromium-driver
    write_notebook(tmp_path / "panel.ipynb", [SETUP, "import json" + READ, CLOSE])
    shots = artifacts_dir(tmp_path / "artifacts")
    with JupyterLab(tmp_path, env={"DAO_SHM_DIR": stream_dir}) as lab, \
            Browser(shots, timeout=60) as browser:
        browser.open_notebook(lab, "panel.ipynb")
        browser.run_cell(0)
        size = browser.wait_for(lambda: browser.js(CANVAS), 60,
                                message="the chart's canvas drawn by BokehJS")
        assert size[0] >= 400 and 90 <= size[1] <= 200, size  # panel-wide, short
        summary = browser.wait_for(lambda: browser.text(SUMMARY), 30, message="the summary")
        assert "60 values · min 0.1 · median" in summary and "max 1.3" in summary, summary
        # an edit typed in the page, as a user would: Enter sends it
        field = browser.find(".dao-array-param input[type='text']")
        browser.js("arguments[0].scrollIntoView({block: 'center'});", field)
        field.click()
        browser.press("0:10 = 1.8")
        browser.press("\ue007")  # Enter
        browser.wait_for(lambda: "max 1.8" in (browser.text(SUMMARY) or ""), 30,
                         message="the summary after the edit")
        browser.wait_for(lambda: "10 of 60 values changed" in browser.page_text(4000), 30,
                         message="the read-back note")
        assert browser.widget_errors() == []
        browser.scroll_to(".dao-array-param")
        shot = browser.screenshot("component-panel-array")
        browser.run_cell(1)
        gains = browser.printed("GAINS")
        browser.run_cell(2)
    assert gains[:10] == [1.8] * 10 and gains[10] < 1.3
    assert shot.stat().st_size > 10000
