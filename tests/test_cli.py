"""The dao command, run as a separate process like a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

import dao


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dao.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())


def test_ls_lists_streams_with_rate(name, stream_dir):
    s = dao.shm(name, np.zeros((4, 6), np.uint16), depth=3)
    with open(os.path.join(stream_dir, "broken.im.shm"), "wb") as f:
        f.write(b"not a stream")
    res = run("ls", "--interval", "0")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SHAPE", "DTYPE", "DEPTH", "COUNTER", "AGE", "RATE",
                                "SPAN", "OWNER"]
    row = next(line for line in lines if line.startswith(name)).split()
    assert row[1:5] == ["4x6", "uint16", "3", "0"]  # no frame written yet
    assert row[-2:] == ["pid", str(os.getpid())]  # this process writes it
    assert any("broken.im.shm: unreadable" in line for line in lines)
    s.close()


def test_info_shows_metadata_and_keywords(name):
    s = dao.shm(name, np.zeros(5, np.float64))
    s.keywords.set("gain", 0.5, "integrator gain")
    s.set_data(np.ones(5), cnt2=12)
    res = run("info", name)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert s.path in out and "(5,)" in out and "float64" in out
    assert "cnt0              1" in out and "cnt2              12" in out
    assert "gain" in out and "integrator gain" in out


def test_info_shows_fifo_history(name):
    s = dao.shm(name, np.zeros(2, np.float32), depth=4)
    for _ in range(5):
        s.set_data(np.zeros(2, np.float32))
        time.sleep(0.01)
    out = run("info", name).stdout
    # five frames in slots 0 1 2 3 0 (creating writes none)
    assert "newest slot       0 of 4" in out and "history           4 frames spanning" in out


def test_rm_and_missing(name):
    s = dao.shm(name, np.zeros(2, np.int32))
    path = s.path
    s.close()
    res = run("rm", name)
    assert res.returncode == 0 and not os.path.exists(path)
    res = run("rm", name)
    assert res.returncode == 1 and "no stream" in res.stderr
    res = run("info", name)
    assert res.returncode == 1 and "no stream" in res.stderr and "Traceback" not in res.stderr


def test_watch_reports_rate(name):
    s = dao.shm(name, np.zeros(2, np.float32))
    p = subprocess.Popen([sys.executable, "-m", "dao.cli", "watch", name, "--interval", "0.3",
                          "--count", "2"], stdout=subprocess.PIPE, text=True)
    t_end = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < t_end:
        s.set_data(np.zeros(2, np.float32))
        time.sleep(0.002)
    out = p.communicate(timeout=10)[0].splitlines()
    assert len(out) == 2 and all("counter" in line and "Hz" in line for line in out)
    rate = float(out[-1].split("rate ")[1].split()[0])
    assert rate > 0  # frames were written while it watched (how fast: not on a loaded CI)


def test_demo_runs_and_reports(tmp_path):
    res = run("demo", "--frames", "300", "--rate", "1000")
    assert res.returncode == 0, res.stderr
    assert "semaphore" in res.stdout and "spin" in res.stdout and "p99" in res.stdout
    assert " 0 torn" in res.stdout


def test_ls_dead_lists_only_dead_streams_and_rm_force_needs_dead(name):
    s = dao.shm(name, np.zeros(2, np.int32))  # live: this process writes it
    res = run("ls", "--dead", "--interval", "0")
    assert res.returncode == 0, res.stderr
    assert name not in res.stdout
    res = run("ls", "--interval", "0")
    assert res.returncode == 0 and name in res.stdout
    res = run("rm", "--force", name)
    assert res.returncode == 1 and "--force goes with --dead" in res.stderr
    assert os.path.exists(s.path)  # nothing removed
