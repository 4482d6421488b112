"""Precise answers to bad input, on one shared daemon with a witness running throughout:

* residual overflow beyond 32 bits (a CDB asking for 2 TiB against an EDTL of 0 or 512 bytes)
  gets a SCSI Response and leaves the connection usable;
* an oversized data segment gets a Reject and then the connection is closed;
* text keys in a normal session: a bad value is answered ``<key>=Reject``, an unknown key
  ``<key>=NotUnderstood``, each in a final Text Response (RFC 7143 6.2, 13);
* control characters from initiators (names, aliases) never reach the log raw.

Each test checks the log lines written since it started: no traceback, no internal error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from tests.integration.adversarial.support import (
    BLOCK, REJECT_PROTOCOL_ERROR, STATUS_CHECK_CONDITION, STATUS_GOOD, Arena, DaemonLog, adversary_spec,
    assert_logs_clean, describe_pdu, send_with_deadline, start_arena, wait_for_close)
from tests.integration.raw_initiator import (
    DATA_IN, NOP_IN, REJECT, SCSI_RSP, TEXT_RSP, LoginFailed, Pdu, RawInitiator, encode_text, sense_triplet)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared_arena(session_daemon_factory) -> Iterator[Arena]:
    """One daemon and witness for the module; at the end its whole log is checked once more."""
    arena = start_arena(session_daemon_factory(adversary_spec()))
    yield arena
    arena.witness.stop()
    arena.daemon.stop()
    assert_logs_clean([arena.daemon])


@pytest.fixture
def arena(shared_arena: Arena, attach_log_on_failure) -> Arena:
    """The shared daemon, with the witness and the log marked at the start of this test."""
    log = DaemonLog(shared_arena.daemon)
    attach_log_on_failure(log)
    return Arena(shared_arena.daemon, shared_arena.witness, log)


@pytest.fixture
def conn(arena: Arena) -> Iterator[RawInitiator]:
    raw = arena.logged_in()
    yield raw
    raw.close()


def next_answer(raw: RawInitiator) -> Pdu:
    """The next PDU, skipping the target's own keepalive NOP-Ins (RFC 7143 11.19)."""
    pdu = raw.recv_pdu()
    while pdu.opcode == NOP_IN and pdu.itt == 0xFFFFFFFF:
        pdu = raw.recv_pdu()
    return pdu


# ------------------------------------------------------------------ case 6: residual overflow

ALL_BLOCKS = 0xFFFFFFFF


def read16_cdb(blocks: int) -> bytes:
    """READ(16) from LBA 0, SBC-4."""
    return struct.pack(">BBQIBB", 0x88, 0, 0, blocks, 0, 0)


def write16_cdb(blocks: int) -> bytes:
    """WRITE(16) at LBA 0, SBC-4."""
    return struct.pack(">BBQIBB", 0x8A, 0, 0, blocks, 0, 0)


@pytest.mark.parametrize("direction", ["read", "write"])
@pytest.mark.parametrize("edtl", [0, BLOCK])
def test_transfer_length_far_beyond_edtl_gets_a_scsi_response(arena: Arena, conn: RawInitiator, direction: str,
                                                              edtl: int) -> None:
    """READ(16)/WRITE(16) of 0xFFFFFFFF blocks (2 TiB) with EDTL 0 or 512: the residual count does
    not fit the 32-bit field (RFC 7143 11.4.5), yet the command ends with a SCSI Response carrying
    a precise status, and a NOP-Out ping is answered afterwards."""
    itt = conn.next_itt()
    if direction == "read":
        conn.send_pdu(conn.scsi_cmd_bhs(read16_cdb(ALL_BLOCKS), read=True, edtl=edtl, itt=itt))
    else:
        data = b"\x3c" * edtl           # all of the EDTL as immediate data: nothing to solicit
        conn.send_pdu(conn.scsi_cmd_bhs(write16_cdb(ALL_BLOCKS), write=True, edtl=edtl, data_len=len(data),
                                        itt=itt), data)
    conn.cmd_sn += 1
    answer = next_answer(conn)
    while answer.opcode == DATA_IN and answer.itt == itt and not answer.flags & 0x01:   # no status (S=0) yet
        answer = next_answer(conn)
    assert answer.opcode in (SCSI_RSP, DATA_IN) and answer.itt == itt, describe_pdu(answer)
    assert answer.opcode == DATA_IN or answer.response == 0, f"iSCSI response {answer.response:#x}, expected 00h"
    assert answer.status != STATUS_GOOD, "2 TiB from a 64 MiB LUN cannot succeed"
    if answer.status == STATUS_CHECK_CONDITION:
        assert sense_triplet(answer.sense)[0] != 0, f"CHECK CONDITION without a sense key: {answer.sense.hex()}"
    assert conn.ping(b"after-overflow").opcode == NOP_IN, "the connection must stay usable"
    arena.assert_everyone_else_served()


# ------------------------------------------------------------------ case 7: oversized data segments

def declared_mrdsl(raw: RawInitiator) -> int:
    """The target's MaxRecvDataSegmentLength (RFC 7143 13.12: 8192 when not declared)."""
    return int(raw.params.get("MaxRecvDataSegmentLength", "8192"))


def oversized_nop_with_data(raw: RawInitiator) -> tuple[bytes, bytes]:
    size = declared_mrdsl(raw) + 4096
    return raw.nop_out_bhs(itt=raw.next_itt(), data_len=size), b"\0" * size


def oversized_nop_header_only(raw: RawInitiator) -> tuple[bytes, bytes]:
    return raw.nop_out_bhs(itt=raw.next_itt(), data_len=0xFFFFFF), b""


def oversized_immediate_data(raw: RawInitiator) -> tuple[bytes, bytes]:
    size = declared_mrdsl(raw) + BLOCK
    cdb = struct.pack(">BBIBHB", 0x2A, 0, 0, 0, size // BLOCK, 0)
    return raw.scsi_cmd_bhs(cdb, write=True, edtl=size, data_len=size, itt=raw.next_itt()), b"\x11" * size


def oversized_text_header_only(raw: RawInitiator) -> tuple[bytes, bytes]:
    return raw.text_bhs(itt=raw.next_itt(), data_len=0xFFFFFF), b""


OVERSIZED = {
    "nop-out-with-the-data": oversized_nop_with_data,
    "nop-out-header-claiming-16-mib": oversized_nop_header_only,
    "write-with-immediate-data": oversized_immediate_data,
    "text-header-claiming-16-mib": oversized_text_header_only,
}


@pytest.mark.parametrize("shape", sorted(OVERSIZED))
def test_oversized_data_segment_is_rejected_then_the_connection_closed(arena: Arena, conn: RawInitiator,
                                                                       shape: str) -> None:
    """DataSegmentLength beyond our MaxRecvDataSegmentLength (RFC 7143 13.12): the stream cannot be
    resynchronised at ErrorRecoveryLevel 0, so a Reject (04h, carrying the header) and a close,
    decided from the header alone, without waiting for 16 MiB that never come."""
    bhs, data = OVERSIZED[shape](conn)
    send_with_deadline(conn.sock, conn.frame(bhs, data), 5.0)
    answer = next_answer(conn)
    assert answer.opcode == REJECT, f"expected a Reject first, got {describe_pdu(answer)}"
    assert answer.reject_reason == REJECT_PROTOCOL_ERROR, describe_pdu(answer)
    assert answer.data[:48] == bhs, "the Reject must carry the offending header (RFC 7143 11.17.3)"
    assert wait_for_close(conn.sock, 3.0)[0], "the connection must be closed after the Reject"
    arena.assert_everyone_else_served()


# ------------------------------------------------------------------ case 12: text keys

#: Every RFC 7143 section 13 key (and 13.25's obsolete ones) with a value its grammar refuses.
MALFORMED_VALUES = [
    ("SendTargets", "Alle"),                      # 13.3: neither All nor an iSCSI name
    ("SendTargets", "A"),
    ("SendTargets", "iqn"),
    ("MaxRecvDataSegmentLength", "twelve"),       # 13.12: 512 to 2**24-1
    ("MaxRecvDataSegmentLength", "511"),
    ("MaxRecvDataSegmentLength", "16777216"),
    ("MaxRecvDataSegmentLength", ""),
    ("MaxRecvDataSegmentLength", "0x"),
    ("InitiatorAlias", "x" * 256),                # 6.1: values are at most 255 bytes
    ("TargetAlias", "x" * 256),
    ("HeaderDigest", "CRC32C,,None"),             # 6.1: no empty list member
    ("DataDigest", "MD5"),
    ("MaxConnections", "0"),                      # 13.2: 1 to 65535
    ("TargetName", "not an iSCSI name"),
    ("InitiatorName", "not an iSCSI name"),
    ("TargetAddress", "[::1:3260,x"),
    ("TargetPortalGroupTag", "65536"),
    ("InitialR2T", "yes"),                        # 6.1: booleans are exactly Yes or No
    ("ImmediateData", "Maybe"),
    ("MaxBurstLength", "0x"),
    ("FirstBurstLength", "-1"),
    ("DefaultTime2Wait", "3601"),                 # 13.15: 0 to 3600
    ("DefaultTime2Retain", "1~2"),
    ("MaxOutstandingR2T", "0"),
    ("DataPDUInOrder", "No,Yes"),
    ("DataSequenceInOrder", ""),
    ("ErrorRecoveryLevel", "3"),                  # 13.20: 0 to 2
    ("SessionType", "Bogus"),
    ("TaskReporting", ""),
    ("iSCSIProtocolLevel", "32"),                 # RFC 7144 2.1: 0 to 31
    ("IFMarker", "Maybe"),
    ("OFMarker", "yes"),
    ("IFMarkInt", "x~y"),
    ("OFMarkInt", "2048~1"),
]

UNKNOWN_KEYS = [
    ("sENDtARGETS", "aLL"),                       # keys are case-sensitive: not SendTargets
    ("sendtargets", "All"),
    ("Frobnicate", "7"),
    ("X-org.odxtarget.test.unknown", "1"),        # 13.22: private extension key
    ("X#org.example.unknown", "Yes"),             # 13.22: public extension key
]


def final_text_answer(raw: RawInitiator, key: str, value: str) -> list[tuple[str, str]]:
    answer, pairs = raw.text(encode_text([(key, value)]))
    assert answer.opcode == TEXT_RSP, f"{key}={value[:40]}: expected a Text Response, got {describe_pdu(answer)}"
    assert answer.flags & 0x80 and answer.u32(20) == 0xFFFFFFFF, (
        f"{key}={value[:40]}: the answer must be one final Text Response (F=1, TTT ffffffffh)")
    return pairs


@pytest.mark.parametrize(("key", "value"), MALFORMED_VALUES,
                         ids=[f"{key}={value[:12]}" for key, value in MALFORMED_VALUES])
def test_malformed_value_is_answered_key_reject(arena: Arena, conn: RawInitiator, key: str, value: str) -> None:
    """RFC 7143 6.2: a value the responder cannot accept is answered ``<key>=Reject``."""
    assert final_text_answer(conn, key, value) == [(key, "Reject")]
    assert conn.ping().opcode == NOP_IN
    arena.assert_everyone_else_served(min_rounds=1)


@pytest.mark.parametrize(("key", "value"), UNKNOWN_KEYS, ids=[key for key, _ in UNKNOWN_KEYS])
def test_unknown_key_is_answered_not_understood(arena: Arena, conn: RawInitiator, key: str, value: str) -> None:
    """RFC 7143 6.2: a key the responder does not know is answered ``<key>=NotUnderstood``, not
    with a Reject PDU."""
    assert final_text_answer(conn, key, value) == [(key, "NotUnderstood")]
    assert conn.ping().opcode == NOP_IN
    arena.assert_everyone_else_served(min_rounds=1)


@pytest.mark.parametrize("value", ["All", "", "own-name"])
def test_send_targets_in_a_normal_session_reports_its_own_target(arena: Arena, conn: RawInitiator,
                                                                  value: str) -> None:
    """Appendix D: All, nothing, or the session's target name all report the session's target."""
    iqn = arena.daemon.iqn
    pairs = final_text_answer(conn, "SendTargets", iqn if value == "own-name" else value)
    assert pairs == [("TargetName", iqn), ("TargetAddress", f"127.0.0.1:{arena.daemon.port},1")]
    arena.assert_everyone_else_served(min_rounds=1)


# ------------------------------------------------------------------ case 13: log escaping

LOG_MARKER = "FORGED-LINE-5c1e"
#: Ends the log line, starts a forged one, and clears an operator's terminal (ESC [2J).
EVIL_SUFFIX = f"\n{LOG_MARKER} 2026-01-01 00:00:00.000 CRITICAL odxtarget: forged\x1b[2J"
EVIL_INITIATOR = "iqn.2026-11.org.odxtarget.test:evil" + EVIL_SUFFIX


def assert_log_escapes_marker(log: DaemonLog, *, must_mention: bool) -> None:
    text = log.new_text()
    assert "\x1b" not in text, "a raw ESC from an initiator reached the log"
    forged = [line for line in text.splitlines() if line.startswith(LOG_MARKER)]
    assert not forged, f"an initiator forged a log line: {forged[0]!r}"
    if must_mention:
        assert LOG_MARKER in text, "the login was not logged at all (expected its name, escaped)"


def test_initiator_name_with_control_characters_is_escaped_in_the_log(arena: Arena) -> None:
    raw = arena.raw(initiator=EVIL_INITIATOR)
    try:
        raw.login(arena.daemon.iqn)
    except LoginFailed:
        pass                     # refusing such a name is fine too; the log line is what counts
    raw.close()
    assert_log_escapes_marker(arena.log, must_mention=True)
    arena.assert_everyone_else_served(min_rounds=1)


def test_refused_login_with_control_characters_is_escaped_in_the_log(arena: Arena) -> None:
    raw = arena.raw(initiator=EVIL_INITIATOR)
    with pytest.raises(LoginFailed):
        raw.login("iqn.2026-11.org.odxtarget:no-such-target" + EVIL_SUFFIX)
    raw.close()
    assert_log_escapes_marker(arena.log, must_mention=True)
    arena.assert_everyone_else_served(min_rounds=1)


def test_initiator_alias_with_control_characters_is_escaped_in_the_log(arena: Arena) -> None:
    raw = arena.raw()
    raw.login(arena.daemon.iqn, extra={"InitiatorAlias": "alias" + EVIL_SUFFIX})
    final_text_answer(raw, "InitiatorAlias", "renamed" + EVIL_SUFFIX)
    raw.logout()
    raw.close()
    assert_log_escapes_marker(arena.log, must_mention=False)
    arena.assert_everyone_else_served(min_rounds=1)
