"""Devices connected to streams through the adapters."""

from __future__ import annotations

import numpy as np
import pytest

import dao
from dao.hw import (
    Camera,
    CameraStreamWriter,
    DeformableMirror,
    DMStreamReader,
    SimulatedBench,
)


@pytest.fixture
def bench():
    return SimulatedBench(diameter=2.0, n_subap=6, r0=0.15, wind=10.0, seed=5)


def test_bench_devices_implement_the_interfaces(bench):
    assert isinstance(bench.camera, Camera)
    assert isinstance(bench.dm, DeformableMirror)
    assert isinstance(bench.wfs, Camera) and isinstance(bench.science_camera, Camera)
    assert bench.camera.shape == (48, 48) and bench.camera.dtype == np.float32
    assert bench.camera.frame_rate == 1000.0
    with pytest.raises(TypeError):
        Camera()  # abstract


def test_camera_writes_frames_with_their_number(bench, name):
    writer = CameraStreamWriter(bench.camera, name)
    reader = dao.shm(name)
    for k in range(1, 4):
        frame = writer.step()
        got = reader.get_data()
        np.testing.assert_array_equal(got, frame)
        assert reader.get_frame_id() == k == bench.frame_number
    writer.run(5)
    assert reader.get_frame_id() == 8


def test_mirror_reads_its_command_stream(bench, name):
    commands = dao.shm(name, np.zeros((bench.n_actuators, 1), np.float32))
    dm_reader = DMStreamReader(bench.dm, name)
    cmd = np.linspace(-1e-7, 1e-7, bench.n_actuators, dtype=np.float32)
    commands.set_data(cmd.reshape(-1, 1), cnt2=42)
    dm_reader.wait_and_apply(timeout=1.0)
    assert dm_reader.last_frame_id == 42
    np.testing.assert_array_equal(bench.dm.pending, cmd)
    bench.camera.grab()  # the pending command goes on the mirror with the next frame
    np.testing.assert_array_equal(bench.mirror.command, cmd)
    with pytest.raises(dao.errors.StreamTimeout):
        dm_reader.wait_and_apply(timeout=0.05)


def test_dm_reader_rejects_a_wrong_stream(bench, name):
    dao.shm(name, np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError):
        DMStreamReader(bench.dm, name)


def test_loop_through_streams_closes(bench, name):
    """Camera -> stream -> centroider + reconstructor -> stream -> mirror, in one process."""
    from dao import recon

    sh = bench.centroider()
    im = recon.measure_interaction_matrix(bench.calibration_slopes(sh), bench.n_actuators,
                                          20e-9, pattern="identity", progress=False)
    cm = recon.control_matrix_svd(im, rcond=0.02)
    loop = recon.Integrator(bench.n_actuators, gain=0.5)
    writer = CameraStreamWriter(bench.camera, name + "_wfs")
    dm_stream = dao.shm(name + "_dm", np.zeros((bench.n_actuators, 1), np.float32))
    dm_reader = DMStreamReader(bench.dm, dm_stream)
    wfs_stream = dao.shm(name + "_wfs")
    variances = []
    for i in range(150):
        writer.step()
        img = wfs_stream.get_data()
        cmd = loop.step(cm.matrix @ sh.measure(img))
        dm_stream.set_data(cmd.reshape(-1, 1), cnt2=wfs_stream.get_frame_id())
        dm_reader.apply_latest()
        if i < 10 or i >= 100:
            variances.append(bench.science().residual_rms ** 2)
    open_var, closed_var = np.mean(variances[:10]), np.mean(variances[10:])
    assert closed_var < 0.3 * open_var
    assert dm_reader.last_frame_id == bench.frame_number
