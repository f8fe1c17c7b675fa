"""The dao.shm API: create, open, write, read, wait, keywords, claims, errors."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import dao
from dao import _shm

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64,
          np.float32, np.float64, np.complex64, np.complex128]


def test_create_open_roundtrip(name):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    with dao.shm(name, data) as w, dao.shm(name) as r:
        assert r.shape == (3, 4) and r.dtype == np.float32 and r.depth == 1
        assert r.path == os.path.join(os.environ["DAO_SHM_DIR"], name + ".im.shm")
        np.testing.assert_array_equal(r.get_data(), data)  # the initial content
        assert r.get_counter() == r.counter == 0  # ... is not a frame, as in the C library
        assert r.frames_available == 0
        w.set_data(data * 2, cnt2=41)
        np.testing.assert_array_equal(r.get_data(), data * 2)
        assert r.get_counter() == 1 and r.get_frame_id() == 41
        assert abs(r.get_timestamp() - time.time()) < 60  # seconds since the epoch
        assert r.last_read.counter == 1 and r.last_read.frame_id == 41


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)])
def test_every_dtype_and_rank(name, dtype, shape):
    data = (np.arange(np.prod(shape)) % 100).astype(dtype).reshape(shape)
    if np.iscomplexobj(data):
        data = data + 1j * data
    s = dao.shm(name, data, depth=2)
    r = dao.shm(name)
    np.testing.assert_array_equal(r.get_data(), data)
    assert r.dtype == np.dtype(dtype) and r.shape == shape
    s.delete()


def test_get_data_into_preallocated_out(name):
    s = dao.shm(name, np.ones((8, 8), np.float64))
    out = np.empty((8, 8), np.float64)
    assert s.get_data(out=out) is out
    assert out.sum() == 64
    with pytest.raises(dao.StreamMismatchError):
        s.get_data(out=np.empty((8, 8), np.float32))


def test_bare_name_and_path_forms(name, stream_dir):
    s = dao.shm(name, np.zeros(3, np.int32))
    assert dao.shm(name + ".im.shm").path == s.path
    assert dao.shm(s.path).path == s.path
    assert s.path in dao.list_streams()
    assert dao.list_streams(stream_dir) == dao.list_streams()


def test_recreate_with_same_geometry_keeps_readers(name):
    w = dao.shm(name, np.zeros((2, 2), np.float32))
    r = dao.shm(name)
    w2 = dao.shm(name, np.full((2, 2), 3, np.float32))  # a notebook re-running its cell
    assert r.get_data().sum() == 12  # the old reader still sees the stream
    assert w2.counter == 1  # reusing writes the data as a frame
    w.close()


def test_recreate_with_other_geometry_replaces(name):
    dao.shm(name, np.zeros((2, 2), np.float32))
    s = dao.shm(name, np.zeros((4,), np.int16))
    assert dao.shm(name).shape == (4,) and s.counter == 0  # a new stream, no frame yet


def test_wait_semaphore_and_timeout(name):
    w = dao.shm(name, np.zeros(4, np.float32))
    r = dao.shm(name)
    k = r.claim_semaphore()
    t0 = time.monotonic()
    with pytest.raises(dao.StreamTimeout, match="no new frame"):
        r.get_data(check=True, timeout=0.1)
    assert 0.09 < time.monotonic() - t0 < 60  # the timeout was honoured; no hang
    w.set_data(np.ones(4, np.float32))
    assert r.get_data(check=True, timeout=1).sum() == 4
    with pytest.raises(TimeoutError):  # a builtin TimeoutError too
        r.get_data(check=True, semNb=k, timeout=0.05)


def test_spin_wait_times_out_and_sees_new_frames(name):
    dao.shm(name, np.zeros(4, np.float32))
    r = dao.shm(name)
    t0 = time.monotonic()
    with pytest.raises(dao.StreamTimeout, match="spinning"):
        r.get_data(check=True, spin=True, timeout=0.05)
    assert 0.045 < time.monotonic() - t0 < 60  # the timeout was honoured; no hang


def test_semaphores_are_binary_flags(name):
    w = dao.shm(name, np.zeros(1, np.float32))
    st = w._stream
    st.drain(0)
    for _ in range(5):
        w.set_data(np.ones(1, np.float32))
    assert all(st.sem_value(i) == 1 for i in range(10))


def test_view_is_zero_copy_and_read_only(name):
    w = dao.shm(name, np.zeros((4, 4), np.float32))
    v = dao.shm(name).view
    w.set_data(np.full((4, 4), 5, np.float32))
    assert v[0, 0] == 5
    with pytest.raises(ValueError):
        v[0, 0] = 1


def test_view_outlives_close_without_crash(name):
    s = dao.shm(name, np.full(4, 2, np.float32))
    v = s.view
    s.close()
    assert v.sum() == 8  # the mapping lives while a view exists
    with pytest.raises(dao.StreamError, match="closed"):
        s.get_data()


def test_writing_in_place_and_abort(name):
    s = dao.shm(name, np.zeros(3, np.float32), depth=3)
    with s.writing(cnt2=9) as f:
        f[:] = [1, 2, 3]
    assert s.get_data().tolist() == [1, 2, 3] and s.counter == 1 and s.get_frame_id() == 9
    with pytest.raises(RuntimeError), s.writing() as f:
        f[:] = 99
        raise RuntimeError("camera read failed")
    assert s.counter == 1 and s.get_data().tolist() == [1, 2, 3]
    assert all(m == 0 for m in s._meta["write"])


def test_partial_writes_and_finalize(name):
    s = dao.shm(name, np.zeros(8, np.uint16))
    r = dao.shm(name)
    s.set_data_part(np.arange(4, dtype=np.uint16), 0, 0, 2, 17)
    assert s._meta["write"][0] == 1  # a reader would wait for the whole frame
    s.set_data_part(np.arange(4, 8, dtype=np.uint16), 4, 1, 2, 17)
    s.finalize(cnt2=17)
    assert r.get_data().tolist() == list(range(8)) and r.counter == 1
    m = r.get_meta_data()
    assert (m["lastPos"], m["lastNb"], m["packetNb"], m["packetTotal"]) == (4, 4, 1, 2)
    assert m["lastNbArray"][:2].tolist() == [17, 17] and m["cnt2"] == 17
    with pytest.raises(ValueError, match="overruns"):
        s.set_data_part(np.zeros(4, np.uint16), 6, 0, 1, 1)
    with pytest.raises(ValueError, match="packet id"):
        s.set_data_part(np.zeros(1, np.uint16), 0, 600, 1, 1)
    s.finalize()


def test_combine_sums_newest_frames(name):
    a = dao.shm(name + "a", np.full((2, 3), 1.5, np.float32), depth=2)
    b = dao.shm(name + "b", np.full((2, 3), 2.0, np.float32))
    a.set_data(np.full((2, 3), 4.0, np.float32))
    out = dao.shm(name + "c", np.zeros((2, 3), np.float32))
    dao.combine([a, b], out)
    np.testing.assert_array_equal(out.get_data(), np.full((2, 3), 6.0, np.float32))
    assert out.counter == 1
    i8 = dao.shm(name + "d", np.full(2, 100, np.int8))
    j8 = dao.shm(name + "e", np.full(2, 100, np.int8))
    k8 = dao.shm(name + "f", np.zeros(2, np.int8))
    k8.combine([i8, j8])
    assert k8.get_data().tolist() == [-56, -56]  # wraps like C
    with pytest.raises(dao.StreamMismatchError):
        out.combine([i8])
    with pytest.raises(ValueError, match="distinct"):
        out.combine([out])


def test_keywords(name):
    s = dao.shm(name, np.zeros(2, np.float32), nbkw=3)
    r = dao.shm(name)
    s.keywords["gain"] = 0.4
    s.keywords.set("nsub", 20, "subapertures across")
    s.keywords["mode"] = "closed"
    assert dict(r.keywords) == {"gain": 0.4, "nsub": 20, "mode": "closed"}
    assert r.keywords.comment("nsub") == "subapertures across"
    with pytest.raises(dao.StreamError, match="nbkw"):
        s.keywords["extra"] = 1
    del s.keywords["mode"]
    s.keywords["extra"] = 1
    assert "mode" not in r.keywords and r.keywords["extra"] == 1
    with pytest.raises(ValueError, match="15"):
        s.keywords["a_name_that_is_too_long"] = 1
    with pytest.raises(ValueError, match="15 bytes"):
        s.keywords["s"] = "x" * 20
    with pytest.raises(TypeError):
        s.keywords["obj"] = [1, 2]


def test_claims_are_exclusive_and_released(name):
    s = dao.shm(name, np.zeros(2, np.float32))
    readers = [dao.shm(name) for _ in range(10)]
    got = [r.claim_semaphore() for r in readers]
    assert sorted(got) == list(range(10)) and got[-1] == 0  # index 0 goes last
    with pytest.raises(dao.StreamError, match="all 10"):
        s.claim_semaphore()
    assert s.semaphore_claims() == {i: os.getpid() for i in range(10)}
    readers[3].close()
    assert s.claim_semaphore() == got[3]


def test_delete_removes_file_and_semaphores(name):
    s = dao.shm(name, np.zeros(2, np.float32))
    s.claim_semaphore()
    path = s.path
    assert os.path.exists(f"/dev/shm/sem.{name}_sem00")
    s.delete()
    assert not os.path.exists(path)
    assert not os.path.exists(f"/dev/shm/sem.{name}_sem00")
    assert not os.path.exists(f"/dev/shm/sem.{name}_semlog")
    assert not [f for f in os.listdir("/dev/shm") if name in f]
    with pytest.raises(dao.StreamNotFoundError):
        dao.remove(path)


def test_meta_data_fields(name):
    s = dao.shm(name, np.zeros((3, 4), np.int16), depth=4)
    s.set_data(np.zeros((3, 4), np.int16))
    s.set_data(np.ones((3, 4), np.int16), cnt2=5)
    m = s.get_meta_data()
    assert m["name"] == s.path and m["naxis"] == 2 and m["size"] == (3, 4, 0)
    assert m["atype"] == 4 and m["cnt0"] == 2 and m["cnt2"] == 5 and m["slot"] == 1
    assert m["fifo_size"] == 4 and m["fifo_last_written"] == 1 and m["sem"] == 0  # slot 1
    assert s.get_meta_data(0)["sem"] == 10 and s.get_meta_data(0)["cnt0"] == 1


# -- bad input -------------------------------------------------------------------------------

def test_path_of_80_bytes_is_refused(stream_dir):
    long = "x" * (79 - len(stream_dir) - 1 - len(".im.shm") + 1)
    with pytest.raises(ValueError, match="80-byte"):
        dao.shm(long, np.zeros(2))
    with pytest.raises(ValueError, match="80-byte"):
        dao.shm("/tmp/" + "y" * 80 + ".im.shm")


@pytest.mark.parametrize("dtype", [np.bool_, np.float16, object, ">f4", "U4", "M8[s]"])
def test_unsupported_dtypes_are_refused(name, dtype):
    with pytest.raises(TypeError, match="unsupported dtype"):
        dao.shm(name, np.zeros(3, dtype=dtype))


def test_bad_shapes_are_refused(name):
    with pytest.raises(ValueError, match="1 to 3 axes"):
        dao.shm(name, np.zeros((2, 2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="1 to 3 axes"):
        dao.shm(name, np.float32(3))
    with pytest.raises(ValueError, match="empty"):
        dao.shm(name, np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match="depth"):
        dao.shm(name, np.zeros(3, np.float32), depth=0)


def test_write_with_wrong_shape_or_dtype(name):
    s = dao.shm(name, np.zeros((4, 4), np.float32))
    with pytest.raises(dao.StreamMismatchError, match="shape"):
        s.set_data(np.zeros((4, 5), np.float32))
    with pytest.raises(dao.StreamMismatchError, match="float64"):
        s.set_data(np.zeros((4, 4), np.float64))
    s.set_data(np.zeros((8, 8), np.float32)[::2, ::2])  # non-contiguous is fine
    assert s.counter == 1


def test_open_missing(name):
    with pytest.raises(dao.StreamNotFoundError, match="no stream"):
        dao.shm(name)
    with pytest.raises(FileNotFoundError):
        dao.shm(name)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty, truncated or foreign"),
        (b"hello, I am a text file\n" * 10, "empty, truncated or foreign"),
        (b"\0" * 5000, "naxis"),
    ],
)
def test_open_foreign_files(name, stream_dir, content, match):
    path = os.path.join(stream_dir, name + ".im.shm")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(dao.StreamFormatError, match=match):
        dao.shm(name)


def test_open_truncated_and_inconsistent(name):
    s = dao.shm(name, np.zeros((16, 16), np.float32), depth=2)
    path = s.path
    s.close()
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)
    with pytest.raises(dao.StreamFormatError, match="size does not match"):
        dao.shm(name)
    s = dao.shm(name, np.zeros((16, 16), np.float32), depth=2)  # replaces the broken file
    s.close()
    with open(path, "r+b") as f:
        f.seek(4296)
        f.write(np.uint32(7).tobytes())  # fifo_size now lies
    with pytest.raises(dao.StreamFormatError, match="depth 7"):
        dao.shm(name)
    with open(path, "r+b") as f:
        f.seek(96)
        f.write(np.uint64(3).tobytes())  # nelement inconsistent with the shape
    with pytest.raises(dao.StreamFormatError, match="element count"):
        dao.shm(name)


def test_semaphore_name_conflicts(name, tmp_path_factory):
    s = dao.shm(name, np.zeros(2, np.float32))
    other_dir = tmp_path_factory.mktemp("o", numbered=True)
    other = os.path.join("/tmp", os.path.basename(other_dir))
    os.makedirs(other, exist_ok=True)
    try:
        with pytest.raises(dao.SemaphoreConflictError, match="same base name"):
            dao.shm(os.path.join(other, name + ".im.shm"), np.zeros(2, np.float32))
        with pytest.raises(dao.SemaphoreConflictError):
            dao.shm(name + ".raw", np.zeros(2, np.float32))  # same folder, same base
    finally:
        os.rmdir(other)
    s.delete()


def test_permission_denied(name, stream_dir):
    s = dao.shm(name, np.zeros(2, np.float32))
    os.chmod(stream_dir, 0o755)
    if os.geteuid() != 0:
        os.chmod(s.path, 0)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop root (root ignores file modes), then try to open
        msg = b"opened"
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            dao.shm(s.path)
        except PermissionError as e:
            msg = f"denied {e}".encode()
        except BaseException as e:
            msg = repr(e).encode()
        os.write(wfd, msg)
        os._exit(0)
    os.close(wfd)
    os.waitpid(pid, 0)
    out = os.read(rfd, 4096).decode()
    os.close(rfd)
    assert out.startswith("denied") and "Permission denied" in out and s.path in out, out


def test_operations_on_closed_stream(name):
    s = dao.shm(name, np.zeros(2, np.float32))
    s.close()
    s.close()  # idempotent
    for op in (s.get_data, s.get_counter, lambda: s.set_data(np.zeros(2, np.float32))):
        with pytest.raises(dao.StreamError, match="closed"):
            op()
    assert "closed" in repr(s)


def test_deleted_while_waiting_is_reported(name):
    import threading

    s = dao.shm(name, np.zeros(2, np.float32))
    r = dao.shm(name)
    r.claim_semaphore()  # drains the post of the first write
    threading.Timer(0.15, lambda: dao.remove(s.path)).start()
    with pytest.raises(dao.StreamError, match="deleted, re-created"):
        r.get_data(check=True, timeout=5)


def test_waits_release_the_gil(name):
    import threading

    dao.shm(name, np.zeros(2, np.float32))
    r = dao.shm(name)
    r.claim_semaphore()
    count = 0
    stop = threading.Event()

    def busy():
        nonlocal count
        while not stop.is_set():
            count += 1

    t = threading.Thread(target=busy)
    t.start()
    with pytest.raises(dao.StreamTimeout):
        r.get_data(check=True, timeout=0.3)
    before = count
    time.sleep(0.05)
    stop.set()
    t.join()
    assert before > 10000  # the other thread ran while we waited


def test_constants():
    assert (dao.shm.DAO_SUCCESS, dao.shm.DAO_ERROR, dao.shm.DAO_TIMEOUT,
            dao.shm.DAO_OVERWRITE, dao.shm.DAO_NOTREADY) == (0, 1, -1, -2, -3)
    assert _shm.META_SIZE == 4304 and _shm.KW_SIZE == 120


def test_combine_takes_names_or_streams(name):
    a = dao.shm(name + "a", np.full((2, 2), 1.0, np.float32))
    b = dao.shm(name + "b", np.full((2, 2), 2.0, np.float32))
    out = dao.shm(name + "o", np.zeros((2, 2), np.float32))
    dao.combine([name + "a", b], name + "o")
    np.testing.assert_array_equal(out.get_data(), np.full((2, 2), 3.0, np.float32))
    with pytest.raises(TypeError, match="dao.combine"):
        out.combine([name + "a"])
    for s in (a, b, out):
        s.delete()
