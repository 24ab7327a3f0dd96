"""Zero-copy data: large buffers travel through shared memory, once, and nothing leaks."""

from __future__ import annotations

import gc
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corework as cw
from corework import _transport
from tests.helpers import skip_on_dask, skip_on_interpreter

np = pytest.importorskip("numpy")
hnp = pytest.importorskip("hypothesis.extra.numpy")

BIG = _transport.OUT_OF_BAND_BYTES  # arrays at least this big go out of band
DTYPES = ["float64", "float32", "int8", "uint16", "int64", "complex128", "bool",
          "datetime64[ns]", [("a", "i4"), ("b", "f8")]]


# ------------------------------------------------------------------------ helpers


def echo(x):
    return x


def describe(a):
    """What a task saw: enough to compare an array exactly, without sending it back."""
    return a.dtype.str, a.shape, a.flags.writeable, a.tobytes()


def try_write(a):
    a[(0,) * a.ndim] = 1
    return "written"


def write_at(a, i):
    a[i] = i + 1


def total(a):
    return float(a.sum())


def wait_for_go(a, marker_dir, i):
    """Touch every page of ``a``, say so, and hold on to it until the test says go."""
    value = float(a.sum())
    Path(marker_dir, f"started-{i}").touch()
    while not Path(marker_dir, "go").exists():
        time.sleep(0.005)
    return value


def memfds(pids):
    """{inode: size} of every corework memory file the processes hold, open or mapped."""
    found = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                path = f"/proc/{pid}/fd/{fd}"
                if "memfd:corework" in os.readlink(path):
                    info = os.stat(path)
                    found[info.st_ino] = max(found.get(info.st_ino, 0), info.st_size)
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    if "memfd:corework" in line:
                        start, end = (int(x, 16) for x in line.split()[0].split("-"))
                        inode = int(line.split()[4])
                        found[inode] = max(found.get(inode, 0), end - start)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def tree():
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def tree_memory():
    """Memory the process tree owns: private pages of each process plus its memory files."""
    private = 0
    for process in tree():
        try:
            private += process.memory_full_info().uss
        except psutil.Error:
            continue
    shared = sum(memfds([p.pid for p in tree()]).values())
    return private + shared


def memfds_named_for(pids):
    """Every process on the machine holding a memory file made by one of ``pids``."""
    names = tuple(f"corework-{pid} " for pid in pids) + tuple(
        f"corework-share-{pid} " for pid in pids)
    holders = []
    for process in psutil.process_iter():
        try:
            links = [os.readlink(f"/proc/{process.pid}/fd/{fd}") + " "
                     for fd in os.listdir(f"/proc/{process.pid}/fd")]
            with open(f"/proc/{process.pid}/maps") as maps:
                links += [line.rstrip("\n") + " " for line in maps]
        except (OSError, psutil.Error):
            continue
        if any(name in link for link in links for name in names):
            holders.append(process.pid)
    return holders


# ------------------------------------------------------------------------ round trips


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_side=6)),
       st.sampled_from(["as is", "strided", "transposed"]))
def test_pack_round_trips_any_array(array, view):
    """In one process, with every buffer sent out of band: the layout logic itself."""
    if view == "strided" and array.ndim:
        array = array[::2]
    elif view == "transposed":
        array = array.T
    packed = _transport.pack([array, array], by_value=True, inline_below=0)
    received = [os.dup(fd) for fd in packed.fds]  # as a socket would hand them over
    first, second = _transport.unpack(packed.data, packed.layout, received)
    np.testing.assert_array_equal(first, array)
    expected = pickle.loads(pickle.dumps(array, protocol=5))  # what numpy itself makes
    assert first.dtype == expected.dtype and first.shape == array.shape
    assert second is first  # one buffer, sent once


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_big_arrays_round_trip_through_workers(dtype):
    count = BIG // np.dtype(dtype).itemsize * 3
    array = np.arange(count).astype(dtype) if dtype != "bool" else np.arange(count) % 3 == 0
    if isinstance(dtype, list):
        array = np.zeros(count, dtype=dtype)
        array["a"] = np.arange(count)
    views = [array, array[::2], array.reshape(3, -1).T, array.reshape(3, -1)[1:], array[:0]]
    with cw.Pool(2, engine="process") as pool:
        for view in views:
            assert pool.submit(describe, view).result() == (
                view.dtype.str, view.shape, True, view.tobytes())
            back = pool.submit(echo, view).result()
            np.testing.assert_array_equal(back, view)
            assert back.dtype == view.dtype


def test_a_big_argument_travels_out_of_band():
    array = np.ones(BIG)
    packed = _transport.pack([array], by_value=True)
    assert len(packed.data) < 1024 and len(packed.fds) == 1
    small = _transport.pack([np.ones(10)], by_value=True)
    assert small.fds == []


def test_memoryviews_and_bytes_travel(engine):
    skip_on_interpreter(engine, "shared memory reaches tasks through corework's "
                        "segments, which sub-interpreters cannot map, and numpy")
    data = bytes(range(256)) * (BIG // 256 + 1)
    view = memoryview(np.arange(BIG // 8 * 2, dtype="float64"))
    with cw.Pool(2, engine=engine) as pool:
        assert pool.submit(echo, data).result() == data
        back = pool.submit(echo, view).result()
        assert (back.format, back.shape) == (view.format, view.shape) and back == view
        assert pool.submit(bytes, memoryview(data)[::3]).result() == data[::3]


def test_a_result_stays_valid_after_its_worker_is_replaced():
    with cw.Pool(1, engine="process", max_tasks_per_worker=1) as pool:
        first_pid = pool._pids()[0]
        results = [pool.submit(np.full, BIG, i, dtype="int64").result() for i in range(3)]
        assert first_pid not in pool._pids()
    for i, result in enumerate(results):
        assert result.shape == (BIG,) and (result == i).all()
        result[0] = 99  # results are the caller's to change (copy-on-write)
        assert result[0] == 99


def test_many_concurrent_transfers():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(BIG // 8 + i) for i in range(24)]
    fds_before = len(os.listdir("/proc/self/fd"))
    with cw.Pool(2, engine="process") as pool:
        outcomes = {}

        def submit_some(start):
            futures = [pool.submit(echo, arrays[i]) for i in range(start, 24, 4)]
            for i, future in zip(range(start, 24, 4), futures):
                outcomes[i] = future.result()

        threads = [threading.Thread(target=submit_some, args=(s,)) for s in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == list(range(24))
        for i, array in enumerate(arrays):
            np.testing.assert_array_equal(outcomes[i], array)
    outcomes.clear()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    assert memfds([os.getpid()]) == {}


# ------------------------------------------------------------------------ cw.share


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_shared_arrays_reach_every_task(start_method):
    array = np.arange(BIG, dtype="float64")
    shared = cw.share(array)
    assert isinstance(shared, np.ndarray) and not shared.flags.writeable
    np.testing.assert_array_equal(shared, array)
    with cw.Pool(2, engine="process", start_method=start_method) as pool:
        packed = _transport.pack([shared], by_value=True)
        assert len(packed.fds) == 1 and packed.share_ids  # a reference, not a copy
        assert list(pool.map(total, [shared] * 4)) == [float(array.sum())] * 4
        assert pool.submit(total, shared[BIG // 2:]).result() == float(array[BIG // 2:].sum())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_shares_of_any_array_round_trip(data):
    dtypes = hnp.scalar_dtypes().filter(lambda d: d.kind not in "mM")  # pickled inline
    array = data.draw(hnp.arrays(dtypes, hnp.array_shapes(min_dims=0)))
    shared = cw.share(array)
    np.testing.assert_array_equal(shared, array)
    with cw.Pool(1, engine="process") as pool:
        dtype, shape, writeable, raw = pool.submit(describe, shared).result()
    assert (dtype, shape, raw) == (array.dtype.str, array.shape, array.tobytes())
    assert not writeable or array.size == 0


def test_objects_holding_arrays_and_bytes_can_be_shared(engine):
    skip_on_interpreter(engine, "shared memory reaches tasks through corework's "
                        "segments, which sub-interpreters cannot map, and numpy")
    frame = {"x": np.arange(BIG), "y": np.ones((3, 4)), "name": "table"}
    shared = cw.share(frame)
    assert shared["name"] == "table" and (shared["x"] == frame["x"]).all()
    raw = cw.share(b"0123456789" * 1000)
    assert isinstance(raw, memoryview) and raw.readonly and bytes(raw[:4]) == b"0123"
    with cw.Pool(2, engine=engine) as pool:
        assert pool.submit(lambda f: float(f["x"].sum()), shared).result() == frame["x"].sum()
        assert pool.submit(bytes, raw[10:14]).result() == b"0123"
    with pytest.raises(TypeError, match="has none"):
        cw.share({"no": "buffers"})
    with pytest.raises(TypeError, match="datetime64"):
        cw.share(np.zeros(3, dtype="datetime64[s]"))


def test_workers_cannot_write_into_a_shared_input(engine):
    skip_on_interpreter(engine, "shared memory reaches tasks through corework's "
                        "segments, which sub-interpreters cannot map, and numpy")
    shared = cw.share(np.zeros(BIG))
    raw = cw.share(bytearray(100))
    with cw.Pool(2, engine=engine) as pool:
        with pytest.raises(ValueError, match="read-only"):
            pool.submit(try_write, shared).result()
        with pytest.raises(TypeError, match="read-only"):
            pool.submit(try_write, raw).result()
    assert not shared.any() and not any(raw)


def test_a_task_writes_into_its_own_copy_of_an_ordinary_argument():
    array = np.zeros(BIG)
    with cw.Pool(2, engine="process") as pool:
        assert pool.submit(try_write, array).result() == "written"
    assert not array.any()


def test_writable_shares_show_tasks_writes(engine):
    skip_on_interpreter(engine, "shared memory reaches tasks through corework's "
                        "segments, which sub-interpreters cannot map, and numpy")
    skip_on_dask(engine, "workers elsewhere write into copies (refused: see test_dask.py)")
    out = cw.share(np.zeros(8, dtype="int64"), writable=True)
    with cw.Pool(2, engine=engine) as pool:
        list(pool.map(write_at, [out] * 8, range(8)))
    assert out.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_share_is_released_everywhere_when_the_caller_lets_go():
    shared = cw.share(np.ones(BIG))
    with cw.Pool(2, engine="process") as pool:
        list(pool.map(total, [shared] * 4))
        pids = [os.getpid(), *pool._pids()]
        assert memfds(pids)
        del shared
        gc.collect()
        deadline = time.monotonic() + 10
        while memfds(pids) and time.monotonic() < deadline:
            time.sleep(0.01)  # the workers are told, and unmap it
        assert memfds(pids) == {}


# ------------------------------------------------------------------------ memory


def test_a_200mb_array_to_four_tasks_costs_one_copy(tmp_path):
    array = np.ones(25_000_000)  # 200 MB
    with cw.Pool(2, engine="process") as pool:
        pool.submit(total, np.ones(10)).result()  # workers are up
        before = tree_memory()
        futures = [pool.submit(wait_for_go, array, str(tmp_path), i) for i in range(4)]
        peak = 0
        for started in (2, 4):
            while len(list(tmp_path.glob("started-*"))) < started:
                time.sleep(0.005)
            peak = max(peak, tree_memory())  # both workers hold the array now
            (tmp_path / "go").touch()
            if started == 2:
                futures[0].result(), futures[1].result()
                (tmp_path / "go").unlink()
        assert [f.result() for f in futures] == [float(array.size)] * 4
    extra = peak - before
    print(f"extra memory: {extra / 1e6:.0f} MB for a {array.nbytes / 1e6:.0f} MB array")
    assert extra < 2 * array.nbytes, f"{extra / 1e6:.0f} MB extra for a 200 MB array"


# ------------------------------------------------------------------------ crashes


CALLER = textwrap.dedent("""
    import sys, time, numpy as np, corework as cw
    from pathlib import Path
    def hold(a, marker):
        Path(marker).touch()
        time.sleep(60)
    shared = cw.share(np.ones(5_000_000))
    with cw.Pool(2, engine="process") as pool:
        futures = [pool.submit(hold, np.ones(4_000_000), sys.argv[1]),
                   pool.submit(hold, shared, sys.argv[1] + "2")]
        print("ready", flush=True)
        time.sleep(60)
""")


def test_sigkill_of_the_caller_leaves_no_memory_file(tmp_path):
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    marker = tmp_path / "marker"
    caller = subprocess.Popen([sys.executable, str(script), str(marker)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout.readline() == "ready\n"
        while not (marker.exists() and Path(str(marker) + "2").exists()):
            time.sleep(0.005)
        family = [caller.pid, *(p.pid for p in psutil.Process(caller.pid).children(True))]
        assert memfds_named_for(family)
        caller.kill()
    finally:
        caller.kill()
        caller.wait()
        caller.stdout.close()
    deadline = time.monotonic() + 10
    while (memfds_named_for(family) or any(psutil.pid_exists(p) and psutil.Process(p).status()
           != psutil.STATUS_ZOMBIE for p in family)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert memfds_named_for(family) == []
    assert not [p for p in family if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not [name for name in os.listdir("/dev/shm") if "corework" in name]


def big_result(marker):
    Path(marker).touch()
    return np.ones(20_000_000)  # 160 MB: being copied and sent as the worker dies


def test_sigkill_of_a_worker_mid_transfer_leaves_no_memory_file(tmp_path):
    marker = tmp_path / "marker"
    with cw.Pool(1, engine="process") as pool:
        pid = pool._pids()[0]
        future = pool.submit(big_result, str(marker))
        while not marker.exists():
            time.sleep(0.001)
        os.kill(pid, signal.SIGKILL)
        try:
            future.result()
        except cw.WorkerCrashed:
            pass  # killed before it sent the result; or it made it, which is fine too
        del future
        gc.collect()
        assert memfds_named_for([pid]) == []
        assert pool.submit(echo, np.ones(BIG)).result().sum() == BIG
    gc.collect()
    assert memfds([os.getpid()]) == {}


# ------------------------------------------------------------------------ small /dev/shm

SMALL_SHM = textwrap.dedent("""
    import os, numpy as np, corework as cw
    assert os.statvfs("/dev/shm").f_blocks * os.statvfs("/dev/shm").f_frsize <= 1 << 20
    big = np.arange(16_000_000, dtype="float64")  # 128 MB, on a 1 MB /dev/shm
    shared = cw.share(big)
    with cw.Pool(2, engine="process") as pool:
        assert pool.submit(lambda a: a.sum(), big).result() == big.sum()
        assert pool.submit(lambda a: a[-1], shared).result() == big[-1]
        assert (pool.submit(lambda n: np.ones(n), 10_000_000).result() == 1).all()
    print("ok")
""")


def test_a_small_dev_shm_does_not_matter(tmp_path):
    """/dev/shm is replaced by a 1 MB tmpfs, in a private mount namespace."""
    script = tmp_path / "small_shm.py"
    script.write_text(SMALL_SHM)
    command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
               f"mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {sys.executable} {script}"]
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no unprivileged mount namespaces here: {probe.stderr.decode().strip()}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
