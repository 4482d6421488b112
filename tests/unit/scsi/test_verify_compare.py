"""VERIFY, WRITE AND VERIFY, COMPARE AND WRITE, ORWRITE."""

import pytest

from tests.unit.scsi.helpers import (GOOD, compare_and_write, orwrite16, pattern, ready, verify10,
                                     verify12, verify16, write_verify10, write_verify12, write_verify16, rsoc)

VERIFY = {10: verify10, 12: verify12, 16: verify16}
WRITE_VERIFY = {10: write_verify10, 12: write_verify12, 16: write_verify16}


@pytest.mark.parametrize("size", [10, 12, 16])
def test_verify_match_and_miscompare_offset(size):
    h = ready()
    data = pattern(4, 512, seed=3)
    h.fill(10, data)
    assert h.good(VERIFY[size](10, 4), data).transfer_length == len(data)
    for offset in (0, 511, 1000, 2047):
        bad = bytearray(data)
        bad[offset] ^= ord("X")
        sense = h.check(VERIFY[size](10, 4), bytes(bad))
        assert (sense.key, sense.asc, sense.ascq, sense.information) == (0x0E, 0x1D, 0, offset)


@pytest.mark.parametrize("size", [10, 12, 16])
def test_verify_bytchk_zero_does_not_compare(size):
    h = ready()
    h.good(VERIFY[size](0, 4, bytchk=0), b"junk" * 512)
    h.good(VERIFY[size](0, 4, bytchk=0, byte1=0x10))         # DPO


def test_verify_bytchk_11_compares_every_block_with_one():
    h = ready()
    block = pattern(1, 512, seed=9)
    h.fill(0, block * 3)
    h.good(verify16(0, 3, bytchk=3), block)
    h.fill(2, bytes(512))
    sense = h.check(verify16(0, 3, bytchk=3), block)
    assert (sense.key, sense.information) == (0x0E, 1024)


def test_verify_bytchk_10_reserved_and_vrprotect_rejected():
    h = ready()
    assert h.check(verify10(0, 1, bytchk=2), bytes(512)).field_pointer == (True, 1, 2)
    for protect in range(1, 8):
        assert h.check(verify10(0, 1, byte1=protect << 5), bytes(512)).asc == 0x24


@pytest.mark.parametrize("size", [10, 12, 16])
def test_verify_range(size):
    h = ready(blocks=100)
    assert h.check(VERIFY[size](101, 0)).asc == 0x21
    assert h.check(VERIFY[size](99, 2), bytes(1024)).asc == 0x21


def test_verify_dpo_in_usage_data():
    h = ready()
    for opcode in (0x2F, 0xAF, 0x8F, 0x2E, 0xAE, 0x8E):
        usage = bytes(h.good(rsoc(1, opcode)).data_in)[4:]
        assert usage[1] & 0x10 and usage[1] & 0x06 == 0x06


@pytest.mark.parametrize("size", [10, 12, 16])
def test_write_and_verify(size):
    h = ready()
    data = pattern(2, 512, seed=size)
    h.good(WRITE_VERIFY[size](3, 2, bytchk=1), data)
    assert h.read(3, 2) == data
    h.good(WRITE_VERIFY[size](3, 2, bytchk=0, byte1=0x10), bytes(1024))
    assert h.read(3, 2) == bytes(1024)
    assert h.check(WRITE_VERIFY[size](0, 1, bytchk=3), bytes(512)).asc == 0x24
    assert h.check(WRITE_VERIFY[size](h.blocks, 1), bytes(512)).asc == 0x21
    assert h.good(WRITE_VERIFY[size](0, 0)).status == GOOD


def test_compare_and_write_success_and_miscompare():
    h = ready()
    h.fill(7, b"A" * 1024)
    h.good(compare_and_write(7, 2), b"A" * 1024 + b"B" * 1024)
    assert h.read(7, 2) == b"B" * 1024
    compare = bytearray(b"B" * 1024)
    compare[1024 - 27] = ord("C")
    sense = h.check(compare_and_write(7, 2), bytes(compare) + b"D" * 1024)
    assert (sense.key, sense.asc, sense.ascq, sense.information) == (0x0E, 0x1D, 0, 1024 - 27)
    assert h.read(7, 2) == b"B" * 1024                      # nothing written on miscompare


def test_compare_and_write_limits_and_sizes():
    h = ready()
    assert h.check(compare_and_write(0, 256 & 0xFF), bytes(512 * 512),
                   expected_transfer_length=512 * 512).asc == 0x24      # NLB 0 with data: libiscsi i=256
    h.good(compare_and_write(0, 0))
    assert h.check(compare_and_write(h.blocks - 1, 2), bytes(2048)).asc == 0x21
    h.fill(0, bytes(512))
    sense = h.check(compare_and_write(0, 1), bytes(2048), expected_transfer_length=2048)   # TL=1, data for 2
    assert (sense.key, sense.asc) == (5, 0x24)
    assert h.check(compare_and_write(0, 3), bytes(2048)).asc == 0x0E                    # TL=3, short data
    for flags in (0x10, 0x08, 0x18):
        h.good(compare_and_write(0, 1, flags), bytes(1024))
    assert h.check(compare_and_write(0, 1, 0x20), bytes(1024)).field_pointer == (True, 1, 7)


def test_compare_and_write_unwritten_blocks_miscompare():
    h = ready()
    assert h.check(compare_and_write(5, 1), b"%" * 512 + b"B" * 512).key == 0x0E
    assert h.read(5, 1) == bytes(512)


def test_orwrite_ors_into_medium():
    h = ready()
    h.fill(0, bytes(1024))
    h.good(orwrite16(0, 2), b"\xa5" * 1024)
    h.good(orwrite16(0, 2), b"\x5a" * 1024)
    assert h.read(0, 2) == b"\xff" * 1024
    h.good(orwrite16(0, 0))
    assert h.check(orwrite16(h.blocks, 1), bytes(512)).asc == 0x21
    assert h.check(orwrite16(0x8000000000000000, 0)).asc == 0x21
    assert h.check(orwrite16(0, 1, 0x40), bytes(512)).asc == 0x24
    h.good(orwrite16(0, 1, 0x18), bytes(512))
