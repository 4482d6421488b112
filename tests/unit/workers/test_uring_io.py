"""Reads through io_uring (odxtarget/transport/uring.py) on a real event loop and a real file:
correct data, zeros past the end of the file, errors as OSError, the lease released once, many
reads in flight across the end of the completion ring, and the thread fallback."""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from odxtarget.storage.work import FileRead
from odxtarget.transport.uring import RING_ENTRIES, UringIo
from odxtarget.transport.workers import StorageWorkers

BLOCK = 4096


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.img"
    path.write_bytes(bytes(range(256)) * (64 * BLOCK // 256))        # 64 blocks
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def kernel_pollers(wait_seconds: float = 5.0) -> int:
    """This process's io_uring submission-queue polling threads. A new one takes its name
    (``iou-sqp-<pid>``) only once it first runs, so on a busy machine wait a little for it."""
    deadline = time.monotonic() + wait_seconds
    while True:
        count = sum(1 for task in os.listdir("/proc/self/task")
                    if open(f"/proc/self/task/{task}/comm").read().startswith("iou-sqp-"))
        if count or time.monotonic() > deadline:
            return count
        time.sleep(0.005)


def run_reads(fd: int, offsets: list[int], length: int = BLOCK, *, polled: bool = False):
    """Submit one read per offset at once; return (buffers, errors, releases, fallbacks)."""
    async def main():
        loop = asyncio.get_running_loop()
        fallbacks = []
        reads = UringIo.open(loop, lambda read, completion: fallbacks.append(read), polled=polled)
        assert reads is not None, "io_uring must work on these machines (kernel.io_uring_disabled=0)"
        if polled:
            assert kernel_pollers() > 0, "a polled ring has a kernel thread that polls it"
        buffers = [bytearray(length) for _ in offsets]
        errors: list = [None] * len(offsets)
        releases = [0] * len(offsets)
        finished = loop.create_future()
        remaining = [len(offsets)]

        def completion(index):
            def done(value, error):
                errors[index] = error
                remaining[0] -= 1
                if not remaining[0]:
                    finished.set_result(None)
            return done

        def release(index):
            def release_lease():
                releases[index] += 1
            return release_lease

        for index, offset in enumerate(offsets):
            reads.submit(FileRead("disk", fd, offset, buffers[index], release(index)), completion(index))
        await asyncio.wait_for(finished, 10)
        reads.close()
        return buffers, errors, releases, fallbacks

    return asyncio.run(main())


@pytest.mark.parametrize("polled", [False, True], ids=["ordinary", "polled"])
def test_reads_bring_the_right_bytes_and_release_their_lease_once(data_file, polled):
    with open(f"/proc/self/fd/{data_file}", "rb") as file:
        content = file.read()
    offsets = [random.Random(7).randrange(64) * BLOCK for _ in range(32)]
    buffers, errors, releases, fallbacks = run_reads(data_file, offsets, polled=polled)
    assert errors == [None] * 32 and releases == [1] * 32 and fallbacks == []
    assert all(bytes(buffer) == content[offset:offset + BLOCK] for buffer, offset in zip(buffers, offsets))


@pytest.mark.parametrize("polled", [False, True], ids=["ordinary", "polled"])
def test_more_reads_than_the_completion_ring_holds(data_file, polled):
    """Completions wrap around the end of the ring several times (2 x RING_ENTRIES each)."""
    offsets = [(index % 64) * BLOCK for index in range(5 * RING_ENTRIES)]
    for start in range(0, len(offsets), RING_ENTRIES // 2):
        buffers, errors, releases, _ = run_reads(data_file, offsets[start:start + RING_ENTRIES // 2], polled=polled)
        assert errors == [None] * len(buffers) and set(releases) == {1}


def test_past_the_end_of_the_file_reads_as_zeros(data_file):
    buffers, errors, releases, _ = run_reads(data_file, [64 * BLOCK, 1000 * BLOCK])
    assert errors == [None, None] and buffers == [bytearray(BLOCK)] * 2 and releases == [1, 1]


def test_a_failed_read_reports_its_os_error_and_releases():
    buffers, errors, releases, _ = run_reads(987654, [0])          # not an open descriptor
    assert isinstance(errors[0], OSError) and errors[0].errno == 9 and releases == [1]


def test_workers_send_file_reads_to_io_uring_and_everything_else_to_threads(data_file, tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        workers = StorageWorkers(loop)
        assert workers.io_uring
        outcome = loop.create_future()
        workers.submit(FileRead("disk", data_file, 0, bytearray(BLOCK), lambda: None),
                       lambda value, error: outcome.set_result(error))
        assert await asyncio.wait_for(outcome, 5) is None
        assert workers._lanes == {}                  # no thread was started for the read
        threads_off = StorageWorkers(loop, io_uring=False)
        assert not threads_off.io_uring
        outcome = loop.create_future()
        threads_off.submit(FileRead("disk", data_file, 0, bytearray(BLOCK), lambda: None),
                           lambda value, error: outcome.set_result(error))
        assert await asyncio.wait_for(outcome, 5) is None
        assert "disk" in threads_off._lanes          # the worker form ran on a thread
        workers.close()
        threads_off.close()

    asyncio.run(main())


# ------------------------------------------------------------------ writes
def run_work(items):
    """Submit ``(work, label)`` pairs at once through one UringIo; return {label: error}."""
    async def main():
        loop = asyncio.get_running_loop()
        fallbacks = StorageWorkers(loop, io_uring=False)      # what the ring hands back runs here
        ring = UringIo.open(loop, fallbacks.submit)
        outcomes = {}
        finished = loop.create_future()

        def completion(label):
            def done(value, error):
                outcomes[label] = error
                if len(outcomes) == len(items):
                    finished.set_result(None)
            return done

        for work, label in items:
            ring.submit(work, completion(label))
        await asyncio.wait_for(finished, 10)
        ring.close()
        fallbacks.close()
        return outcomes

    return asyncio.run(main())


def test_writes_land_whole_and_release_once(tmp_path):
    from odxtarget.config import ExtentConfig
    from odxtarget.storage.extents import FileExtentBackend
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "w.img"))], 64 * BLOCK)
    items = []
    for index in range(48):                      # bytes, bytearray and memoryview data, some durable
        data = [bytes([index]) * BLOCK, bytearray([index]) * BLOCK, memoryview(bytes([index]) * BLOCK)][index % 3]
        work = backend.write_work(index * BLOCK, data, fua=index % 4 == 0)
        assert type(work).__name__ == "FileWrite"
        items.append((work, index))
    outcomes = run_work(items)
    assert outcomes == {index: None for index in range(48)}
    for index in range(48):
        assert os.pread(backend.extents_for(0, 1)[0].fd, BLOCK, index * BLOCK) == bytes([index]) * BLOCK
    assert backend._leases == 0 and backend._ranges._shared == []
    backend.close()


def test_a_failed_write_is_judged_by_the_backend_on_a_worker(tmp_path):
    from odxtarget.config import ExtentConfig
    from odxtarget.storage.extents import FileExtentBackend
    from odxtarget.storage.work import FileWrite
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "w.img"))], 64 * BLOCK)
    judged = []

    def recover(error):
        judged.append(error.errno)
        raise OSError(error.errno, "judged by the backend")

    released = []
    bad = FileWrite("disk", 987654, 0, b"x" * BLOCK, False, lambda: None, recover, lambda: released.append(1))
    outcomes = run_work([(bad, "bad")])
    assert isinstance(outcomes["bad"], OSError) and str(outcomes["bad"]).endswith("judged by the backend")
    assert judged == [9] and released == [1]
    backend.close()


def test_a_write_overlapping_a_compare_and_write_waits_on_a_worker(tmp_path):
    """COMPARE AND WRITE holds its range alone: a write that cannot take the range now is not
    declared for io_uring (which cannot wait) but left to a worker, which waits."""
    from odxtarget.config import ExtentConfig
    from odxtarget.storage.extents import FileExtentBackend
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "w.img"))], 64 * BLOCK)
    with backend._ranges.exclusive(0, 2 * BLOCK):
        assert type(backend.write_work(BLOCK, b"o" * BLOCK)).__name__ == "StorageCall"
        assert backend._leases == 0
    work = backend.write_work(BLOCK, b"o" * BLOCK)
    assert type(work).__name__ == "FileWrite"
    work.run()                                   # the worker form writes and releases
    assert backend._leases == 0 and backend._ranges._shared == []
    backend.close()


def test_a_binding_that_dies_on_this_cpu_leaves_the_work_to_threads(monkeypatch):
    """The compiled binding can die with SIGILL on a CPU it was not built for (a QEMU TCG guest
    does): the child-process probe sees the signal and the daemon stays alive on threads."""
    from odxtarget.transport import uring
    monkeypatch.setattr(uring, "_binding_verdict", [])
    monkeypatch.setattr(uring, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    assert "signal 4" in uring.binding_problem()

    async def main():
        workers = StorageWorkers(asyncio.get_running_loop())
        assert not workers.io_uring
        workers.close()

    asyncio.run(main())


def test_cold_reads_go_to_the_polled_ring_and_other_reads_to_the_ordinary_one(data_file):
    """A miss in a cached working set must not wake the polling thread (docs/execution.md)."""
    async def main():
        loop = asyncio.get_running_loop()
        workers = StorageWorkers(loop)
        polled, ordinary = workers._uring_reads, workers._uring_writes
        assert polled is not ordinary
        outcomes = [loop.create_future(), loop.create_future()]
        workers.submit(FileRead("disk", data_file, 0, bytearray(BLOCK), lambda: None, cold=True),
                       lambda value, error: outcomes[0].set_result(error))
        assert (polled.in_flight, ordinary.in_flight) == (1, 0)
        workers.submit(FileRead("disk", data_file, 0, bytearray(BLOCK), lambda: None),
                       lambda value, error: outcomes[1].set_result(error))
        assert (polled.in_flight, ordinary.in_flight) == (1, 1)
        assert [await asyncio.wait_for(outcome, 5) for outcome in outcomes] == [None, None]
        workers.close()

    asyncio.run(main())
