"""StreamView at the model level: what it sends, when, and what it counts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import dao
from dao.testing import wait_for
from dao.widgets import StreamView
from dao.widgets.pump import Pump


def _writer(name: str, seconds: float, rate: float = 1000.0) -> list[str]:
    code = textwrap.dedent(f"""
        import time, numpy as np, dao
        s = dao.shm({name!r})
        f = np.zeros(s.shape, s.dtype)
        t = time.perf_counter(); end = t + {seconds}
        k = 0
        while t < end:
            k += 1
            f[...] = k % 1000
            s.set_data(f, cnt2=k)
            t += {1 / rate}
            while time.perf_counter() < t: pass
    """)
    return [sys.executable, "-c", code]


def test_counters_advance_while_another_process_writes(name, procs, frontend):
    s = dao.shm(name, np.zeros((128, 128), np.uint16), depth=16)
    view = StreamView(s, pump=Pump(), max_fps=30)
    fe = frontend(view)
    procs.append(subprocess.Popen(_writer(name, 3.0)))
    wait_for(lambda: view.stats()["frames_shown"] >= 20, timeout=20, what="20 frames shown")
    st = view.stats()
    assert st["source_rate_hz"] > 100  # the writer's rate, seen by the view
    assert 5 < st["display_rate_hz"] <= 40  # about max_fps, never above it
    assert st["frames_skipped"] > st["frames_sent"]  # 1 kHz written, ~30 Hz shown
    assert st["in_flight"] <= view.max_in_flight
    content, buffers = fe.frames[-1]
    # binary: one buffer with the frame's bytes, never a list or base64 in the JSON
    assert len(buffers) == 1 and len(buffers[0]) == 128 * 128 * 2
    assert content["dtype"] == "uint16" and content["shape"] == [128, 128]
    counters = [c["cnt0"] for c, _ in fe.frames]
    assert counters == sorted(counters) and len(set(counters)) == len(counters)
    assert np.isfinite(st["age_p50_ms"]) and st["age_p50_ms"] < 5000


def test_at_most_two_frames_in_flight_and_the_newest_wins(name, frontend):
    s = dao.shm(name, np.zeros((8, 8), np.float32), depth=8)
    view = StreamView(s, pump=Pump(), max_fps=1000)
    fe = frontend(view, ack=False)  # a browser that does not answer
    for k in range(1, 200):
        s.set_data(np.full((8, 8), k, np.float32))
        time.sleep(0.001)
    time.sleep(0.3)
    assert len(fe.frames) == 2  # nothing queues behind the unanswered frames
    fe._ack(fe.frames[-1][0])  # the browser answers the newest: both are done
    s.set_data(np.full((8, 8), 500, np.float32))
    wait_for(lambda: len(fe.frames) == 3, timeout=5)
    assert fe.last["cnt0"] == s.get_counter()  # the newest frame, not the next in line
    assert np.frombuffer(fe.frames[-1][1][0], np.float32)[0] == 500


def test_lost_acks_time_out(name, frontend):
    s = dao.shm(name, np.zeros((4, 4), np.float32), depth=8)
    view = StreamView(s, pump=Pump(), max_fps=100)
    view.ack_timeout = 0.2
    fe = frontend(view, ack=False)
    s.set_data(np.ones((4, 4), np.float32))
    wait_for(lambda: len(fe.frames) >= 1, timeout=5)
    for k in range(40):
        s.set_data(np.full((4, 4), k, np.float32))
        time.sleep(0.02)
    assert len(fe.frames) >= 3  # a re-rendered page gets frames again after the timeout


def test_freeze_and_step_back_through_the_fifo(name, frontend):
    s = dao.shm(name, np.zeros((4, 4), np.float32), depth=16)
    view = StreamView(s, pump=Pump(), max_fps=200)
    fe = frontend(view)
    for k in range(1, 11):
        s.set_data(np.full((4, 4), k, np.float32), cnt2=100 + k)
    wait_for(lambda: fe.frames and fe.last["cnt0"] == 10, timeout=5)
    view.frozen = True
    for k in range(11, 14):  # the source goes on: the frozen view does not follow
        s.set_data(np.full((4, 4), k, np.float32), cnt2=100 + k)
    view.offset = 3
    wait_for(lambda: fe.last["cnt0"] == 7, timeout=5)
    c, b = fe.frames[-1]
    assert c["frozen"] and c["back"] == 3 and c["cnt2"] == 107
    assert np.frombuffer(b[0], np.float32)[0] == 7
    view.offset = 30  # beyond the FIFO's depth
    wait_for(lambda: fe.notes, timeout=5)
    assert "not in the FIFO" in fe.notes[-1]
    view.frozen = False
    wait_for(lambda: fe.last["cnt0"] == 13, timeout=5)
    assert view.offset == 0


def test_region_statistics_and_scale_limits(name, frontend):
    s = dao.shm(name, np.zeros((10, 20), np.float32), depth=4)
    view = StreamView(s, pump=Pump(), roi=[0, 0, 5, 2])
    fe = frontend(view)
    img = np.arange(200, dtype=np.float32).reshape(10, 20)
    s.set_data(img)
    wait_for(lambda: fe.frames, timeout=5)
    r = fe.last["region"]
    sel = img[0:2, 0:5]
    assert r["n"] == 10 and r["mean"] == pytest.approx(sel.mean()) and r["max"] == 24
    assert fe.last["lo"] == 0 and fe.last["hi"] == 199 and fe.last["lo_pos"] == 1
    view.roi = [10, 5, 12, 6]  # a new region: the statistics come with the next frame
    wait_for(lambda: fe.last["region"]["n"] == 2, timeout=5)
    assert view.region["sum"] == img[5, 10] + img[5, 11]


def test_frame_is_a_labelled_dataarray(name, frontend):
    s = dao.shm(name, np.zeros((2, 6), np.float32), depth=4)
    s.set_labels(("axis", "subaperture"), coords={"axis": ["x", "y"]})
    view = StreamView(s, pump=Pump())
    fe = frontend(view)
    assert view.kind == "vector" and view.series == ["x", "y"]
    s.set_data(np.ones((2, 6), np.float32), cnt2=42)
    wait_for(lambda: fe.frames, timeout=5)
    da = view.frame
    assert da.dims == ("axis", "subaperture") and list(da.axis.values) == ["x", "y"]
    assert da.attrs["cnt2"] == 42


def test_closing_a_view_stops_its_share_of_the_pump(name, frontend):
    pump = Pump()
    s = dao.shm(name, np.zeros((4, 4), np.float32), depth=4)
    a, b = StreamView(s, pump=pump), StreamView(s, pump=pump)
    frontend(a), frontend(b)
    assert pump.sources == [a, b] and pump.running
    a.close()
    assert pump.sources == [b]
    b.close()
    wait_for(lambda: not pump.running, timeout=5, what="the pump thread to end")


def test_bad_input_is_refused_with_a_reason(name):
    s = dao.shm(name, np.zeros((4, 4), np.float32), depth=4)
    with pytest.raises(ValueError, match="colormap"):
        StreamView(s, colormap="jet", start=False)
    with pytest.raises(ValueError, match="max_fps"):
        StreamView(s, max_fps=0, start=False)
    with pytest.raises(ValueError, match="grid"):
        StreamView(s, kind="grid", start=False)
    with pytest.raises(FileNotFoundError):
        StreamView(name + "_none", start=False)


def test_a_stream_closed_under_its_view_stops_the_view(name, frontend):
    pump = Pump()
    s = dao.shm(name, np.zeros((4, 4), np.float32), depth=4)
    view = StreamView(s, pump=pump)
    fe = frontend(view)
    s.set_data(np.ones((4, 4), np.float32))
    wait_for(lambda: fe.frames, timeout=5)
    s.close()  # its owner closes it (a loop closed before its dashboard)
    wait_for(lambda: fe.notes, timeout=5)
    assert "closed" in fe.notes[-1] and not view.running
    assert pump.stats()["errors"] == 0 and "closed stream" in repr(view)
