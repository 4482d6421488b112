"""Task management functions (RFC 7143 11.5/11.6, SAM-5 7).

The front end's share of a TMF is the tasks its sessions hold (``task_table.TaskTable``:
waiting for data-out or their CmdSN, or running on the storage workers): aborted tasks
disappear without a SCSI Response (RFC 7143 4.2.3.3), and the response waits until the ones
still touching storage have stopped (``AbortBarrier``). The core's share (reservations, unit
attentions) is ``ScsiTarget.task_management``, whose return value is the RFC 7143 11.6.1
response code. A TARGET COLD RESET also ends every session of the target, after the response
went out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from odxtarget.scsi.types import TaskManagementFunction as Tmf
from odxtarget.transport.iscsi.pdu import RESERVED_TAG, TaskManagementRequest, TmfResponse, decode_lun
from odxtarget.transport.iscsi.ordering import CommandOrder, CommandWindow
from odxtarget.transport.iscsi.session import Session, SessionRegistry
from odxtarget.transport.iscsi.task_table import AbortBarrier, TaskTable


class TmfContext(Protocol):
    """The connection a TMF arrived on (``connection.IscsiConnection``)."""

    session: Session | None
    registry: SessionRegistry
    tasks: TaskTable
    order: CommandOrder | None
    peer: str
    close_requested: bool

    def consider_received(self, cmd_sn: int) -> None: ...

    def connection_lost(self, reason: str) -> None: ...

log = logging.getLogger("odxtarget.iscsi")

# Functions the core takes part in; the others are answered here.
_CORE_FUNCTIONS = frozenset({Tmf.ABORT_TASK_SET, Tmf.CLEAR_TASK_SET, Tmf.LOGICAL_UNIT_RESET,
                             Tmf.TARGET_WARM_RESET, Tmf.TARGET_COLD_RESET})


def _sessions_of_target(connection: TmfContext) -> list[Session]:
    """Every live session of the same target as ``connection``'s, each through its own LUN
    map (an ACL's mapped LUNs may show the target's logical units under other numbers)."""
    name = connection.session.target_name
    return [session for session in connection.registry.sessions()
            if session.target_name == name and session.connection is not None and session.scsi_target is not None]


def _abort_lu_tasks(connection: TmfContext, lun: int, barrier: AbortBarrier) -> None:
    """CLEAR TASK SET / LOGICAL UNIT RESET: every task of the logical unit at ``lun`` of this
    session, whatever number other sessions reach it by (SAM-5 7.4, 7.6)."""
    lu = connection.session.scsi_target.logical_unit(lun)
    if lu is None:
        connection.tasks.abort(lambda task: task.lun == lun, barrier)
        return
    for session in _sessions_of_target(connection):
        scsi_target = session.scsi_target
        session.connection.tasks.abort(lambda task: scsi_target.logical_unit(task.lun) is lu, barrier)


def perform_task_management(connection: TmfContext, request: TaskManagementRequest,
                            barrier: AbortBarrier) -> tuple[int, Callable[[], None] | None]:
    """Carry out ``request``; return (response code, action to run after the response is queued).
    Aborted tasks still finishing their storage work hold ``barrier``."""
    function = request.function
    session = connection.session
    lun = decode_lun(request.lun)
    who = f"initiator {session.initiator_name} at {connection.peer}"

    if function == Tmf.ABORT_TASK:
        return _abort_task(connection, request, barrier), None
    if function == Tmf.TASK_REASSIGN:
        log.warning("%s: TASK REASSIGN refused (ErrorRecoveryLevel 0)", who)
        return TmfResponse.TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED, None
    if function not in _CORE_FUNCTIONS:
        log.warning("%s: task management function %d not supported", who, function)
        return TmfResponse.FUNCTION_NOT_SUPPORTED, None

    tmf = Tmf(function)
    if tmf is Tmf.ABORT_TASK_SET:
        # SAM-5 7.3: only this I_T nexus's tasks on the LU.
        connection.tasks.abort(lambda task: task.lun == lun, barrier)
    elif tmf in (Tmf.CLEAR_TASK_SET, Tmf.LOGICAL_UNIT_RESET):
        _abort_lu_tasks(connection, lun, barrier)
    else:
        for other in _sessions_of_target(connection):
            other.connection.tasks.abort(lambda task: True, barrier)
    per_lun = tmf in (Tmf.ABORT_TASK_SET, Tmf.CLEAR_TASK_SET, Tmf.LOGICAL_UNIT_RESET)
    response = session.scsi_target.task_management(tmf, session.nexus, lun if per_lun else None)
    log.info("%s: %s%s -> response %d", who, tmf.name, f" LUN {lun}" if per_lun else "", response)
    if response == TmfResponse.FUNCTION_COMPLETE:
        _announce_reset(connection, session.scsi_target.reset_announcements(tmf, lun if per_lun else None),
                        barrier, who)
    after = None
    if tmf is Tmf.TARGET_COLD_RESET and response == TmfResponse.FUNCTION_COMPLETE:
        def after() -> None:
            # SAM-5 7.11: a cold reset ends every I_T nexus; ours goes once the response is out.
            connection.registry.terminate_target_sessions(session.target_name, "TARGET COLD RESET",
                                                          keep=session)
            connection.close_requested = True
            connection.connection_lost("TARGET COLD RESET")
    return response, after


def _announce_reset(connection: TmfContext, announcements: list, barrier: AbortBarrier, who: str) -> None:
    """The other gateways of a shared logical unit reset it too before the response goes out
    (``ScsiTarget.reset_announcements``), so a TEST UNIT READY on any path sees the reset."""
    for work in announcements:
        barrier.hold()

        def announced(error: BaseException | None) -> None:
            if error is not None:
                log.error("%s: the reset did not reach every gateway: %s", who, error)
            barrier.release()

        connection.tasks.run_work(work, announced)


def _abort_task(connection: TmfContext, request: TaskManagementRequest, barrier: AbortBarrier) -> int:
    """RFC 7143 11.5.1 ABORT TASK, including its rules for tasks never received."""
    if request.referenced_task_tag == RESERVED_TAG:
        return TmfResponse.TASK_DOES_NOT_EXIST
    task = connection.tasks.find(request.referenced_task_tag)
    if task is not None:
        connection.tasks.abort(lambda candidate: candidate is task, barrier)
        return TmfResponse.FUNCTION_COMPLETE
    window = connection.order.window
    ref = request.ref_cmd_sn
    where = window.classify(ref)
    if where != CommandWindow.OUTSIDE and ref != request.cmd_sn:
        # b) the referenced command has not arrived yet: consider its CmdSN received, so the
        # command is ignored when it does come, and answer Function complete.
        connection.consider_received(ref)
        return TmfResponse.FUNCTION_COMPLETE
    return TmfResponse.TASK_DOES_NOT_EXIST
