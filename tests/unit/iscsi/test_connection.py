"""The sans-IO connection driven by hand-built PDUs: login hand-off, commands, data
sequencing, CmdSN window, digests, NOP, text and logout."""

from __future__ import annotations

import logging

import pytest

from odxtarget.config import TargetConfig
from odxtarget.scsi.types import Status
from odxtarget.transport.iscsi import pdu as P
from odxtarget.transport.iscsi.connection import ConnectionState
from odxtarget.transport.iscsi.session import SessionRegistry
from odxtarget.transport.iscsi.text import encode_text, parse_text
from tests.unit.iscsi.harness import INITIATOR, IQN, READ10, WRITE10, Initiator, cdb10
from tests.unit.iscsi.scsi_double import BLOCK, ScsiTargetDouble

INQUIRY = bytes([0x12, 0, 0, 0, 36, 0])
TUR = bytes(6)


def logged_in(**options) -> Initiator:
    stub = Initiator(**options)
    assert stub.login().status_class == 0
    return stub


# ------------------------------------------------------------------ login hand-off / sessions
def test_login_allocates_a_tsih_and_enters_full_feature(initiator):
    conn = initiator.connection
    assert conn.state is ConnectionState.FULL_FEATURE
    assert conn.session.tsih != 0
    assert conn.session.nexus.initiator_port == f"{INITIATOR},i,0x{initiator.isid.hex()}"
    assert conn.session.nexus.target_port == f"{IQN},t,0x0001"


def test_tsihs_are_unique_and_nonzero():
    registry = SessionRegistry([(TargetConfig(iqn=IQN, demo_mode=True), ScsiTargetDouble())])
    replies = [Initiator(registry).login() for _ in range(5)]
    tsihs = [r.tsih for r in replies]
    assert 0 not in tsihs and len(set(tsihs)) == 5


def test_real_login_state_machine_is_the_default():
    from odxtarget.transport.iscsi.connection import IscsiConnection
    stub = Initiator()
    stub.connection = IscsiConnection(stub.registry, peer="127.0.0.1:40000")   # no login_factory given
    reply = stub.login()
    assert reply.status_class == 0 and reply.tsih != 0
    assert stub.connection.state is ConnectionState.FULL_FEATURE


def test_login_to_unknown_tsih_is_refused_with_session_does_not_exist(caplog):
    stub = Initiator()
    with caplog.at_level(logging.WARNING, "odxtarget.iscsi"):
        reply = stub.login(tsih=999)
    assert (reply.status_class, reply.status_detail) == (2, 0x0A)
    assert stub.connection.close_requested
    assert "names no live session" in caplog.text and "127.0.0.1:40000" in caplog.text


def test_second_connection_to_a_live_session_is_refused(initiator):
    other = Initiator(initiator.registry, initiator.target, isid=initiator.isid)
    reply = other.login(tsih=initiator.connection.session.tsih)
    assert (reply.status_class, reply.status_detail) == (2, 0x06)
    assert initiator.connection.state is ConnectionState.FULL_FEATURE


def test_reinstatement_closes_the_old_session_and_reports_nexus_loss(initiator):
    old_session = initiator.connection.session
    new = Initiator(initiator.registry, initiator.target, isid=initiator.isid)
    reply = new.login()
    assert reply.status_class == 0 and reply.tsih != old_session.tsih
    assert old_session.closed
    assert initiator.connection.close_requested
    assert initiator.target.lost == [old_session.nexus]
    assert initiator.registry.by_tsih(reply.tsih) is new.connection.session


def test_non_login_pdu_during_login_drops_the_connection():
    stub = Initiator()
    assert stub.send(P.NopOut(initiator_task_tag=1)) == []
    assert stub.connection.close_requested


# ------------------------------------------------------------------ reads and residuals
def test_read_collapses_status_into_the_last_data_in(initiator):
    (data_in,) = initiator.send(initiator.command(INQUIRY, read=True, edtl=36))
    assert isinstance(data_in, P.DataIn)
    assert data_in.has_status and data_in.final and data_in.status == Status.GOOD
    assert bytes(data_in.data)[8:14] == b"ODXTGT"
    assert not data_in.residual_underflow and not data_in.residual_overflow


def test_large_read_is_cut_by_max_xmit_and_max_burst():
    stub = logged_in()
    stub.connection.max_xmit = 1024
    stub.connection.max_burst = 2048
    stub.target.data[:8 * BLOCK] = bytes(range(256)) * 16
    pdus = stub.send(stub.command(cdb10(READ10, 0, 8), read=True, edtl=8 * BLOCK))
    assert [p.buffer_offset for p in pdus] == [0, 1024, 2048, 3072]
    assert [p.data_sn for p in pdus] == [0, 1, 2, 3]
    assert [p.final for p in pdus] == [False, True, False, True]      # F ends each MaxBurstLength sequence
    assert [p.has_status for p in pdus] == [False, False, False, True]
    assert b"".join(bytes(p.data) for p in pdus) == bytes(stub.target.data[:8 * BLOCK])
    stat_sns = [p.stat_sn for p in pdus]
    assert stat_sns[-1] != 0


@pytest.mark.parametrize("edtl, blocks, sent, flag, residual", [
    (0, 1, 0, "overflow", BLOCK),
    (10000, 1, BLOCK, "underflow", 10000 - BLOCK),
    (200, 1, 200, "overflow", BLOCK - 200),
    (BLOCK, 2, BLOCK, "overflow", BLOCK),
])
def test_read_residuals(initiator, edtl, blocks, sent, flag, residual):
    pdus = initiator.send(initiator.command(cdb10(READ10, 0, blocks), read=True, edtl=edtl))
    last = pdus[-1]
    got = sum(len(p.data) for p in pdus if isinstance(p, P.DataIn))
    assert got == sent
    assert last.status == Status.GOOD
    assert getattr(last, f"residual_{flag}") and last.residual_count == residual


def test_check_condition_goes_in_a_scsi_response_with_sense_length_prefix(initiator):
    (response,) = initiator.send(initiator.command(bytes([0xFF] + [0] * 5), edtl=0))
    assert isinstance(response, P.ScsiResponse)
    assert response.status == Status.CHECK_CONDITION
    assert int.from_bytes(bytes(response.data[:2]), "big") == len(response.sense) == 18
    assert response.sense[2] & 0x0F == 0x5 and response.sense[12] == 0x20


def test_bidirectional_command_is_refused_cleanly(initiator):
    (response,) = initiator.send(initiator.command(INQUIRY, read=True, write=True, edtl=36))
    assert response.status == Status.CHECK_CONDITION and response.sense[2] == 0x5
    assert initiator.target.commands == []


# ------------------------------------------------------------------ writes
def test_write_with_all_data_immediate(initiator):
    data = b"w" * BLOCK
    (response,) = initiator.send(initiator.command(cdb10(WRITE10, 3, 1), write=True, edtl=BLOCK, data=data))
    assert response.status == Status.GOOD and not response.residual_underflow
    assert bytes(initiator.target.data[3 * BLOCK:4 * BLOCK]) == data


def test_r2t_sequence_respects_max_burst_and_outstanding():
    stub = logged_in(immediate_data=False, initial_r2t=True)
    conn = stub.connection
    conn.max_burst = 1024
    conn.max_outstanding_r2t = 2
    payload = bytes(range(256)) * 16
    r2ts = stub.send(stub.command(cdb10(WRITE10, 0, 8), write=True, edtl=4096))
    assert [(r.r2t_sn, r.buffer_offset, r.desired_data_transfer_length) for r in r2ts] == [(0, 0, 1024), (1, 1024, 1024)]
    assert stub.target.commands == []          # nothing runs before all data is in
    task_itt = r2ts[0].initiator_task_tag
    answers = []
    for r2t in r2ts:
        for n, offset in enumerate(range(r2t.buffer_offset, r2t.buffer_offset + 1024, 512)):
            answers += stub.send(P.DataOut(final=offset + 512 == r2t.buffer_offset + 1024, initiator_task_tag=task_itt,
                                           target_transfer_tag=r2t.target_transfer_tag, data_sn=n,
                                           buffer_offset=offset, data=payload[offset:offset + 512]))
    new_r2ts = [a for a in answers if isinstance(a, P.ReadyToTransfer)]
    assert [(r.r2t_sn, r.buffer_offset) for r in new_r2ts] == [(2, 2048), (3, 3072)]
    for r2t in new_r2ts:
        answers = stub.send(P.DataOut(final=True, initiator_task_tag=task_itt, target_transfer_tag=r2t.target_transfer_tag,
                                      data_sn=0, buffer_offset=r2t.buffer_offset,
                                      data=payload[r2t.buffer_offset:r2t.buffer_offset + 1024]))
    (response,) = answers
    assert isinstance(response, P.ScsiResponse) and response.status == Status.GOOD
    assert response.exp_data_sn == 4
    assert bytes(stub.target.data[:4096]) == payload
    assert len(stub.target.commands) == 1


def test_unsolicited_data_out_then_r2t_for_the_rest():
    stub = logged_in(initial_r2t=False)
    conn = stub.connection
    assert not conn.initial_r2t
    conn.first_burst = 1024
    payload = b"u" * 2048
    command = stub.command(cdb10(WRITE10, 0, 4), write=True, edtl=2048, data=payload[:512], final=False)
    assert stub.send(command) == []
    (r2t,) = stub.send(P.DataOut(final=True, initiator_task_tag=command.initiator_task_tag, data_sn=0,
                                 buffer_offset=512, data=payload[512:1024]))
    assert (r2t.buffer_offset, r2t.desired_data_transfer_length) == (1024, 1024)
    (response,) = stub.send(P.DataOut(final=True, initiator_task_tag=command.initiator_task_tag,
                                      target_transfer_tag=r2t.target_transfer_tag, data_sn=0, buffer_offset=1024,
                                      data=payload[1024:]))
    assert response.status == Status.GOOD
    assert bytes(stub.target.data[:2048]) == payload


def test_write_residuals_follow_the_cdb_transfer_length(initiator):
    (response,) = initiator.send(initiator.command(cdb10(WRITE10, 0, 1), write=True, edtl=0))
    assert response.residual_overflow and response.residual_count == BLOCK


def test_data_out_with_unknown_ttt_is_rejected(initiator, caplog):
    with caplog.at_level(logging.WARNING, "odxtarget.iscsi"):
        (reject,) = initiator.send(P.DataOut(final=True, initiator_task_tag=5, target_transfer_tag=77, data=b"x" * 4))
    assert isinstance(reject, P.Reject) and reject.reason == P.RejectReason.INVALID_PDU_FIELD
    assert bytes(reject.data)[0] == P.Opcode.SCSI_DATA_OUT
    assert INITIATOR in caplog.text


def test_wrong_data_sn_fails_the_task_but_not_the_session():
    stub = logged_in(immediate_data=False)
    (r2t,) = stub.send(stub.command(cdb10(WRITE10, 0, 1), write=True, edtl=BLOCK))
    (response,) = stub.send(P.DataOut(final=True, initiator_task_tag=r2t.initiator_task_tag,
                                      target_transfer_tag=r2t.target_transfer_tag, data_sn=27, data=b"x" * BLOCK))
    assert response.status == Status.CHECK_CONDITION
    assert (response.sense[2], response.sense[12], response.sense[13]) == (0x0B, 0x47, 0x05)
    assert stub.target.commands == []
    assert stub.connection.state is ConnectionState.FULL_FEATURE
    (ok,) = stub.send(stub.command(TUR))
    assert ok.status == Status.GOOD


def test_data_out_offset_outside_the_r2t_drops_the_connection():
    stub = logged_in(immediate_data=False)
    (r2t,) = stub.send(stub.command(cdb10(WRITE10, 0, 1), write=True, edtl=BLOCK))
    stub.send(P.DataOut(final=True, initiator_task_tag=r2t.initiator_task_tag,
                        target_transfer_tag=r2t.target_transfer_tag, buffer_offset=BLOCK, data=b"x" * 4))
    assert stub.connection.close_requested
    assert stub.target.lost == [stub.connection.session.nexus]


def test_immediate_data_when_not_negotiated_is_a_protocol_error():
    stub = logged_in(immediate_data=False)
    (reject,) = stub.send(stub.command(cdb10(WRITE10, 0, 1), write=True, edtl=BLOCK, data=b"x" * BLOCK))
    assert reject.reason == P.RejectReason.PROTOCOL_ERROR
    (ok,) = stub.send(stub.command(TUR))       # the rejected command's CmdSN was consumed
    assert ok.status == Status.GOOD


# ------------------------------------------------------------------ digests
def test_data_digest_error_on_data_out_rejects_then_fails_the_task():
    stub = logged_in(header_digest=True, data_digest=True, immediate_data=False)
    assert stub.connection.header_digest and stub.connection.data_digest
    (r2t,) = stub.send(stub.command(cdb10(WRITE10, 0, 1), write=True, edtl=BLOCK))
    wire = bytearray(stub.wire(P.DataOut(final=True, initiator_task_tag=r2t.initiator_task_tag,
                                         target_transfer_tag=r2t.target_transfer_tag, data=b"y" * BLOCK)))
    wire[P.BHS_SIZE + 4 + 10] ^= 0xFF        # corrupt one data byte
    reject, response = stub.feed(bytes(wire))
    assert isinstance(reject, P.Reject) and reject.reason == P.RejectReason.DATA_DIGEST_ERROR
    assert response.status == Status.CHECK_CONDITION and response.sense[12:14] == b"\x47\x05"
    assert stub.target.commands == []
    assert reject.stat_sn + 1 == response.stat_sn


def test_data_digest_error_on_a_command_discards_it_without_consuming_the_cmd_sn():
    stub = logged_in(header_digest=True, data_digest=True)
    command = stub.command(cdb10(WRITE10, 0, 1), write=True, edtl=BLOCK, data=b"z" * BLOCK)
    wire = bytearray(stub.wire(command))
    wire[-10] ^= 0xFF
    (reject,) = stub.feed(bytes(wire))
    assert reject.reason == P.RejectReason.DATA_DIGEST_ERROR
    (response,) = stub.send(command)           # retried with the same CmdSN
    assert response.status == Status.GOOD
    assert bytes(stub.target.data[:BLOCK]) == b"z" * BLOCK


def test_header_digest_error_drops_the_connection():
    stub = logged_in(header_digest=True)
    wire = bytearray(stub.wire(stub.command(TUR)))
    wire[P.BHS_SIZE] ^= 1
    assert stub.feed(bytes(wire)) == []
    assert stub.connection.close_requested and stub.connection.state is ConnectionState.CLOSED
    assert stub.target.lost and stub.connection.session.closed


def test_oversized_data_segment_is_rejected_and_the_connection_closed(initiator):
    limit = initiator.connection.framer.max_recv_data_segment_length
    (reject,) = initiator.send(P.NopOut(initiator_task_tag=1, immediate=True, data=b"x" * (limit + 1)))
    assert reject.reason == P.RejectReason.PROTOCOL_ERROR
    assert initiator.connection.close_requested


# ------------------------------------------------------------------ CmdSN window
def test_cmd_sn_outside_the_window_is_silently_ignored(initiator):
    window = initiator.connection.window
    assert (window.max_cmd_sn - window.exp_cmd_sn) % (1 << 32) >= 63
    assert initiator.send(initiator.command(TUR, cmd_sn=window.max_cmd_sn + 1)) == []
    assert initiator.send(initiator.command(TUR, cmd_sn=window.exp_cmd_sn - 1)) == []
    assert initiator.target.commands == []
    initiator.cmd_sn = window.exp_cmd_sn
    (ok,) = initiator.send(initiator.command(TUR))
    assert ok.status == Status.GOOD


def test_commands_ahead_of_exp_cmd_sn_wait_for_the_gap(initiator):
    first_sn = initiator.next_cmd_sn()
    assert initiator.send(initiator.command(TUR, itt=0x20)) == []      # CmdSN first_sn + 1
    assert initiator.send(initiator.command(TUR, itt=0x21)) == []
    answers = initiator.send(initiator.command(TUR, itt=0x1F, cmd_sn=first_sn))
    assert [a.initiator_task_tag for a in answers] == [0x1F, 0x20, 0x21]
    assert answers[-1].exp_cmd_sn == initiator.cmd_sn
    assert answers[-1].max_cmd_sn == (initiator.cmd_sn + 127) % (1 << 32)


def test_immediate_commands_do_not_advance_exp_cmd_sn(initiator):
    exp = initiator.connection.window.exp_cmd_sn
    (ok,) = initiator.send(initiator.command(TUR, immediate=True, cmd_sn=exp))
    assert ok.status == Status.GOOD and ok.exp_cmd_sn == exp


def test_cmd_sn_wraps_around():
    stub = Initiator()
    stub.cmd_sn = 0xFFFFFFFE
    assert stub.login().status_class == 0
    answers = [stub.send(stub.command(TUR))[0] for _ in range(4)]
    assert [a.exp_cmd_sn for a in answers] == [0xFFFFFFFF, 0, 1, 2]


def test_stat_sn_increments_per_response(initiator):
    a = initiator.send(initiator.command(TUR))[0]
    b = initiator.send(initiator.command(TUR))[0]
    assert b.stat_sn == a.stat_sn + 1


# ------------------------------------------------------------------ NOP, text, logout, misc
def test_nop_out_ping_is_echoed(initiator):
    (nop_in,) = initiator.send(P.NopOut(initiator_task_tag=0x55, cmd_sn=initiator.next_cmd_sn(), data=b"hello"))
    assert isinstance(nop_in, P.NopIn)
    assert nop_in.initiator_task_tag == 0x55 and bytes(nop_in.data) == b"hello"
    assert nop_in.target_transfer_tag == P.RESERVED_TAG


def test_keepalive_ping_and_timeout():
    stub = logged_in(nop_interval=5.0)
    conn = stub.connection
    conn.on_timer(3.0)
    assert stub.receive() == []
    conn.on_timer(6.0)
    (ping,) = stub.receive()
    assert isinstance(ping, P.NopIn) and ping.initiator_task_tag == P.RESERVED_TAG
    assert ping.target_transfer_tag != P.RESERVED_TAG
    stub.now = 7.0
    assert stub.send(P.NopOut(immediate=True, initiator_task_tag=P.RESERVED_TAG,
                              target_transfer_tag=ping.target_transfer_tag, cmd_sn=stub.cmd_sn)) == []
    conn.on_timer(11.0)
    assert stub.receive() == [] and not conn.close_requested
    conn.on_timer(12.5)
    (second,) = stub.receive()
    conn.on_timer(18.0)
    assert conn.close_requested and stub.target.lost


def test_send_targets_text_request(initiator):
    (reply,) = initiator.send(P.TextRequest(initiator_task_tag=9, cmd_sn=initiator.next_cmd_sn(),
                                            data=encode_text([("SendTargets", "All")])))
    assert isinstance(reply, P.TextResponse) and reply.final
    assert ("TargetName", IQN) in parse_text(bytes(reply.data))


def test_long_text_answer_is_continued_with_a_ttt():
    targets = [(TargetConfig(iqn=f"iqn.2026-11.org.odxtarget:t{i:03d}", demo_mode=True), ScsiTargetDouble())
               for i in range(60)]
    stub = Initiator(SessionRegistry(targets))
    assert stub.login(session_type="Discovery").status_class == 0
    stub.connection.session.parameters.max_xmit_data_segment_length = 512
    text = b""
    (reply,) = stub.send(P.TextRequest(initiator_task_tag=3, cmd_sn=stub.next_cmd_sn(),
                                       data=encode_text([("SendTargets", "All")])))
    rounds = 1
    while not reply.final:
        assert reply.cont and reply.target_transfer_tag != P.RESERVED_TAG and len(reply.data) == 512
        text += bytes(reply.data)
        (reply,) = stub.send(P.TextRequest(initiator_task_tag=3, target_transfer_tag=reply.target_transfer_tag,
                                           cmd_sn=stub.next_cmd_sn()))
        rounds += 1
    text += bytes(reply.data)
    assert rounds > 2
    names = [pair.split(b"=", 1)[1] for pair in text.split(b"\0") if pair.startswith(b"TargetName=")]
    assert len(names) == 60


def test_discovery_session_refuses_scsi_commands():
    stub = Initiator()
    assert stub.login(session_type="Discovery").status_class == 0
    (reject,) = stub.send(stub.command(TUR))
    assert isinstance(reject, P.Reject) and reject.reason == P.RejectReason.PROTOCOL_ERROR


def test_logout_closes_the_session_cleanly(initiator):
    (reply,) = initiator.send(P.LogoutRequest(immediate=True, reason=P.LogoutReason.CLOSE_SESSION,
                                              initiator_task_tag=4, cmd_sn=initiator.cmd_sn))
    assert isinstance(reply, P.LogoutResponse) and reply.response == P.LogoutResponseCode.CLOSED_SUCCESSFULLY
    conn = initiator.connection
    assert conn.close_requested and conn.state is ConnectionState.LOGGED_OUT
    assert initiator.target.logged_out == [conn.session.nexus] and initiator.target.lost == []
    assert initiator.registry.sessions() == []


def test_logout_for_recovery_is_not_supported(initiator):
    (reply,) = initiator.send(P.LogoutRequest(immediate=True, reason=P.LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY,
                                              initiator_task_tag=4, cmd_sn=initiator.cmd_sn))
    assert reply.response == P.LogoutResponseCode.RECOVERY_NOT_SUPPORTED
    assert not initiator.connection.close_requested


def test_snack_is_rejected_at_erl0(initiator):
    (reject,) = initiator.send(P.SnackRequest(initiator_task_tag=1))
    assert reject.reason == P.RejectReason.PROTOCOL_ERROR


def test_login_request_in_full_feature_phase_is_rejected(initiator):
    (reject,) = initiator.send(P.LoginRequest(isid=initiator.isid))
    assert reject.reason == P.RejectReason.PROTOCOL_ERROR
    assert initiator.connection.state is ConnectionState.FULL_FEATURE


def test_connection_loss_reports_nexus_loss(initiator):
    initiator.connection.receive_data(b"", 0.0)
    assert initiator.target.lost == [initiator.connection.session.nexus]
    assert initiator.registry.sessions() == []


def test_describe_reports_session_and_digests():
    stub = logged_in(header_digest=True)
    info = stub.connection.describe()
    assert info["initiator"] == INITIATOR and info["target"] == IQN
    assert info["header_digest"] == "CRC32C" and info["data_digest"] == "None"
    assert info["tsih"] == stub.connection.session.tsih and info["isid"] == stub.isid.hex()


def test_login_phase_has_a_timeout():
    stub = Initiator()
    stub.connection.on_timer(10.0)
    assert not stub.connection.close_requested
    stub.connection.on_timer(31.0)
    assert stub.connection.close_requested


def test_package_exports_are_lazy():
    import odxtarget.transport.iscsi as package
    assert package.IscsiServer.__name__ == "IscsiServer"
    assert callable(package.install_event_loop_policy)


def test_login_identity_must_not_change_between_login_pdus():
    stub = Initiator()
    first = P.LoginRequest(transit=False, csg=1, nsg=1, isid=stub.isid, initiator_task_tag=5, cmd_sn=1,
                           data=encode_text([("InitiatorName", INITIATOR), ("TargetName", IQN)]))
    (reply,) = stub.send(first)
    assert reply.status_class == 0 and not reply.transit
    second = P.LoginRequest(transit=True, csg=1, nsg=3, isid=bytes(6), initiator_task_tag=5, cmd_sn=1)
    (reply,) = stub.send(second)
    assert (reply.status_class, reply.status_detail) == (2, 0)
    assert stub.connection.close_requested and stub.registry.sessions() == []


def test_login_stat_sn_advances_per_login_response():
    stub = Initiator()
    request = P.LoginRequest(transit=False, csg=1, nsg=1, isid=stub.isid, initiator_task_tag=5, cmd_sn=1,
                             exp_stat_sn=40, data=encode_text([("InitiatorName", INITIATOR), ("TargetName", IQN)]))
    (a,) = stub.send(request)
    request.transit, request.nsg, request.data = True, 3, b""
    (b,) = stub.send(request)
    assert b.stat_sn == a.stat_sn + 1 and b.tsih != 0
    (nop,) = stub.send(P.NopOut(immediate=True, initiator_task_tag=1, cmd_sn=1))
    assert nop.stat_sn == b.stat_sn + 1 and nop.exp_cmd_sn == 1
