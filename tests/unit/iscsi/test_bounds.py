"""What a hostile initiator can make one connection hold (docs/security.md, "Limits"): tasks,
Data-Out, pending output, text, login and discovery time, and which portal serves which target.
Sans-IO: the connection is driven byte by byte through the harness, with small limits."""

from __future__ import annotations

import pytest

from odxtarget.config import PortalConfig, TargetConfig
from odxtarget.scsi.types import Status
from odxtarget.transport.iscsi import pdu as P
from odxtarget.transport.iscsi.connection import ConnectionState, IscsiConnection
from odxtarget.transport.iscsi.limits import IscsiLimits
from odxtarget.transport.iscsi.session import SessionRegistry
from odxtarget.transport.iscsi.text import encode_text, parse_text
from tests.unit.iscsi.harness import IQN, READ10, WRITE10, Initiator, cdb10
from tests.unit.iscsi.scsi_double import BLOCK, ScsiTargetDouble

KiB = 1024
MiB = 1024 * KiB


def logged_in(limits: IscsiLimits | None = None, **options) -> Initiator:
    target = ScsiTargetDouble(blocks=65536)
    registry = SessionRegistry([(TargetConfig(iqn=IQN, demo_mode=True), target)], limits=limits)
    stub = Initiator(registry, target, **options)
    assert stub.login(keys={"MaxBurstLength": str(1 * MiB), "MaxOutstandingR2T": "1",
                            "InitialR2T": "Yes"}).status_class == 0
    return stub


def r2ts(pdus) -> list[P.ReadyToTransfer]:
    return [pdu for pdu in pdus if isinstance(pdu, P.ReadyToTransfer)]


# ------------------------------------------------------------------ Data-Out sizing
def test_write_solicits_what_the_cdb_asks_for_not_the_expected_length():
    stub = logged_in()
    (r2t,) = r2ts(stub.send(stub.command(cdb10(WRITE10, 0, 2), write=True, edtl=0xFFFFFFFF, immediate=True)))
    assert (r2t.buffer_offset, r2t.desired_data_transfer_length) == (0, 2 * BLOCK)
    task = stub.connection.tasks.find(r2t.initiator_task_tag)
    assert task.buffer.capacity == 2 * BLOCK and len(task.buffer) == 2 * BLOCK


def test_write_asking_beyond_the_maximum_transfer_is_refused_without_soliciting():
    stub = logged_in()
    write_16 = bytes([0x8A, 0]) + bytes(8) + (0x10000000).to_bytes(4, "big") + bytes(2)   # 128 GiB
    pdus = stub.send(stub.command(write_16, write=True, edtl=0xFFFFFFFF, immediate=True))
    assert not r2ts(pdus)
    (response,) = pdus
    assert isinstance(response, P.ScsiResponse)
    assert stub.connection.busy is False


def test_unknown_write_command_gets_no_r2t_and_a_response():
    stub = logged_in()
    pdus = stub.send(stub.command(bytes([0xC1]) + bytes(15), write=True, edtl=1 << 30, immediate=True))
    assert not r2ts(pdus)
    assert isinstance(pdus[-1], P.ScsiResponse) and pdus[-1].status == Status.CHECK_CONDITION


def test_r2ts_wait_for_the_data_out_budget_and_resume_when_it_frees():
    stub = logged_in(IscsiLimits(max_data_out_bytes=1 * MiB))
    blocks = 1 * MiB // BLOCK
    first = r2ts(stub.send(stub.command(cdb10(WRITE10, 0, blocks), write=True, edtl=1 * MiB)))
    second = r2ts(stub.send(stub.command(cdb10(WRITE10, blocks, blocks), write=True, edtl=1 * MiB)))
    assert len(first) == 1 and second == []      # the budget holds the second burst back
    data = bytes([7]) * (1 * MiB)
    piece = 256 * KiB          # our MaxRecvDataSegmentLength
    pdus = []
    for number, offset in enumerate(range(0, 1 * MiB, piece)):
        pdus += stub.send(P.DataOut(final=offset + piece == 1 * MiB, lun=P.encode_lun(0),
                                    initiator_task_tag=first[0].initiator_task_tag,
                                    target_transfer_tag=first[0].target_transfer_tag, data_sn=number,
                                    buffer_offset=offset, data=data[offset:offset + piece]))
    assert any(isinstance(pdu, P.ScsiResponse) and pdu.status == Status.GOOD for pdu in pdus)
    (granted,) = r2ts(pdus)                       # the first write freed the budget
    assert granted.desired_data_transfer_length == 1 * MiB
    assert stub.target.data[:1 * MiB] == data


def test_one_burst_may_always_be_outstanding_so_a_large_write_progresses():
    stub = logged_in(IscsiLimits(max_data_out_bytes=64 * KiB))
    (r2t,) = r2ts(stub.send(stub.command(cdb10(WRITE10, 0, 2 * MiB // BLOCK), write=True, edtl=2 * MiB)))
    assert r2t.desired_data_transfer_length == 1 * MiB


def test_unordered_commands_get_no_r2t_until_their_turn():
    stub = logged_in()
    first_sn = stub.next_cmd_sn()
    ahead = stub.command(cdb10(WRITE10, 0, 1), write=True, edtl=BLOCK)       # CmdSN first_sn + 1
    assert r2ts(stub.send(ahead)) == []
    pdus = stub.send(stub.command(bytes(6), cmd_sn=first_sn))                # fills the gap
    assert [type(pdu) for pdu in pdus].count(P.ScsiResponse) == 1
    assert len(r2ts(pdus)) == 1


# ------------------------------------------------------------------ the task table
def test_immediate_commands_beyond_the_task_table_are_rejected():
    stub = logged_in(IscsiLimits(max_tasks_per_connection=4))
    for lba in range(4):    # immediate commands do not advance CmdSN (RFC 7143 3.2.2.1)
        assert r2ts(stub.send(stub.command(cdb10(WRITE10, lba, 1), write=True, edtl=BLOCK, immediate=True,
                                           cmd_sn=stub.cmd_sn)))
    (reject,) = stub.send(stub.command(cdb10(WRITE10, 9, 1), write=True, edtl=BLOCK, immediate=True,
                                       cmd_sn=stub.cmd_sn))
    assert isinstance(reject, P.Reject) and reject.reason == P.RejectReason.IMMEDIATE_COMMAND_REJECT


def test_numbered_command_beyond_the_task_table_gets_task_set_full():
    stub = logged_in(IscsiLimits(max_tasks_per_connection=4))
    for lba in range(4):
        stub.send(stub.command(cdb10(WRITE10, lba, 1), write=True, edtl=BLOCK, immediate=True, cmd_sn=stub.cmd_sn))
    # A command that completes at once holds no slot; one that must wait for its data needs one.
    (data_in,) = stub.send(stub.command(cdb10(READ10, 0, 1), read=True, edtl=BLOCK))
    assert data_in.status == Status.GOOD
    (response,) = stub.send(stub.command(cdb10(WRITE10, 5, 1), write=True, edtl=BLOCK))
    assert isinstance(response, P.ScsiResponse) and response.status == Status.TASK_SET_FULL
    assert response.max_cmd_sn - response.exp_cmd_sn + 1 == 4


# ------------------------------------------------------------------ pending output
def test_output_bound_stalls_input_until_resumed():
    stub = logged_in(IscsiLimits(max_pending_send_bytes=64 * KiB))
    blocks = 32 * KiB // BLOCK
    wire = b"".join(stub.wire(stub.command(cdb10(READ10, 0, blocks), read=True, edtl=32 * KiB)) for _ in range(10))
    stub.connection.receive_data(wire, 0.0)
    out = stub.connection.data_to_send()
    sent = sum(len(chunk) for chunk in out)
    assert stub.connection.input_stalled
    assert sent <= 64 * KiB + 32 * KiB + 1024      # one command may cross the bound, no more
    stub.connection.send_backlog = sent            # the socket took nothing yet
    stub.connection.resume(0.0)
    assert stub.connection.data_to_send() == []
    stub.connection.send_backlog = 0               # the peer read everything
    stub.connection.resume(0.0)
    assert sum(len(chunk) for chunk in stub.connection.data_to_send()) > 0


# ------------------------------------------------------------------ text
def text_request(stub: Initiator, data: bytes, *, cont=False, ttt=P.RESERVED_TAG, itt=5) -> P.TextRequest:
    return P.TextRequest(final=not cont, cont=cont, initiator_task_tag=itt, target_transfer_tag=ttt,
                         cmd_sn=stub.next_cmd_sn(), data=data)


def test_continued_text_is_refused_past_the_bound_and_holds_nothing():
    stub = logged_in(IscsiLimits(max_text_bytes=16 * KiB))
    replies = []
    for _ in range(40):
        replies += stub.send(text_request(stub, b"X-a=" + b"v" * 8000, cont=True))
    rejects = [pdu for pdu in replies if isinstance(pdu, P.Reject)]
    assert rejects and all(pdu.reason == P.RejectReason.PROTOCOL_ERROR for pdu in rejects)
    assert not any(isinstance(pdu, P.TextResponse) and pdu.final for pdu in replies)
    assert len(stub.connection._text._current.request) == 0


def test_a_continued_request_is_answered_once_whole():
    stub = logged_in()
    (first,) = stub.send(text_request(stub, b"SendTar", cont=True))
    assert isinstance(first, P.TextResponse) and not first.final and first.target_transfer_tag != P.RESERVED_TAG
    (answer,) = stub.send(text_request(stub, b"gets=All\x00", ttt=first.target_transfer_tag))
    assert answer.final and dict(parse_text(bytes(answer.data), repeatable={"TargetAddress"}))["TargetName"] == IQN


@pytest.mark.parametrize("pairs, expected", [
    ([("SendTargets", "Alle")], [("SendTargets", "Reject")]),
    ([("SendTargets", "A")], [("SendTargets", "Reject")]),
    ([("sENDtARGETS", "aLL")], [("sENDtARGETS", "NotUnderstood")]),
    ([("MaxRecvDataSegmentLength", "12x")], [("MaxRecvDataSegmentLength", "Reject")]),
    ([("InitiatorAlias", "a" * 300)], [("InitiatorAlias", "Reject")]),
    ([("HeaderDigest", "None")], [("HeaderDigest", "Reject")]),
    ([("X-vendor.key", "1")], [("X-vendor.key", "NotUnderstood")]),
])
def test_bad_values_get_reject_and_unknown_keys_not_understood(pairs, expected):
    stub = logged_in()
    (answer,) = stub.send(text_request(stub, encode_text(pairs)))
    assert isinstance(answer, P.TextResponse) and answer.final
    assert parse_text(bytes(answer.data)) == expected


# ------------------------------------------------------------------ time bounds
def test_login_must_finish_within_the_login_timeout():
    stub = Initiator(SessionRegistry([(TargetConfig(iqn=IQN, demo_mode=True), ScsiTargetDouble())],
                                     limits=IscsiLimits(login_timeout=5)))
    stub.connection.on_timer(4.9)
    assert stub.connection.state is ConnectionState.LOGIN
    stub.connection.on_timer(5.0)
    assert stub.connection.state is ConnectionState.CLOSED and stub.connection.close_requested


def test_a_silent_discovery_session_is_closed():
    stub = Initiator(SessionRegistry([(TargetConfig(iqn=IQN, demo_mode=True), ScsiTargetDouble())],
                                     limits=IscsiLimits(discovery_idle_timeout=2)), nop_interval=30)
    assert stub.login(session_type="Discovery").status_class == 0
    stub.connection.on_timer(1.9)
    assert stub.connection.state is ConnectionState.FULL_FEATURE
    stub.connection.on_timer(2.0)
    assert stub.connection.close_requested


# ------------------------------------------------------------------ portals and sessions
def portal_registry(limits: IscsiLimits | None = None) -> SessionRegistry:
    return SessionRegistry([
        (TargetConfig(iqn=IQN, demo_mode=True, portals=[PortalConfig("127.0.0.1", 3260)]), ScsiTargetDouble()),
        (TargetConfig(iqn=IQN + "2", demo_mode=True, portals=[PortalConfig("0.0.0.0", 3261)]), ScsiTargetDouble()),
    ], limits=limits)


def on_portal(registry: SessionRegistry, ip: str, port: int) -> Initiator:
    stub = Initiator(registry)
    stub.connection = IscsiConnection(registry, peer=f"{ip}:50000", local_address=ip, local_port=port)
    return stub


@pytest.mark.parametrize("ip, port, target, status", [
    ("127.0.0.1", 3260, IQN, (0, 0)),
    ("127.0.0.1", 3261, IQN, (2, 3)),           # IQN is not served on port 3261
    ("127.0.0.1", 3261, IQN + "2", (0, 0)),     # the wildcard portal serves every address
    ("127.0.0.1", 3260, IQN + "2", (2, 3)),
])
def test_a_target_is_reachable_only_through_its_own_portals(ip, port, target, status):
    reply = on_portal(portal_registry(), ip, port).login(target=target)
    assert (reply.status_class, reply.status_detail) == status


def test_send_targets_lists_only_the_targets_of_the_portal_asked():
    stub = on_portal(portal_registry(), "127.0.0.1", 3260)
    assert stub.login(session_type="Discovery").status_class == 0
    (answer,) = stub.send(text_request(stub, encode_text([("SendTargets", "All")])))
    pairs = parse_text(bytes(answer.data), repeatable={"TargetName", "TargetAddress"})
    assert pairs == [("TargetName", IQN), ("TargetAddress", "127.0.0.1:3260,1")]


def test_sessions_per_address_are_bounded():
    registry = portal_registry(IscsiLimits(max_sessions_per_address=2))
    stubs = [on_portal(registry, "127.0.0.1", 3260) for _ in range(3)]
    replies = [stub.login() for stub in stubs]
    assert [(r.status_class, r.status_detail) for r in replies] == [(0, 0), (0, 0), (3, 2)]
    stubs[0].connection.connection_lost("gone")
    assert on_portal(registry, "127.0.0.1", 3260).login().status_class == 0
