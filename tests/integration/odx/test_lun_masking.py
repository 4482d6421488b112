"""LUN masking through the real daemon and libiscsi (docs/configuration.md, "ACLs"): three
initiators of one target, each with its own LUN map.

The target maps "t0", "t1", "t2" as LUNs 0, 1, 2 (demo mode off):

* HOST_A (mapped LUNs): its LUN 0 is t1, its LUN 1 is t2 write-protected;
* HOST_B (mapped LUNs): its LUN 0 is t0;
* HOST_ALL (an ACL without mapped LUNs): every LUN under its own number.

Each sees exactly its LUNs under its numbers, write-protection answers DATA PROTECT, WRITE
PROTECTED, and a third-party copy reaches only what the nexus's own map shows.
"""

from __future__ import annotations

import struct

import pytest

from odxtarget.copy.token import creator_descriptor
from odxtarget.copy.xcopy import build_extended_copy
from odxtarget.scsi.lu import derive_naa, derive_serial
from tests.integration.odx.odx_support import BLOCK, CHECK, COPY_ABORTED, GOOD, MIB, TOKEN_UNKNOWN, OdxSession, check
from tests.support.copy_cdbs import xcopy_cdb
from tests.support.daemon import AclSpec, DaemonProcess, DaemonSpec, LunSpec

pytestmark = [pytest.mark.integration]

HOST_A = "iqn.1991-05.com.microsoft:hyperv-a"
HOST_B = "iqn.1991-05.com.microsoft:hyperv-b"
HOST_ALL = "iqn.2026-11.org.example:admin"
SIZE = 8 * MIB
PIECE = 64 * 1024
DATA_PROTECT = 0x07
WRITE_PROTECTED = (CHECK, DATA_PROTECT, 0x27, 0x00)
COPY_TARGET_NOT_REACHABLE = (CHECK, COPY_ABORTED, 0x0D, 0x02)
REPORT_LUNS = bytes((0xA0, 0, 0, 0, 0, 0)) + struct.pack(">I", 4096) + bytes(2)
MODE_SENSE_6 = bytes((0x1A, 0, 0x3F, 0, 255, 0))
WP = 0x80


@pytest.fixture
def filesystem() -> str:
    """LUN masking does not depend on the ROD type: ext4 only."""
    return "ext4"


@pytest.fixture
def daemon(start_daemon) -> DaemonProcess:
    return start_daemon(DaemonSpec(
        luns=[LunSpec(n, SIZE, name=f"t{n}") for n in range(3)],
        acls=[AclSpec(HOST_A, mapped_luns=[{"mapped_lun": 0, "lun": 1},
                                           {"mapped_lun": 1, "lun": 2, "write_protect": True}]),
              AclSpec(HOST_B, mapped_luns=[{"mapped_lun": 0, "lun": 0}]),
              AclSpec(HOST_ALL)],
    ))


def session(daemon: DaemonProcess, initiator: str, luns: list[int]) -> OdxSession:
    return OdxSession(daemon, initiator, luns=luns)


def reported_luns(session: OdxSession) -> list[int]:
    data = check(session.command(0, REPORT_LUNS, data_in_len=4096), GOOD, "REPORT LUNS").data
    length = struct.unpack_from(">I", data, 0)[0]
    return [struct.unpack_from(">H", data, 8 + at)[0] & 0x3FFF for at in range(0, length, 8)]


def designator_of(storage_object: str) -> bytes:
    return creator_descriptor(derive_naa(derive_serial(storage_object)), BLOCK)


def xcopy(session: OdxSession, lun: int, cscds: list[bytes], segments: list[tuple]):
    data = build_extended_copy(1, cscds, segments)
    return session.command(lun, xcopy_cdb(len(data)), data)


def test_each_initiator_sees_exactly_its_luns_under_its_numbers(daemon: DaemonProcess):
    with session(daemon, HOST_ALL, [0, 1, 2]) as everyone:
        stored = [everyone.fill(n, 0, PIECE, seed=10 + n) for n in range(3)]
        assert reported_luns(everyone) == [0, 1, 2]
    with session(daemon, HOST_A, [0, 1]) as a, session(daemon, HOST_B, [0]) as b:
        assert reported_luns(a) == [0, 1]
        assert reported_luns(b) == [0]
        assert a.read(0, 0, PIECE) == stored[1]
        assert a.read(1, 0, PIECE) == stored[2]
        assert b.read(0, 0, PIECE) == stored[0]
        unmapped = b.session.read(1, 0, 1, BLOCK)                     # LUN 1 is not B's
        assert (unmapped.sense_key, unmapped.asc, unmapped.ascq) == (0x05, 0x25, 0x00)


def test_a_write_protected_mapped_lun_refuses_writes_and_shows_wp(daemon: DaemonProcess):
    with session(daemon, HOST_A, [0, 1]) as a:
        before = a.read(1, 0, PIECE)
        refused = a.session.write(1, 0, bytes(BLOCK) * 8, BLOCK)
        assert (refused.status, refused.sense_key, refused.asc, refused.ascq) == WRITE_PROTECTED
        assert a.read(1, 0, PIECE) == before
        assert check(a.command(1, MODE_SENSE_6, data_in_len=255), GOOD).data[2] & WP
        assert not check(a.command(0, MODE_SENSE_6, data_in_len=255), GOOD).data[2] & WP
        a.fill(0, 0, PIECE, seed=3)                                   # its other LUN is writable
    with session(daemon, HOST_ALL, [0, 1, 2]) as everyone:            # t2 itself is not read-only
        assert not check(everyone.command(2, MODE_SENSE_6, data_in_len=255), GOOD).data[2] & WP
        everyone.fill(2, 0, PIECE, seed=4)


def test_write_using_token_cannot_reach_an_unmapped_lu(daemon: DaemonProcess):
    blocks = PIECE // BLOCK
    with session(daemon, HOST_A, [0, 1]) as a, session(daemon, HOST_B, [0]) as b, \
            session(daemon, HOST_ALL, [0, 1, 2]) as everyone:
        t0 = b.fill(0, 0, PIECE, seed=21)
        t1 = a.fill(0, 0, PIECE, seed=22)
        token_of_t0 = b.token(0, [(0, blocks)])
        token_of_t1 = a.token(0, [(0, blocks)])
        check(a.write_using(0, token_of_t0, [(1024, blocks)])[1], TOKEN_UNKNOWN, "t0's token, through A")
        check(b.write_using(0, token_of_t1, [(1024, blocks)])[1], TOKEN_UNKNOWN, "t1's token, through B")
        assert a.read(0, 1024, PIECE) != t0 and b.read(0, 1024, PIECE) != t1
        # an initiator whose map shows both LUs copies between them
        check(everyone.write_using(0, token_of_t1, [(2048, blocks)])[1], GOOD, "t1's token, through HOST_ALL")
        assert everyone.read(0, 2048, PIECE) == t1


def test_extended_copy_reaches_only_the_nexus_own_map(daemon: DaemonProcess):
    blocks = PIECE // BLOCK
    with session(daemon, HOST_A, [0, 1]) as a, session(daemon, HOST_B, [0]) as b:
        t0 = b.fill(0, 0, PIECE, seed=31)
        before = a.read(0, 0, PIECE)
        check(xcopy(a, 0, [designator_of("t0"), designator_of("t1")], [(0, 1, blocks, 0, 0)]),
              COPY_TARGET_NOT_REACHABLE, "EXTENDED COPY from an LU of the target that A's map hides")
        assert a.read(0, 0, PIECE) == before != t0
        check(xcopy(a, 0, [designator_of("t1"), designator_of("t2")], [(0, 1, blocks, 0, 0)]),
              WRITE_PROTECTED, "EXTENDED COPY onto A's write-protected LUN")
        t2 = a.read(1, 0, PIECE)
        check(xcopy(a, 0, [designator_of("t2"), designator_of("t1")], [(0, 1, blocks, 0, 4096)]),
              GOOD, "EXTENDED COPY from the write-protected LUN to the writable one")
        assert a.read(0, 4096, PIECE) == t2
    assert "EXTENDED COPY refused" in daemon.log_text() and "LU t0" in daemon.log_text()
