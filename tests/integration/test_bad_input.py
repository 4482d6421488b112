"""Bad input: malformed PDUs, CDBs, parameter lists and logins get a precise answer, and nobody else notices.

Every case talks to one daemon through the independent raw initiator in ``raw_initiator.py`` and
asserts the exact Reject reason, sense, login status or connection drop. Throughout the whole
module a *witness* session (libiscsi, another initiator name, another LUN) keeps writing and
reading back patterns; the last test checks that it never saw a single error and did real work.
"""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest

from tests.integration.raw_initiator import (
    IMMEDIATE, LOGIN_RSP, NOP_IN, REJECT, SCSI_RSP, SNACK_REQ, LoginFailed, RawInitiator,
    encode_text, sense_triplet)
from tests.support import libiscsi
from tests.support.daemon import AclSpec, ChapSpec, DaemonSpec, LunSpec

pytestmark = pytest.mark.integration

BLOCK = 512
LUN_BLOCKS = 16 * 1024 * 1024 // BLOCK
OPEN_INITIATOR = "iqn.2026-11.org.odxtarget.test:raw"
WITNESS_INITIATOR = "iqn.2026-11.org.odxtarget.test:witness"
CHAP_INITIATOR = "iqn.2026-11.org.odxtarget.test:chap"
CHAP = ChapSpec(userid="chapuser", password="chap-secret-0123")

# Reject reasons (RFC 7143 11.17.1)
DATA_DIGEST_ERROR, PROTOCOL_ERROR, COMMAND_NOT_SUPPORTED, TASK_IN_PROGRESS, INVALID_PDU_FIELD = 0x02, 0x04, 0x05, 0x07, 0x09


class Witness(threading.Thread):
    """A well-behaved initiator that writes and verifies patterns until told to stop."""

    def __init__(self, host: str, port: int, iqn: str):
        super().__init__(daemon=True)
        self.session = libiscsi.connect(host, port, iqn, lun=1, initiator_name=WITNESS_INITIATOR)
        self.stop_event = threading.Event()
        self.rounds = 0
        self.errors: list[str] = []

    def run(self) -> None:
        lba = 0
        while not self.stop_event.is_set():
            pattern = os.urandom(8 * BLOCK)
            result = self.session.write(1, lba, pattern, BLOCK)
            if not result.good:
                self.errors.append(f"write at {lba}: {result.describe()}")
                return
            result = self.session.read(1, lba, 8, BLOCK)
            if not result.good or result.data != pattern:
                self.errors.append(f"read back at {lba}: {result.describe()}")
                return
            self.rounds += 1
            lba = (lba + 8) % (LUN_BLOCKS - 8)


@pytest.fixture(scope="module")
def target(session_daemon_factory):
    spec = DaemonSpec(
        luns=[LunSpec(lun=0, size=LUN_BLOCKS * BLOCK), LunSpec(lun=1, size=LUN_BLOCKS * BLOCK)],
        acls=[AclSpec(OPEN_INITIATOR), AclSpec(WITNESS_INITIATOR), AclSpec(CHAP_INITIATOR, chap=CHAP)],
        demo_mode=False,
    )
    daemon = session_daemon_factory(spec)
    witness = Witness(daemon.host, daemon.port, daemon.iqn)
    witness.start()
    yield daemon, witness
    witness.stop_event.set()
    witness.join(10)
    witness.session.close()


@pytest.fixture
def conn(target):
    daemon, _ = target
    raw = RawInitiator(daemon.host, daemon.port, initiator=OPEN_INITIATOR)
    raw.login(daemon.iqn)
    yield raw
    raw.close()


@pytest.fixture
def digest_conn(target):
    daemon, _ = target
    raw = RawInitiator(daemon.host, daemon.port, initiator=OPEN_INITIATOR, isid=b"\x80\x00\x00\x00\x00\x02")
    keys = raw.login(daemon.iqn, header_digest="CRC32C", data_digest="CRC32C")
    assert keys["HeaderDigest"] == "CRC32C" and keys["DataDigest"] == "CRC32C"
    yield raw
    raw.close()


def expect_reject(raw: RawInitiator, reason: int, rejected_bhs: bytes) -> None:
    pdu = raw.recv_pdu()
    while pdu.opcode == NOP_IN and pdu.itt == 0xFFFFFFFF:
        pdu = raw.recv_pdu()
    assert pdu.opcode == REJECT, f"expected Reject, got opcode {pdu.opcode:#x}"
    assert pdu.reject_reason == reason, f"reject reason {pdu.reject_reason:#x}, expected {reason:#x}"
    assert pdu.data[:48] == rejected_bhs[:48], "the Reject must carry the rejected header"
    assert raw.ping(b"still-there").opcode == NOP_IN, "the connection must survive a Reject"


def expect_sense(rsp, key: int, asc: int, ascq: int) -> bytes:
    assert rsp.opcode == SCSI_RSP
    assert rsp.status == 0x02, f"status {rsp.status:#x}, expected CHECK CONDITION"
    assert sense_triplet(rsp.sense) == (key, asc, ascq), f"sense {sense_triplet(rsp.sense)}"
    return rsp.sense


def login_status(daemon, keys, *, transit=True, csg=1, nsg=3, initiator=OPEN_INITIATOR, **kw) -> tuple[int, int]:
    raw = RawInitiator(daemon.host, daemon.port, initiator=initiator)
    try:
        rsp, _ = raw.login_exchange(keys, transit=transit, csg=csg, nsg=nsg, **kw)
        assert rsp.opcode == LOGIN_RSP
        return rsp.bhs[36], rsp.bhs[37]
    finally:
        raw.close()


# ----------------------------------------------------------------------------- PDU level

def test_truncated_header_then_eof_closes_only_that_connection(target, conn):
    daemon, _ = target
    conn.send_raw(conn.nop_out_bhs(itt=77)[:20])
    conn.sock.shutdown(1)  # half-close: the target sees EOF in the middle of a header
    assert conn.is_closed(), "the target must close a connection that ended inside a header"
    other = RawInitiator(daemon.host, daemon.port, initiator=OPEN_INITIATOR, isid=b"\x80\x00\x00\x00\x00\x09")
    other.login(daemon.iqn)
    assert other.ping().opcode == NOP_IN
    other.close()


def test_unknown_opcode_is_rejected_as_not_supported(conn):
    bhs = bytearray(conn.nop_out_bhs(itt=conn.next_itt()))
    bhs[0] = IMMEDIATE | 0x1E  # not an initiator opcode
    conn.send_pdu(bytes(bhs))
    expect_reject(conn, COMMAND_NOT_SUPPORTED, bytes(bhs))


def test_snack_at_error_recovery_level_0_is_rejected(conn):
    bhs = bytearray(48)
    bhs[0] = SNACK_REQ
    bhs[1] = 0x80
    struct.pack_into(">I", bhs, 16, 0xFFFFFFFF)
    conn.send_pdu(bytes(bhs))
    expect_reject(conn, PROTOCOL_ERROR, bytes(bhs))


def test_login_request_in_full_feature_phase_is_rejected(conn):
    bhs = conn.login_bhs(transit=True, csg=1, nsg=3, data_len=0, itt=conn.next_itt())
    conn.send_pdu(bhs)
    expect_reject(conn, PROTOCOL_ERROR, bhs)


def test_nop_out_with_both_tags_set_is_rejected(conn):
    bhs = bytearray(conn.nop_out_bhs(itt=conn.next_itt()))
    struct.pack_into(">I", bhs, 20, 0x1234)  # a TTT we never sent, together with a real ITT
    conn.send_pdu(bytes(bhs))
    expect_reject(conn, INVALID_PDU_FIELD, bytes(bhs))


def test_data_out_for_unknown_transfer_tag_is_rejected(conn):
    bhs = conn.data_out_bhs(itt=0x5555, ttt=0x4242, data_sn=0, offset=0, data_len=BLOCK)
    conn.send_pdu(bhs, b"\xee" * BLOCK)
    expect_reject(conn, INVALID_PDU_FIELD, bhs)


def test_itt_reused_while_task_waits_for_data_is_rejected(conn):
    itt = conn.next_itt()
    cdb = struct.pack(">BBIBHB", 0x2A, 0, 100, 0, 1, 0)
    # InitialR2T=Yes and no immediate data: the task waits for Data-Out after our R2T.
    conn.send_pdu(conn.scsi_cmd_bhs(cdb, write=True, edtl=BLOCK, itt=itt))
    conn.cmd_sn += 1
    r2t = conn.recv_pdu()
    assert r2t.opcode == 0x31 and r2t.itt == itt
    again = conn.scsi_cmd_bhs(cdb, write=True, edtl=BLOCK, itt=itt)
    conn.send_pdu(again)
    conn.cmd_sn += 1
    pdu = conn.recv_pdu()
    assert pdu.opcode == REJECT and pdu.reject_reason == TASK_IN_PROGRESS
    # finish the first task properly: the target still honours its R2T
    conn.send_pdu(conn.data_out_bhs(itt=itt, ttt=r2t.u32(20), data_sn=0, offset=0, data_len=BLOCK), b"\x11" * BLOCK)
    rsp = conn.recv_pdu()
    assert rsp.opcode == SCSI_RSP and rsp.itt == itt and rsp.status == 0


def test_cmd_sn_outside_window_is_dropped_silently(conn):
    itt = conn.next_itt()
    cdb = struct.pack(">BBIBHB", 0x00, 0, 0, 0, 0, 0)  # TEST UNIT READY
    far = (conn.cmd_sn + 100_000) & 0xFFFFFFFF
    conn.send_pdu(conn.scsi_cmd_bhs(cdb, itt=itt, cmd_sn=far))
    conn.sock.settimeout(1.0)
    with pytest.raises(TimeoutError):
        conn.recv_pdu()
    conn.sock.settimeout(5.0)
    # the session is intact: a command with the right CmdSN works
    rsp, _ = conn.command(cdb)
    assert rsp.opcode == SCSI_RSP and rsp.status == 0


def test_data_segment_over_max_recv_data_segment_length_drops_connection(conn):
    limit = 262144  # what the target declared (and what raw_initiator asked about)
    declared = int(conn.params.get("MaxRecvDataSegmentLength", limit))
    size = declared + 4096
    bhs = conn.nop_out_bhs(itt=conn.next_itt(), data_len=size)
    try:
        conn.send_pdu(bhs, b"\0" * size)
    except OSError:
        pass
    pdu = None
    try:
        pdu = conn.recv_pdu()
    except (ConnectionError, OSError):
        pass
    if pdu is not None:
        assert pdu.opcode == REJECT and pdu.reject_reason == PROTOCOL_ERROR
    assert conn.is_closed(), "an oversized data segment cannot be resynchronised at ERL 0"


def test_bad_header_digest_drops_connection(digest_conn):
    digest_conn.send_pdu(digest_conn.nop_out_bhs(itt=digest_conn.next_itt()), bad_header_digest=True)
    assert digest_conn.is_closed(), "a header digest error at ERL 0 must close the connection"


def test_bad_data_digest_on_immediate_data_is_rejected(digest_conn):
    itt = digest_conn.next_itt()
    cdb = struct.pack(">BBIBHB", 0x2A, 0, 200, 0, 1, 0)
    bhs = digest_conn.scsi_cmd_bhs(cdb, write=True, edtl=BLOCK, data_len=BLOCK, itt=itt)
    digest_conn.send_pdu(bhs, b"\x22" * BLOCK, bad_data_digest=True)
    pdu = digest_conn.recv_pdu()
    assert pdu.opcode == REJECT and pdu.reject_reason == DATA_DIGEST_ERROR
    assert pdu.data[:48] == bhs


# ----------------------------------------------------------------------------- SCSI level

def test_unknown_scsi_opcode(conn):
    rsp, _ = conn.command(bytes([0xC7]) + bytes(9), data_in_len=0)
    sense = expect_sense(rsp, 0x5, 0x20, 0x00)
    assert sense[15] & 0xC0 == 0xC0 and sense[16:18] == b"\0\0", "field pointer must name CDB byte 0"


def test_reserved_bit_in_cdb_has_exact_field_pointer(conn):
    cdb = bytearray(struct.pack(">BBIBHB", 0x28, 0, 0, 0, 1, 0))
    cdb[6] = 0x80  # READ(10) byte 6 bits 7..5 are reserved
    rsp, _ = conn.command(bytes(cdb), data_in_len=BLOCK)
    sense = expect_sense(rsp, 0x5, 0x24, 0x00)
    assert sense[15] & 0xC8 == 0xC8, "SKSV, C/D=1 (CDB) and BPV must be set"
    assert sense[15] & 0x07 == 7 and struct.unpack(">H", sense[16:18])[0] == 6


def test_lba_out_of_range(conn):
    rsp, _ = conn.read10(LUN_BLOCKS, 1)
    expect_sense(rsp, 0x5, 0x21, 0x00)


def test_unmap_parameter_list_shorter_than_header(conn):
    # SBC-4 5.31: a parameter list length from 1 to 7 is a PARAMETER LIST LENGTH ERROR
    cdb = struct.pack(">BBIBHB", 0x42, 0, 0, 0, 4, 0)
    rsp, _ = conn.command(cdb, data_out=b"\x00\x06\x00\x00")
    expect_sense(rsp, 0x5, 0x1A, 0x00)


def test_unmap_descriptor_length_beyond_the_data_sent(conn):
    # header claims 2 descriptors (32 bytes) but the list carries one: the parameter list
    # length truncates the data the header announces (SPC-4 4.5.2: PARAMETER LIST LENGTH ERROR)
    assert conn.write10(0, b"\x77" * 8 * BLOCK).status == 0
    descriptor = struct.pack(">QII", 0, 8, 0)
    data = struct.pack(">HH4x", 6 + 32, 32) + descriptor
    cdb = struct.pack(">BBIBHB", 0x42, 0, 0, 0, len(data), 0)
    rsp, _ = conn.command(cdb, data_out=data)
    expect_sense(rsp, 0x5, 0x1A, 0x00)
    back, blocks = conn.read10(0, 8)
    assert back.status == 0 and blocks == b"\x77" * 8 * BLOCK, "a refused UNMAP must unmap nothing"


def test_mode_select_with_unchangeable_field(conn):
    # Caching page with RCD (read cache disable, byte 2 bit 0) set: not changeable here
    page = bytes([0x08, 0x12, 0x05]) + bytes(17)
    data = bytes(8) + page  # MODE SELECT(10) header, no block descriptors
    cdb = struct.pack(">BBBBBBBHB", 0x55, 0x10, 0, 0, 0, 0, 0, len(data), 0)
    rsp, _ = conn.command(cdb, data_out=data)
    sense = expect_sense(rsp, 0x5, 0x26, 0x00)
    assert sense[15] & 0xC0 == 0x80 and struct.unpack(">H", sense[16:18])[0] == 10


def test_write_with_partial_data_out_is_refused_and_writes_nothing(conn):
    good = b"\x5a" * BLOCK
    assert conn.write10(300, good).status == 0
    cdb = struct.pack(">BBIBHB", 0x2A, 0, 300, 0, 1, 0)
    rsp, _ = conn.command(cdb, data_out=b"\xa5" * 200, edtl=200)
    assert rsp.opcode == SCSI_RSP
    assert rsp.flags & 0x04, "residual overflow must be flagged"
    assert rsp.u32(44) == BLOCK - 200
    if rsp.status != 0:
        expect_sense(rsp, 0x5, 0x0E, 0x03)
        back, data = conn.read10(300, 1)
        assert back.status == 0 and data == good, "a refused write must not change the block"


# ----------------------------------------------------------------------------- login level

def test_login_with_malformed_text_is_initiator_error(target):
    daemon, _ = target
    raw = RawInitiator(daemon.host, daemon.port, initiator=OPEN_INITIATOR)
    data = encode_text({"InitiatorName": OPEN_INITIATOR, "TargetName": daemon.iqn}) + b"NoEqualsSign\0"
    raw.send_pdu(raw.login_bhs(transit=True, csg=1, nsg=3, data_len=len(data)), data)
    rsp = raw.recv_pdu()
    assert (rsp.bhs[36], rsp.bhs[37]) == (0x02, 0x00)
    assert raw.is_closed()
    raw.close()


def test_login_without_initiator_name_is_missing_parameter(target):
    daemon, _ = target
    assert login_status(daemon, {"TargetName": daemon.iqn, "SessionType": "Normal"}) == (0x02, 0x07)


def test_login_to_unknown_target_is_not_found(target):
    daemon, _ = target
    assert login_status(daemon, {"InitiatorName": OPEN_INITIATOR,
                                 "TargetName": "iqn.2026-11.org.odxtarget:nosuch"}) == (0x02, 0x03)


def test_login_by_initiator_outside_acl_is_authorization_failure(target):
    daemon, _ = target
    stranger = "iqn.2026-11.org.odxtarget.test:stranger"
    assert login_status(daemon, {"InitiatorName": stranger, "TargetName": daemon.iqn},
                        initiator=stranger) == (0x02, 0x02)


def test_login_with_unsupported_version(target):
    daemon, _ = target
    assert login_status(daemon, {"InitiatorName": OPEN_INITIATOR, "TargetName": daemon.iqn},
                        version_max=5, version_min=5) == (0x02, 0x05)


def test_login_naming_a_session_that_does_not_exist(target):
    daemon, _ = target
    assert login_status(daemon, {"InitiatorName": OPEN_INITIATOR, "TargetName": daemon.iqn},
                        tsih=0x7777) == (0x02, 0x0A)


def test_login_with_wrong_chap_secret_is_authentication_failure(target):
    daemon, _ = target
    raw = RawInitiator(daemon.host, daemon.port, initiator=CHAP_INITIATOR)
    with pytest.raises(LoginFailed) as failure:
        raw.login(daemon.iqn, chap=(CHAP.userid, "wrong-secret-0000"))
    assert (failure.value.status_class, failure.value.status_detail) == (0x02, 0x01)
    raw.close()
    good = RawInitiator(daemon.host, daemon.port, initiator=CHAP_INITIATOR)
    good.login(daemon.iqn, chap=(CHAP.userid, CHAP.password))
    assert good.ping().opcode == NOP_IN
    good.close()


def test_login_skipping_required_chap_is_refused(target):
    daemon, _ = target
    assert login_status(daemon, {"InitiatorName": CHAP_INITIATOR, "TargetName": daemon.iqn},
                        initiator=CHAP_INITIATOR) == (0x02, 0x01)


# ----------------------------------------------------------------------------- the bystander

def test_zz_witness_session_never_noticed(target):
    daemon, witness = target
    time.sleep(0.5)
    assert witness.is_alive(), f"witness stopped: {witness.errors}"
    assert witness.errors == []
    assert witness.rounds > 10, "the witness must have done real work during the bad-input cases"
    log = daemon.log_text()
    for fragment in ("unknown opcode", "SNACK", "digest", "TTT", "CmdSN"):
        assert fragment in log, f"no log line explains the refusal mentioning {fragment!r}"
