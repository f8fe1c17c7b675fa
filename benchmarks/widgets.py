"""Widgets benchmark: live views in a real JupyterLab in headless Chromium, and the loop's
latency with the dashboard open.

1. A :class:`dao.widgets.StreamView` of a 128x128 uint16 stream written at 1 kHz by another
   process, shown in JupyterLab in Debian's headless Chromium (:mod:`dao.widgets.testing`):
   frames per second delivered to the browser (acknowledged by the page after drawing), the
   frames' age when drawn (from the write to the drawing, measured by the page) p50 and p99,
   and the kernel's widget messages per second. Baseline: the same view in the same
   JupyterLab without dao's server extension (:mod:`dao.widgets.server`: kernel websockets
   with TCP_NODELAY), i.e. JupyterLab as it comes.
2. The AO loop (10x10 Shack-Hartmann, components in their own processes) run from a notebook
   kernel: camera-to-DM latency p50 and p99 over windows of frames with the
   :class:`dao.widgets.LoopDashboard` shown in the page, against the same loop's windows with
   the dashboard closed (the baseline), alternated closed/open to share the machine's noise;
   once with the loop's default (normal scheduler), once with its processing threads at
   SCHED_FIFO priority 50 (``[run] priority``, ``..._fifo`` rows). Goal: the open p99 within
   1.1 times the closed one (ratio at least 0.91).

3. The same loop with the dashboard fed by the benchmark's own pump and its frames
   acknowledged at once by a stand-in for the browser (``..._kernel_only`` rows): what
   watching costs the loop when the browser runs on another machine.

Figures (JSON lines, see ``benchmarks/_report.py``):

- ``widgets_fps_128x128_uint16_1khz`` (frames/s, the view at its default ``max_fps`` of 30);
- ``widgets_fps_max_128x128_uint16`` (frames/s with ``max_fps`` 1000: as fast as the
  acknowledgements allow);
- ``widgets_frame_age_p50``, ``widgets_frame_age_p99`` (ms);
- ``widgets_messages_per_s`` (msg/s, baseline the 300 msg/s cap of all widgets of a kernel);
- ``widgets_loop_p50_dashboard_open[_fifo]``, ``widgets_loop_p99_dashboard_open[_fifo]`` and
  ``widgets_loop_p99_dashboard_kernel_only[_fifo]`` (us).

Run: ``python benchmarks/widgets.py [--quick]`` (needs Debian's chromium and chromium-driver:
``scripts/system-deps.sh test``; ``--quick`` finishes in about two minutes).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit, machine, parser  # noqa: E402

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

VIEW_SETUP = '''
import json, subprocess, sys, time
import numpy as np
import dao
from dao.widgets import StreamView, get_pump

cam = dao.shm("bench_camera", np.zeros((128, 128), np.uint16), depth=64)
writer = subprocess.Popen([sys.executable, "-c", """
import time, numpy as np, dao
s = dao.shm("bench_camera")
rng = np.random.default_rng(0)
frames = rng.integers(0, 4096, (16, 128, 128)).astype(np.uint16)
t = time.perf_counter()
for k in range(1, 10_000_000):
    t += 1e-3
    while time.perf_counter() < t: pass
    s.set_data(frames[k % 16], cnt2=k)
"""])
view = StreamView(cam, max_fps=30)
view
'''

VIEW_MEASURE = '''
view.max_fps = {max_fps}
time.sleep(1.0)
view._ages.clear()
pump = get_pump()
s0, m0, t0 = view.stats()["frames_shown"], pump.stats()["messages"], time.monotonic()
time.sleep({seconds})
s1, m1, t1 = view.stats()["frames_shown"], pump.stats()["messages"], time.monotonic()
st = view.stats()
print("BENCH-VIEW", json.dumps({{"fps": (s1 - s0) / (t1 - t0), "msg_per_s": (m1 - m0) / (t1 - t0),
      "age_p50_ms": st["age_p50_ms"], "age_p99_ms": st["age_p99_ms"],
      "source_hz": st["source_rate_hz"], "subshell": view._subshell is not None}}))
'''

VIEW_CLOSE = '''
view.close(); writer.kill(); writer.wait(); cam.delete()
'''

LOOP_SETUP = '''
import json
import numpy as np
from dao.loop import AOLoop
from dao.widgets import LoopDashboard

ao = AOLoop({{"run": {{"priority": {priority}}}}}, n_subap=10, history=8192).start()
ao.gain = 0.4
ao.wait(2000)
def window(frames):
    since = ao.frame
    ao.wait(frames)
    lat = ao.latency(since)
    print("BENCH-LOOP", json.dumps({{"p50": lat["latency_p50_s"], "p99": lat["latency_p99_s"],
                                   "rate": lat["loop_rate_hz"], "n": lat["latency_samples"]}}))
'''

LOOP_WINDOW = "window({frames})"
DASH_OPEN = "dash = LoopDashboard(ao)\ndash"
DASH_CLOSE = "dash.close()\ndash.layout.display = 'none'"
LOOP_CLOSE = "ao.close()"


def _last(browser, marker: str) -> dict:
    """The JSON printed after ``marker`` by the newest output that has it."""
    outputs = [t for t in browser.texts(".jp-OutputArea-output") if marker in t]
    return json.loads(outputs[-1].rsplit(marker, 1)[1].strip().split("\n", 1)[0])


def _notebook(folder: Path, name: str, cells: list[str]) -> str:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, folder / name)
    return name


def view_run(folder: Path, nodelay: bool, seconds: float, repeats: int) -> list[dict]:
    """Frames delivered to the page, their age and the messages, ``repeats`` windows."""
    from dao.widgets.testing import Browser, JupyterLab

    name = _notebook(folder, f"view_{int(nodelay)}.ipynb",
                     [VIEW_SETUP, VIEW_MEASURE.format(seconds=seconds, max_fps=30),
                      VIEW_CLOSE, VIEW_MEASURE.format(seconds=seconds, max_fps=1000)])
    out = []
    with JupyterLab(folder, tcp_nodelay=nodelay) as lab, Browser(timeout=90) as browser:
        browser.open_notebook(lab, name)
        browser.run_cell(0)
        browser.wait_for(".dao-view-canvas", 60)
        time.sleep(3.0)  # warm: the first frames, the page's first layout
        for _ in range(repeats):
            browser.run_cell(1, timeout=seconds + 60)
            out.append(_last(browser, "BENCH-VIEW"))
        browser.run_cell(3, timeout=seconds + 60)  # unthrottled: as fast as acks come back
        out[-1]["fps_max"] = _last(browser, "BENCH-VIEW")["fps"]
        browser.run_cell(2)
    return out


def loop_run(folder: Path, frames: int, rounds: int, priority: int = 0
             ) -> tuple[list[dict], list[dict]]:
    """Camera-to-DM latency windows with the dashboard closed and open, alternated."""
    from dao.widgets.testing import Browser, JupyterLab

    name = _notebook(folder, f"loop_{priority}.ipynb", [LOOP_SETUP.format(priority=priority),
                                                        LOOP_WINDOW.format(frames=frames),
                                            DASH_OPEN, DASH_CLOSE, LOOP_CLOSE])
    closed, opened = [], []
    with JupyterLab(folder) as lab, Browser(timeout=90) as browser:
        browser.open_notebook(lab, name)
        browser.run_cell(0, timeout=240)
        for _ in range(rounds):
            browser.run_cell(1, timeout=240)
            closed.append(_last(browser, "BENCH-LOOP"))
            browser.run_cell(2, timeout=120)
            browser.wait_for(".dao-dashboard .dao-view-canvas", 60)
            time.sleep(2.0)  # the views and plots running
            browser.run_cell(1, timeout=240)
            opened.append(_last(browser, "BENCH-LOOP"))
            browser.run_cell(3, timeout=60)
        browser.run_cell(4, timeout=60)
    return closed, opened


def kernel_loop_run(frames: int, rounds: int, priority: int) -> tuple[list[float], list[float]]:
    """The loop's camera-to-DM p99 (s) with the dashboard fed by this process's pump and its
    views acknowledged at once by a stand-in for a browser on another machine, against the
    same loop without it: what watching costs the loop when the browser is elsewhere."""
    import os

    from dao.loop import AOLoop
    from dao.testing import temporary_stream_dir
    from dao.widgets import LoopDashboard

    def ack_at_once(view):
        def send(content, buffers=None):
            if content.get("type") == "frame":
                view._on_msg(view, {"type": "ack", "seq": content["seq"], "age_ms": 1.0}, [])
        view.send = send

    closed, opened = [], []
    with temporary_stream_dir() as folder:
        os.environ["DAO_SHM_DIR"] = folder
        with AOLoop({"run": {"priority": priority}}, n_subap=10, history=8192) as ao:
            ao.gain = 0.4
            ao.wait(2000)

            def window() -> float:
                since = ao.frame
                ao.wait(frames)
                return ao.latency(since)["latency_p99_s"]

            for _ in range(rounds):
                closed.append(window())
                dash = LoopDashboard(ao)
                for v in dash.views.values():
                    ack_at_once(v)
                time.sleep(1.0)
                opened.append(window())
                dash.close()
    return closed, opened


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    seconds, repeats = (5.0, 2) if args.quick else (10.0, 5)
    frames, rounds = (2000, 2) if args.quick else (4000, 5)
    print(json.dumps(machine()), flush=True)
    folder = Path(tempfile.mkdtemp(prefix="dao-bench-widgets-"))
    # the baseline and ours alternate: a run of each, then again
    ours, stock = [], []
    for _ in range(2):
        ours += view_run(folder, True, seconds, max(1, repeats // 2))
        stock += view_run(folder, False, seconds, max(1, repeats // 2))
    med = {k: (float(np.median([r[k] for r in ours])), float(np.median([r[k] for r in stock])))
           for k in ("fps", "age_p50_ms", "age_p99_ms", "msg_per_s", "source_hz")}
    emit("widgets_fps_128x128_uint16_1khz", *med["fps"][:1], "frames/s", med["fps"][1],
         baseline_name="JupyterLab without dao's server extension", goal=25,
         windows=len(ours), window_s=seconds, source_hz=round(med["source_hz"][0]),
         subshell=all(r["subshell"] for r in ours))
    fps_max = [float(np.median([r["fps_max"] for r in rs if "fps_max" in r]))
               for rs in (ours, stock)]
    emit("widgets_fps_max_128x128_uint16", fps_max[0], "frames/s", fps_max[1],
         baseline_name="JupyterLab without dao's server extension",
         note="max_fps=1000: frames delivered as fast as the page acknowledges them")
    emit("widgets_frame_age_p50", med["age_p50_ms"][0], "ms", med["age_p50_ms"][1],
         baseline_name="JupyterLab without dao's server extension")
    emit("widgets_frame_age_p99", med["age_p99_ms"][0], "ms", med["age_p99_ms"][1],
         baseline_name="JupyterLab without dao's server extension")
    emit("widgets_messages_per_s", med["msg_per_s"][0], "msg/s", 300.0,
         baseline_name="the cap of all widgets of a kernel")
    # the loop as configured by default (normal scheduler), then with its processing threads
    # at SCHED_FIFO priority 50 ([run] priority), as a real-time computer runs them
    for priority, suffix in ((0, ""), (50, "_fifo")):
        closed, opened = loop_run(folder, frames, rounds, priority)
        for q in ("p50", "p99"):
            emit(f"widgets_loop_{q}_dashboard_open{suffix}",
                 float(np.median([r[q] for r in opened])) * 1e6, "us",
                 float(np.median([r[q] for r in closed])) * 1e6,
                 baseline_name="the same loop, dashboard closed", windows=len(opened),
                 frames_per_window=frames, priority=priority,
                 closed_us=[round(r[q] * 1e6, 1) for r in closed],
                 open_us=[round(r[q] * 1e6, 1) for r in opened],
                 **({"goal_ratio": round(1 / 1.1, 3)} if q == "p99" else {}))
    for priority, suffix in ((0, ""), (50, "_fifo")):
        closed, opened = kernel_loop_run(frames, rounds, priority)
        emit(f"widgets_loop_p99_dashboard_kernel_only{suffix}", float(np.median(opened)) * 1e6,
             "us", float(np.median(closed)) * 1e6,
             baseline_name="the same loop, no dashboard", priority=priority,
             closed_us=[round(v * 1e6, 1) for v in closed],
             open_us=[round(v * 1e6, 1) for v in opened], goal_ratio=round(1 / 1.1, 3))


if __name__ == "__main__":
    main()
