"""Running one command against a logical unit: the gates, the handler, errors into sense.

Theory of operation
-------------------
``execute`` applies, in SAM-5 5.x / SPC-4 order:

1. a nexus seen for the first time is registered (and gets its power-on unit attention);
2. a pending unit attention is reported and cleared, unless the command ignores them
   (INQUIRY, REPORT LUNS, REQUEST SENSE) -- before even looking at the opcode, since an
   unsupported command must report the unit attention too;
3. the command table lookup (INVALID COMMAND OPERATION CODE for unknown opcodes);
4. NOT READY, MEDIUM NOT PRESENT while a removable medium is ejected (START STOP UNIT,
   discovery, mode pages and reservations still run);
5. SPC-2 reservation conflict, then the persistent reservation's access rule for the
   command's class (``PR_ALLOWED`` / ``PR_READ`` / neither; SPC-4 5.13.1), tested only while a
   persistent reservation is held (``reservation_conflict``, which the copy manager also
   applies to the logical units a copy reads and writes);
6. reserved/unsupported CDB bits (INVALID FIELD IN CDB with a byte+bit field pointer);
7. write protection (read-only LU, SWP, a nexus the front end gives read-only access,
   ``ScsiCommand.write_protected``, or a write-protected mapped LUN of the target port the
   command came through, ``ScsiTarget.write_protected_luns``) for commands that change the
   medium;
8. the handler.

Handlers raise ``ScsiError``; here it becomes status and sense in the format the control
mode page's D_SENSE bit selects. ``NoDataOut`` ends the command GOOD. Anything else is a bug:
logged, and answered HARDWARE ERROR / INTERNAL TARGET FAILURE. ``execute`` never raises.

A handler that waits for storage is a generator (``execution.Steps``); ``execute`` then returns
a ``Pending`` that the front end drives, and the same mapping applies to whatever the
generator raises later. A command that the task set cannot admit yet (SAM-5 8.6 task
attributes) is returned queued, and runs steps 1 to 8 only when it starts.

Every command that ends is recorded in the LU's ``io_stats`` (``io_stats.IoStats``), with
its latency from ``execute`` to its status.
"""

from __future__ import annotations

import logging
from types import GeneratorType
from typing import TYPE_CHECKING

from odxtarget.scsi.command_table import CommandFlags
from odxtarget.scsi.dataout import NoDataOut
from odxtarget.scsi.execution import Pending
from odxtarget.scsi.errors import (InternalTargetFailure, MediumNotPresent, ReservationConflict, ScsiError,
                                   SoftwareWriteProtected, UnitAttention, WriteProtected)
from odxtarget.scsi.types import ItNexus, ScsiCommand, ScsiResult, Status

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.lu import LogicalUnit

log = logging.getLogger(__name__)

# Plain ints, tested against CommandSpec.flag_bits on every command (see there).
_IGNORES_UA = int(CommandFlags.IGNORES_UNIT_ATTENTION)
_ALLOWED_WHEN_RESERVED = int(CommandFlags.ALLOWED_WHEN_RESERVED)
_WRITES = int(CommandFlags.WRITES_MEDIUM)
_WORKS_WITHOUT_MEDIUM = int(CommandFlags.WORKS_WITHOUT_MEDIUM)
_PR_ALLOWED = int(CommandFlags.PR_ALLOWED)


def execute(lu: "LogicalUnit", command: ScsiCommand, target=None) -> ScsiResult | Pending:
    """Run one command: its ScsiResult, or a ``Pending`` when it waits for storage or for
    older tasks (``execution``). Never raises. The LU's ``io_stats`` record it once it ends."""
    received = lu.io_stats.clock()
    if not lu.task_set.may_start(command.task_attribute):
        pending = Pending(lu, command, lambda queued: _run(lu, command, target, queued, received), received)
        lu.task_set.enqueue(pending)
        return pending
    return _run(lu, command, target, None, received)


def _run(lu: "LogicalUnit", command: ScsiCommand, target, pending: Pending | None,
         received: float) -> ScsiResult | Pending:
    """The gates and the handler; ``pending`` is the queued command being started, if any;
    ``received`` is when the LU received the command (``IoStats.clock``)."""
    spec = None
    try:
        cdb = command.cdb
        nexus = command.nexus
        if not lu.is_known(nexus):
            lu.register_nexus(nexus)
        lookup_error = None
        try:
            spec = lu.commands.lookup(cdb)
        except ScsiError as exc:
            lookup_error = exc
        if lu.has_unit_attention() and (spec is None or not spec.flag_bits & _IGNORES_UA):
            condition = lu.pop_unit_attention(nexus)
            if condition is not None:
                raise UnitAttention(condition.asc, condition.ascq)
        if spec is None:
            raise lookup_error
        flags = spec.flag_bits
        if not lu.medium_present and not flags & _WORKS_WITHOUT_MEDIUM:
            raise MediumNotPresent()
        if reservation_conflict(lu, nexus, flags):
            raise ReservationConflict()
        if len(cdb) < spec.cdb_length or int.from_bytes(cdb[:spec.cdb_length], "big") & spec.reserved_mask:
            spec.check_reserved_bits(cdb)
        if flags & _WRITES and write_protected_for(lu, command, target):
            software = lu.write_protected and not lu.read_only and not command.write_protected
            raise SoftwareWriteProtected() if software else WriteProtected()
        outcome = spec.handler(lu, command, target)
    except BaseException as exc:  # noqa: BLE001 - mapped to status and sense, never raised
        outcome = _error_outcome(lu, spec, command, exc)
    if type(outcome) is GeneratorType:
        fresh = pending is None
        if fresh:
            pending = Pending.running(lu, command, received)
        pending.run_steps(outcome, lambda exc: _error_outcome(lu, spec, command, exc))
        if fresh and pending.result is not None:
            return pending.result           # it needed no storage work after all
        return pending
    if pending is not None:
        pending.finish(outcome)
        return pending
    lu.io_stats.record(command.cdb, outcome, received)
    return outcome


def _error_outcome(lu: "LogicalUnit", spec, command: ScsiCommand, exc: BaseException) -> ScsiResult:
    """What a handler's exception means for the initiator."""
    if isinstance(exc, ScsiError):
        result = error_result(exc, lu.mode.d_sense)
        if spec is not None and spec.data_out_length is not None:
            # A refused write still owes the initiator a residual against what the CDB asked
            # for (libiscsi iSCSIResiduals: short data-out -> CHECK CONDITION + overflow).
            result.transfer_length = _required_data_out(spec, command.cdb, lu.block_size)
        return result
    if isinstance(exc, NoDataOut):
        return ScsiResult(Status.GOOD, b"", b"", exc.transfer_length)
    if not isinstance(exc, Exception):
        raise exc                         # KeyboardInterrupt, SystemExit: not ours to map
    # The h11 rule: a bug must not take the target down.
    log.error("%s: internal error running CDB %s", lu.name, bytes(command.cdb[:16]).hex(), exc_info=exc)
    return error_result(InternalTargetFailure(), lu.mode.d_sense)


def write_protected_for(lu: "LogicalUnit", command: ScsiCommand, target) -> bool:
    """The medium of ``lu`` cannot be changed by ``command``: the LU is read-only or SWP is
    set, the front end gives the command's nexus read-only access, or the command's target
    port maps its LUN write-protected (MODE SENSE's WP bit, SBC-4 6.5.1)."""
    return lu.write_protected or command.write_protected or (
        target is not None and command.lun in target.write_protected_luns)


def reservation_conflict(lu: "LogicalUnit", nexus: ItNexus, flag_bits: int) -> bool:
    """Would ``lu`` refuse a command of access class ``flag_bits`` (``CommandFlags``) from
    ``nexus`` with RESERVATION CONFLICT? The SPC-2 holder test (SPC-2 5.5.1), then the
    persistent reservation's access rule (SPC-4 5.13.1, SBC-4 4.17).

    The dispatcher asks it for every command; the copy manager asks it for every logical unit
    a copy reads (as a READ would, ``PR_READ``) or writes (as a WRITE would, ``WRITES_MEDIUM``)
    on behalf of the nexus that sent the copy command (docs/odx.md, "Access control").
    """
    holder = lu.reservation_holder
    if holder is not None and holder != nexus and not flag_bits & _ALLOWED_WHEN_RESERVED:
        return True
    reservation = lu.pr_reservation
    return reservation is not None and not flag_bits & _PR_ALLOWED and reservation.conflicts(nexus, flag_bits)


def error_result(exc: ScsiError, descriptor_format: bool = False) -> ScsiResult:
    if exc.sense is None:
        return ScsiResult(status=exc.status)
    return ScsiResult(status=exc.status, sense=exc.sense.pack(descriptor_format))


def _required_data_out(spec, cdb: bytes, block_size: int) -> int:
    try:
        return spec.data_out_length(cdb, block_size) if len(cdb) >= spec.cdb_length else 0
    except (IndexError, ValueError):
        return 0
