"""The block device zero ROD token (FFFF0001h, SBC-4 4.28.4): no POPULATE TOKEN, zeroes exactly
the destination ranges, on any LUN, and ignores OFFSET INTO ROD limits."""

from __future__ import annotations

import struct

import pytest

from tests.integration.odx.odx_support import GOOD, MIB, ROD_ZERO, OdxSession, check, pattern

pytestmark = [pytest.mark.integration]


def zero_token() -> bytes:
    return struct.pack(">I2xH", ROD_ZERO, 0x01F8) + bytes(504)


def test_zero_token_zeroes_only_its_ranges(session: OdxSession):
    for lun in (0, 1):
        data = session.fill(lun, 0, 4 * MIB, seed=50 + lun)
        ranges = [(1, 3), (2048, 4096), (7000, 1)]
        check(session.write_using(lun, zero_token(), ranges)[1], GOOD, f"zero token on LUN {lun}")
        expected = bytearray(data)
        for lba, blocks in ranges:
            expected[lba * 512:(lba + blocks) * 512] = bytes(blocks * 512)
        assert session.read(lun, 0, 4 * MIB) == bytes(expected)


def test_zero_token_result_in_rrti(session: OdxSession):
    session.fill(1, 0, MIB, seed=52)
    list_id, result = session.write_using(1, zero_token(), [(0, 2048)], offset_into_rod=12345)
    check(result, GOOD, "zero token, any offset")
    info = session.rrti_parsed(1, list_id)
    assert (info.status, info.transfer_count, info.token) == (0x01, 2048, None)
    assert session.read(1, 0, MIB) == bytes(MIB)
    session.write(1, 0, pattern(512, 53))
    assert session.read(1, 0, 512) == pattern(512, 53)     # the LU stays writable after punching
