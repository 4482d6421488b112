"""The two point-in-time semantics (docs/odx.md, "Token semantics"):

* XFS, reflink: POPULATE TOKEN snapshots the source (ROD type 00800000h); later writes to the
  source do not change what WRITE USING TOKEN copies;
* ext4 (and RTV=1 asking for 00800001h anywhere): the token is change vulnerable; a write to
  its source ranges cancels it and the next use answers 23h/08h, a write elsewhere does not.
"""

from __future__ import annotations

import struct

import pytest

from tests.integration.odx.odx_support import (
    GOOD, ROD_PIT_CHANGE_VULNERABLE, ROD_PIT_DEFAULT, TOKEN_CANCELLED, OdxSession, check, pattern,
)

pytestmark = [pytest.mark.integration]

BLOCKS = 2048            # 1 MiB: several filesystem blocks, so reflink shares real extents


@pytest.mark.parametrize("filesystem", ["xfs"])
def test_snapshot_token_keeps_the_old_data(session: OdxSession, filesystem: str):
    old = session.fill(0, 4096, BLOCKS * 512, seed=31)
    token = session.token(0, [(4096, BLOCKS)])
    assert struct.unpack_from(">I", token)[0] == ROD_PIT_DEFAULT
    new = session.fill(0, 4096, BLOCKS * 512, seed=32)          # overwrite the whole source
    session.write(0, 4096 + 7, pattern(512, 33))                 # and one block once more
    check(session.write_using(1, token, [(0, BLOCKS)])[1], GOOD, "WUT from the snapshot")
    assert session.read(1, 0, BLOCKS * 512) == old
    assert session.read(0, 4096, 7 * 512) == new[:7 * 512]        # the source has the new data


@pytest.mark.parametrize("filesystem", ["xfs"])
def test_unaligned_snapshot_ranges_keep_the_old_data(session: OdxSession, filesystem: str):
    """Sub-block heads and tails are copied into the ROD file, the middle is reflinked."""
    old = session.fill(0, 0, 8 * 1024 * 1024, seed=34)
    ranges = [(3, 1001), (9001, 4000)]
    token = session.token(0, ranges)
    session.fill(0, 0, 8 * 1024 * 1024, seed=35)
    check(session.write_using(1, token, [(5, 5001)])[1], GOOD, "WUT")
    expected = old[3 * 512:1004 * 512] + old[9001 * 512:13001 * 512]
    assert len(expected) == 5001 * 512
    assert session.read(1, 5, 5001 * 512) == expected


def cancel_on_write_token(session: OdxSession, filesystem: str, lba: int, blocks: int) -> bytes:
    if filesystem == "xfs":         # snapshots are the default there: ask for cancel-on-write
        token = session.token(0, [(lba, blocks)], rod_type=ROD_PIT_CHANGE_VULNERABLE)
    else:
        token = session.token(0, [(lba, blocks)])
    assert struct.unpack_from(">I", token)[0] == ROD_PIT_CHANGE_VULNERABLE
    return token


def test_change_vulnerable_token_is_cancelled_by_a_write_to_its_source(session: OdxSession, filesystem: str):
    session.fill(0, 4096, BLOCKS * 512, seed=36)
    token = cancel_on_write_token(session, filesystem, 4096, BLOCKS)
    session.write(0, 4096 + BLOCKS, pattern(512, 37))               # just after the range: harmless
    session.write(0, 4095, pattern(512, 38))                        # just before it: harmless
    check(session.write_using(1, token, [(0, 8)])[1], GOOD, "writes outside the source")
    session.write(0, 4096 + BLOCKS - 1, pattern(512, 39))           # the last source block
    check(session.write_using(1, token, [(100, 8)])[1], TOKEN_CANCELLED, "after a write to the source")
    assert session.read(1, 100, 8 * 512) == bytes(8 * 512)


def test_change_vulnerable_token_is_cancelled_by_a_copy_onto_its_source(session: OdxSession, filesystem: str):
    """WRITE USING TOKEN is a write too: copying another token onto the source cancels it."""
    session.fill(0, 0, 64 * 512, seed=40)
    session.fill(0, 1000, 64 * 512, seed=41)
    victim = cancel_on_write_token(session, filesystem, 0, 64)
    other = session.token(0, [(1000, 64)])
    check(session.write_using(0, other, [(32, 8)])[1], GOOD, "copy onto the victim's source")
    check(session.write_using(1, victim, [(0, 8)])[1], TOKEN_CANCELLED, "victim after the copy")
