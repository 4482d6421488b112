"""INQUIRY: the Third-party Copy VPD page 8Fh byte for byte (SPC-4 7.8.17, SBC-4 6.6.9.3),
3PC=1 in standard data and 8Fh in the Supported VPD Pages list, with the default limits and
with limits set in the config's "odx" section.

The expected page is put together here from the standard's field layout, not from the
target's encoder, so an encoder bug cannot hide behind itself.
"""

from __future__ import annotations

import struct

import pytest

from tests.integration.odx.odx_support import GOOD, MIB, OdxSession, check

pytestmark = [pytest.mark.integration]

VPD_THIRD_PARTY_COPY = 0x8F
TOKEN_IN, TOKEN_OUT = 0x02, 0x01


def descriptor(code: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack(">HH", code, len(body)) + body


def expected_page(block_size: int, *, ranges: int = 64, max_timeout: int = 600, default_timeout: int = 60,
                  mtts: int = 256 * MIB, otc: int = 64 * MIB) -> bytes:
    bdrl = bytes(6) + struct.pack(">HIIQQ", ranges, max_timeout, default_timeout, mtts // block_size,
                                  otc // block_size)
    commands = bytes((0x83, 4, 0x00, 0x10, 0x11, 0x1C, 0x84, 6, 0x00, 0x03, 0x04, 0x05, 0x07, 0x08))
    supported_commands = bytes((len(commands),)) + commands
    parameter_data = bytes(4) + struct.pack(">HHII", 64, 64, 8192, 0) + bytes(12)
    supported_descriptors = bytes((2, 0x02, 0xE4))
    cscd_ids = struct.pack(">HH", 2, 0xFFFF)
    block_features = (bytes((0x00, 0x00)) + struct.pack(">H", 0x2C) + bytes(2)
                      + struct.pack(">HQQQQ", 4096 // block_size, mtts, otc, mtts, otc) + bytes(8))
    token_features = (bytes(12) + struct.pack(">III", 1, max_timeout, max_timeout) + bytes(18)
                      + struct.pack(">H", 48) + block_features)
    rod_types = b"".join(struct.pack(">IB", rod_type, flags) + bytes(59) for rod_type, flags in (
        (0x0080_0000, TOKEN_IN | TOKEN_OUT), (0x0080_0001, TOKEN_IN | TOKEN_OUT), (0xFFFF_0001, TOKEN_IN)))
    general = struct.pack(">IIIBB", 64, 64, 64 * MIB, 9, 0) + bytes(18)
    body = b"".join((
        descriptor(0x0000, bdrl),
        descriptor(0x0001, supported_commands),
        descriptor(0x0004, parameter_data),
        descriptor(0x0008, supported_descriptors),
        descriptor(0x000C, cscd_ids),
        descriptor(0x0106, token_features),
        descriptor(0x0108, bytes(2) + struct.pack(">H", len(rod_types)) + rod_types),
        descriptor(0x8001, general),
    ))
    return struct.pack(">BBH", 0x00, VPD_THIRD_PARTY_COPY, len(body)) + body


def test_page_byte_for_byte_with_default_limits(session: OdxSession):
    expected = expected_page(512)
    assert len(expected) == 440
    result = check(session.session.inquiry(0, VPD_THIRD_PARTY_COPY, 1024), GOOD, "INQUIRY 8Fh")
    assert result.data == expected


def test_windows_reads_255_bytes_and_gets_the_page_prefix(session: OdxSession):
    """Windows sends a 6-byte INQUIRY with allocation length 255 and parses the first
    descriptor: BDRL with DESCRIPTOR LENGTH exactly 0020h (docs/odx.md, "The limits reported,
    and why")."""
    result = check(session.session.inquiry(1, VPD_THIRD_PARTY_COPY, 255), GOOD, "INQUIRY 8Fh")
    assert result.data == expected_page(512)[:255]
    assert result.data[4:8] == bytes.fromhex("00000020")


def test_page_follows_the_odx_config_section(start_daemon):
    limits = {"max_range_descriptors": 8, "max_inactivity_timeout": 30, "default_inactivity_timeout": 2,
              "max_token_transfer_bytes": "32M", "optimal_transfer_bytes": "8M"}
    daemon = start_daemon(odx=limits)
    with OdxSession(daemon) as session:
        result = check(session.session.inquiry(0, VPD_THIRD_PARTY_COPY, 1024), GOOD, "INQUIRY 8Fh")
    assert result.data == expected_page(512, ranges=8, max_timeout=30, default_timeout=2,
                                        mtts=32 * MIB, otc=8 * MIB)


def test_standard_inquiry_sets_3pc_and_vpd_00h_lists_8fh(session: OdxSession):
    standard = check(session.session.inquiry(0), GOOD, "INQUIRY").data
    assert standard[5] & 0x08, "3PC must be 1 (SPC-4 6.6.2)"
    pages = check(session.session.inquiry(0, 0x00, 255), GOOD, "INQUIRY 00h").data
    listed = list(pages[4:4 + pages[3]])
    assert listed[0] == 0x00 and listed == sorted(set(listed))
    assert VPD_THIRD_PARTY_COPY in listed
