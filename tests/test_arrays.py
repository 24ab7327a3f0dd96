"""Arrays born in shared memory (cw.empty, cw.zeros), and big arguments sent once per map.

Real segments on real worker processes: what tasks read and write, that nothing is
copied, that nothing is left behind, and the rule that lets one map skip comparing an
array it already copied (``reuse.sending_pass``) — with the cases where it must not.
"""

from __future__ import annotations

import gc
import os
import time

import pytest

import corework as cw
from corework.transport import packing
from corework.transport import reuse as _reuse
from corework.transport import segments as _segments
from tests.helpers import skip_on_dask, skip_on_interpreter

np = pytest.importorskip("numpy")

BIG = packing.OUT_OF_BAND_BYTES  # bytes: buffers at least this big go out of band


def total(a, i=0):
    return float(a.sum()) + i


def first(a, i=0):
    return float(a.flat[0])


def write_at(a, i):
    a[i] = i + 1


def try_write(a):
    a[(0,) * a.ndim] = 1
    return "written"


def describe(a):
    return a.dtype.str, a.shape, a.flags.f_contiguous, a.tobytes()


def memfds(pids):
    """Inodes of every corework memory file the processes hold, open or mapped."""
    found = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                path = f"/proc/{pid}/fd/{fd}"
                if "memfd:corework" in os.readlink(path):
                    found.add(os.stat(path).st_ino)
            with open(f"/proc/{pid}/maps") as maps:
                found.update(int(line.split()[4]) for line in maps if "memfd:corework" in line)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def inode_of(array):
    """The memory file an array lies in (via its address in this process's maps)."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= address < end:
                assert "memfd:corework-share" in line, line
                return int(line.split()[4])
    raise AssertionError("not mapped")


# ------------------------------------------------------------------------ cw.empty / zeros


def test_an_array_born_in_shared_memory_reaches_tasks_without_a_copy():
    a = cw.empty((BIG // 8, 4))
    a[:] = np.arange(a.size, dtype=float).reshape(a.shape)
    packed = packing.pack([a] * 3, by_value=True)
    try:  # sent as a reference to the share: no segment of the message's own, tiny pickle
        assert [share_id for share_id, _, _ in packed.layout.segments] == packed.share_ids
        assert len(packed.share_ids) == 1 and len(packed.data) < 1000
    finally:
        packed.close()
    expected = float(np.arange(a.size, dtype=float).sum())
    with cw.Pool(2, engine="process") as pool:
        assert list(pool.map(total, [a] * 4, range(4))) == [expected + i for i in range(4)]
        assert list(pool.map(total, [a[BIG // 16:]] * 2)) == [float(a[BIG // 16:].sum())] * 2
        inode = inode_of(a)
        assert all(inode in memfds([pid]) for pid in pool._pids())  # mapped where it is
    a[0, 0] = 7.0  # usable, and writable here, after the pool is gone
    assert a.sum() == expected + 7.0


def test_tasks_on_any_engine_read_an_array_born_in_shared_memory(engine):
    skip_on_interpreter(engine, "numpy does not load in sub-interpreters")
    a = cw.empty(BIG, dtype="int64")
    a[:] = np.arange(BIG)
    with cw.Pool(2, engine=engine) as pool:
        assert list(pool.map(total, [a] * 3, range(3))) == [float(a.sum()) + i for i in range(3)]


def test_tasks_write_into_a_writable_array(engine):
    skip_on_interpreter(engine, "numpy does not load in sub-interpreters")
    skip_on_dask(engine, "workers elsewhere would write into copies (a writable share is "
                 "refused there)")
    out = cw.zeros(8, dtype="int64", writable=True)
    with cw.Pool(2, engine=engine) as pool:
        list(pool.map(write_at, [out] * 8, range(8)))
        assert out.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
        out[:] = 0
        list(pool.map(write_at, [out] * 3, range(3)))  # the same array, written again
    assert out.tolist() == [1, 2, 3, 0, 0, 0, 0, 0]


def test_tasks_read_the_callers_writes_and_cannot_write_unless_asked():
    a = cw.empty(BIG)  # bytes' worth of float64: over the out-of-band size
    with cw.Pool(1, engine="process") as pool:
        for value in (1.0, 2.0):
            a[:] = value  # a reference, not a snapshot: each map reads what is there now
            assert pool.submit(first, a).result() == value
        with pytest.raises(ValueError, match="read-only"):
            pool.submit(try_write, a).result()
    assert (a == 2.0).all()


def test_the_array_is_an_ordinary_ndarray_of_any_shape_and_order():
    assert cw.zeros(5).tolist() == [0.0] * 5 and cw.zeros(5).dtype == np.float64
    f = cw.empty((300, 200), dtype="int32", order="F")
    f[:] = np.arange(60_000, dtype="int32").reshape(300, 200)
    assert f.flags.f_contiguous and f.flags.writeable
    with cw.Pool(1, engine="process") as pool:
        assert pool.submit(describe, f).result() == describe(f)
    record = cw.zeros(3, dtype=[("a", "i4"), ("b", "f8")])
    assert record.dtype.names == ("a", "b") and record["b"].sum() == 0
    assert cw.empty((0, 3)).shape == (0, 3) and cw.zeros(()).shape == ()
    with pytest.raises(TypeError, match="Python objects"):
        cw.empty(3, dtype=object)
    with pytest.raises(ValueError, match="negative"):
        cw.empty((2, -1))
    with pytest.raises(ValueError, match="order"):
        cw.empty(3, order="K")


def test_the_memory_is_freed_everywhere_once_the_array_is_gone():
    a = cw.zeros(BIG)
    view = a[10:]
    inode = inode_of(a)
    with cw.Pool(2, engine="process") as pool:
        assert list(pool.map(total, [view] * 4)) == [0.0] * 4
        pids = [os.getpid(), *pool._pids()]
        assert inode in memfds(pids)
        del a
        gc.collect()
        assert inode in memfds([os.getpid()])  # the view still holds it
        del view
        gc.collect()
        deadline = time.monotonic() + 10
        while inode in memfds(pids) and time.monotonic() < deadline:
            time.sleep(0.01)  # the workers are told, and unmap it
        assert inode not in memfds(pids)


# ------------------------------------------------------------------------ sending passes


def test_within_a_pass_a_copied_buffer_is_reused_without_comparing():
    data = np.arange(BIG, dtype="uint8")
    raw = memoryview(data)
    address = _segments.address_of(raw)
    segment, _ = _segments.Segment.holding([raw])
    with _reuse.sending_pass():
        _reuse.remember(address, raw.nbytes, segment, 0, raw)
        data[0] = 99  # (a write the pass's rule says cannot happen: here to see the rule)
        assert _reuse.recall(address, raw.nbytes) == (segment, 0)
    assert _reuse.recall(address, raw.nbytes) is None  # outside it: compared, changed
    data[0] = 0
    assert _reuse.recall(address, raw.nbytes) == (segment, 0)  # compared, the same


@pytest.fixture
def compares(monkeypatch):
    """How many times segments compared a buffer with its earlier copy (memcmp)."""
    calls = []
    real = _reuse._memcmp

    def counting(*args):
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(_reuse, "_memcmp", counting)
    return calls


@pytest.fixture
def copies(monkeypatch):
    """How many message segments were filled with copies of buffers."""
    calls = []
    real = _segments.filled

    def counting(buffers, *args):
        calls.append(len(buffers))
        return real(buffers, *args)

    monkeypatch.setattr(_segments, "filled", counting)
    return calls


def test_one_map_copies_a_repeated_array_once_and_compares_nothing(compares, copies):
    a = np.arange(BIG, dtype=float)
    with cw.Pool(2, engine="process") as pool:
        pool.submit(total, np.ones(3)).result()
        assert list(pool.map(total, [a] * 6, range(6), chunksize=1)) == [
            float(a.sum()) + i for i in range(6)]
    assert copies == [1] and compares == []


def test_an_array_changed_between_maps_is_sent_again(compares):
    a = np.zeros(BIG)
    with _reuse.sending_pass():  # a copy made in a pass that has ended, kept alive
        kept = packing.pack([a], by_value=True)
    with cw.Pool(2, engine="process") as pool:
        assert list(pool.map(first, [a] * 4, chunksize=1)) == [0.0] * 4  # compared: reused
        a[0] = 1.0  # another map, another pass: compared, so the change goes out
        assert list(pool.map(first, [a] * 4, chunksize=1)) == [1.0] * 4
    assert len(compares) == 2  # once per map: the first chunk of each
    kept.close()


def test_an_array_a_generator_rewrites_is_sent_again():
    a = np.zeros(BIG)

    def rewritten():
        for i in range(6):
            a[0] = i  # the same array, new contents, before each item
            yield a

    with cw.Pool(2, engine="process") as pool:
        assert list(pool.imap(first, rewritten(), chunksize=1)) == [float(i) for i in range(6)]
        assert cw.map(first, rewritten(), engine="process", workers=2, chunksize=1) == [
            float(i) for i in range(6)]
