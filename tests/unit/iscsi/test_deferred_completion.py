"""Commands that wait for storage complete later and in any order (docs/execution.md): the
connection answers each when its work is done, task management and logout answer only once
the tasks they aborted have stopped, and nothing is sent for an aborted task."""

from __future__ import annotations

from odxtarget.config import TargetConfig
from odxtarget.scsi.execution import AbortOutcome, Pending, complete_inline
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import Status, TaskManagementFunction as Tmf
from odxtarget.storage.memory import MemoryBackend
from odxtarget.transport.iscsi import pdu as P
from odxtarget.transport.iscsi.connection import ConnectionState
from odxtarget.transport.iscsi.session import SessionRegistry
from tests.unit.iscsi.harness import IQN, READ10, WRITE10, Initiator, cdb10

BLOCK = 512


class ColdMemory(MemoryBackend):
    """Nothing is cached: every read is storage work, like a cold page cache."""

    def try_read_into(self, offset, buf):
        return False


class ManualRunner:
    """Holds each Pending until the test finishes it, so completion order is the test's."""

    def __init__(self):
        self.held: list[tuple[Pending, object]] = []

    def run(self, pending, done):
        self.held.append((pending, done))

    def abort(self, pending):
        outcome = pending.abort()
        if outcome is AbortOutcome.NEVER_STARTED:
            for index, (held, done) in enumerate(self.held):
                if held is pending:
                    del self.held[index]
                    done(None)
                    break
        return outcome

    def finish(self, index: int = 0) -> None:
        pending, done = self.held.pop(index)
        if pending.queued:
            pending.start()
        done(complete_inline(pending))


def connected(runner: ManualRunner) -> tuple[Initiator, LogicalUnit]:
    lu = LogicalUnit(LogicalUnitConfig(name="lu", backend=ColdMemory(256 * BLOCK)))
    target = ScsiTarget(IQN, {0: lu})
    registry = SessionRegistry([(TargetConfig(iqn=IQN, demo_mode=True), target)])
    stub = Initiator(registry, target, runner=runner)
    assert stub.login().status_class == 0
    (unit_attention,) = stub.send(stub.command(bytes(6)))      # the power-on unit attention
    assert unit_attention.status == Status.CHECK_CONDITION
    return stub, lu


def read(stub: Initiator, lba: int) -> P.ScsiCommandPdu:
    return stub.command(cdb10(READ10, lba, 1), read=True, edtl=BLOCK)


def test_commands_are_answered_when_their_work_is_done_in_any_order():
    runner = ManualRunner()
    stub, lu = connected(runner)
    lu.backend.write(0, b"A" * BLOCK)
    lu.backend.write(BLOCK, b"B" * BLOCK)
    first, second = read(stub, 0), read(stub, 1)
    assert stub.send(first) == [] and stub.send(second) == []
    runner.finish(1)                                     # the second read's disk answers first
    (data_b,) = stub.receive()
    runner.finish(0)
    (data_a,) = stub.receive()
    assert (data_b.initiator_task_tag, bytes(data_b.data)) == (second.initiator_task_tag, b"B" * BLOCK)
    assert (data_a.initiator_task_tag, bytes(data_a.data)) == (first.initiator_task_tag, b"A" * BLOCK)
    assert data_a.stat_sn == data_b.stat_sn + 1 and data_a.has_status and data_b.has_status


def test_the_window_counts_running_commands_and_never_shrinks():
    runner = ManualRunner()
    stub, _ = connected(runner)
    window = stub.connection.window
    before = window.max_cmd_sn
    for lba in range(3):
        stub.send(read(stub, lba))
    assert window.occupied == 3 and window.max_cmd_sn == before     # ExpCmdSN +3, places -3
    runner.finish(0)
    (answer,) = stub.receive()
    assert answer.max_cmd_sn == before + 1 and window.occupied == 2


def test_abort_task_of_a_running_command_answers_after_its_work_and_sends_no_response():
    runner = ManualRunner()
    stub, lu = connected(runner)
    write = stub.command(cdb10(WRITE10, 4, 1), write=True, edtl=BLOCK, data=b"W" * BLOCK)
    assert stub.send(write) == []
    abort = P.TaskManagementRequest(immediate=True, function=Tmf.ABORT_TASK, initiator_task_tag=0x900,
                                    referenced_task_tag=write.initiator_task_tag, ref_cmd_sn=write.cmd_sn,
                                    cmd_sn=stub.cmd_sn)
    assert stub.send(abort) == []                        # the write is still on a worker
    runner.finish(0)
    (response,) = stub.receive()
    assert isinstance(response, P.TaskManagementResponse)
    assert response.response == P.TmfResponse.FUNCTION_COMPLETE
    assert lu.backend._data[4 * BLOCK:5 * BLOCK] == b"W" * BLOCK   # executed fully, not answered


def test_logout_waits_for_running_work_and_closes_the_session():
    runner = ManualRunner()
    stub, _ = connected(runner)
    stub.send(read(stub, 0))
    logout = P.LogoutRequest(immediate=True, reason=P.LogoutReason.CLOSE_SESSION, initiator_task_tag=0x901,
                             cmd_sn=stub.cmd_sn)
    assert stub.send(logout) == []
    runner.finish(0)
    (response,) = stub.receive()
    assert isinstance(response, P.LogoutResponse) and response.response == P.LogoutResponseCode.CLOSED_SUCCESSFULLY
    assert stub.connection.state is ConnectionState.LOGGED_OUT and stub.connection.session.closed


def test_connection_loss_with_work_in_flight_sends_nothing_and_leaks_nothing():
    runner = ManualRunner()
    stub, lu = connected(runner)
    stub.send(read(stub, 0))
    stub.connection.connection_lost("gone")
    runner.finish(0)
    assert stub.receive() == [] and not stub.connection.tasks and lu.task_set.running == 0
