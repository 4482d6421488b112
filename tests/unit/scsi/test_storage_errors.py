"""Storage errors become honest sense (docs/errors.md): ENOSPC/EDQUOT -> 07h/27h/07h, failed reads
-> 03h/11h/00h, failed writes -> 03h/0Ch/00h, each with the LBA and one log line; a failed flush
puts the LU in the write-back failed state, which no later success clears."""

from __future__ import annotations

import errno
import logging

import pytest

from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.sense import SenseData
from odxtarget.scsi.target import ScsiTarget
from odxtarget.storage.backend import WriteBackError
from odxtarget.storage.memory import MemoryBackend
from tests.unit.scsi.helpers import (GOOD, NEXUS_A, TARGET_NAME, Harness, compare_and_write, get_lba_status,
                                     mode_select6, mode_sense6, orwrite16, read10, read16, sync_cache10,
                                     sync_cache16, unmap_cdb, unmap_params, verify10, write10, write16,
                                     write_same10, write_same16, write_verify16)

BLOCK = 512
SPACE_ALLOCATION_FAILED = (0x7, 0x27, 0x07)
UNRECOVERED_READ_ERROR = (0x3, 0x11, 0x00)
WRITE_ERROR = (0x3, 0x0C, 0x00)
FUA = 0x08


class FaultyBackend(MemoryBackend):
    """A MemoryBackend whose next calls raise the errors a test arms, then behave again."""

    def __init__(self, size: int):
        super().__init__(size)
        self.read_failures: list[OSError] = []
        self.write_failures: list[OSError] = []
        self.flush_failures: list[OSError] = []
        self.deallocate_failures: list[OSError] = []

    def read_into(self, offset, buf):
        if self.read_failures:
            raise self.read_failures.pop(0)
        super().read_into(offset, buf)

    def write(self, offset, data, fua=False):
        if self.write_failures:
            raise self.write_failures.pop(0)
        super().write(offset, data, fua)

    def flush(self, offset=0, length=None):
        if self.flush_failures:
            raise self.flush_failures.pop(0)
        super().flush(offset, length)

    def deallocate(self, offset, length):
        if self.deallocate_failures:
            raise self.deallocate_failures.pop(0)
        super().deallocate(offset, length)

    def allocation_status(self, offset, length):
        if self.read_failures:
            raise self.read_failures.pop(0)
        return super().allocation_status(offset, length)


class FaultyHarness(Harness):
    def __init__(self, blocks: int = 2048, write_cache: bool = True):
        self.backend = FaultyBackend(blocks * BLOCK)
        self.lu = LogicalUnit(LogicalUnitConfig(name="faulty", backend=self.backend, write_cache=write_cache))
        self.target = ScsiTarget(TARGET_NAME, {0: self.lu})
        self.block_size = BLOCK
        self.blocks = blocks


@pytest.fixture
def h() -> FaultyHarness:
    harness = FaultyHarness()
    harness.login()
    return harness


def triplet(sense) -> tuple[int, int, int]:
    return sense.key, sense.asc, sense.ascq


def oserror(code: int) -> OSError:
    return OSError(code, f"{errno.errorcode[code]} for the test", "/srv/test.img")


# Each write command, its CDB and data-out for LBA 40 (1 block), and the backend call it makes.
WRITES = {
    "WRITE(10)": (lambda: write10(40, 1), bytes(BLOCK), "write"),
    "WRITE(16) FUA": (lambda: write16(40, 1, FUA), bytes(BLOCK), "write"),
    "WRITE AND VERIFY(16)": (lambda: write_verify16(40, 1), bytes(BLOCK), "write"),
    "WRITE SAME(10)": (lambda: write_same10(40, 4), b"\xaa" * BLOCK, "write"),
    "WRITE SAME(16) UNMAP": (lambda: write_same16(40, 4, unmap=True), bytes(BLOCK), "deallocate"),
    "UNMAP": (lambda: unmap_cdb(24), unmap_params([(40, 8)]), "deallocate"),
    "COMPARE AND WRITE": (lambda: compare_and_write(40, 1), bytes(BLOCK) + b"\x55" * BLOCK, "write"),
    "ORWRITE(16)": (lambda: orwrite16(40, 1), b"\x01" * BLOCK, "write"),
}


def arm(backend: FaultyBackend, call: str, error: OSError) -> None:
    (backend.write_failures if call == "write" else backend.deallocate_failures).append(error)


@pytest.mark.parametrize("command", list(WRITES))
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_out_of_space_is_space_allocation_failed_write_protect(h, caplog, command, code):
    cdb, data, call = WRITES[command]
    arm(h.backend, call, oserror(code))
    with caplog.at_level(logging.ERROR, logger="odxtarget.scsi.lu"):
        sense = h.check(cdb(), data)
    assert triplet(sense) == SPACE_ALLOCATION_FAILED
    assert sense.information == 40
    lines = [r for r in caplog.records if r.name == "odxtarget.scsi.lu"]
    assert len(lines) == 1 and "faulty" in lines[0].getMessage() and "LBA 40" in lines[0].getMessage()
    assert "out of space" in lines[0].getMessage()
    assert h.lu.write_back_failure is None                    # not durability: the next flush is fine
    h.good(sync_cache10())


@pytest.mark.parametrize("command", list(WRITES))
@pytest.mark.parametrize("code", [errno.EIO, errno.EROFS, errno.EFBIG])
def test_other_write_errors_are_medium_error_write_error(h, caplog, command, code):
    cdb, data, call = WRITES[command]
    arm(h.backend, call, oserror(code))
    with caplog.at_level(logging.ERROR, logger="odxtarget.scsi.lu"):
        sense = h.check(cdb(), data)
    assert triplet(sense) == WRITE_ERROR and sense.information == 40
    assert len([r for r in caplog.records if r.name == "odxtarget.scsi.lu"]) == 1
    assert h.lu.write_back_failure is None


def test_write_same_names_the_first_lba_of_the_piece_that_failed():
    h = FaultyHarness(blocks=4096)
    h.login()
    chunk_blocks = 1024 * 1024 // BLOCK
    real_write = h.backend.write
    calls = []

    def second_piece_fails(offset, data, fua=False):
        calls.append(offset)
        if len(calls) == 2:
            raise oserror(errno.ENOSPC)
        real_write(offset, data, fua)

    h.backend.write = second_piece_fails
    sense = h.check(write_same16(10, chunk_blocks + 5), b"\xaa" * BLOCK)
    assert triplet(sense) == SPACE_ALLOCATION_FAILED and sense.information == 10 + chunk_blocks
    assert calls == [10 * BLOCK, (10 + chunk_blocks) * BLOCK]


@pytest.mark.parametrize("name, cdb, data", [
    ("READ(10)", read10(77, 2), b""),
    ("READ(16)", read16(77, 2), b""),
    ("VERIFY(10)", verify10(77, 1), bytes(BLOCK)),
    ("COMPARE AND WRITE", compare_and_write(77, 1), bytes(2 * BLOCK)),
    ("GET LBA STATUS", get_lba_status(77), b""),
])
def test_read_errors_are_unrecovered_read_error(h, caplog, name, cdb, data):
    h.backend.read_failures.append(oserror(errno.EIO))
    with caplog.at_level(logging.ERROR, logger="odxtarget.scsi.lu"):
        sense = h.check(cdb, data)
    assert triplet(sense) == UNRECOVERED_READ_ERROR and sense.information == 77
    lines = [r.getMessage() for r in caplog.records if r.name == "odxtarget.scsi.lu"]
    assert len(lines) == 1 and "read at LBA 77 failed" in lines[0]
    assert h.backend.read_failures == []
    h.good(read10(77, 1))                                     # the next read works


def test_descriptor_sense_carries_the_lba_when_d_sense_is_set(h):
    control = bytearray(bytes(h.good(mode_sense6(page=0x0A, dbd=1)).data_in)[4:])
    control[2] |= 0x04                                        # D_SENSE
    h.good(mode_select6(4 + len(control)), bytes(4) + bytes(control))
    h.backend.write_failures.append(oserror(errno.ENOSPC))
    sense = h.check(write16(1234, 1), bytes(BLOCK))
    assert sense.descriptor and triplet(sense) == SPACE_ALLOCATION_FAILED and sense.information == 1234


def test_an_lba_beyond_32_bits_is_left_out_of_fixed_sense_but_not_descriptor_sense():
    lba = 1 << 40
    fixed = SenseData(0x7, 0x27, 0x07, information=lba).fixed()
    assert not fixed[0] & 0x80 and fixed[3:7] == bytes(4)    # VALID=0, not a truncated LBA
    assert SenseData.parse(SenseData(0x7, 0x27, 0x07, information=lba).descriptor()).information == lba
    assert SenseData.parse(SenseData(0x7, 0x27, 0x07, information=0xFFFFFFFF).fixed()).information == 0xFFFFFFFF


# -- write-back failed ---------------------------------------------------------------------------

def test_a_failed_flush_is_sticky_for_flushes_and_durable_writes_only(h, caplog):
    h.fill(0, b"d" * BLOCK)
    h.backend.flush_failures.append(oserror(errno.EIO))
    with caplog.at_level(logging.ERROR, logger="odxtarget.scsi.lu"):
        sense = h.check(sync_cache10(5, 1))
    assert triplet(sense) == WRITE_ERROR and sense.information is None   # which blocks: unknown
    assert h.backend.flush_failures == [] and h.backend.flushes == 0
    # The storage would now sync fine: the LU still never says GOOD over what may be lost.
    for _ in range(2):
        assert triplet(h.check(sync_cache10())) == WRITE_ERROR
        assert triplet(h.check(sync_cache16())) == WRITE_ERROR
    assert h.backend.flushes == 0
    fua = h.check(write10(8, 1, FUA), b"f" * BLOCK)
    assert triplet(fua) == WRITE_ERROR and fua.information == 8
    assert triplet(h.check(write_verify16(9, 1), b"v" * BLOCK)) == WRITE_ERROR
    assert triplet(h.check(compare_and_write(0, 1, FUA), b"d" * BLOCK + b"c" * BLOCK)) == WRITE_ERROR
    assert triplet(h.check(orwrite16(0, 1, FUA), bytes(BLOCK))) == WRITE_ERROR
    assert h.backend.fua_writes == 0 and h.read(8, 2) == bytes(2 * BLOCK)   # refused, not written
    # Reads, cached writes and deallocation keep working.
    h.good(write10(20, 1), b"w" * BLOCK)
    assert h.read(20, 1) == b"w" * BLOCK and h.read(0, 1) == b"d" * BLOCK
    h.good(unmap_cdb(24), unmap_params([(20, 1)]))
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "WRITE-BACK FAILED" in critical[0].getMessage()
    assert "faulty" in critical[0].getMessage()
    failure = h.lu.write_back_failure
    assert failure is not None and "EIO for the test" in failure.error
    # The administrator's way out (after reopening the storage): durability works again.
    assert h.lu.clear_write_back_failure() == failure
    h.good(sync_cache10())
    h.good(write10(8, 1, FUA), b"f" * BLOCK)
    assert h.backend.flushes == 1 and h.backend.fua_writes == 1 and h.read(8, 1) == b"f" * BLOCK


def test_with_the_write_cache_off_every_write_is_refused_after_a_failed_flush():
    h = FaultyHarness(write_cache=False)
    h.login()
    h.backend.flush_failures.append(oserror(errno.EIO))
    assert triplet(h.check(sync_cache10())) == WRITE_ERROR
    assert triplet(h.check(write10(3, 1), bytes(BLOCK))) == WRITE_ERROR
    assert triplet(h.check(write_same10(3, 2), bytes(BLOCK))) == WRITE_ERROR
    h.good(read10(3, 1))
    h.good(write_same16(3, 2, unmap=True), bytes(BLOCK))


def test_a_durable_write_whose_sync_failed_enters_the_state(h):
    h.backend.write_failures.append(WriteBackError(errno.EIO, "cannot sync", "/srv/test.img"))
    sense = h.check(write16(30, 1, FUA), bytes(BLOCK))
    assert triplet(sense) == WRITE_ERROR and sense.information == 30
    assert h.lu.write_back_failure is not None
    assert triplet(h.check(sync_cache10())) == WRITE_ERROR and h.backend.flushes == 0


def test_the_copy_manager_reports_a_failed_sync_through_write_error(h):
    """``lu.write_error`` is the helper other layers use: a WriteBackError enters the state."""
    error = h.lu.write_error(None, WriteBackError(errno.EIO, "cannot sync", "/srv/test.img"))
    assert (error.sense.key, error.sense.asc, error.sense.ascq) == WRITE_ERROR
    assert triplet(h.check(sync_cache10())) == WRITE_ERROR
    space = h.lu.write_error(12, oserror(errno.ENOSPC))
    assert (space.sense.key, space.sense.asc, space.sense.ascq, space.sense.information) == (0x7, 0x27, 0x07, 12)


def test_plain_write_and_read_errors_do_not_enter_the_state(h):
    h.backend.write_failures.append(oserror(errno.EIO))
    h.check(write10(0, 1), bytes(BLOCK))
    h.backend.read_failures.append(oserror(errno.EIO))
    h.check(read10(0, 1))
    assert h.lu.write_back_failure is None
    h.good(sync_cache10())
    assert h.run(write10(0, 1, FUA), bytes(BLOCK), nexus=NEXUS_A).status == GOOD
