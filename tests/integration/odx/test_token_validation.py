"""Presented tokens that must be refused (SPC-4 5.16.6.5.2.3; docs/odx.md, "Token semantics"): corrupted, forged,
of another copy manager, of the wrong length or ROD type, and a token used after its source LU's
data was read back intact (nothing of a refused WRITE USING TOKEN reaches the medium)."""

from __future__ import annotations

import struct

import pytest

from tests.integration.odx.odx_support import (
    GOOD, INVALID_TOKEN_LENGTH, REMOTE_TOKEN_USAGE_NOT_SUPPORTED, TOKEN_CORRUPT, TOKEN_UNKNOWN,
    UNSUPPORTED_TOKEN_TYPE, OdxSession, check,
)
from tests.support.daemon import MIB, DaemonSpec, LunSpec

pytestmark = [pytest.mark.integration]


def altered(token: bytes, offset: int, value: bytes) -> bytes:
    return token[:offset] + value + token[offset + len(value):]


def flipped(token: bytes, offset: int) -> bytes:
    return altered(token, offset, bytes((token[offset] ^ 0x01,)))


@pytest.fixture
def token(session: OdxSession) -> bytes:
    session.fill(0, 0, 64 * 512, seed=11)
    return session.token(0, [(0, 64)])


CORRUPTIONS = [
    ("random tail", 400), ("extended data start", 256), ("bytes represented", 63), ("device type data", 99),
    ("target device descriptor", 140), ("creator descriptor block length", 47),
]


@pytest.mark.parametrize("where,offset", CORRUPTIONS, ids=[name for name, _ in CORRUPTIONS])
def test_a_corrupted_token_is_refused_as_corrupt(session: OdxSession, token: bytes, where: str, offset: int):
    _, result = session.write_using(1, flipped(token, offset), [(0, 64)])
    check(result, TOKEN_CORRUPT, where)
    assert session.read(1, 0, 64 * 512) == bytes(64 * 512)
    check(session.write_using(1, token, [(0, 64)])[1], GOOD, "the genuine token still works")


def test_a_forged_identifier_is_unknown(session: OdxSession, token: bytes):
    token_id = struct.unpack_from(">Q", token, 8)[0]
    for forged_id in (token_id + 1000, token_id ^ (1 << 40)):
        forged = altered(token, 8, struct.pack(">Q", forged_id))
        check(session.write_using(1, forged, [(0, 64)])[1], TOKEN_UNKNOWN, f"identifier {forged_id:#x}")


def test_a_token_of_someone_else_is_remote(session: OdxSession, token: bytes):
    designator_length = token[23]
    stranger = altered(token, 24, bytes(b ^ 0xFF for b in token[24:24 + designator_length]))
    stranger = altered(stranger, 8, struct.pack(">Q", 12345))
    check(session.write_using(1, stranger, [(0, 64)])[1], REMOTE_TOKEN_USAGE_NOT_SUPPORTED, "foreign creator")


def test_a_token_from_another_daemon_is_refused(session: OdxSession, start_daemon):
    other = start_daemon(DaemonSpec(luns=[LunSpec(0, 16 * MIB, name="elsewhere")],
                                    iqn="iqn.2026-11.org.odxtarget:elsewhere"))
    with OdxSession(other) as remote:
        remote.fill(0, 0, 64 * 512, seed=12)
        foreign = remote.token(0, [(0, 64)])
    check(session.write_using(1, foreign, [(0, 64)])[1], REMOTE_TOKEN_USAGE_NOT_SUPPORTED, "other daemon")


def test_wrong_token_length_and_types(session: OdxSession, token: bytes):
    check(session.write_using(1, altered(token, 6, b"\x01\xF7"), [(0, 8)])[1], INVALID_TOKEN_LENGTH, "01F7h")
    check(session.write_using(1, altered(token, 6, b"\x00\x00"), [(0, 8)])[1], INVALID_TOKEN_LENGTH, "0")
    zero_token_short = struct.pack(">I2xH", 0xFFFF_0001, 0x01F0) + bytes(504)
    check(session.write_using(1, zero_token_short, [(0, 8)])[1], INVALID_TOKEN_LENGTH, "zero token, bad length")
    for rod_type in (0x0001_0000, 0x0080_0002, 0x0000_0000):
        check(session.write_using(1, altered(token, 0, struct.pack(">I", rod_type)), [(0, 8)])[1],
              UNSUPPORTED_TOKEN_TYPE, f"ROD type {rod_type:08X}h")
    check(session.write_using(1, bytes(512), [(0, 8)])[1], INVALID_TOKEN_LENGTH, "all zero")
    assert session.read(1, 0, 64 * 512) == bytes(64 * 512)
