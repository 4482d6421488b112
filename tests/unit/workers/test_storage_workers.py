"""StorageWorkers and CommandDriver (odxtarget/transport/workers.py) on a real event loop:
work runs off the loop and in parallel, completions come back on the loop thread, and the
driver runs commands to their end and starts what a task set released."""

from __future__ import annotations

import asyncio
import threading
import time

from odxtarget.scsi.execution import StorageCall
from odxtarget.scsi.types import TaskAttribute
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import ItNexus, ScsiCommand, Status
from odxtarget.storage.memory import MemoryBackend
from odxtarget.transport.workers import CommandDriver, StorageWorkers

NEXUS = ItNexus("iqn.2026-12.org.example:a,i,0x1", "iqn.2026-12.org.example:t,t,0x1")


def test_work_runs_in_parallel_off_the_loop_and_completes_on_it():
    async def main():
        loop = asyncio.get_running_loop()
        workers = StorageWorkers(loop, threads_per_lane=8)
        loop_thread = threading.get_ident()
        release = threading.Event()
        started = []
        finished = []

        def blocking(index):
            started.append(threading.get_ident())
            release.wait(5)
            return index

        def completion(value, error):
            finished.append((value, error, threading.get_ident()))

        for index in range(8):
            workers.submit(StorageCall("disk", blocking, (index,)), completion)
        deadline = time.monotonic() + 5
        while len(started) < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(set(started)) == 8 and loop_thread not in started     # all eight at once
        assert finished == []                                            # the loop was never blocked
        release.set()
        assert await workers.drain(5)
        workers.close()
        return finished, loop_thread

    finished, loop_thread = asyncio.run(main())
    assert sorted(value for value, _, _ in finished) == list(range(8))
    assert {thread for _, _, thread in finished} == {loop_thread}


def test_an_error_of_the_work_reaches_its_completion():
    async def main():
        workers = StorageWorkers(asyncio.get_running_loop())
        outcome = asyncio.get_running_loop().create_future()

        def failing():
            raise OSError(5, "EIO")

        workers.submit(StorageCall("disk", failing), lambda value, error: outcome.set_result(error))
        return await asyncio.wait_for(outcome, 5)

    error = asyncio.run(main())
    assert isinstance(error, OSError) and error.errno == 5


class SlowBackend(MemoryBackend):
    """Writes take a while and reads always miss the cache."""

    def try_read_into(self, offset, buf):
        return False

    def write(self, offset, data, fua=False):
        time.sleep(0.05)
        super().write(offset, data, fua)


def write10(lba: int) -> bytes:
    return bytes([0x2A, 0]) + lba.to_bytes(4, "big") + bytes([0, 0, 1, 0])


def test_the_driver_runs_commands_and_starts_the_ones_an_ordered_task_held_back():
    async def main():
        lu = LogicalUnit(LogicalUnitConfig(name="lu", backend=SlowBackend(64 * 512)))
        target = ScsiTarget("iqn.2026-12.org.example:t", {0: lu})
        target.execute(ScsiCommand(bytes(6), NEXUS))                     # power-on unit attention
        workers = StorageWorkers(asyncio.get_running_loop())
        driver = CommandDriver(workers)
        order = []

        def done(name):
            return lambda result: order.append((name, result.status))

        commands = [("first", TaskAttribute.SIMPLE, 0), ("ordered", TaskAttribute.ORDERED, 1),
                    ("last", TaskAttribute.SIMPLE, 2)]
        for name, attribute, lba in commands:
            pending = target.execute(ScsiCommand(write10(lba), NEXUS, 0, bytes(512), 512, lba, int(attribute)))
            driver.run(pending, done(name))
        deadline = time.monotonic() + 5
        while len(order) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await workers.drain(5)
        workers.close()
        return order

    assert asyncio.run(main()) == [("first", Status.GOOD), ("ordered", Status.GOOD), ("last", Status.GOOD)]
