"""Persistent reservations as a Windows failover cluster uses them, through libiscsi sessions
and the raw initiator: helpers and the arbitration sequence shared by the one-daemon and the
two-gateway tests (docs/clustering.md)."""

from __future__ import annotations

import socket
import struct

import pytest

from odxtarget.initiator import libiscsi
from tests.integration import raw_initiator as raw

NODE_A = "iqn.1991-05.com.microsoft:node-a"
NODE_B = "iqn.1991-05.com.microsoft:node-b"
KEY_A, KEY_B = 0xA0A0A0A0_00000001, 0xB0B0B0B0_00000002
BLOCK = 512
LUN = 0
# PERSISTENT RESERVE service actions and types (SPC-4 6.15.1, 6.16.2, 6.16.3).
READ_KEYS, READ_RESERVATION = 0, 1
RESERVE, PREEMPT, PREEMPT_AND_ABORT, REGISTER_AND_IGNORE = 1, 4, 5, 6
WRITE_EXCLUSIVE, WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 1, 5
APTPL = 0x01
UNIT_ATTENTION = 0x06


def prout_cdb(action: int, pr_type: int = 0) -> bytes:
    return bytes((0x5F, action, pr_type, 0, 0)) + struct.pack(">I", 24) + b"\x00"


def prout_data(key: int = 0, action_key: int = 0, flags: int = 0) -> bytes:
    return struct.pack(">QQ4xB3x", key, action_key, flags)


def prin_cdb(action: int, alloc: int = 1024) -> bytes:
    return bytes((0x5E, action, 0, 0, 0, 0, 0)) + struct.pack(">H", alloc) + b"\x00"


def command(session: libiscsi.IscsiSession, cdb: bytes, data_out: bytes | None = None,
            data_in_len: int = 0) -> libiscsi.Result:
    """One command, retried past unit attentions (reservation events announce themselves)."""
    for _ in range(8):
        result = session.scsi_command(LUN, cdb, data_out, data_in_len)
        if not (result.status == libiscsi.STATUS_CHECK_CONDITION and result.sense_key == UNIT_ATTENTION):
            return result
    raise AssertionError("unit attentions never cleared")


def prout(session, action: int, key: int = 0, action_key: int = 0, pr_type: int = 0, flags: int = 0):
    return command(session, prout_cdb(action, pr_type), prout_data(key, action_key, flags))


def read_keys(session) -> tuple[int, list[int]]:
    data = command(session, prin_cdb(READ_KEYS), data_in_len=1024).data
    generation, length = struct.unpack_from(">II", data)
    return generation, sorted(struct.unpack_from(">Q", data, 8 + i)[0] for i in range(0, length, 8))


def read_reservation(session) -> tuple[int, int] | None:
    data = command(session, prin_cdb(READ_RESERVATION), data_in_len=1024).data
    if struct.unpack_from(">I", data, 4)[0] == 0:
        return None
    return struct.unpack_from(">Q", data, 8)[0], data[21] & 0x0F


def write(session, lba: int, data: bytes) -> libiscsi.Result:
    return command(session, struct.pack(">BBQIBB", 0x8A, 0, lba, len(data) // BLOCK, 0, 0), data)


def read(session, lba: int, blocks: int = 1) -> libiscsi.Result:
    return command(session, struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0), data_in_len=blocks * BLOCK)


def node(daemon, initiator: str) -> libiscsi.IscsiSession:
    """A cluster node's session through ``daemon`` (a gateway)."""
    return libiscsi.connect(daemon.host, daemon.port, daemon.iqn, LUN, initiator_name=initiator)


def windows_cluster_sequence(gateway_a, gateway_b) -> None:
    """Arbitration, fencing and PREEMPT AND ABORT: node A through ``gateway_a``, node B through
    ``gateway_b`` (one daemon twice, or two gateways of one target)."""
    with node(gateway_a, NODE_A) as a, node(gateway_b, NODE_B) as b:
        # Both nodes register; A (the owner) reserves Write Exclusive - Registrants Only.
        assert prout(a, REGISTER_AND_IGNORE, action_key=KEY_A).good
        assert prout(b, REGISTER_AND_IGNORE, action_key=KEY_B).good
        assert prout(a, RESERVE, key=KEY_A, pr_type=WRITE_EXCLUSIVE_REGISTRANTS_ONLY).good
        assert read_reservation(b) == (KEY_A, WRITE_EXCLUSIVE_REGISTRANTS_ONLY)
        assert write(b, 10, b"b" * BLOCK).good                 # a registrant shares the access

        # A defends: it preempts B's key. B is fenced: it can read but not write.
        assert prout(a, PREEMPT, key=KEY_A, action_key=KEY_B, pr_type=WRITE_EXCLUSIVE_REGISTRANTS_ONLY).good
        first = b.scsi_command(LUN, struct.pack(">BBQIBB", 0x88, 0, 10, 1, 0, 0), data_in_len=BLOCK)
        assert (first.sense_key, first.asc, first.ascq) == (UNIT_ATTENTION, 0x2A, 0x05)   # REGISTRATIONS PREEMPTED
        assert read(b, 10).data == b"b" * BLOCK
        assert write(b, 10, b"x" * BLOCK).status == libiscsi.STATUS_RESERVATION_CONFLICT
        assert read_keys(a)[1] == [KEY_A]

        # A's second path registers with the same key and leaves a WRITE outstanding: the
        # command is in, its R2T went out, its data never comes.
        path = raw.RawInitiator(gateway_a.host, gateway_a.port, initiator=NODE_A, isid=b"\x40\x00\x01\x37\x00\x02")
        try:
            path.login(gateway_a.iqn)
            rsp, _ = path.command(prout_cdb(REGISTER_AND_IGNORE), data_out=prout_data(action_key=KEY_A))
            assert rsp.status == 0
            itt = path.next_itt()
            cdb = struct.pack(">BBIBHB", 0x2A, 0, 20, 0, 1, 0)
            path.send_pdu(path.scsi_cmd_bhs(cdb, write=True, edtl=BLOCK, itt=itt))
            path.cmd_sn += 1
            r2t = path.recv_pdu()
            assert r2t.opcode == raw.R2T and r2t.itt == itt

            # B comes back (registers again) and takes the disk over with PREEMPT AND ABORT.
            assert prout(b, REGISTER_AND_IGNORE, action_key=KEY_B).good
            assert prout(b, PREEMPT_AND_ABORT, key=KEY_B, action_key=KEY_A,
                         pr_type=WRITE_EXCLUSIVE_REGISTRANTS_ONLY).good
            assert read_reservation(b) == (KEY_B, WRITE_EXCLUSIVE_REGISTRANTS_ONLY)
            assert read_keys(b)[1] == [KEY_B]

            # The aborted WRITE: its data is dropped and it never gets a SCSI Response.
            ttt = r2t.u32(20)
            path.send_pdu(path.data_out_bhs(itt=itt, ttt=ttt, data_sn=0, offset=0, data_len=BLOCK), b"A" * BLOCK)
            pong = path.ping(b"still there")
            assert pong.opcode == raw.NOP_IN and pong.data == b"still there"
            path.sock.settimeout(0.5)
            with pytest.raises(socket.timeout):
                extra = path.recv_pdu()
                pytest.fail(f"aborted task answered: opcode {extra.opcode:#x}")
            path.sock.settimeout(5)
        finally:
            path.close()
        assert read(b, 20).data == bytes(BLOCK)                    # the aborted write did not land

        # A is now the fenced one; B owns the disk.
        assert write(a, 30, b"a" * BLOCK).status == libiscsi.STATUS_RESERVATION_CONFLICT
        assert read(a, 10).good
        assert write(b, 30, b"B" * BLOCK).good
