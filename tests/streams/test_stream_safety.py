"""Streams that stay correct under a user: stale posts, close() while waiting, writers that die
mid-frame, absurd sizes and full filesystems, files planted in shared folders, replacing a
stream in use, and what dead processes leave behind (issue 10, section 3)."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

import dao
from dao import _shm
from dao.errors import NotAStreamError, StreamBusyError
from dao.streams.stream import (
    _claim_file,
    _owner_file,
    dead_streams,
    remove_dead,
    stream_holders,
)

CTX = mp.get_context("spawn")


def _dev_shm_files(base: str) -> list[str]:
    """Semaphores and dao's lock files of a stream base name in /dev/shm."""
    return sorted(f for f in os.listdir("/dev/shm")
                  if f.startswith((f"sem.{base}_", f"dao.{base}.")))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dao.cli", *args], capture_output=True,
                          text=True, timeout=120, env=os.environ.copy())


# -- 1. get_data(check=True) never returns a frame twice ---------------------------------------

def _hammer(path, stop):
    """Write frames as fast as possible; frame k holds the value k, its counter."""
    s = dao.shm(path)
    frame = np.empty(s.shape, s.dtype)
    k = s.get_counter()
    while not stop.is_set():
        k += 1
        frame.fill(k)
        s.set_data(frame)


def _burn(stop):
    """Keep a core busy, so the writer and the reader get descheduled at random."""
    x = 0
    while not stop.is_set():
        for _ in range(10000):
            x += 1


@pytest.mark.parametrize("spin", [False, True], ids=["semaphore", "spin"])
def test_get_data_check_never_returns_a_frame_twice_under_load(name, spin):
    w = dao.shm(name, np.zeros((16, 16), np.int64))
    stop = CTX.Event()
    procs = [CTX.Process(target=_hammer, args=(w.path, stop), daemon=True),
             CTX.Process(target=_burn, args=(stop,), daemon=True)]
    for p in procs:
        p.start()
    r = dao.shm(name)
    r.claim_semaphore()
    out = np.empty((16, 16), np.int64)
    dups = older = torn = 0
    try:
        deadline = time.monotonic() + 120
        while r.get_counter() < 100:  # the writer runs
            assert time.monotonic() < deadline, "the writer process did not start"
            time.sleep(0.01)
        prev = -1
        for _ in range(20_000):
            r.get_data(check=True, spin=spin, timeout=30, out=out)
            cnt = r.last_read.counter
            if out.min() != out.max() or int(out[0, 0]) != cnt:
                torn += 1
            if cnt == prev:
                dups += 1
            elif cnt < prev:
                older += 1
            prev = cnt
        written = r.get_counter()
    finally:
        stop.set()
        for p in procs:
            p.join(10)
    assert (dups, older, torn) == (0, 0, 0)
    assert written > 20_000  # the reads really raced the writer


def test_stale_post_is_consumed_not_returned(name):
    w = dao.shm(name, np.zeros(2, np.float32))
    r = dao.shm(name)
    r.claim_semaphore()
    w.set_data(np.full(2, 1, np.float32))
    assert r.get_data(check=True, timeout=5)[0] == 1
    # a post made while nothing new is there (the writer wrote while the reader copied)
    r.get_data()  # the reader has frame 1
    w.set_data(np.full(2, 2, np.float32))
    assert r.get_data()[0] == 2  # read without waiting: the post of frame 2 stays pending
    assert r._stream.sem_value(r.semaphore) == 1
    with pytest.raises(dao.StreamTimeout):  # the stale post is drained, no frame returned
        r.get_data(check=True, timeout=0.2)
    w.set_data(np.full(2, 3, np.float32))
    assert r.get_data(check=True, timeout=5)[0] == 3


# -- 2. close() while another thread waits ----------------------------------------------------

_CLOSE_LOOP = textwrap.dedent("""
    import random, sys, threading, time
    import numpy as np
    import dao

    path, rounds = sys.argv[1], int(sys.argv[2])
    w = dao.shm(path)
    stop = threading.Event()

    def write():  # bursts of big frames with pauses: waits wait, copies last
        frame = np.zeros(w.shape, w.dtype)
        while not stop.is_set():
            for _ in range(3):
                w.set_data(frame)
            time.sleep(random.uniform(0, 0.004))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    ops = {
        "get_data": lambda r: r.get_data(check=True, timeout=60),
        "get_data_spin": lambda r: r.get_data(check=True, spin=True, timeout=60),
        "get_data_next": lambda r: r.get_data_next(wait=True, timeout=60),
        "wait_next": lambda r: r.wait_next(timeout=60) and r.reset_tail(),
        "read_new": lambda r: r.read_new(),
        "history": lambda r: r.get_history(),
        "raw_wait": lambda r: r._s.wait_new(None, 60, 0.0, 1),
    }
    names = sorted(ops)
    counts = dict.fromkeys(names, 0)
    for i in range(rounds):
        op = names[i % len(names)]
        r = dao.shm(path)
        r.claim_semaphore(1)  # the only reader: index 1 is free
        got = []

        def loop():
            try:
                while True:
                    ops[op](r)
            except dao.StreamError as e:
                got.append(str(e))
            except BaseException as e:
                got.append("unexpected " + repr(e))

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        time.sleep(random.uniform(0, 0.006))
        r.close()
        t.join(30)
        assert not t.is_alive(), f"round {i} ({op}): the waiter never returned"
        assert got and "closed" in got[0], f"round {i} ({op}): {got}"
        counts[op] += 1
    stop.set()
    writer.join()
    print("OK", rounds, counts)
""")


def test_close_while_other_threads_wait_never_crashes(name):
    w = dao.shm(name, np.zeros((512, 512), np.float32), depth=4)  # 1 MiB frames
    w.set_data(np.zeros((512, 512), np.float32))
    res = subprocess.run([sys.executable, "-c", _CLOSE_LOOP, w.path, "200"],
                         capture_output=True, text=True, timeout=280)
    # a segfault shows here as a negative return code (-11), not as a dead pytest
    assert res.returncode == 0, f"rc {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "OK 200" in res.stdout


def test_close_wakes_a_waiter_with_a_clear_error(name):
    import threading

    w = dao.shm(name, np.zeros(4, np.float32))
    r = dao.shm(name)
    got = []

    def wait():
        try:
            r.get_data(check=True)  # timeout 0: no limit
        except dao.StreamError as e:
            got.append(e)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.1)
    r.close()
    t.join(30)
    assert not t.is_alive()
    assert len(got) == 1 and "closed" in str(got[0]) and w.path in str(got[0])
    w.set_data(np.ones(4, np.float32))  # the stream itself is untouched
    assert dao.shm(name).get_data()[0] == 1


# -- 3. a writer that died mid-frame -----------------------------------------------------------

def _die_mid_frame(path, frames):
    s = dao.shm(path)
    for _ in range(frames):
        s.set_data(np.ones(s.shape, s.dtype))
    with s.writing() as f:
        f[...] = 7
        os.kill(os.getpid(), signal.SIGKILL)


def _kill_writer_mid_frame(path, frames=0):
    p = CTX.Process(target=_die_mid_frame, args=(path, frames))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL


def test_get_data_reports_a_writer_that_died_mid_frame(name):
    w = dao.shm(name, np.zeros((8, 8), np.float32))
    w.set_data(np.zeros((8, 8), np.float32))
    _kill_writer_mid_frame(w.path)
    r = dao.shm(name)
    assert r._meta["write"][0] == 1
    t0 = time.monotonic()
    with pytest.raises(dao.StreamError, match="slot 0 .* stayed under write") as e:
        r.get_data()
    assert time.monotonic() - t0 < 30  # bounded (about stuck_timeout), never a hang
    msg = str(e.value)
    assert w.path in msg and "died" in msg and "Restart the writer" in msg
    # a restarted writer repairs the slot
    w2 = dao.shm(name, np.zeros((8, 8), np.float32))
    w2.set_data(np.full((8, 8), 3, np.float32))
    assert r.get_data()[0, 0] == 3


def test_history_and_read_new_report_a_writer_that_died_mid_frame(name):
    w = dao.shm(name, np.zeros(4, np.float32), depth=4)
    r = dao.shm(name)  # cursor before any frame
    r.stuck_timeout = 0.3
    assert r.stuck_timeout == pytest.approx(0.3)
    _kill_writer_mid_frame(w.path, frames=4)  # frames 1-4, then dies writing slot 0
    assert r.get_counter() == 4 and r._meta["write"][0] == 1
    t0 = time.monotonic()
    with pytest.raises(dao.StreamError, match="slot 0 .* writer died"):
        r.get_history()
    with pytest.raises(dao.StreamError, match="slot 0 .* writer died"):
        r.get_history(meta=True)
    with pytest.raises(dao.StreamError, match="slot 0 .* writer died"):
        r.read_new()
    assert time.monotonic() - t0 < 60  # three bounded waits, not 100 s each
    # the frames not under write are still there
    assert r.get_history(3).tolist() == [[1] * 4] * 3
    assert r.get_data()[0] == 1


def test_a_flag_set_by_hand_is_reported_too(name):
    w = dao.shm(name, np.zeros(3, np.int32))
    w.set_data(np.ones(3, np.int32))
    w._meta["write"][0] = 1  # as a writer that died between setting it and publishing
    w.stuck_timeout = 0.2
    with pytest.raises(dao.StreamError, match="stayed under write"):
        w.get_data()
    with pytest.raises(dao.StreamError, match="slot 0 .* writer died"):
        w.history_metadata()
    res = _cli("ls", "--interval", "0")
    assert res.returncode == 0 and "stuck" in res.stdout, res.stdout + res.stderr
    res = _cli("info", name)
    assert res.returncode == 0 and "writer died" in res.stdout, res.stdout + res.stderr
    with pytest.raises(ValueError):
        w.stuck_timeout = -1


def test_stuck_timeout_is_bounded(name):
    w = dao.shm(name, np.zeros(2, np.float32))
    for bad in (0, -1, 1e-4, 1e6 * 1.01, 1e9, 1e12, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="stuck_timeout must be 0.001 to 1e\\+06 seconds"):
            w.stuck_timeout = bad
    w.stuck_timeout = 1e6
    assert w.stuck_timeout == pytest.approx(1e6)
    w.stuck_timeout = 1e-3
    assert w.stuck_timeout == pytest.approx(1e-3)


def test_a_huge_stuck_time_does_not_overflow_in_the_read(name):
    import threading

    w = dao.shm(name, np.zeros(3, np.int32))
    w.set_data(np.ones(3, np.int32))
    w._meta["write"][0] = 1  # a slot left under write, every counter still
    r = dao.shm(name)
    r._stream.stuck_ns = 10**18  # 1e9 s: ten times that overflowed an int64
    got = []

    def read():
        try:
            r.get_data()
        except dao.StreamError as e:
            got.append(str(e))

    t = threading.Thread(target=read)
    t.start()
    t.join(3)  # the overflow gave up after 1 s ("rewritten faster than it can be copied")
    assert t.is_alive() and got == [], got
    r.close()  # the read still waits, as asked: close() ends it
    t.join(30)
    assert not t.is_alive() and len(got) == 1 and "closed" in got[0], got
    w._meta["write"][0] = 0


def test_a_live_writer_is_not_mistaken_for_a_dead_one(name):
    import threading

    w = dao.shm(name, np.zeros((256, 256), np.float32))  # 256 KiB: written without the GIL
    r = dao.shm(name)
    stop = threading.Event()

    def write():  # a frame every 0.2 ms or so: reads often overlap a write
        f = np.zeros((256, 256), np.float32)
        while not stop.is_set():
            w.set_data(f)
            time.sleep(0.0002)

    t = threading.Thread(target=write)
    t.start()
    try:
        for _ in range(2000):
            r.get_data()  # often overlaps a write: copied again, never reported as dead
    finally:
        stop.set()
        t.join()


# -- 4. absurd sizes, full filesystems, bad timeouts -------------------------------------------

@contextlib.contextmanager
def _tmpfs(size: str):
    """A tmpfs of ``size`` ("0": no limit) in a new folder (needs root; skipped otherwise)."""
    folder = tempfile.mkdtemp(prefix="daofs", dir="/tmp")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder],
                         capture_output=True, text=True)
    if res.returncode:
        os.rmdir(folder)
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield folder
    finally:
        for p in dao.list_streams(folder):
            with contextlib.suppress(OSError, dao.StreamError):
                dao.remove(p)
        subprocess.run(["umount", "-l", folder], check=False)
        os.rmdir(folder)


@pytest.fixture
def small_tmpfs():
    """A 1 MiB tmpfs (needs root; skipped otherwise)."""
    with _tmpfs("1m") as folder:
        yield folder


@pytest.fixture
def unlimited_tmpfs():
    """A tmpfs with no size limit: statvfs reports 0 blocks, as some FUSE filesystems do."""
    with _tmpfs("0") as folder:
        yield folder


def test_a_filesystem_that_reports_no_size_still_takes_streams(unlimited_tmpfs, name):
    assert os.statvfs(unlimited_tmpfs).f_blocks == 0
    s = dao.shm(os.path.join(unlimited_tmpfs, name + ".im.shm"), np.zeros((4, 4), np.float32),
                depth=4)
    for k in range(5):
        s.set_data(np.full((4, 4), k, np.float32))
    assert s.get_counter() == 5 and s.get_history().shape == (4, 4, 4)
    s.delete()
    assert os.listdir(unlimited_tmpfs) == []


def test_full_filesystem_fails_at_creation_with_enospc(small_tmpfs, name):
    path = os.path.join(small_tmpfs, name + ".im.shm")
    with pytest.raises(OSError) as e:
        dao.shm(path, np.zeros((4, 4), np.float32), depth=10**6)
    assert e.value.errno == errno.ENOSPC
    assert "No space left" in str(e.value) and "smaller depth" in str(e.value)
    assert os.listdir(small_tmpfs) == []  # no temporary file left
    assert _dev_shm_files(name) == []
    # a stream that fits takes its room at once: every slot can be written (no SIGBUS later)
    s = dao.shm(path, np.zeros((64, 64), np.float32), depth=40)  # 40 x 20 KiB
    with pytest.raises(OSError) as e2:
        dao.shm(os.path.join(small_tmpfs, name + "b.im.shm"), np.zeros((64, 64), np.float32),
                depth=40)
    assert e2.value.errno == errno.ENOSPC
    for k in range(40):
        s.set_data(np.full((64, 64), k, np.float32))
    assert s.get_history().shape == (40, 64, 64)
    assert sorted(os.listdir(small_tmpfs)) == [name + ".im.shm"]
    s.delete()


def test_sizes_beyond_32_bits_are_not_truncated(small_tmpfs, name):
    # 65536 x 65537 bytes: 2**32 + 65536, which a 32-bit size would cut to 64 KiB (it fits)
    path = os.path.join(small_tmpfs, name + ".im.shm")
    with pytest.raises(OSError) as e:
        _shm.create(path, (65536, 65537), 1)
    assert e.value.errno == errno.ENOSPC and str(2**32 + 65536 + 4304) in str(e.value)
    assert os.listdir(small_tmpfs) == []


def test_absurd_sizes_are_refused_clearly(name, stream_dir):
    path = os.path.join(stream_dir, name + ".im.shm")
    with pytest.raises(OSError) as e:  # 9 TB of headers: refused before anything is written
        dao.shm(name, np.zeros((2, 2), np.uint8), depth=2**31)
    assert e.value.errno == errno.ENOSPC
    for depth in (2**32, 2**32 + 1, 2**40):  # would wrap to a small uint32
        with pytest.raises(ValueError, match="depth"):
            dao.shm(name, np.zeros((2, 2), np.uint8), depth=depth)
        with pytest.raises(ValueError, match="depth"):
            _shm.create(path, (2, 2), 1, depth=depth)
    with pytest.raises(ValueError, match="nbkw"):
        dao.shm(name, np.zeros((2, 2), np.uint8), nbkw=70000)
    with pytest.raises(ValueError, match="nbkw"):
        _shm.create(path, (2, 2), 1, nbkw=2**32 + 3)
    with pytest.raises(ValueError, match="4294967295"):  # a size field is a uint32
        _shm.create(path, (2**32, 1), 1)
    with pytest.raises(ValueError, match="2\\*\\*64 elements"):
        _shm.create(path, (2**31, 2**31, 2**31), 1)
    with pytest.raises(ValueError, match="2\\*\\*63 bytes"):
        _shm.create(path, (2**31, 2**31, 2), 12)
    huge = np.broadcast_to(np.float64(0), (2**20, 2**20, 2**10))  # 8 PB, no memory used
    with pytest.raises(OSError) as e:
        dao.shm(name, huge)
    assert e.value.errno == errno.ENOSPC
    assert os.listdir(stream_dir) == []  # no temporary file left
    assert _dev_shm_files(name) == []


@pytest.mark.parametrize("bad", [-1, -0.001, float("nan"), float("-inf")])
def test_negative_or_nan_timeouts_are_refused(name, bad):
    w = dao.shm(name, np.zeros(2, np.float32))
    r = dao.shm(name)
    with pytest.raises(ValueError, match="timeout"):
        r.get_data(check=True, timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        r.get_data(check=True, spin=True, timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        r.get_data_next(wait=True, timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        r.wait_next(timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        r._stream.wait_new(None, bad)
    with pytest.raises(ValueError, match="timeout"):
        list(r.iter_frames(timeout=bad))
    w.close()


def test_zero_timeout_waits_forever_in_get_data(name):
    import threading

    w = dao.shm(name, np.zeros(2, np.float32))
    r = dao.shm(name)
    r.claim_semaphore()
    threading.Timer(0.3, lambda: w.set_data(np.ones(2, np.float32))).start()
    assert r.get_data(check=True, timeout=0)[0] == 1  # Durham: 0 = no limit
    r.reset_tail()
    assert r.wait_next(timeout=0) is False  # elsewhere 0 means: do not wait
    assert r.get_data_next(wait=True, timeout=0) == (dao.shm.DAO_TIMEOUT, None)


# -- 5. files in shared folders ----------------------------------------------------------------

def test_owner_and_claim_files_are_private(name):
    s = dao.shm(name, np.zeros(2, np.float32))
    r = dao.shm(name)
    k = r.claim_semaphore()
    for f in (_owner_file(name), _claim_file(name, k)):
        st = os.lstat(f)
        assert st.st_mode & 0o777 == 0o600 and st.st_uid == os.getuid()
    s.set_labels(("x",))
    assert os.stat(s.path + ".xr.json").st_mode & 0o777 == 0o600


def test_planted_symlinks_are_never_followed(name, stream_dir):
    victim = os.path.join(stream_dir, "victim.txt")
    with open(victim, "w") as f:
        f.write("precious")
    # an owner file planted before the stream exists
    os.symlink(victim, _owner_file(name))
    try:
        with pytest.raises(dao.StreamError, match="symbolic link"):
            dao.shm(name, np.zeros(2, np.float32))
        assert not os.path.exists(os.path.join(stream_dir, name + ".im.shm"))
    finally:
        os.unlink(_owner_file(name))
    s = dao.shm(name, np.zeros(2, np.float32))
    # a claim file
    os.symlink(victim, _claim_file(name, 4))
    with pytest.raises(dao.StreamError, match="symbolic link"):
        dao.shm(name).claim_semaphore(4)
    os.unlink(_claim_file(name, 4))
    # the labels file and its temporary file
    os.symlink(victim, s.path + ".xr.json")
    s.set_labels(("x",))
    assert not os.path.islink(s.path + ".xr.json")
    with open(victim) as f:
        assert f.read() == "precious"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make another user's file")
def test_other_users_files_and_semaphores_are_not_trusted(name):
    s = dao.shm(name, np.zeros(2, np.float32))
    r = dao.shm(name)
    fd = os.open(_claim_file(name, 2), os.O_CREAT | os.O_WRONLY, 0o666)
    os.close(fd)
    os.chown(_claim_file(name, 2), 65534, 65534)
    try:
        with pytest.raises(dao.StreamError, match="uid 65534"):
            r.claim_semaphore(2)
        assert 2 not in r.semaphore_claims()  # an untrusted claim file is ignored
    finally:
        os.unlink(_claim_file(name, 2))  # dao leaves other users' files alone
    r.close()
    s.close()
    os.chown(_owner_file(name), 65534, 65534)
    with pytest.raises(dao.StreamError, match="uid 65534"):
        dao.shm(name, np.zeros(3, np.float32))  # the owner file is another user's
    os.chown(_owner_file(name), 0, 0)
    # a semaphore another user made under the stream's names
    sem = f"/dev/shm/sem.{name}_sem03"
    os.chown(sem, 65534, 65534)
    try:
        with pytest.raises(dao.StreamError, match=f"sem.{name}_sem03 belongs to uid 65534"):
            dao.shm(name, np.zeros(3, np.float32))
        with pytest.raises(dao.StreamError, match="belongs to uid 65534"):
            dao.shm(name)
    finally:
        os.chown(sem, 0, 0)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make another user's file")
def test_a_group_stream_of_another_user_is_reused_as_a_writer(name):
    s = dao.shm(name, np.zeros(3, np.float32), group=True)
    path = s.path
    s.close()
    # as if user 65534 of the group had made it: the file, semaphores and owner file are its
    theirs = [path, _owner_file(name)] + [os.path.join("/dev/shm", f)
                                          for f in _dev_shm_files(name) if f.startswith("sem.")]
    for f in theirs:
        os.chown(f, 65534, 0)
    try:
        w = dao.shm(name, np.ones(3, np.float32))  # reused, not refused for the owner file
        assert w.counter == 1 and w.shape == (3,)
        w.close()
    finally:
        for f in theirs:
            with contextlib.suppress(OSError):
                os.chown(f, 0, 0)


def test_remove_deletes_streams_only(name, stream_dir):
    text = os.path.join(stream_dir, name + ".im.shm")
    with open(text, "w") as f:
        f.write("not a stream, but named like one\n" * 200)
    with pytest.raises(NotAStreamError, match="not a DAO stream"):
        dao.remove(text)
    assert os.path.exists(text)
    os.unlink(text)
    other = os.path.join(stream_dir, "notes.txt")
    with open(other, "w") as f:
        f.write("x")
    with pytest.raises(NotAStreamError, match="does not end with .im.shm"):
        dao.remove(other)
    s = dao.shm(name + "real", np.zeros(2, np.float32))
    link = os.path.join(stream_dir, name + "link.im.shm")
    os.symlink(s.path, link)
    with pytest.raises(NotAStreamError, match="symbolic link"):
        dao.remove(link)
    assert os.path.exists(s.path) and os.path.islink(link)
    os.mkdir(os.path.join(stream_dir, "d.im.shm"))
    with pytest.raises(NotAStreamError, match="not a regular file"):
        dao.remove(os.path.join(stream_dir, "d.im.shm"))
    res = _cli("rm", link)
    assert res.returncode == 1 and "symbolic link" in res.stderr and "Traceback" not in res.stderr
    # a truncated stream is still a stream
    path = s.path
    s.close()
    with open(path, "r+b") as f:
        f.truncate(5000)
    dao.remove(path)
    assert not os.path.exists(path) and _dev_shm_files(name + "real") == []


# -- 6. replacing a stream that live processes use ---------------------------------------------

def _hold(path, data, claim, ready, go):
    if data is not None:
        s = dao.shm(path, data)
    else:
        s = dao.shm(path)
    if claim:
        s.claim_semaphore()
    ready.set()
    go.wait(120)
    s.close()


def _start_holder(path, data=None, claim=False):
    ready, go = CTX.Event(), CTX.Event()
    p = CTX.Process(target=_hold, args=(path, data, claim, ready, go), daemon=True)
    p.start()
    assert ready.wait(120), "the holder process did not start"
    return p, go


def test_replacing_a_stream_a_live_writer_uses_is_refused(name):
    path = dao.stream_path(name)
    p, go = _start_holder(path, np.zeros(4, np.float32))
    try:
        with pytest.raises(StreamBusyError, match=f"pid {p.pid} \\(writer\\)") as e:
            dao.shm(name, np.zeros((2, 2), np.int16))
        assert "replace=True" in str(e.value)
        assert dao.shm(path).shape == (4,)  # untouched
        w = dao.shm(name, np.zeros(4, np.float32))  # same geometry: reused, allowed
        assert w.counter == 1
        assert stream_holders(path).writers == tuple(sorted((p.pid, os.getpid())))
        s = dao.shm(name, np.zeros((2, 2), np.int16), replace=True)
        assert s.shape == (2, 2)
    finally:
        go.set()
        p.join(30)


def test_replacing_a_stream_a_live_reader_uses_is_refused(name):
    w = dao.shm(name, np.zeros(4, np.float32))
    path = w.path
    w.close()
    p, go = _start_holder(path, claim=True)
    try:
        with pytest.raises(StreamBusyError, match=f"pid {p.pid} \\(reader on semaphore"):
            dao.shm(name, np.zeros(5, np.float32))
    finally:
        go.set()
        p.join(30)
    assert dao.shm(name, np.zeros(5, np.float32)).shape == (5,)  # it left: allowed


_DROP_LOOP = textwrap.dedent("""
    import os, sys
    import numpy as np
    import dao

    path = sys.argv[1]

    def fds():
        return len(os.listdir("/proc/self/fd"))

    def cycle():
        w = dao.shm(path, np.zeros(4, np.float32))  # a writer: the owner file's lock
        r = dao.shm(path)
        r.claim_semaphore()  # a reader: a claim file's lock
        del w, r  # dropped without close(), as a notebook re-running a cell does

    cycle()  # imports and first-use caches: not counted
    before = fds()
    for _ in range(50):
        cycle()
    print(before, fds(), flush=True)
    sys.stdin.readline()  # alive while the test replaces the stream
""")


def test_a_dropped_stream_releases_its_descriptors_and_locks(name):
    path = dao.stream_path(name)
    p = subprocess.Popen([sys.executable, "-c", _DROP_LOOP, path], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        if not line:
            p.wait(60)
            pytest.fail(f"the child failed: {p.stderr.read()}")
        before, after = map(int, line.split())
        assert after == before  # no descriptor left per dropped stream
        h = stream_holders(path)
        assert h.writers == () and h.readers == {}
        s = dao.shm(name, np.zeros((2, 3), np.int16))  # another shape: not "busy"
        assert s.shape == (2, 3)
    finally:
        p.stdin.close()
        p.wait(60)


def test_dead_holders_and_this_process_do_not_block(name):
    s1 = dao.shm(name, np.zeros(4, np.float32))
    s2 = dao.shm(name, np.zeros(6, np.float32))  # this process: allowed (a notebook cell)
    assert s2.shape == (6,) and s1.closed is False
    path = s2.path
    s1.close()
    s2.close()
    _kill_writer_mid_frame_after_create(path)  # a writer (and reader) that died
    h = stream_holders(path)
    assert h.dead_owner and h.writers == () and h.readers == {}
    s3 = dao.shm(name, np.zeros(7, np.float32))
    assert s3.shape == (7,)


# -- 7. what a killed process leaves behind ----------------------------------------------------

def _loop_then_wait(paths, ready):
    # made and last written an hour ago: rm --dead keeps a stream written in the last 10 s
    # (a DAO C-library process may write it), see test_rm_dead_keeps_...
    streams = [dao.shm(p, np.zeros((8, 8), np.float32), depth=4) for p in paths]
    for s in streams:
        s._meta["creation_time"] -= 3600
        s.set_data(np.ones((8, 8), np.float32), atime_ns=time.time_ns() - 3600 * 10**9)
    readers = [dao.shm(p) for p in paths]
    for r in readers:
        r.claim_semaphore()
    ready.set()
    time.sleep(600)


def test_ls_shows_and_rm_dead_removes_what_a_killed_loop_left(name, stream_dir):
    paths = [dao.stream_path(name + s) for s in ("wfs", "dm")]
    ready = CTX.Event()
    p = CTX.Process(target=_loop_then_wait, args=(paths, ready), daemon=True)
    p.start()
    assert ready.wait(120), "the loop process did not start"
    alive = dao.shm(name + "live", np.zeros(2, np.float32))  # ours: stays
    res = _cli("ls", "--interval", "0")
    assert f"pid {p.pid}" in res.stdout, res.stdout
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    for path in paths:
        h = stream_holders(path)
        assert h.dead_owner and h.owner == p.pid and h.writers == () and h.readers == {}
    res = _cli("ls", "--interval", "0")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines()[1:]}
    assert f"dead owner pid {p.pid}" in rows[name + "wfs"]
    assert f"pid {os.getpid()}" in rows[name + "live"]
    assert _dev_shm_files(name + "wfs")  # semaphores, owner and claim files are there
    help_text = _cli("rm", "--help").stdout
    assert "--dead" in help_text
    res = _cli("rm", "--dead")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count(f"(dead owner pid {p.pid})") == 2
    for path in paths:
        assert not os.path.exists(path)
    assert _dev_shm_files(name + "wfs") == [] and _dev_shm_files(name + "dm") == []
    assert os.path.exists(alive.path) and _dev_shm_files(name + "live")
    assert "no dead streams" in _cli("rm", "--dead").stdout


def _loop_in_folders_then_wait(name, folders, ready):
    """As an AOLoop: labelled streams, one read on a claimed semaphore, in private folders;
    the last frames an hour old (the loop stalled long before it was killed)."""
    hour_ago = time.time_ns() - 3600 * 10**9
    streams = []
    for folder, roles in folders:
        for role in roles:
            s = dao.shm(os.path.join(folder, name + role + ".im.shm"),
                        np.zeros((8, 8), np.float32), depth=4)
            s._meta["creation_time"] -= 3600
            s.set_data(np.ones((8, 8), np.float32), atime_ns=hour_ago)
            streams.append(s)
    streams[0].set_labels(("y", "x"))
    r = dao.shm(streams[0].path)
    r.claim_semaphore()
    ready.set()
    time.sleep(600)


def test_ls_and_rm_dead_find_a_killed_loops_private_folder(name, stream_dir):
    loop = tempfile.mkdtemp(prefix="daoloop", dir=stream_dir)  # as AOLoop makes in /tmp
    np.savez(os.path.join(loop, "calibration.npz"), gain=np.zeros(3))
    other = tempfile.mkdtemp(prefix="daoloop", dir=stream_dir)
    with open(os.path.join(other, "notes.txt"), "w") as f:
        f.write("a file dao did not make")
    ready = CTX.Event()
    p = CTX.Process(target=_loop_in_folders_then_wait, daemon=True,
                    args=(name, [(loop, ("wfs", "dm")), (other, ("psf",))], ready))
    p.start()
    assert ready.wait(120), "the loop process did not start"
    paths = dao.list_streams(loop) + dao.list_streams(other)
    assert len(paths) == 3 and sum(os.path.exists(p + ".xr.json") for p in paths) == 1
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    # not in the listed folder: dao ls says where to look
    res = _cli("ls", "--interval", "0")
    assert res.returncode == 0 and "dao ls --dead" in res.stdout, res.stdout + res.stderr
    assert "--dead" in _cli("ls", "--help").stdout
    res = _cli("ls", "--dead", "--interval", "0")
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith(tuple(paths))]
    assert len(rows) == 3 and all(f"dead owner pid {p.pid}" in row for row in rows), res.stdout
    assert sorted(d.path for d in dead_streams(outside=True) if d.owner == p.pid) == sorted(paths)
    res = _cli("rm", "--dead")
    assert res.returncode == 0, res.stderr
    for path in paths:
        assert f"removed {path} (dead owner pid {p.pid})" in res.stdout, res.stdout
        assert not os.path.exists(path) and not os.path.exists(path + ".xr.json")
    for role in ("wfs", "dm", "psf"):
        assert _dev_shm_files(name + role) == []  # semaphores, owner and claim files
    assert not os.path.exists(loop)  # the loop's folder went, with its calibration
    assert f"removed {loop}/" in res.stdout
    assert os.listdir(other) == ["notes.txt"]  # a file dao did not make: the folder stays


def _create_and_exit(path):
    s = dao.shm(path, np.zeros(2, np.float32))
    s._meta["creation_time"] -= 3600  # made an hour ago; exits normally, without a frame


def test_rm_dead_keeps_a_dead_owners_stream_written_lately(name, capsys):
    from dao.cli import main

    path = dao.stream_path(name)
    p = CTX.Process(target=_create_and_exit, args=(path,))
    p.start()
    p.join(120)
    assert p.exitcode == 0
    assert stream_holders(path).dead_owner  # a normal exit counts as dead too
    [d] = [d for d in dead_streams() if d.path == path]
    assert d.idle_s > 3000
    raw = _shm.open(path)  # a DAO C-library writer: dao does not see it as a holder
    raw.write(np.ones(2, np.float32))
    raw.close()
    assert path not in [what for what, _ in remove_dead()]
    assert os.path.exists(path)
    assert main(["rm", "--dead"]) == 0
    out = capsys.readouterr().out
    assert f"kept {path}" in out and "--force" in out, out
    assert os.path.exists(path)
    help_text = _cli("rm", "--help").stdout
    assert "--force" in help_text and "normal exit" in help_text
    assert main(["rm", "--dead", "--force"]) == 0
    assert f"removed {path}" in capsys.readouterr().out
    assert not os.path.exists(path) and _dev_shm_files(name) == []


def test_rm_dead_removes_semaphores_of_a_deleted_stream(name):
    path = dao.stream_path(name)
    _kill_writer_mid_frame_after_create(path)
    os.unlink(path)  # the stream file went, its semaphores stayed
    assert _dev_shm_files(name)
    removed = remove_dead()
    assert f"<semaphores of {name}>" in [what for what, _ in removed]
    assert _dev_shm_files(name) == []


def _create_then_die(path):
    s = dao.shm(path, np.zeros(2, np.float32))
    s.claim_semaphore()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_writer_mid_frame_after_create(path):
    p = CTX.Process(target=_create_then_die, args=(path,))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL


def test_rm_dead_removes_old_temporary_files_of_killed_creations(name, stream_dir):
    old = os.path.join(stream_dir, name + ".im.shm.Ab12Cd")
    new = os.path.join(stream_dir, name + "b.im.shm.Ef34Gh")
    for p in (old, new):
        with open(p, "wb") as f:
            f.write(b"\0" * 100)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    removed = remove_dead()
    assert (old, None) in removed and not os.path.exists(old)
    assert os.path.exists(new)  # maybe a creation in progress
