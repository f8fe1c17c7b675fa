"""The browser harness (dao.widgets.testing) drives a real JupyterLab in headless Chromium.

The probe runs a notebook, as a user would, that streams 128x128 uint16 frames to an anywidget
over custom messages with binary buffers (one frame in flight: the next leaves when the
browser acknowledged the previous) and updates a bokeh plot shown through jupyter_bokeh from a
background thread; it checks the page shows both and measures the frame rate.
Screenshots go to ``$DAO_TEST_ARTIFACTS`` (or a temporary folder).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dao.widgets.testing import (
    LAB_SETTINGS,
    Browser,
    BrowserTimeout,
    CellError,
    JupyterLab,
    artifacts_dir,
    browser_available,
)


@pytest.fixture(autouse=True)
def _browser_installed():
    """The browser tests fail (never skip) without Debian's chromium and chromium-driver."""
    missing = browser_available()
    assert missing is None, missing

# -- the probe notebook -------------------------------------------------------------------------

WIDGET_CELL = r'''
import json, threading, time
import numpy as np
import anywidget

class Probe(anywidget.AnyWidget):
    """Draws each uint16 128x128 frame it receives, counts them, acknowledges each one."""
    _esm = """
    export default {
      render({ model, el }) {
        const canvas = document.createElement("canvas");
        canvas.width = 128; canvas.height = 128; canvas.className = "probe-canvas";
        canvas.style.width = "256px"; canvas.style.imageRendering = "pixelated";
        const count = document.createElement("span");
        count.className = "probe-count"; count.textContent = "0";
        const info = document.createElement("span"); info.className = "probe-info";
        el.append(canvas, " frames: ", count, " ", info);
        const ctx = canvas.getContext("2d");
        const image = ctx.createImageData(128, 128);
        let n = 0, t0 = 0;
        const onMessage = (msg, buffers) => {
          if (msg.seq === undefined) return;
          const b = buffers[0];
          const kind = Object.prototype.toString.call(b).slice(8, -1);
          // a DataView may sit at an odd offset of the websocket message: copy before viewing
          const bytes = b instanceof DataView
            ? b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) : b;
          const frame = new Uint16Array(bytes);
          const px = image.data;
          let sum = 0;
          for (let i = 0; i < frame.length; i++) {
            const v = frame[i] >> 8; px[4 * i] = v; px[4 * i + 1] = v; px[4 * i + 2] = v;
            px[4 * i + 3] = 255; sum = (sum + frame[i]) >>> 0;
          }
          ctx.putImageData(image, 0, 0);
          n += 1;
          const now = performance.now();
          if (n === 1) t0 = now;
          count.textContent = String(n);
          info.textContent = kind + " offset " + (b.byteOffset || 0) + " bytes " + b.byteLength
            + (n > 1 ? " fps " + ((n - 1) / ((now - t0) / 1000)).toFixed(1) : "");
          // binary back to Python too: the frame's checksum as a uint32
          model.send({ type: "ack", seq: msg.seq, kind }, undefined,
                     [new Uint32Array([sum]).buffer]);
        };
        model.on("msg:custom", onMessage);
        model.send({ type: "ready" });
        return () => model.off("msg:custom", onMessage);
      }
    };
    """

probe = Probe()
stats = {"ready": 0, "sent": 0, "acked": 0, "bad_checksum": 0, "kinds": [], "t0": None,
         "t1": None, "stall": False}
acked = threading.Event()
ready = threading.Event()
stop = threading.Event()
checksums = {}

def on_msg(widget, content, buffers):
    if content.get("type") == "ready":
        stats["ready"] += 1
        ready.set()
    elif content.get("type") == "ack":
        got = int(np.frombuffer(bytes(buffers[0]), np.uint32)[0])
        if got != checksums.pop(content["seq"], None):
            stats["bad_checksum"] += 1
        if content.get("kind") not in stats["kinds"]:
            stats["kinds"].append(content.get("kind"))
        stats["acked"] += 1
        stats["t1"] = time.perf_counter()
        acked.set()

probe.on_msg(on_msg)

def pump():
    """One frame in flight: send frame k+1 only once frame k is acknowledged."""
    if not ready.wait(120):
        return
    yy, xx = np.mgrid[0:128, 0:128]
    stats["t0"] = time.perf_counter()
    k = 0
    while not stop.is_set():
        frame = ((np.sin((xx + 3 * k) / 9.0) * np.cos((yy - 2 * k) / 13.0) + 1) * 32767)
        frame = frame.astype(np.uint16)
        checksums[k] = int(frame.sum(dtype=np.uint64)) & 0xFFFFFFFF
        acked.clear()
        probe.send({"seq": k}, buffers=[frame.tobytes()])
        stats["sent"] += 1
        k += 1
        deadline = time.monotonic() + 30
        while not acked.wait(0.2):
            if stop.is_set():
                return
            if time.monotonic() > deadline:
                stats["stall"] = True
                return

pumper = threading.Thread(target=pump, name="probe-pump", daemon=True)
pumper.start()
probe
'''

BOKEH_LOAD_CELL = r'''
import bokeh.io, bokeh.resources
bokeh.io.output_notebook(bokeh.resources.INLINE, hide_banner=True)
'''

BOKEH_CELL = r'''
import ipywidgets
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure
from jupyter_bokeh import BokehModel

source = ColumnDataSource(data={"x": [0, 1, 2], "y": [0, 1, 4]})
fig = figure(width=500, height=250, title="bokeh probe")
fig.line("x", "y", source=source, line_width=2)
fig.scatter("x", "y", source=source, size=6)
plot = BokehModel(fig)

def feed():
    """Rewrite the source from a thread: 40 updates, the last one 53 points long."""
    for k in range(40):
        n = 14 + k
        source.data = {"x": list(range(n)), "y": [((i * 7 + k) % 23) for i in range(n)]}
        time.sleep(0.05)

ipywidgets.VBox([ipywidgets.HTML("<b class='bokeh-probe-title'>bokeh probe</b>"), plot])
'''

START_FEED_CELL = r'''
feeder = threading.Thread(target=feed, name="bokeh-feed", daemon=True)
feeder.start()
'''

STATS_CELL = r'''
stop.set(); pumper.join(10); feeder.join(10)
print("PROBE-STATS " + json.dumps(stats))
'''

# the lengths of the ColumnDataSource columns BokehJS holds (in every Bokeh document)
JS_BOKEH_SOURCES = """
if (!window.Bokeh) return null;
const out = [];
for (const doc of (Bokeh.documents || [])) {
  for (const m of doc.all_models) {
    if (m.type === "ColumnDataSource" || (m.constructor && m.constructor.__name__ ===
        "ColumnDataSource")) {
      out.push(m.get_length ? m.get_length() : (m.data.x || []).length);
    }
  }
}
return {version: Bokeh.version, sources: out, documents: (Bokeh.documents || []).length};
"""


def write_probe(folder: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# browser probe"),
                *(nbformat.v4.new_code_cell(src.strip()) for src in (
                    WIDGET_CELL, BOKEH_LOAD_CELL, BOKEH_CELL, START_FEED_CELL, STATS_CELL))]
    path = folder / "probe.ipynb"
    nbformat.write(nb, path)
    return path


# -- tests ----------------------------------------------------------------------------------


def test_artifacts_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("DAO_TEST_ARTIFACTS", raising=False)
    assert artifacts_dir(tmp_path / "a") == tmp_path / "a" and (tmp_path / "a").is_dir()
    monkeypatch.setenv("DAO_TEST_ARTIFACTS", str(tmp_path / "b"))
    assert artifacts_dir(tmp_path / "a") == tmp_path / "b" and (tmp_path / "b").is_dir()


def test_lab_urls_and_settings(tmp_path):
    lab = JupyterLab(tmp_path, settings={"@jupyterlab/notebook-extension:tracker":
                                         {"lineNumbers": True}})
    lab.port = 8123
    assert lab.lab_url("sub dir/n.ipynb") == \
        f"http://127.0.0.1:8123/lab/tree/sub%20dir/n.ipynb?token={lab.token}"
    assert lab.settings["@jupyterlab/notebook-extension:tracker"] == {
        "windowingMode": "none", "lineNumbers": True}
    assert LAB_SETTINGS["@jupyterlab/notebook-extension:tracker"] == {"windowingMode": "none"}
    assert LAB_SETTINGS["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lab_starts_and_stops_with_its_kernels(tmp_path):
    lab = JupyterLab(tmp_path, tcp_nodelay=False)
    with lab:
        assert "started" in lab.api("status")
        # the stock server: dao's extension (TCP_NODELAY) switched off in its private config
        stock = json.loads((lab.workdir / "config" / "jupyter_server_config.json").read_text())
        assert stock["ServerApp"]["jpserver_extensions"] == {"dao.widgets.server": False}
        kernel = lab.api("kernels", method="POST", body={"name": "python3"})
        assert [k["id"] for k in lab.api("kernels")] == [kernel["id"]]
        settings = lab.workdir / "settings" / "@jupyterlab" / "apputils-extension"
        assert json.loads((settings / "notification.jupyterlab-settings").read_text())[
            "fetchNews"] == "false"
        process = lab.process
    assert process.poll() is not None
    assert lab.process is None and not lab.workdir.exists()
    from dao.widgets.testing import _marked_pids

    assert _marked_pids(lab.mark) == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_probe_widgets_in_jupyterlab(tmp_path):
    """anywidget binary frames both ways and a jupyter_bokeh plot, live in JupyterLab (with
    dao's server extension, as installed: benchmarks/widgets.py compares without it)."""
    variant = "nodelay"
    nodelay = True
    shots = artifacts_dir(tmp_path / "artifacts")
    write_probe(tmp_path)
    started = time.monotonic()
    with JupyterLab(tmp_path, tcp_nodelay=nodelay) as lab, \
            Browser(shots, timeout=90) as browser:
        browser.open_notebook(lab, "probe.ipynb")
        opened = time.monotonic()
        assert browser.find(".jp-Notification-Toast") is None  # no news pop-up over the page
        for index in range(4):  # markdown, widget, bokeh loading, bokeh widget
            browser.run_cell(index)
        browser.wait_for(".probe-canvas", 60)
        # the frames flow as soon as the view is up (the kernel is idle, the acks get in)
        browser.wait_for(lambda: int(browser.text(".probe-count") or 0) >= 20, 120,
                         message=">= 20 frames acknowledged")
        n0, t0 = int(browser.text(".probe-count")), time.monotonic()
        time.sleep(5.0)
        n1, t1 = int(browser.text(".probe-count")), time.monotonic()
        fps = (n1 - n0) / (t1 - t0)
        browser.scroll_to(".probe-canvas")
        browser.screenshot(f"probe-{variant}-frames")

        # bokeh: BokehJS loaded from the package, the plot drawn on a canvas
        bokeh0 = browser.wait_for(lambda: browser.js(JS_BOKEH_SOURCES), 60,
                                  message="BokehJS loaded")
        browser.wait_for(".bk-Figure, .bk-Canvas, .bk-root canvas, div.bk-canvas-events", 60,
                         message="bokeh plot rendered")
        assert 3 in bokeh0["sources"], bokeh0
        browser.run_cell(4)  # feed the plot from a thread
        browser.wait_for(lambda: 53 in (browser.js(JS_BOKEH_SOURCES) or {}).get(
            "sources", ()), 60, message="bokeh source updated to 53 points from the thread")
        bokeh1 = browser.js(JS_BOKEH_SOURCES)
        browser.scroll_to(".bokeh-probe-title")
        browser.screenshot(f"probe-{variant}-bokeh")

        assert browser.widget_errors() == []
        browser.run_cell(5)
        out = browser.wait_for(lambda: "PROBE-STATS" in " ".join(
            browser.texts(".jp-OutputArea-output")), 60, message="stats printed")
        assert out
        line = [t for t in browser.texts(".jp-OutputArea-output") if "PROBE-STATS" in t][-1]
        stats = json.loads(line.split("PROBE-STATS", 1)[1].strip().splitlines()[0])
        info = browser.text(".probe-info")
        lost_keys = browser.lost_keys
        browser.screenshot(f"probe-{variant}-end")
        finished = time.monotonic()

    py_fps = (stats["acked"] - 1) / (stats["t1"] - stats["t0"]) if stats["acked"] > 1 else 0
    report = {"variant": variant, "fps_browser_5s": round(fps, 1), "fps_python": round(py_fps, 1),
              "frames": n1, "lost_keys": lost_keys, "stats": stats, "info": info, "bokeh": bokeh1,
              "open_s": round(opened - started, 1), "total_s": round(finished - started, 1),
              "screenshots": str(shots)}
    print("PROBE", json.dumps(report, default=str))
    (shots / f"probe-{variant}-report.json").write_text(json.dumps(report, default=str, indent=1))
    assert stats["ready"] >= 1 and not stats["stall"], stats
    assert stats["bad_checksum"] == 0, stats  # binary from the browser back to Python is right
    assert stats["acked"] >= 20 and stats["sent"] - stats["acked"] <= 1, stats
    assert fps > 2, report


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_harness_runs_cells_and_reports_errors(tmp_path):
    """Cells run with Shift+Enter in order; a failing cell raises CellError with its traceback;
    a wait that runs out names a screenshot. The notebook has no kernel metadata (JupyterLab
    asks which kernel: the harness takes Python) and sits in a folder with a space."""
    import nbformat

    nb = nbformat.v4.new_notebook()  # no kernelspec
    nb.cells = [nbformat.v4.new_code_cell("x = 6 * 7"),
                nbformat.v4.new_markdown_cell("*between*"),
                nbformat.v4.new_code_cell("print('answer', x)"),
                nbformat.v4.new_code_cell("1 / 0")]
    (tmp_path / "sub dir").mkdir()
    nbformat.write(nb, tmp_path / "sub dir" / "bad.ipynb")
    with JupyterLab(tmp_path) as lab, Browser(tmp_path / "shots", timeout=30) as browser:
        browser.open_notebook(lab, "sub dir/bad.ipynb")
        assert browser.kernel_status() == "idle"
        with pytest.raises(CellError, match="(?s)cell 3: ZeroDivisionError.*1 / 0"):
            browser.run_all()
        assert "answer 42" in browser.texts(".jp-OutputArea-output")[0]
        with pytest.raises(BrowserTimeout, match="screenshot: .*timeout-"):
            browser.wait_for(".no-such-thing", 1)
        assert list(browser.artifacts.glob("timeout-*.png"))
