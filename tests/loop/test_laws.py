"""Control laws, the law host's frame-exact handover, and the calibration file."""

from __future__ import annotations

import os
import stat
import textwrap

import numpy as np
import pytest

from dao.loop import (
    STOCK_LAWS,
    Calibration,
    CalibrationMismatch,
    ControlLaw,
    LawHost,
    load_loop_config,
    modal_basis,
    stock_law,
)
from dao.loop.laws import as_law, law_source
from dao.streams import shm
from dao.testing import unique_name


def _calibration(n_slopes: int = 24, n_act: int = 10, seed: int = 0) -> Calibration:
    rng = np.random.default_rng(seed)
    im = rng.normal(size=(n_slopes, n_act)).astype(np.float32)
    n_modes = n_act - 1
    pos = np.stack(np.meshgrid(np.arange(2), np.arange(5), indexing="ij"), -1).reshape(-1, 2)
    modes, s2m, _ = modal_basis(im, n_modes, "kl", positions=pos[:n_act] * 0.5)
    u, s, vt = np.linalg.svd(im.astype(np.float64), full_matrices=False)
    cm = (vt[:n_modes].T / s[:n_modes]) @ u[:, :n_modes].T
    return Calibration({
        "n_slopes": n_slopes, "n_actuators": n_act, "n_modes": n_modes, "stroke": 1.0,
        "interaction_matrix": im, "control_matrix": cm.astype(np.float32),
        "modes": modes.astype(np.float32), "slopes_to_modes": s2m.astype(np.float32),
        "reference_slopes": np.zeros(n_slopes, np.float32), "basis": "kl",
        "slopes_shape": (2, n_slopes // 2),
        "config": {"bench": {"n_subap": 10}, "controller": {"basis": "kl"}},
    })


@pytest.mark.parametrize("basis", ["kl", "svd"])
def test_modal_basis_spans_the_control_matrix(basis):
    cal = _calibration()
    modes, s2m, var = modal_basis(cal.interaction_matrix, cal.n_modes, basis,
                                  positions=np.stack(np.meshgrid(np.arange(2), np.arange(5),
                                                                 indexing="ij"),
                                                     -1).reshape(-1, 2) * 0.5)
    np.testing.assert_allclose(modes.T @ modes, np.eye(cal.n_modes), atol=1e-10)
    np.testing.assert_allclose(modes @ s2m, cal.control_matrix, atol=1e-5)
    assert np.all(np.diff(var) <= 1e-12)  # ordered by variance (kl) or singular value (svd)


def test_modal_basis_refuses_what_it_cannot_make():
    im = np.eye(6, 4)
    with pytest.raises(ValueError, match="n_modes"):
        modal_basis(im, 5)
    with pytest.raises(ValueError, match="kl or svd"):
        modal_basis(im, 3, "zernike")
    with pytest.raises(ValueError, match="positions"):
        modal_basis(im, 3, "kl")


def test_modal_integrator_with_equal_gains_is_the_zonal_integrator():
    cal = _calibration()
    modal = stock_law("modal", cal, gain=0.3, leak=0.99, modal_gains=1.0)
    zonal = stock_law("integrator", cal, gain=0.3, leak=0.99)
    rng = np.random.default_rng(1)
    a, b = np.zeros(cal.n_actuators, np.float32), np.zeros(cal.n_actuators, np.float32)
    for _ in range(20):
        s = rng.normal(size=cal.n_slopes).astype(np.float32)
        modal.step(s, a)
        zonal.step(s, b)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_a_mode_with_gain_zero_gets_no_command():
    cal = _calibration()
    gains = np.ones(cal.n_modes)
    gains[0] = 0.0
    law = stock_law("modal", cal, gain=0.5, modal_gains=gains)
    cmd = np.zeros(cal.n_actuators, np.float32)
    s = (0.01 * cal.interaction_matrix @ cal.modes[:, :3].sum(axis=1)).astype(np.float32)
    for _ in range(5):
        law.step(s, cmd)
    coef = cal.modes.T @ cmd
    assert abs(coef[0]) < 1e-5 < abs(coef[1])
    with pytest.raises(ValueError, match=f"{cal.n_modes} values"):
        law.set(modal_gains=[1.0, 2.0])
    with pytest.raises(ValueError, match="common to every mode"):
        law.set(leak=[0.9, 0.99])


@pytest.mark.parametrize("name", sorted(STOCK_LAWS))
def test_every_stock_law_starts_bumpless(name):
    """start(command) then a step with zero slopes keeps the command (no leak): bumpless."""
    cal = _calibration()
    law = stock_law(name, cal, gain=0.4, leak=1.0, modal_gains=1.0, kp=0.1, kd=0.05)
    cmd = (cal.modes @ np.linspace(-0.1, 0.1, cal.n_modes)).astype(np.float32)
    law.start(cmd.copy())
    out = cmd.copy()
    law.step(np.zeros(cal.n_slopes, np.float32), out)
    np.testing.assert_allclose(out, cmd, atol=1e-5)


def test_as_law_takes_classes_instances_and_functions():
    cal = _calibration()

    class Gain(ControlLaw):
        def __init__(self, calibration, gain=0.2):
            super().__init__(calibration)
            self.gain = gain

        def step(self, slopes, command):
            command -= self.gain * (self.calibration.control_matrix @ slopes)

    assert as_law(Gain, cal, gain=0.3).gain == 0.3
    law = Gain(cal)
    assert as_law(law, cal) is law

    def f(slopes, command, k):
        command[:] = k

    fl = as_law(f, cal, 2.0)
    out = np.zeros(cal.n_actuators, np.float32)
    fl.step(np.zeros(cal.n_slopes, np.float32), out)
    assert np.all(out == 2.0) and fl.describe() == "f"
    with pytest.raises(TypeError, match="ControlLaw subclass"):
        as_law(dict, cal)
    with pytest.raises(TypeError, match="not a control law"):
        as_law(3, cal)
    with pytest.raises(TypeError, match="this loop's calibration"):
        as_law(Gain(_calibration(n_slopes=12, n_act=10)), cal)


def test_law_source_of_a_class_defined_in_an_ipython_cell():
    """A class in a notebook cell has no file: its source is found from its methods."""
    import linecache

    cell = textwrap.dedent('''
        import numpy as np

        class CellLaw(ControlLaw):
            """Defined in a cell."""
            def step(self, slopes, command):
                command *= 0.5
        ''')
    fname = "<ipython-input-7-abc>"
    linecache.cache[fname] = (len(cell), None, cell.splitlines(True), fname)
    ns = {"ControlLaw": ControlLaw, "__name__": "__main__"}
    exec(compile(cell, fname, "exec"), ns)  # noqa: S102 - a cell, as IPython runs it
    src = law_source(ns["CellLaw"])
    assert src.startswith("class CellLaw(ControlLaw):") and "command *= 0.5" in src
    assert "import numpy" not in src
    with pytest.raises(OSError, match="no source"):
        law_source(type("Made", (ControlLaw,), {}))


def test_calibration_save_load_and_check(tmp_path):
    cal = _calibration()
    p = cal.save(tmp_path / "cal.npz")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    back = Calibration.load(p)
    for k in ("interaction_matrix", "control_matrix", "modes", "slopes_to_modes",
              "reference_slopes"):
        np.testing.assert_array_equal(back[k], cal[k])
    assert back["slopes_shape"] == (2, 12)
    assert back.n_modes == cal.n_modes
    cfg = load_loop_config(None, bench={"n_subap": 10})
    cfg["controller"]["basis"] = "kl"
    with pytest.raises(CalibrationMismatch, match="bench.diameter"):
        back.check(cfg)  # the test calibration holds only n_subap and basis
    with pytest.raises(CalibrationMismatch, match="bench.n_subap = 12"):
        Calibration.load(p, load_loop_config(None, bench={"n_subap": 12}))


def test_calibration_load_refuses_foreign_and_truncated_files(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CalibrationMismatch, match="not a dao calibration"):
        Calibration.load(tmp_path / "other.npz")
    p = _calibration().save(tmp_path / "cal.npz")
    data = open(p, "rb").read()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CalibrationMismatch, match="truncated"):
        Calibration.load(tmp_path / "cut.npz")
    with pytest.raises(FileNotFoundError):
        Calibration.load(tmp_path / "none.npz")


@pytest.fixture
def law_streams():
    names = unique_name("lawslopes"), unique_name("lawcmd")
    slopes = shm(names[0], np.zeros((2, 12), np.float32), depth=256)
    cmd = shm(names[1], np.zeros((10, 1), np.float32), depth=256)
    yield slopes, cmd
    for s in (slopes, cmd):
        s.delete()


class _Count(ControlLaw):
    """Adds 1 to every actuator each frame: the command counts the frames it ran."""

    def step(self, slopes, command):
        command += 1.0


def test_handover_between_two_hosts_writes_every_frame_once(law_streams):
    slopes, cmd = law_streams
    cal = _calibration()
    a = LawHost(_Count(cal), shm(cmd.path), shm(slopes.path))
    b = LawHost(_Count(cal), shm(cmd.path), shm(slopes.path), active=False)
    flat = np.zeros(24, np.float32)
    for f in range(1, 6):
        slopes.set_data(np.zeros((2, 12), np.float32), cnt2=f)
        assert a.process(flat, f) and not b.process(flat, f)
    h = a.release(0)
    assert h == 6
    # frame 6 arrives and b sees it before it acquires: the acquire processes it at once
    slopes.set_data(np.zeros((2, 12), np.float32), cnt2=6)
    assert not a.process(flat, 6) and not b.process(flat, 6)
    assert b.acquire(h) == 1
    for f in range(7, 9):
        slopes.set_data(np.zeros((2, 12), np.float32), cnt2=f)
        assert not a.process(flat, f) and b.process(flat, f)
    meta = cmd.history_metadata()
    assert list(meta.cnt2) == list(range(1, 9))
    assert cmd.get_data()[0, 0] == 8.0  # b started from a's command of frame 5: bumpless
    with pytest.raises(RuntimeError, match="not in charge"):
        a.release(0)


def test_a_failing_law_falls_back_to_the_stock_law_at_the_same_frame(law_streams):
    slopes, cmd = law_streams
    cal = _calibration()

    class Broken(ControlLaw):
        def step(self, slopes, command):
            command[:] = 99.0
            raise ZeroDivisionError("oops")

    host = LawHost(_Count(cal), shm(cmd.path), shm(slopes.path), fallback=_Count(cal))
    flat = np.zeros(24, np.float32)
    host.process(flat, 1)
    host.swap(Broken(cal))
    assert host.process(flat, 2)
    frame, name, exc = host.failure
    assert (frame, name, type(exc)) == (2, "Broken", ZeroDivisionError)
    assert cmd.get_data()[0, 0] == 2.0  # the half-written 99 was dropped
    # a law whose start raises is not swapped in: the law in place goes on
    class NoStart(_Count):
        def start(self, command):
            raise RuntimeError("no start")

    host.swap(NoStart(cal))
    assert host.process(flat, 3)
    assert host.failure[:2] == (3, "NoStart") and host.law is host.fallback
    assert cmd.get_data()[0, 0] == 3.0
    host_plain = LawHost(Broken(cal), shm(cmd.path), shm(slopes.path))
    with pytest.raises(ZeroDivisionError):
        host_plain.process(flat, 4)


def test_shipped_law_files_are_checked(tmp_path):
    from dao.loop.components import _load_law_class
    from dao.runtime.component import ComponentError

    folder = tmp_path / "laws"
    folder.mkdir(mode=0o700)
    f = folder / "law_1.py"
    f.write_text("from dao.loop.laws import ControlLaw\nclass L(ControlLaw):\n    pass\n")
    f.chmod(0o600)
    assert _load_law_class(str(f), "L", str(folder)).__name__ == "L"
    with pytest.raises(ComponentError, match="no class 'M'"):
        _load_law_class(str(f), "M", str(folder))
    other = tmp_path / "evil.py"
    other.write_text("raise SystemExit\n")
    with pytest.raises(ComponentError, match="only from the loop's own folder"):
        _load_law_class(str(other), "L", str(folder))
    f.chmod(0o666)
    with pytest.raises(ComponentError, match="writable by others"):
        _load_law_class(str(f), "L", str(folder))
