"""A StreamView in a real JupyterLab, in headless Debian Chromium: frames drawn in the page,
acknowledged, and still flowing while a cell runs (the acknowledgements go to a subshell)."""

from __future__ import annotations

import time

import pytest

from dao.widgets.testing import (
    Browser,
    JupyterLab,
    artifacts_dir,
    browser_available,
    write_notebook,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SETUP = '''
import subprocess, sys, time
import numpy as np
import dao
from dao.widgets import StreamView, get_pump

cam = dao.shm("lab_camera", np.zeros((128, 128), np.uint16), depth=64)
writer = subprocess.Popen([sys.executable, "-c", """
import time, numpy as np, dao
s = dao.shm("lab_camera")
y, x = np.mgrid[:128, :128]
t = time.perf_counter()
for k in range(1, 120_000):
    t += 1e-3
    while time.perf_counter() < t: pass
    s.set_data(((np.sin(x / 9 + k / 50) + np.cos(y / 13)) * 1000 + 3000).astype(np.uint16),
               cnt2=k)
"""])
view = StreamView(cam, colormap="inferno", width=384)
view
'''

BUSY = '''
n0 = view.stats()["frames_shown"]
time.sleep(6)  # a long cell: the view goes on
n1 = view.stats()["frames_shown"]
print("DURING-CELL", json.dumps({"n0": n0, "n1": n1, "subshell": view._subshell is not None}))
'''

STATS = '''
print("VIEW-STATS", json.dumps({**view.stats(), "pump_rate": get_pump().rate()}))
'''

CLOSE = '''
view.close()
writer.kill()
cam.delete()
'''


def test_view_draws_and_keeps_drawing_while_a_cell_runs(tmp_path, stream_dir):
    missing = browser_available()
    assert missing is None, missing  # install Debian's chromium and chromium-driver
    write_notebook(tmp_path / "view.ipynb",
                   [SETUP, "import json" + BUSY, "time.sleep(2)" + STATS, CLOSE])
    shots = artifacts_dir(tmp_path / "artifacts")

    def count() -> int:
        text = browser.text(".dao-view-count") or ""
        return int(text) if text.isdigit() else -1

    with JupyterLab(tmp_path, env={"DAO_SHM_DIR": stream_dir}) as lab, \
            Browser(shots, timeout=90) as browser:
        browser.open_notebook(lab, "view.ipynb")
        browser.run_cell(0)
        browser.wait_for(".dao-view-canvas", 60, message="the view's canvas")
        first = browser.wait_for(lambda: count() > 0 and count(), 60, message="a first frame")
        browser.wait_for(lambda: count() > first + 500, 30,
                         message="the frame counter to advance in the page")
        # a cell that runs for 6 s: the page's counter still advances meanwhile
        browser.run_cell(1, wait=False)
        browser.wait_for(lambda: browser.kernel_status() == "busy", 10)
        time.sleep(1.0)
        c0, t0 = count(), time.monotonic()
        time.sleep(3.0)
        c1, t1 = count(), time.monotonic()
        browser.wait_kernel_idle(60)
        during = browser.printed("DURING-CELL")
        browser.run_cell(2)
        stats = browser.printed("VIEW-STATS")
        browser.scroll_to(".dao-view")
        shot = browser.screenshot("stream-view")
        assert browser.widget_errors() == []
        status = browser.text(".dao-view-status-text") or ""
        browser.run_cell(3)
        # dao's server extension is on where dao is installed: no Nagle delay on the websocket
        assert "kernel websockets with TCP_NODELAY" in lab.log_tail(100000)
    # frames of a 1 kHz source kept coming to the page during the cell (about 30 a second)
    assert during["subshell"] and during["n1"] - during["n0"] >= 6 * 5, during
    assert (c1 - c0) / (t1 - t0) > 100, (c0, c1)  # counters: a 1 kHz source, sampled
    assert stats["frames_shown"] > 50 and stats["display_rate_hz"] > 5, stats
    assert stats["in_flight"] <= 2 and stats["age_p50_ms"] < 1000, stats
    assert stats["pump_rate"] <= 300
    assert "source" in status and "display" in status and "not shown" in status
    assert shot.stat().st_size > 10000
