"""The real SCSI core behind the simulated kernel, with real storage workers on an asyncio loop.

``Rig`` plays the handler's part for one device without a uio fd: ``process`` is one wake-up
(the batch, then one notification if the processor asks for it), and completions written
when storage work returns are notified the way ``TcmuHandler`` does it (once per delivered
batch, on the next loop iteration). Every notification makes the simulated kernel collect
the completions, as the kernel's ``write()`` handler does.

``GatedBackend`` is a MemoryBackend whose storage work on one byte range blocks on its worker
until the test opens the gate: a slow disk, under the test's control.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Callable

from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.storage.memory import MemoryBackend
from odxtarget.transport.tcmu import ring as r
from odxtarget.transport.tcmu.processor import CommandProcessor, lu_nexus
from odxtarget.transport.workers import CommandDriver, StorageWorkers
from tests.unit.tcmu.simulated_kernel import Completion, SimulatedKernel

BLOCK = 512
LU_BYTES = 4 << 20
GOOD, CHECK, BUSY, TASK_ABORTED = 0x00, 0x02, 0x08, 0x40
TUR = bytes(6)
SETTLE_SECONDS = 5.0


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


def write_and_verify10(lba: int, blocks: int) -> bytes:
    """BYTCHK 01b: write, then read back and compare (two pieces of storage work)."""
    return struct.pack(">BBIBHB", 0x2E, 0x02, lba, 0, blocks, 0)


def inquiry(allocation: int, page: int | None = None) -> bytes:
    return struct.pack(">BBBHB", 0x12, 1 if page is not None else 0, page or 0, allocation, 0)


def sense_key_asc(sense: bytes) -> tuple[int, int, int]:
    return sense[2] & 0x0F, sense[12], sense[13]


class GatedBackend(MemoryBackend):
    """Reads and writes that touch ``gated`` wait on their worker until ``open_gate``."""

    def __init__(self, size: int):
        super().__init__(size)
        self.gated = range(0)
        self.gate = threading.Event()
        self.blocked = threading.Event()          # set once a worker waits at the gate
        self.reads: list[tuple[int, int]] = []    # (offset, length) of every read, any thread
        self.writes_done = 0
        self._count_lock = threading.Lock()

    def close_gate(self, offset: int, length: int) -> None:
        self.gated = range(offset, offset + length)
        self.gate.clear()
        self.blocked.clear()

    def open_gate(self) -> None:
        self.gate.set()

    def _touches_gate(self, offset: int, length: int) -> bool:
        return not self.gate.is_set() and offset < self.gated.stop and self.gated.start < offset + length

    def _wait_at_gate(self) -> None:
        self.blocked.set()
        if not self.gate.wait(SETTLE_SECONDS * 2):
            raise TimeoutError("the test never opened the gate")

    def try_read_into(self, offset: int, buf: memoryview) -> bool:
        if self._touches_gate(offset, len(buf)):
            return False                          # not cached: a worker must read it
        return super().try_read_into(offset, buf)

    def read_into(self, offset: int, buf: memoryview) -> None:
        self.reads.append((offset, len(buf)))
        if self._touches_gate(offset, len(buf)):
            self._wait_at_gate()
        super().read_into(offset, buf)

    def write(self, offset: int, data, fua: bool = False) -> None:
        if self._touches_gate(offset, len(data)):
            self._wait_at_gate()
        super().write(offset, data, fua)
        with self._count_lock:
            self.writes_done += 1


class Rig:
    """Kernel double + ring + processor + core + workers, with helpers that run whole commands."""

    def __init__(self, flags: int | None = None, cmdr_size: int = 64 * 1024, data_blocks: int = 256,
                 removable: bool = False):
        kwargs = {} if flags is None else {"flags": flags}
        self.kernel = SimulatedKernel(cmdr_size=cmdr_size, data_blocks=data_blocks, **kwargs)
        self.backend = GatedBackend(LU_BYTES)
        self.lu = LogicalUnit(LogicalUnitConfig(name="disk0", backend=self.backend, block_size=BLOCK,
                                                removable=removable))
        self.target = ScsiTarget("lio:disk0", {0: self.lu})
        self.ring = r.CommandRing(self.kernel.mv)
        self.loop = asyncio.new_event_loop()
        self.workers = StorageWorkers(self.loop)
        self.driver = CommandDriver(self.workers)
        self.processor = CommandProcessor(self.ring, self.target, lu_nexus("disk0"), self.driver,
                                          notify_soon=self._notify_soon)
        self.notifications = 0                    # write()s to the uio fd
        self.collected: list[Completion] = []     # every completion the kernel consumed
        self._flush_scheduled = False

    # -- the handler's part -------------------------------------------------------------------

    def _notify_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.processor.take_notification():
            self._notify()

    def _notify(self) -> list[Completion]:
        self.notifications += 1
        done = self.kernel.collect_completions()
        self.collected.extend(done)
        return done

    def process(self) -> list[Completion]:
        """One wake-up: the batch, then one notification if asked; what the kernel collected."""
        if self.processor.process():
            return self._notify()
        return []

    def run_until(self, predicate: Callable[[], bool], timeout: float = SETTLE_SECONDS) -> None:
        async def wait() -> None:
            deadline = self.loop.time() + timeout
            while not predicate():
                if self.loop.time() > deadline:
                    raise AssertionError("timed out waiting on the loop")
                await asyncio.sleep(0.001)
        self.loop.run_until_complete(wait())

    def settle(self) -> list[Completion]:
        """Run the loop until no command is in flight and every completion is notified."""
        before = len(self.collected)
        self.run_until(lambda: not self.processor.in_flight and not self._flush_scheduled)
        return self.collected[before:]

    def step(self) -> tuple[bool, list[Completion]]:
        """One wake-up and everything it started: (was the kernel notified, completions)."""
        notifications = self.notifications
        done = self.process()
        done += self.settle()
        return self.notifications > notifications, done

    def run(self, cdb: bytes, data_out: bytes | None = None, data_in_length: int = 0) -> Completion:
        cmd_id = self.kernel.queue_command(cdb, data_out=data_out, data_in_length=data_in_length)
        notified, done = self.step()
        assert notified
        (completion,) = [c for c in done if c.cmd_id == cmd_id]
        return completion

    def clear_power_on_attention(self) -> None:
        completion = self.run(TUR)
        assert completion.status == CHECK and sense_key_asc(completion.sense) == (6, 0x29, 0x00)

    def close(self) -> None:
        self.backend.open_gate()
        self.workers.close()
        self.loop.close()
        self.kernel.close()
