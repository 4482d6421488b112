"""READ CAPACITY, WRITE SAME, UNMAP, GET LBA STATUS."""

import struct

import pytest

from tests.unit.scsi.helpers import (GOOD, Harness, get_lba_status, read_capacity10, read_capacity16, ready,
                                     unmap_cdb, unmap_params, write_same10, write_same16)


@pytest.mark.parametrize("block_size", [512, 4096])
def test_read_capacity(block_size):
    h = ready(blocks=1000, block_size=block_size)
    assert struct.unpack(">II", bytes(h.good(read_capacity10()).data_in)) == (999, block_size)
    data = bytes(h.good(read_capacity16()).data_in)
    assert struct.unpack(">QI", data[:12]) == (999, block_size)
    assert data[12] == 0 and data[13] == 0          # no protection, LBPPBE 0
    assert data[14] & 0xC0 == 0xC0                  # LBPME, LBPRZ
    for alloc in range(16):
        assert len(h.good(read_capacity16(alloc)).data_in) == alloc


def test_capacity_changed_unit_attention_and_new_size():
    h = ready(blocks=100)
    h.backend.resize(200 * 512)
    h.lu.capacity_changed()
    sense = h.check(read_capacity10())
    assert (sense.key, sense.asc, sense.ascq) == (6, 0x2A, 0x09)
    assert struct.unpack(">I", bytes(h.good(read_capacity10()).data_in)[:4])[0] == 199


@pytest.mark.parametrize("builder", [write_same10, write_same16])
def test_write_same_writes_pattern(builder):
    h = ready()
    block = bytes(range(256)) * 2
    h.good(builder(3, 5), block)
    assert h.read(3, 5) == block * 5 and h.read(8, 1) == bytes(512)


@pytest.mark.parametrize("builder", [write_same10, write_same16])
def test_write_same_unmap_deallocates_whatever_the_pattern(builder):
    h = ready()
    h.fill(0, b"\xff" * 512 * 16)
    h.good(builder(0, 16, unmap=True), b"\xff" * 512)
    assert h.read(0, 16) == bytes(512 * 16)
    runs = h.backend.allocation_status(0, 512 * 16)
    assert [run.mapped for run in runs] == [False]


@pytest.mark.parametrize("builder", [write_same10, write_same16])
def test_write_same_zero_blocks_runs_to_end(builder):
    h = ready(blocks=100)
    h.fill(90, b"\x11" * 512 * 10)
    h.good(builder(95, 0, unmap=True), bytes(512))
    assert h.read(90, 10) == b"\x11" * 512 * 5 + bytes(512 * 5)
    assert h.check(builder(101, 0), bytes(512)).asc == 0x21
    assert h.good(builder(100, 0), bytes(512)).status == GOOD
    big = Harness(blocks=h.lu.max_write_same_blocks + 10)
    big.login()
    sense = big.check(builder(0, 0), bytes(512))
    assert sense.asc == 0x24
    big.good(builder(10, 0, unmap=True), bytes(512))


def test_write_same_limits_anchor_protect_and_sizes():
    h = ready(blocks=70000)
    assert h.check(write_same16(0, h.lu.max_write_same_blocks + 1, unmap=True), bytes(512)).asc == 0x24
    for builder in (write_same10, write_same16):
        assert h.check(builder(0, 1, anchor=True), bytes(512)).field_pointer == (True, 1, 4)
        assert h.check(builder(0, 1, unmap=True, anchor=True), bytes(512)).asc == 0x24
        for protect in range(1, 8):
            assert h.check(builder(0, 1, byte1=protect << 5), bytes(512)).asc == 0x24
        assert h.check(builder(0, 1), bytes(256)).key == 5                          # short data-out
        assert h.check(builder(0, 1), bytes(1024), expected_transfer_length=1024).key == 5  # too long
        assert h.check(builder(h.blocks, 1), bytes(512)).asc == 0x21
        assert h.check(builder(0xFFFFFFFF, 1), bytes(512)).asc == 0x21


def test_write_same16_ndob_needs_no_data():
    h = ready()
    h.fill(0, b"x" * 512)
    h.good(write_same16(0, 1, ndob=True))
    assert h.read(0, 1) == bytes(512)
    h.good(write_same16(0, 1, unmap=True, ndob=True))


def test_unmap_simple_and_multiple_descriptors():
    h = ready()
    h.fill(0, b"a" * 512 * 64)
    params = unmap_params([(0, 8), (16, 8), (40, 0)])
    h.good(unmap_cdb(len(params)), params)
    data = h.read(0, 64)
    assert data[:4096] == bytes(4096) and data[8192:12288] == bytes(4096) and data[4096:8192] == b"a" * 4096
    mapped = [(run.offset, run.length, run.mapped) for run in h.backend.allocation_status(0, 64 * 512)]
    assert mapped[0] == (0, 4096, False)


def test_unmap_zero_blocks_and_empty_lists():
    h = ready(blocks=100)
    h.good(unmap_cdb(0))
    empty = unmap_params([])
    h.good(unmap_cdb(len(empty)), empty)
    end = unmap_params([(100, 0)])
    h.good(unmap_cdb(len(end)), end)


def test_unmap_parameter_errors():
    h = ready(blocks=100)
    assert h.check(unmap_cdb(7), bytes(7)).asc == 0x1A
    oob = unmap_params([(99, 2)])
    assert h.check(unmap_cdb(len(oob)), oob).asc == 0x21
    too_long = bytearray(unmap_params([(0, 1)]))
    too_long[2:4] = struct.pack(">H", 32)                 # descriptors beyond the list
    assert h.check(unmap_cdb(len(too_long)), bytes(too_long)).asc == 0x1A
    many = unmap_params([(i, 0) for i in range(h.lu.max_unmap_descriptors + 1)])
    sense = h.check(unmap_cdb(len(many)), many)
    assert sense.asc == 0x26 and sense.field_pointer == (False, 2, None)
    big = Harness(blocks=h.lu.max_unmap_blocks + 16)
    big.login()
    over = unmap_params([(0, big.lu.max_unmap_blocks + 1)])
    assert big.check(unmap_cdb(len(over)), over).field_pointer == (False, 16, None)
    anchor = unmap_params([(0, 1)])
    assert h.check(unmap_cdb(len(anchor), anchor=True), anchor).field_pointer == (True, 1, 0)
    h.fill(0, b"z" * 512)
    partial = unmap_params([(0, 1)])
    assert h.check(unmap_cdb(len(partial)), partial[:12]).asc == 0x0E     # short data-out
    assert h.read(0, 1) == b"z" * 512                                        # nothing unmapped


def _descriptors(data: bytes):
    count = (min(struct.unpack(">I", data[:4])[0] + 4, len(data)) - 8) // 16
    return [struct.unpack(">QIB", data[8 + 16 * i:8 + 16 * i + 13]) for i in range(count)]


def test_get_lba_status_reports_mapped_and_deallocated_runs():
    h = ready(blocks=256)
    h.fill(8, b"q" * 512 * 8)
    data = bytes(h.good(get_lba_status(0, 1024)).data_in)
    assert _descriptors(data) == [(0, 8, 1), (8, 8, 0), (16, 240, 1)]
    first = _descriptors(bytes(h.good(get_lba_status(9, 24)).data_in))
    assert first[0] == (9, 7, 0)
    assert len(h.good(get_lba_status(0, 24)).data_in) == 24


def test_get_lba_status_unmap_single_expectations():
    # libiscsi GetLBAStatus.UnmapSingle with LBPPB 1
    h = ready(blocks=512)
    h.fill(0, b"A" * 512 * 257)
    for lba in range(0, 32):
        params = unmap_params([(lba, 1)])
        h.good(unmap_cdb(len(params)), params)
        first = _descriptors(bytes(h.good(get_lba_status(lba + 1, 24)).data_in))[0]
        assert first[0] == lba + 1 and first[2] == 0


def test_get_lba_status_range():
    h = ready(blocks=100)
    for lba in (100, 101, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF):
        assert h.check(get_lba_status(lba)).asc == 0x21
    h.good(get_lba_status(99))
