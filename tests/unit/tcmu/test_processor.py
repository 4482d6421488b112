"""The real SCSI core (ScsiTarget/LogicalUnit over MemoryBackend) behind the simulated kernel."""

from __future__ import annotations

import struct

import pytest

from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import ScsiResult, Status
from odxtarget.storage.memory import MemoryBackend
from odxtarget.transport.tcmu import ring as r
from odxtarget.transport.tcmu.processor import CommandProcessor, lu_nexus
from tests.unit.tcmu.simulated_kernel import BLOCK_SIZE, STALE_BYTE, SimulatedKernel

BLOCK = 512
LU_BYTES = 4 << 20
GOOD, CHECK, TASK_ABORTED = 0x00, 0x02, 0x40
TUR = bytes(6)


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


def inquiry(allocation: int, page: int | None = None) -> bytes:
    return struct.pack(">BBBHB", 0x12, 1 if page is not None else 0, page or 0, allocation, 0)


def sense_key_asc(sense: bytes) -> tuple[int, int, int]:
    return sense[2] & 0x0F, sense[12], sense[13]


class Rig:
    """Kernel double + ring + processor + core, with helpers that run whole commands."""

    def __init__(self, flags: int | None = None, cmdr_size: int = 64 * 1024, data_blocks: int = 256,
                 target=None):
        kwargs = {} if flags is None else {"flags": flags}
        self.kernel = SimulatedKernel(cmdr_size=cmdr_size, data_blocks=data_blocks, **kwargs)
        self.backend = MemoryBackend(LU_BYTES)
        self.lu = LogicalUnit(LogicalUnitConfig(name="disk0", backend=self.backend, block_size=BLOCK))
        self.target = target or ScsiTarget("lio:disk0", {0: self.lu})
        self.ring = r.CommandRing(self.kernel.mv)
        self.deferred: list = []
        self.processor = CommandProcessor(self.ring, self.target, lu_nexus("disk0"),
                                          defer=self._defer)

    def _defer(self, command, awaitable):
        handle = _Handle(command, awaitable)
        self.deferred.append(handle)
        return handle

    def step(self):
        notify = self.processor.process()
        return notify, self.kernel.collect_completions()

    def run(self, cdb: bytes, data_out: bytes | None = None, data_in_length: int = 0):
        cmd_id = self.kernel.queue_command(cdb, data_out=data_out, data_in_length=data_in_length)
        notify, done = self.step()
        assert notify
        (completion,) = [c for c in done if c.cmd_id == cmd_id]
        return completion

    def clear_power_on_attention(self):
        completion = self.run(TUR)
        assert completion.status == CHECK and sense_key_asc(completion.sense) == (6, 0x29, 0x00)

    def close(self):
        self.kernel.close()


class _Handle:
    def __init__(self, command, awaitable):
        self.command = command
        self.awaitable = awaitable
        self.cancelled = False

    def cancel(self):
        self.cancelled = True
        self.awaitable.close()


@pytest.fixture
def rig():
    rig = Rig()
    rig.clear_power_on_attention()
    yield rig
    rig.close()


def test_first_command_reports_power_on_unit_attention_with_sense_through_the_ring():
    rig = Rig()
    try:
        completion = rig.run(TUR)
        assert completion.status == CHECK
        assert sense_key_asc(completion.sense) == (6, 0x29, 0x00)
        assert rig.run(TUR).status == GOOD
    finally:
        rig.close()


def test_write_then_read_round_trips_through_the_data_area(rig):
    data = bytes(range(256)) * 32                     # 8 KiB = 16 blocks
    assert rig.run(write10(100, 16), data_out=data).status == GOOD
    assert rig.backend._data[100 * BLOCK:100 * BLOCK + len(data)] == data
    completion = rig.run(read10(100, 16), data_in_length=len(data))
    assert completion.status == GOOD and completion.data_in == data
    assert completion.read_len is None                # full length: no READ_LEN needed


def test_scattered_iovecs_for_write_and_read(rig):
    rig.kernel.free_blocks = [0, 2, 4, 6, 8, 10]
    data = bytes([7]) * (3 * BLOCK_SIZE)
    assert rig.run(write10(8, 3 * BLOCK_SIZE // BLOCK), data_out=data).status == GOOD
    assert rig.backend._data[8 * BLOCK:8 * BLOCK + len(data)] == data
    rig.kernel.free_blocks = [1, 3, 5, 7, 9, 11]
    completion = rig.run(read10(8, 3 * BLOCK_SIZE // BLOCK), data_in_length=len(data))
    assert completion.data_in == data


def test_short_data_in_uses_read_len_and_leaks_no_stale_bytes(rig):
    rig.run(write10(0, 16), data_out=bytes([0xEE]) * 8192)   # leaves blocks non-zero
    completion = rig.run(inquiry(255), data_in_length=255)
    assert completion.status == GOOD
    assert completion.read_len == len(completion.data_in) < 255
    assert completion.data_in[8:14] == b"ODXTGT"


def test_without_read_len_the_rest_of_the_buffer_is_zeroed():
    rig = Rig(flags=r.FLAG_CAP_OOOC | r.FLAG_CAP_TMR)
    try:
        rig.clear_power_on_attention()
        rig.run(write10(0, 8), data_out=bytes([0xEE]) * BLOCK_SIZE)     # dirty a block
        completion = rig.run(inquiry(255), data_in_length=255)
        assert completion.read_len is None and len(completion.data_in) == 255
        inquiry_length = completion.data_in[4] + 5
        assert STALE_BYTE not in completion.data_in[inquiry_length:]
        assert completion.data_in[inquiry_length:] == bytes(255 - inquiry_length)
    finally:
        rig.close()


def test_check_condition_for_an_invalid_cdb_field(rig):
    completion = rig.run(read10(LU_BYTES // BLOCK, 1), data_in_length=BLOCK)
    assert completion.status == CHECK
    assert sense_key_asc(completion.sense) == (5, 0x21, 0x00)    # LBA OUT OF RANGE


def test_a_transfer_of_the_whole_lu_in_one_command():
    rig = Rig(cmdr_size=256 * 1024, data_blocks=8192)
    try:
        rig.clear_power_on_attention()
        blocks = (LU_BYTES // BLOCK)
        completion = rig.run(struct.pack(">BBIIBB", 0xA8, 0, 0, blocks, 0, 0),
                             data_in_length=blocks * BLOCK)   # READ(12) of the whole 4 MiB LU
        assert completion.status == GOOD and completion.data_in == bytes(blocks * BLOCK)
    finally:
        rig.close()


def test_many_in_flight_in_one_batch_with_wraps():
    rig = Rig(cmdr_size=8 * 1024, data_blocks=64)
    try:
        rig.clear_power_on_attention()
        expected = {}
        for round_number in range(20):
            ids = []
            for n in range(8):
                lba = (round_number * 8 + n) * 8
                data = struct.pack(">I", lba) * (BLOCK_SIZE // 4)
                expected[lba] = data
                ids.append(rig.kernel.queue_command(write10(lba, 8), data_out=data))
            notify, done = rig.step()
            assert notify and sorted(c.cmd_id for c in done) == sorted(ids)
            assert all(c.status == GOOD for c in done)
        for lba, data in expected.items():
            assert rig.run(read10(lba, 8), data_in_length=BLOCK_SIZE).data_in == data
        assert rig.kernel.pads > 0 and not rig.kernel.broken
    finally:
        rig.close()


class SlowCopyTarget:
    """Wraps a ScsiTarget; SYNCHRONIZE CACHE(10) stands in for a long copy: it is deferred."""

    SLOW_OPCODE = 0x35

    def __init__(self, target):
        self.inner = target

    def execute(self, command):
        if command.cdb[0] == self.SLOW_OPCODE:
            async def later():
                return ScsiResult(Status.GOOD)
            return later()
        return self.inner.execute(command)

    def data_out_length(self, cdb, lun=0):
        return self.inner.data_out_length(cdb, lun)

    def task_management(self, function, nexus, lun=None, **options):
        return self.inner.task_management(function, nexus, lun, **options)


def _slow_rig() -> Rig:
    kernel_rig = Rig()
    kernel_rig.target = SlowCopyTarget(kernel_rig.target)
    kernel_rig.processor.target = kernel_rig.target
    kernel_rig.clear_power_on_attention()
    return kernel_rig


def test_a_long_command_does_not_hold_up_reads_behind_it():
    rig = _slow_rig()
    try:
        slow = rig.kernel.queue_command(bytes([0x35] + [0] * 9))
        reads = [rig.kernel.queue_command(read10(n, 1), data_in_length=BLOCK) for n in range(5)]
        notify, done = rig.step()
        assert notify and [c.cmd_id for c in done] == reads     # out of order, in the slow slot
        assert rig.processor.deferred_ids == [slow] and slow in rig.kernel.outstanding
        (handle,) = rig.deferred
        handle.awaitable.close()
        assert rig.processor.finish_deferred(handle.command, ScsiResult(Status.GOOD))
        (completion,) = rig.kernel.collect_completions()
        assert (completion.cmd_id, completion.status) == (slow, GOOD)
        assert not rig.kernel.outstanding and rig.ring.idle()
    finally:
        rig.close()


def test_tmr_abort_completes_the_deferred_command_once():
    rig = _slow_rig()
    try:
        slow = rig.kernel.queue_command(bytes([0x35] + [0] * 9))
        rig.step()
        rig.kernel.queue_tmr(r.TmrType.ABORT_TASK, [slow])
        notify, done = rig.step()
        assert notify and [(c.cmd_id, c.status) for c in done] == [(slow, TASK_ABORTED)]
        (handle,) = rig.deferred
        assert handle.cancelled
        # the copy finishing late must not complete the id a second time (ring would break)
        assert not rig.processor.finish_deferred(handle.command, ScsiResult(Status.GOOD))
        assert rig.run(TUR).status == GOOD and not rig.kernel.broken
    finally:
        rig.close()


PREVENT_REMOVAL = bytes((0x1E, 0, 0, 0, 1, 0))
EJECT = bytes((0x1B, 0, 0, 0, 0x02, 0))


def test_tmr_lun_reset_reaches_core_state_without_a_unit_attention_of_ours():
    """LUN RESET clears the PREVENT state; the unit attention is LIO's to report (to the
    nexuses it knows): ours would reach whichever initiator sends the next command."""
    rig = Rig()
    try:
        rig.lu = LogicalUnit(LogicalUnitConfig(name="disk0", backend=rig.backend, block_size=BLOCK,
                                               removable=True))
        rig.target = rig.processor.target = ScsiTarget("lio:disk0", {0: rig.lu})
        rig.clear_power_on_attention()
        assert rig.run(PREVENT_REMOVAL).status == GOOD
        refused = rig.run(EJECT)
        assert refused.status == CHECK and sense_key_asc(refused.sense) == (5, 0x53, 0x02)
        rig.kernel.queue_tmr(r.TmrType.LUN_RESET, [])
        rig.step()
        assert rig.run(EJECT).status == GOOD                  # no unit attention, no prevention
        gone = rig.run(TUR)
        assert gone.status == CHECK and sense_key_asc(gone.sense) == (2, 0x3A, 0x00)
    finally:
        rig.close()


def test_tmr_abort_of_commands_already_completed_is_ignored(rig):
    cmd_id = rig.kernel.queue_command(TUR)
    rig.step()
    rig.kernel.queue_tmr(r.TmrType.ABORT_TASK_SET, [cmd_id])
    notify, done = rig.step()
    assert done == [] and not rig.kernel.broken and rig.ring.idle()


def test_unsupported_opcode_answers_illegal_request(rig):
    completion = rig.run(bytes([0xD9] + [0] * 9))
    assert completion.status == CHECK and sense_key_asc(completion.sense) == (5, 0x20, 0x00)


def test_the_synthetic_nexus_is_marked_shared_and_stable():
    """Every initiator behind LIO arrives on this one nexus: the copy manager must know it is
    shared (ODX list ids cannot be told apart by host), and it must survive a restart."""
    nexus = lu_nexus("disk0")
    assert nexus.shared
    assert nexus == lu_nexus("disk0") and nexus != lu_nexus("disk1")
