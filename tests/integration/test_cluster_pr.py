"""Persistent reservations end to end against the real daemon, the way a Windows failover
cluster uses them: two nodes (two libiscsi sessions with different initiator names), one
more path of node A through the raw initiator so that a command can be left outstanding,
PREEMPT AND ABORT, APTPL across SIGKILL, and ODX under reservations."""

from __future__ import annotations

import os
import struct

import pytest

from odxtarget.copy.params import build_populate_token_list, build_write_using_token_list
from odxtarget.initiator import libiscsi
from odxtarget.initiator.odx_copy import (RRTI_HEADER_SIZE, RRTI_SENSE_FIELD_LENGTH_OFFSET,
                                          ROD_TOKEN_DESCRIPTORS_LENGTH_SIZE, ROD_TOKEN_RESTRICTED_SIZE)
from odxtarget.copy.constants import ROD_TOKEN_SIZE
from tests.integration import raw_initiator as raw
from tests.support.daemon import MIB, DaemonSpec, LunSpec
from tests.support.reservations import (APTPL, BLOCK, KEY_A, LUN, NODE_A, NODE_B, REGISTER_AND_IGNORE,
                                        RESERVE, WRITE_EXCLUSIVE, command, node, prout, prout_cdb, prout_data,
                                        read, read_keys, read_reservation, windows_cluster_sequence, write)

pytestmark = [pytest.mark.integration]



def test_windows_cluster_arbitration_fencing_and_preempt_and_abort(daemon_factory):
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(lun=LUN, size=16 * MIB)]))
    windows_cluster_sequence(daemon, daemon)


def test_aptpl_reservation_survives_sigkill_and_restart(daemon_factory):
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(lun=LUN, size=16 * MIB)]))
    isid = b"\x40\x00\x01\x37\x00\x07"          # a fixed ISID: the same I_T nexus after the restart
    owner = raw.RawInitiator(daemon.host, daemon.port, initiator=NODE_A, isid=isid)
    owner.login(daemon.iqn)
    rsp, _ = owner.command(prout_cdb(REGISTER_AND_IGNORE), data_out=prout_data(action_key=KEY_A, flags=APTPL))
    assert rsp.status == 0
    rsp, _ = owner.command(prout_cdb(RESERVE, WRITE_EXCLUSIVE), data_out=prout_data(key=KEY_A))
    assert rsp.status == 0
    owner.close()
    with node(daemon, NODE_B) as b:
        generation = read_keys(b)[0]
    saved = list((daemon.directory / "state" / "reservations").iterdir())
    assert [path.suffix for path in saved] == [".json"]

    daemon.restart(hard=True)                   # SIGKILL, then start on the same state_dir

    with node(daemon, NODE_B) as b:
        assert read_keys(b) == (generation, [KEY_A])
        assert read_reservation(b) == (KEY_A, WRITE_EXCLUSIVE)
        assert write(b, 5, b"b" * BLOCK).status == libiscsi.STATUS_RESERVATION_CONFLICT
        assert read(b, 5).good
    owner = raw.RawInitiator(daemon.host, daemon.port, initiator=NODE_A, isid=isid)
    try:
        owner.login(daemon.iqn)
        assert owner.write10(5, b"a" * BLOCK).status == 0     # the holder's nexus writes again
    finally:
        owner.close()


def _rrti_token(session, list_id: int) -> bytes:
    cdb = struct.pack(">BBI4xIBB", 0x84, 0x07, list_id, 1024, 0, 0)
    data = command(session, cdb, data_in_len=1024).data
    at = RRTI_HEADER_SIZE + data[RRTI_SENSE_FIELD_LENGTH_OFFSET] + ROD_TOKEN_DESCRIPTORS_LENGTH_SIZE
    at += ROD_TOKEN_RESTRICTED_SIZE
    return data[at:at + ROD_TOKEN_SIZE]


def _third_party_copy_out(session, action: int, list_id: int, parameters: bytes) -> libiscsi.Result:
    cdb = struct.pack(">BB4xIIBB", 0x83, action, list_id, len(parameters), 0, 0)
    return command(session, cdb, parameters)


def test_odx_under_reservations(daemon_factory):
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(lun=LUN, size=16 * MIB)]))
    payload = os.urandom(8 * BLOCK)
    with node(daemon, NODE_A) as a, node(daemon, NODE_B) as b:
        assert write(a, 0, payload).good
        # A holds Write Exclusive on LUN 0. B is not registered: it may still read LUN 0, so
        # POPULATE TOKEN (a read) works for it.
        assert prout(a, REGISTER_AND_IGNORE, action_key=KEY_A).good
        assert prout(a, RESERVE, key=KEY_A, pr_type=WRITE_EXCLUSIVE).good
        assert write(b, 0, payload).status == libiscsi.STATUS_RESERVATION_CONFLICT
        assert _third_party_copy_out(b, 0x10, 1, build_populate_token_list([(0, 8)])).good
        token = _rrti_token(b, 1)
        assert len(token) == ROD_TOKEN_SIZE

        # WRITE USING TOKEN into LUN 0, reserved by A: RESERVATION CONFLICT for B ...
        wut = build_write_using_token_list(token, [(100, 8)])
        assert _third_party_copy_out(b, 0x11, 2, wut).status == libiscsi.STATUS_RESERVATION_CONFLICT
        assert read(b, 100, 8).data == bytes(8 * BLOCK)
        # ... while the holder's copy goes through.
        assert _third_party_copy_out(a, 0x11, 3, wut).good
        assert read(b, 100, 8).data == payload
