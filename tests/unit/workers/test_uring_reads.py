"""Reads through io_uring (odxtarget/transport/uring.py) on a real event loop and a real file:
correct data, zeros past the end of the file, errors as OSError, the lease released once, many
reads in flight across the end of the completion ring, and the thread fallback."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from odxtarget.storage.work import FileRead
from odxtarget.transport.uring import RING_ENTRIES, UringReads
from odxtarget.transport.workers import StorageWorkers

BLOCK = 4096


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.img"
    path.write_bytes(bytes(range(256)) * (64 * BLOCK // 256))        # 64 blocks
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def run_reads(fd: int, offsets: list[int], length: int = BLOCK):
    """Submit one read per offset at once; return (buffers, errors, releases, fallbacks)."""
    async def main():
        loop = asyncio.get_running_loop()
        fallbacks = []
        reads = UringReads.open(loop, lambda read, completion: fallbacks.append(read))
        assert reads is not None, "io_uring must work on these machines (kernel.io_uring_disabled=0)"
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


def test_reads_bring_the_right_bytes_and_release_their_lease_once(data_file):
    with open(f"/proc/self/fd/{data_file}", "rb") as file:
        content = file.read()
    offsets = [random.Random(7).randrange(64) * BLOCK for _ in range(32)]
    buffers, errors, releases, fallbacks = run_reads(data_file, offsets)
    assert errors == [None] * 32 and releases == [1] * 32 and fallbacks == []
    assert all(bytes(buffer) == content[offset:offset + BLOCK] for buffer, offset in zip(buffers, offsets))


def test_more_reads_than_the_completion_ring_holds(data_file):
    """Completions wrap around the end of the ring several times (2 x RING_ENTRIES each)."""
    offsets = [(index % 64) * BLOCK for index in range(5 * RING_ENTRIES)]
    for start in range(0, len(offsets), RING_ENTRIES // 2):
        buffers, errors, releases, _ = run_reads(data_file, offsets[start:start + RING_ENTRIES // 2])
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
