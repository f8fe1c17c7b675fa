"""The loop dashboard at the model level, on a real loop (components in their own processes)."""

from __future__ import annotations

import pytest

from dao.loop import AOLoop
from dao.testing import wait_for
from dao.widgets import LoopDashboard
from dao.widgets.pump import Pump

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    import os

    from dao.testing import temporary_stream_dir

    with temporary_stream_dir() as folder:
        old = os.environ.get("DAO_SHM_DIR")
        os.environ["DAO_SHM_DIR"] = folder
        try:
            with AOLoop(n_subap=6, history=2048) as ao:
                yield ao
        finally:
            if old is None:
                os.environ.pop("DAO_SHM_DIR", None)
            else:
                os.environ["DAO_SHM_DIR"] = old


def test_buttons_and_gain_drive_the_controller(loop, frontend):
    pump = Pump()
    dash = LoopDashboard(loop, pump=pump, panels=False)
    for v in dash.views.values():
        frontend(v)
    try:
        dash.gain_slider.value = 0.3  # open loop: kept for the Close button
        assert loop.gain == 0.0
        dash.close_button.click()
        assert loop.client("controller").query("gain") == "0.3"
        assert "closed, gain 0.30" in dash.loop_status.value
        dash.gain_slider.value = 0.45  # closed: sent at once, read back
        assert float(loop.client("controller").query("gain")) == pytest.approx(0.45)
        loop.gain = 0.2  # from a cell: the dashboard follows the controller's event
        wait_for(lambda: dash.gain_slider.value == pytest.approx(0.2), timeout=10,
                 what="the slider to follow the controller's gain event")
        dash.open_button.click()
        assert loop.gain == 0.0 and "open" in dash.loop_status.value
        dash.gain_slider.value = 0.0
        dash.close_button.click()  # a closed loop at gain 0 is refused, in the page
        assert "gain above 0" in dash.loop_status.value
    finally:
        dash.close()


def test_views_plots_and_health_follow_the_loop(loop, frontend):
    pump = Pump()
    dash = LoopDashboard(loop, pump=pump, panels=True)
    fes = {k: frontend(v) for k, v in dash.views.items()}
    try:
        wait_for(lambda: all(v.stats()["frames_shown"] >= 5 for v in dash.views.values()),
                 timeout=30, what="5 frames in every view")
        assert dash.views["slopes"].kind == "grid" and dash.views["dm_command"].kind == "grid"
        assert fes["slopes"].last["shape"][1] == 2 * 6 + 1  # x and y maps side by side
        wait_for(lambda: len(dash._trend.data["frame"]) > 5, timeout=30, what="the trend")
        wait_for(lambda: len(dash._lat.data["left"]) > 0, timeout=30, what="the histograms")
        stages = set(dash._lat.data["stage"])
        assert len(stages) == 3 and any(s.startswith("camera to command") for s in stages)
        for name in ("bench", "slopes", "controller"):
            assert name in dash.health.value
        assert dash.health.value.count("alive") == 3
        assert set(dash.panels) == {"camera", "slopes", "controller"}
        wait_for(lambda: dash.panels["controller"].state == "Running", timeout=10)
        assert pump.rate() <= pump.max_rate
        sources = len(pump.sources)
        assert sources == 1 + 4 + 3  # the dashboard, its views and its panels
    finally:
        dash.close()
    wait_for(lambda: not pump.running, timeout=10, what="the pump to stop with the dashboard")


def test_a_component_in_error_is_said_in_the_status_line(loop, frontend):
    """The status line names the component in Error and the last line of its reason, in red,
    and comes back to the loop's state once it recovered."""
    pump = Pump()
    dash = LoopDashboard(loop, pump=pump, panels=False)
    for v in dash.views.values():
        frontend(v)
    c = loop.client("controller")
    name = loop.config["components"]["controller"]["name"]
    try:
        assert "loop <b>" in dash.loop_status.value and "Error" not in dash.loop_status.value
        c.call("EXEC", "OnFailure the DM driver stopped answering\n"
                       "DMError: no reply from the DM within 5 s")
        wait_for(lambda: "in Error" in dash.loop_status.value, timeout=10,
                 what="the status line to say Error")
        status = dash.loop_status.value
        assert f"controller (<b>{name}</b>) in Error: DMError: no reply from the DM within 5 s" \
            in status
        assert "color:#b00" in status and "stopped answering" not in status  # the last line
        assert c.recover() == "Idle"
        wait_for(lambda: "loop <b>" in dash.loop_status.value, timeout=10,
                 what="the status line back to normal")
        assert "Error" not in dash.loop_status.value
    finally:
        if c.state() == "Error":
            c.recover()
        c.goto("Running")  # as the other tests of this loop expect it
        dash.close()


def test_a_stopped_loop_is_refused(tmp_path):
    ao = AOLoop(n_subap=4)
    with pytest.raises(RuntimeError, match="start it first"):
        LoopDashboard(ao)


def test_a_loop_closed_under_its_dashboard_stops_it(frontend):
    pump = Pump()
    ao = AOLoop(n_subap=4).start()
    try:
        dash = LoopDashboard(ao, pump=pump, panels=False)
        for v in dash.views.values():
            frontend(v)
        wait_for(lambda: all(v.stats()["frames_shown"] for v in dash.views.values()),
                 timeout=30, what="a frame in every view")
    finally:
        ao.close()
    wait_for(lambda: not pump.running, timeout=10, what="the pump to stop")
    assert "the loop was closed" in dash.loop_status.value
    assert pump.stats()["errors"] == 0
    dash.close()  # still fine afterwards
