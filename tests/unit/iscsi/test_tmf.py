"""Task management: what the front end aborts itself and what it asks the core."""

from __future__ import annotations

from odxtarget.config import TargetConfig
from odxtarget.scsi.types import Status, TaskManagementFunction as Tmf
from odxtarget.transport.iscsi import pdu as P
from odxtarget.transport.iscsi.session import SessionRegistry
from tests.unit.iscsi.harness import IQN, WRITE10, Initiator, cdb10
from tests.unit.iscsi.scsi_double import BLOCK, ScsiTargetDouble

TUR = bytes(6)


def waiting_write(stub: Initiator, lun: int = 0):
    """A WRITE that waits for its Data-Out (no immediate data, InitialR2T=Yes)."""
    command = stub.command(cdb10(WRITE10, 0, 1), write=True, edtl=BLOCK, lun=lun)
    (r2t,) = stub.send(command)
    assert isinstance(r2t, P.ReadyToTransfer)
    return command, r2t


def tmf(stub: Initiator, function: int, cmd_sn: int | None = None, **fields) -> P.TaskManagementResponse:
    (response,) = stub.send(P.TaskManagementRequest(immediate=True, function=function, initiator_task_tag=0x900,
                                                    cmd_sn=stub.cmd_sn if cmd_sn is None else cmd_sn, **fields))
    assert isinstance(response, P.TaskManagementResponse)
    return response


def setup_pair():
    target = ScsiTargetDouble(luns=(0, 1))
    registry = SessionRegistry([(TargetConfig(iqn=IQN, demo_mode=True), target)])
    stubs = []
    for _ in range(2):
        stub = Initiator(registry, target, immediate_data=False, initial_r2t=True)
        assert stub.login().status_class == 0
        stubs.append(stub)
    return target, stubs


def test_abort_task_of_a_task_waiting_for_data():
    target, (stub, _) = setup_pair()
    command, r2t = waiting_write(stub)
    response = tmf(stub, Tmf.ABORT_TASK, referenced_task_tag=command.initiator_task_tag, ref_cmd_sn=command.cmd_sn)
    assert response.response == P.TmfResponse.FUNCTION_COMPLETE
    # Data-Out for the aborted task is dropped silently and the task never answers.
    assert stub.send(P.DataOut(final=True, initiator_task_tag=command.initiator_task_tag,
                               target_transfer_tag=r2t.target_transfer_tag, data=b"x" * BLOCK)) == []
    assert target.commands == []
    (ok,) = stub.send(stub.command(TUR))
    assert ok.status == Status.GOOD


def test_abort_task_of_a_finished_task_says_it_does_not_exist():
    target, (stub, _) = setup_pair()
    command = stub.command(TUR)
    stub.send(command)
    response = tmf(stub, Tmf.ABORT_TASK, referenced_task_tag=command.initiator_task_tag, ref_cmd_sn=command.cmd_sn)
    assert response.response == P.TmfResponse.TASK_DOES_NOT_EXIST
    assert target.tmfs == []


def test_abort_task_of_a_command_not_yet_received_consumes_its_cmd_sn():
    target, (stub, _) = setup_pair()
    missing_sn = stub.next_cmd_sn()            # sent by the initiator but not arrived yet
    response = tmf(stub, Tmf.ABORT_TASK, referenced_task_tag=0x77, ref_cmd_sn=missing_sn)
    assert response.exp_cmd_sn == stub.cmd_sn  # the window moved past it
    assert response.response == P.TmfResponse.FUNCTION_COMPLETE
    assert stub.send(stub.command(TUR, itt=0x77, cmd_sn=missing_sn)) == []     # arrives late: ignored
    (ok,) = stub.send(stub.command(TUR))
    assert ok.status == Status.GOOD and target.commands and len(target.commands) == 1


def test_lun_reset_aborts_tasks_on_that_lun_in_every_session_and_calls_the_core():
    target, (stub, other) = setup_pair()
    mine, _ = waiting_write(stub, lun=1)
    theirs, _ = waiting_write(other, lun=1)
    keep, keep_r2t = waiting_write(other, lun=0)
    response = tmf(stub, Tmf.LOGICAL_UNIT_RESET, lun=P.encode_lun(1))
    assert response.response == P.TmfResponse.FUNCTION_COMPLETE
    assert target.tmfs == [(Tmf.LOGICAL_UNIT_RESET, stub.connection.session.nexus, 1)]
    assert stub.connection.tasks.find(mine.initiator_task_tag) is None
    assert other.connection.tasks.find(theirs.initiator_task_tag) is None
    assert other.connection.tasks.find(keep.initiator_task_tag) is not None


def test_abort_task_set_only_touches_this_nexus():
    target, (stub, other) = setup_pair()
    mine, _ = waiting_write(stub)
    theirs, _ = waiting_write(other)
    tmf(stub, Tmf.ABORT_TASK_SET, lun=P.encode_lun(0))
    assert stub.connection.tasks.find(mine.initiator_task_tag) is None
    assert other.connection.tasks.find(theirs.initiator_task_tag) is not None


def test_core_response_code_is_passed_through():
    target, (stub, _) = setup_pair()
    target.tmf_response = P.TmfResponse.LUN_DOES_NOT_EXIST
    assert tmf(stub, Tmf.LOGICAL_UNIT_RESET, lun=P.encode_lun(9)).response == P.TmfResponse.LUN_DOES_NOT_EXIST


def test_target_cold_reset_answers_then_drops_every_session():
    target, (stub, other) = setup_pair()
    response = tmf(stub, Tmf.TARGET_COLD_RESET)
    assert response.response == P.TmfResponse.FUNCTION_COMPLETE
    assert target.tmfs == [(Tmf.TARGET_COLD_RESET, stub.connection.session.nexus, None)]
    assert stub.connection.close_requested and other.connection.close_requested
    assert stub.registry.sessions() == []
    assert set(target.lost) == {stub.connection.session.nexus, other.connection.session.nexus}


def test_target_warm_reset_keeps_sessions():
    target, (stub, other) = setup_pair()
    pending, _ = waiting_write(other)
    assert tmf(stub, Tmf.TARGET_WARM_RESET).response == P.TmfResponse.FUNCTION_COMPLETE
    assert other.connection.tasks.find(pending.initiator_task_tag) is None
    assert not stub.connection.close_requested and len(stub.registry.sessions()) == 2


def test_unsupported_functions():
    target, (stub, _) = setup_pair()
    assert tmf(stub, Tmf.CLEAR_ACA).response == P.TmfResponse.FUNCTION_NOT_SUPPORTED
    assert tmf(stub, 42).response == P.TmfResponse.FUNCTION_NOT_SUPPORTED
    assert tmf(stub, Tmf.TASK_REASSIGN).response == P.TmfResponse.TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED
    assert target.tmfs == []
