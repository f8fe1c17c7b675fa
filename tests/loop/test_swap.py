"""Control laws prototyped live in a running loop: swapped in (run by this process, or shipped
to the controller process) and back between two frames, compared on the same atmosphere;
per-mode gains; the loop stopped and restarted without recalibrating; a component in Error
reported at once. Real component processes on the simulated bench (10x10)."""

from __future__ import annotations

import json
import time
import warnings

import numba
import numpy as np
import pytest

from dao.loop import AOLoop, CalibrationMismatch, ControlLaw
from dao.testing import temporary_stream_dir, wait_for

GAIN = 0.4


class Leaky(ControlLaw):
    """A leaky integrator written as a notebook cell would write it."""

    def __init__(self, calibration, gain=0.4, leak=1.0):
        super().__init__(calibration)
        self.cm, self.gain, self.leak = calibration.control_matrix, gain, leak
        self.steps = 0

    def step(self, slopes, command):
        command *= self.leak
        command -= self.gain * (self.cm @ slopes)
        self.steps += 1


class FailsAt(ControlLaw):
    """Raises at its ``n``-th frame."""

    def __init__(self, calibration, n=20):
        super().__init__(calibration)
        self.cm, self.n, self.k = calibration.control_matrix, n, 0

    def step(self, slopes, command):
        self.k += 1
        if self.k >= self.n:
            raise FloatingPointError(f"diverged at step {self.k}")
        command -= 0.3 * (self.cm @ slopes)


@pytest.fixture(scope="module")
def ao():
    with temporary_stream_dir():  # (module scope: before the test's own folder)
        loop = AOLoop({"controller": {"gain": GAIN}, "run": {"start": "closed"}},
                      n_subap=10, history=16384)
        loop.start()
        try:
            yield loop
        finally:
            loop.close()


def _commands_once_each(ao) -> np.ndarray:
    """The frame numbers of the DM commands in the history: each frame once, none missing."""
    frames = ao.streams["dm_command"].history_metadata().cnt2
    assert frames.size > 100
    gaps = np.flatnonzero(np.diff(frames) != 1)
    assert gaps.size == 0, f"frames missing or repeated at {frames[gaps]} -> {frames[gaps + 1]}"
    return frames


def test_the_loop_starts_closed_at_the_configured_gain(ao):
    assert ao.gain == pytest.approx(GAIN)
    assert ao.controller["law"] == "modal" and ao.controller["where"] == "process"


def test_a_law_run_by_this_process_swaps_in_and_back_without_a_gap(ao):
    ao.wait(50)
    h = ao.swap(Leaky, gain=GAIN)
    assert ao.controller == {"law": "Leaky", "where": "kernel", "since": h}
    ao.wait(100)
    assert isinstance(ao.law, Leaky) and ao.law.steps >= 100
    assert ao.client("controller").query("active_law").startswith("none (released")
    ao.law.gain = 0.3  # changed live, read every frame
    ao.wait(20)
    back = ao.swap(None)
    assert back > h and ao.law is None and ao.controller["where"] == "process"
    ao.wait(50)
    frames = _commands_once_each(ao)
    assert frames[0] < h < back < frames[-1]
    assert ao.expose(1)["late"] == 0


def test_a_law_shipped_to_the_controller_process(ao):
    h = ao.swap(Leaky, where="process", gain=GAIN)
    assert ao.controller["where"] == "process" and ao.controller["law"] == "Leaky"
    ao.wait(60)
    assert ao.client("controller").query("active_law") == "Leaky"
    log = ao.client("controller").other("log")
    assert f"[{h}, \"Leaky\"]" in log
    # from a kernel law straight to a shipped one, and back to the stock law
    ao.swap(Leaky, gain=GAIN)
    ao.wait(30)
    ao.swap(Leaky, where="process", gain=0.35)
    ao.wait(30)
    ao.swap(None)
    ao.wait(30)
    assert ao.client("controller").query("active_law") == "modal"
    _commands_once_each(ao)
    with pytest.raises(TypeError, match="JSON"):
        ao.swap(Leaky, where="process", gain=np.float32(0.3).reshape(1))
    with pytest.raises(TypeError, match="cannot be shipped"):
        ao.swap(Leaky(ao.calibration), where="process")


@numba.njit(nogil=True, cache=False)
def leaky_numba(slopes, command, cm, gain):
    """A law as a Numba function, as a notebook cell would write it."""
    for i in range(command.size):
        acc = np.float32(0.0)
        for j in range(slopes.size):
            acc += cm[i, j] * slopes[j]
        command[i] -= gain * acc


class NumbaLeaky(ControlLaw):
    """A class whose step calls a Numba function defined beside it (shipped with it)."""

    def __init__(self, calibration, gain=0.4):
        super().__init__(calibration)
        self.cm = np.ascontiguousarray(calibration.control_matrix, np.float32)
        self.gain = np.float32(gain)

    def step(self, slopes, command):
        leaky_numba(slopes, command, self.cm, self.gain)


def test_numba_laws_in_this_process_and_shipped(ao):
    cm = np.ascontiguousarray(ao.calibration.control_matrix, np.float32)
    h = ao.swap(leaky_numba, cm, np.float32(GAIN))  # a function: func(slopes, command, *args)
    assert ao.controller["law"] == "leaky_numba"
    ao.wait(100)
    q = ao.expose(300)
    assert q["strehl"] > 0.3 and q["late"] == 0
    ao.swap(NumbaLeaky, where="process", ship=(leaky_numba,), gain=GAIN)
    ao.wait(50)
    assert ao.client("controller").query("active_law") == "NumbaLeaky"
    assert ao.expose(300)["strehl"] > 0.3
    ao.swap(None)
    ao.wait(30)
    frames = _commands_once_each(ao)
    assert frames[0] < h


@pytest.mark.parametrize("law", ["integrator", "pid", "pol", "modal"])
def test_each_stock_law_selected_live(ao, law):
    ctl = ao.client("controller")
    ctl.setup("law", law)
    wait_for(lambda: ctl.query("active_law") == law, timeout=5, what=f"the {law} law")
    ao.wait(150)
    assert ao.expose(300)["strehl"] > 0.3
    _commands_once_each(ao)


def test_compare_two_laws_on_the_same_atmosphere(ao):
    """The new law's closed-loop Strehl is within 10% of the stock one at the same gain; the
    same law twice sees the same turbulence (to the noise level)."""
    ds = ao.compare({"stock": None, "mine": Leaky, "stock again": None}, frames=600,
                    settle=150)
    print(ds)
    assert list(ds.law.values) == ["stock", "mine", "stock again"]
    s = ds.strehl.values
    assert s[0] > 0.3 and abs(s[1] - s[0]) <= 0.1 * s[0]
    assert abs(s[2] - s[0]) < 0.005  # long exposures of the same frames after the rewind
    sf = ds.strehl_frame
    assert sf.dims == ("law", "exposure") and sf.shape[1] == 600 // 4
    assert ds.frame.values[0] >= 150 and ds.frame.values[-1] < 750
    assert np.corrcoef(sf.values[0], sf.values[2])[0, 1] > 0.9  # exposure by exposure
    assert np.all(ds.latency_p50_s.values > 0) and np.all(ds.late.values == 0)
    assert ds.residual_rms.attrs["units"] == "rad"
    assert ao.law is None and ao.controller["law"] == "modal"
    _commands_once_each(ao)


def test_per_mode_gains_set_live(ao):
    """A mode with gain 0 stays open-loop in the telemetry; the others are corrected.

    Each case runs on the same atmosphere (rewound), so the open modes' residuals are
    compared frame by frame with those of the open loop."""
    cal = ao.calibration
    ctl = ao.client("controller")
    s2m = cal.slopes_to_modes.astype(np.float64)

    def modal_residuals(settle=100, frames=500):
        r = ao.rewind()
        ao.wait(settle + frames + 5)
        h = ao.streams["slopes"].get_history(settle + frames + 200, meta=True)
        keep = (h.cnt2 >= r + settle) & (h.cnt2 < r + settle + frames)
        assert keep.sum() == frames
        return h.data[keep].reshape(frames, -1) @ s2m.T  # (frames, n_modes)

    closed = modal_residuals()
    gains = np.ones(cal.n_modes)
    gains[:3] = 0.0
    ctl.setup("modal_gains", gains.tolist())
    assert np.array_equal(np.array(json.loads(ctl.query("modal_gains"))), gains)
    some_open = modal_residuals()
    ao.open_loop()  # gain 0, mirror flat
    open_loop = modal_residuals()
    ctl.setup("modal_gains", 1.0)  # one number: every mode
    assert np.all(np.array(json.loads(ctl.query("modal_gains"))) == 1.0)
    ao.close_loop(GAIN)
    ao.wait(100)
    rms = {k: v.std(axis=0) for k, v in
           (("closed", closed), ("some_open", some_open), ("open", open_loop))}
    for m in range(3):
        # the open modes follow the open-loop turbulence frame by frame (up to the aliasing
        # of the corrected modes), far above their closed-loop residual
        corr = np.corrcoef(some_open[:, m], open_loop[:, m])[0, 1]
        assert corr > 0.9, (m, corr)
        assert 0.7 < rms["some_open"][m] / rms["open"][m] < 1.4
        assert rms["some_open"][m] > 3 * rms["closed"][m]
    # the other modes stay corrected
    assert np.median(rms["some_open"][10:] / rms["open"][10:]) < 0.6
    with pytest.raises(Exception, match="values for"):
        ctl.setup("modal_gains", [1.0, 2.0])


def test_a_kernel_law_that_raises_hands_the_loop_back(ao):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ao.swap(FailsAt, n=30)
        wait_for(lambda: ao.law is None or ao.controller["where"] == "process", timeout=10,
                 what="the stock law to take over")
        ao.wait(50)
    assert "FloatingPointError" in ao.law_error and "diverged" in ao.law_error
    assert any("took over" in str(w.message) for w in caught)
    assert ao.client("controller").query("active_law") == "modal"
    ao.swap(None)  # tidy: the stock law in place, the kernel's thread ended
    _commands_once_each(ao)


def test_a_shipped_law_that_raises_is_replaced_at_the_same_frame(ao):
    ctl = ao.client("controller")
    ao.swap(FailsAt, where="process", n=30)
    wait_for(lambda: ctl.query("active_law") == "modal", timeout=10,
             what="the stock law back in the controller")
    assert "diverged at step 30" in ctl.query("law_error")
    ao.wait(30)
    _commands_once_each(ao)


def test_a_component_in_error_is_reported_at_once(ao):
    ctl = ao.client("controller")
    ctl.call("EXEC", "OnFailure the DM driver lost power")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="lost power"):
        ao.wait(100_000)
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(RuntimeError, match="lost power"):
        ao.expose(10)
    ctl.call("EXEC", "Recover")
    ctl.run()
    ctl.setup("gain", GAIN)
    ao.wait(50)


def test_stop_restart_and_calibration_file(ao, tmp_path):
    n_before = ao.frame
    cal_before = ao.calibration
    ao.stop()
    t0 = time.monotonic()
    ao.start()
    restart_s = time.monotonic() - t0
    assert ao.running and ao.frame > n_before and ao.calibration is cal_before
    assert restart_s < cal_before["seconds"] + 30
    ao.gain = GAIN
    ao.wait(100)
    fr = ao.streams["frames"]
    frames = fr.get_history(min(200, fr.frames_available))[:, 0, 0]
    assert np.all(np.diff(frames) == 1)  # the frame numbers go on across the restart
    path = ao.save_calibration(tmp_path / "cal.npz")
    with AOLoop({"controller": {"law": "integrator", "leak": 0.995}}, n_subap=10,
                calibration=path) as other:
        np.testing.assert_array_equal(other.calibration.control_matrix,
                                      cal_before.control_matrix)
        # the configuration's law and leak are the controller's
        assert other.client("controller").query("active_law") == "integrator"
        assert float(other.client("controller").query("leak")) == 0.995
        assert other.calibration["seconds"] == cal_before["seconds"]  # loaded, not measured
        other.close_loop()
        other.wait(200)
        assert other.expose(200)["strehl"] > 0.3
    with pytest.raises(CalibrationMismatch, match="bench.n_subap = 8"):
        AOLoop(n_subap=8, calibration=path).start()
