"""READ/WRITE 6/10/12/16: data, ranges, flags, data-out size rules, backend errors."""

import pytest

from odxtarget.storage.work import StorageCall

from odxtarget.scsi.execution import complete_inline
from odxtarget.scsi.types import ScsiCommand
from tests.unit.scsi.helpers import (CHECK, GOOD, NEXUS_A, pattern, read6, read10, read12, read16, ready,
                                     rsoc, write6, write10, write12, write16, mode_sense6)

READS = {6: read6, 10: read10, 12: read12, 16: read16}
WRITES = {6: write6, 10: write10, 12: write12, 16: write16}


@pytest.mark.parametrize("block_size", [512, 4096])
@pytest.mark.parametrize("size", [6, 10, 12, 16])
def test_write_then_read_back(size, block_size):
    h = ready(blocks=300, block_size=block_size)
    data = pattern(3, block_size, seed=size)
    result = h.good(WRITES[size](5, 3), data)
    assert result.transfer_length == len(data) and result.data_in in (b"", bytearray())
    back = h.good(READS[size](5, 3))
    assert bytes(back.data_in) == data and back.transfer_length == len(data)
    assert h.read(4, 1) == bytes(block_size) and h.read(8, 1) == bytes(block_size)


def test_read6_zero_length_means_256_blocks():
    h = ready(blocks=300)
    assert len(h.good(read6(0, 0)).data_in) == 256 * 512


@pytest.mark.parametrize("size", [10, 12, 16])
def test_zero_blocks_good_and_lba_checks(size):
    h = ready(blocks=100)
    assert h.good(READS[size](0, 0)).data_in in (b"", bytearray())
    assert h.good(READS[size](100, 0)).status == GOOD          # LBA == capacity with 0 blocks is fine
    for lba in (101, 0x80000000, 0xFFFFFFFF):
        sense = h.check(READS[size](lba, 0))
        assert (sense.key, sense.asc, sense.ascq) == (5, 0x21, 0)
        assert h.check(WRITES[size](lba, 0)).asc == 0x21


@pytest.mark.parametrize("size", [6, 10, 12, 16])
def test_beyond_end_of_lu(size):
    h = ready(blocks=100)
    for blocks in (1, 2, 50):
        assert h.check(READS[size](100 + 1 - blocks, blocks)).asc == 0x21
        assert h.check(WRITES[size](101 - blocks, blocks), bytes(512 * blocks)).asc == 0x21
    assert h.check(READS[size](99, 2)).asc == 0x21
    h.good(READS[size](99, 1))


def test_read16_lba_overflow_is_out_of_range():
    h = ready(blocks=100)
    assert h.check(read16(0xFFFFFFFFFFFFFFFF, 1)).asc == 0x21


@pytest.mark.parametrize("size", [10, 12, 16])
@pytest.mark.parametrize("protect", range(1, 8))
def test_rdprotect_wrprotect_rejected(size, protect):
    h = ready()
    sense = h.check(READS[size](0, 1, protect << 5))
    assert (sense.asc, sense.field_pointer) == (0x24, (True, 1, 7))
    assert h.check(WRITES[size](0, 1, protect << 5), bytes(512)).asc == 0x24


@pytest.mark.parametrize("size", [10, 12, 16])
def test_dpo_fua_accepted_and_advertised(size):
    h = ready()
    assert h.good(mode_sense6()).data_in[2] & 0x10          # DPOFUA
    for flags in (0x10, 0x08, 0x18, 0x02, 0x1A):
        h.good(READS[size](0, 1, flags))
        h.good(WRITES[size](0, 1, flags), bytes(512))
    for builder in (READS[size], WRITES[size]):
        opcode = builder(0, 1)[0]
        usage = bytes(h.good(rsoc(1, opcode)).data_in)[4:]
        assert usage[0] == opcode and usage[1] & 0x18 == 0x18


def test_fua_reaches_backend_and_wce_off_forces_it():
    h = ready()
    h.good(write10(0, 1, 0x08), bytes(512))
    assert h.backend.fua_writes == 1
    h.good(write10(0, 1), bytes(512))
    assert h.backend.fua_writes == 1
    off = ready(write_cache=False)
    off.good(write10(0, 1), bytes(512))
    assert off.backend.fua_writes == 1


def test_transfer_length_above_maximum_is_invalid_field():
    h = ready(blocks=70000)
    sense = h.check(read16(0, h.lu.max_transfer_blocks + 1))
    assert sense.asc == 0x24 and sense.field_pointer == (True, 10, None)


def test_data_out_missing_is_good_and_writes_nothing():
    h = ready()
    h.fill(0, b"x" * 512)
    result = h.run(write10(0, 1), b"")
    assert result.status == GOOD and result.transfer_length == 512
    assert h.read(0, 1) == b"x" * 512


def test_data_out_short_partial_block_is_0e03():
    h = ready()
    sense = h.check(write10(0, 1), b"y" * 200)
    assert (sense.key, sense.asc, sense.ascq) == (5, 0x0E, 0x03)


def test_data_out_short_whole_blocks_writes_those_blocks():
    # libiscsi iSCSIResiduals.Write10Residuals: EDTL one block, CDB two blocks
    h = ready()
    h.fill(0, b"a" * 1024)
    result = h.run(write10(0, 2), b"b" * 512)
    assert result.status == GOOD and result.transfer_length == 1024
    assert h.read(0, 2) == b"b" * 512 + b"a" * 512


def test_data_out_longer_uses_what_cdb_requires():
    h = ready()
    h.fill(0, b"a" * 1024)
    h.good(write10(0, 1), b"b" * 1024)
    assert h.read(0, 2) == b"b" * 512 + b"a" * 512


class FailingBackend:
    size = 512 * 64
    lane = "failing"
    can_deallocate = True

    def read_into(self, offset, buf):
        raise OSError(5, "EIO")

    def try_read_into(self, offset, buf):
        return False           # not cached: the read goes to a worker, which fails

    def read_work(self, offset, buf):
        return StorageCall(self.lane, self.read_into, (offset, buf))

    def write_work(self, offset, data, fua=False):
        return StorageCall(self.lane, self.write, (offset, data, fua))

    def write(self, offset, data, fua=False):
        raise OSError(5, "EIO")

    def compare_and_write(self, offset, expected, data, fua=False):
        raise OSError(5, "EIO")

    def flush(self, offset=0, length=None):
        raise OSError(5, "EIO")

    def deallocate(self, offset, length):
        raise OSError(5, "EIO")

    def allocation_status(self, offset, length):
        raise OSError(5, "EIO")

    def close(self):
        pass


def test_backend_errors_become_medium_errors():
    from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
    from odxtarget.scsi.target import ScsiTarget
    lu = LogicalUnit(LogicalUnitConfig("bad", FailingBackend()))
    target = ScsiTarget("t", {0: lu})
    target.execute(ScsiCommand(bytes(6), NEXUS_A))
    from tests.unit.scsi.helpers import parse_sense
    read = complete_inline(target.execute(ScsiCommand(read10(3, 1), NEXUS_A)))
    sense = parse_sense(read.sense)
    assert read.status == CHECK and (sense.key, sense.asc, sense.ascq, sense.information) == (3, 0x11, 0, 3)
    write = complete_inline(target.execute(ScsiCommand(write10(4, 1), NEXUS_A, 0, bytes(512))))
    assert (parse_sense(write.sense).key, parse_sense(write.sense).asc) == (3, 0x0C)
    sync = complete_inline(target.execute(ScsiCommand(bytes((0x35,)) + bytes(9), NEXUS_A)))
    assert parse_sense(sync.sense).key == 3


def test_unexpected_exception_is_internal_target_failure(caplog):
    h = ready()
    h.lu.backend.read_into = lambda offset, buf: 1 / 0
    sense = h.check(read10(0, 1))
    assert (sense.key, sense.asc, sense.ascq) == (4, 0x44, 0)
    assert "internal error" in caplog.text


def test_cdb_padded_to_16_bytes_is_accepted():
    h = ready()
    h.good(read10(0, 1) + bytes(6))
    h.good(write10(0, 1) + bytes(6), bytes(512))
