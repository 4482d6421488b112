"""TcmuHandler on its asyncio loop over the simulated kernel: notification per batch, and
removal and clean stop with storage work still running on a worker."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.transport.tcmu import ring as r
from odxtarget.transport.tcmu.device import TcmuDeviceInfo
from odxtarget.transport.tcmu.handler import TcmuHandler
from tests.unit.tcmu.rig import BLOCK, BUSY, CHECK, GOOD, LU_BYTES, TUR, GatedBackend, read10, write10
from tests.unit.tcmu.simulated_kernel import BLOCK_SIZE, Completion, SimulatedKernel

INFO = TcmuDeviceInfo(uio="uio0", hba=0, device_name="disk0", config="disk0")


class StandInUio:
    """What the handler uses of a ``UioDevice``, over the simulated kernel: the fd is a pipe
    the test writes to as the kernel's uio event, and ``notify`` makes the kernel collect the
    completions, as its ``write()`` handler does."""

    def __init__(self, kernel: SimulatedKernel, backend: GatedBackend):
        self.kernel = kernel
        self.backend = backend
        self.fd, self._event_fd = os.pipe()
        os.set_blocking(self.fd, False)
        self.events: list[str] = []
        self.collected: list[Completion] = []
        self.writes_done_at_close: int | None = None

    def wake(self) -> None:
        os.write(self._event_fd, b"\x01")

    def drain_event(self) -> int:
        try:
            return len(os.read(self.fd, 64))
        except BlockingIOError:
            return 0

    def notify(self) -> None:
        self.events.append("notify")
        self.collected.extend(self.kernel.collect_completions())

    def block(self) -> None:
        self.events.append("block")

    def unblock(self) -> None:
        self.events.append("unblock")

    def close(self) -> None:
        if self.fd < 0:
            return
        self.events.append("close")
        self.writes_done_at_close = self.backend.writes_done
        os.close(self.fd)
        os.close(self._event_fd)
        self.fd = -1

    def completion(self, cmd_id: int) -> Completion | None:
        return next((c for c in self.collected if c.cmd_id == cmd_id), None)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.002)


class Served:
    """A started handler serving one stand-in device over the simulated kernel."""

    def __init__(self, tmp_path):
        self.kernel = SimulatedKernel(data_blocks=64)
        self.backend = GatedBackend(LU_BYTES)
        self.lu = LogicalUnit(LogicalUnitConfig(name="disk0", backend=self.backend, block_size=BLOCK))
        self.uio = StandInUio(self.kernel, self.backend)
        self.handler = TcmuHandler({"disk0": self.lu}, use_udev=False, use_netlink=False,
                                   sysfs_root=str(tmp_path))

    async def start(self) -> None:
        await self.handler.start()
        self.served = self.handler.serve(INFO, self.uio, r.CommandRing(self.kernel.mv), self.lu)
        assert (await self.command(TUR)).status == CHECK          # the power-on unit attention

    def queue(self, cdb: bytes, **options) -> int:
        cmd_id = self.kernel.queue_command(cdb, **options)
        self.uio.wake()
        return cmd_id

    async def command(self, cdb: bytes, **options) -> Completion:
        cmd_id = self.queue(cdb, **options)
        await until(lambda: self.uio.completion(cmd_id) is not None)
        return self.uio.completion(cmd_id)

    async def slow_write(self) -> int:
        self.backend.close_gate(0, BLOCK_SIZE)
        cmd_id = self.queue(write10(0, 8), data_out=bytes([0x3C]) * BLOCK_SIZE)
        await until(self.backend.blocked.is_set)
        return cmd_id

    def close(self) -> None:
        self.backend.open_gate()
        self.uio.close()
        self.kernel.close()


@pytest.fixture
def served(tmp_path):
    served = Served(tmp_path)
    yield served
    served.close()


def test_completions_behind_a_slow_write_are_served_and_notified(served):
    async def scenario():
        await served.start()
        slow = await served.slow_write()
        notifications = served.uio.events.count("notify")
        assert (await served.command(write10(64, 8), data_out=bytes(BLOCK_SIZE))).status == GOOD
        assert (await served.command(read10(64, 8), data_in_length=BLOCK_SIZE)).status == GOOD
        assert served.uio.events.count("notify") == notifications + 2
        assert served.uio.completion(slow) is None and slow in served.kernel.outstanding
        served.backend.open_gate()
        await until(lambda: served.uio.completion(slow) is not None)
        assert served.uio.completion(slow).status == GOOD
        await served.handler.stop(grace=1)
        assert served.uio.events[-3:] == ["block", "close", "unblock"]

    asyncio.run(scenario())


def test_a_removed_device_is_closed_only_after_its_running_work_returned(served):
    async def scenario():
        await served.start()
        slow = await served.slow_write()
        writes_before = served.backend.writes_done
        served.handler.detach(INFO.uio)
        assert served.handler.devices == {}
        await asyncio.sleep(0.05)
        assert "close" not in served.uio.events             # a worker still reads the data area
        events = len(served.uio.events)
        served.backend.open_gate()
        await until(lambda: "close" in served.uio.events)
        assert served.uio.events[events:] == ["close"]       # nothing more written or notified
        assert served.uio.writes_done_at_close == writes_before + 1
        assert served.uio.completion(slow) is None and slow in served.kernel.outstanding
        await served.handler.stop(grace=0)

    asyncio.run(scenario())


def test_a_clean_stop_answers_what_is_still_running_busy_once_its_work_returned(served):
    async def scenario():
        await served.start()
        slow = await served.slow_write()
        stopping = asyncio.create_task(served.handler.stop(grace=0.1))
        await asyncio.sleep(0.3)                                  # past the grace period
        assert served.uio.events[-1] == "block" and not stopping.done()
        served.backend.open_gate()
        await asyncio.wait_for(stopping, 5)
        assert served.uio.completion(slow).status == BUSY           # the initiator retries it
        assert served.uio.events[-3:] == ["notify", "close", "unblock"]
        assert served.uio.writes_done_at_close == served.backend.writes_done
        assert not served.kernel.outstanding and not served.kernel.broken

    asyncio.run(scenario())


def test_a_ring_found_broken_by_a_worker_completion_is_given_up(served):
    async def scenario():
        await served.start()
        slow = await served.slow_write()
        served.served.processor.ring.reset()                    # forgets the command in flight
        served.backend.open_gate()
        await until(lambda: "close" in served.uio.events)
        assert served.handler.devices == {} and served.uio.completion(slow) is None
        await served.handler.stop(grace=0)

    asyncio.run(scenario())
