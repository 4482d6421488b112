"""The set of logical units one SCSI target port presents: LUN routing, REPORT LUNS, task
management, I_T nexus events.

    lu = LogicalUnit(LogicalUnitConfig(name="lun0", backend=MemoryBackend(1 << 30), block_size=512))
    target = ScsiTarget(name="iqn.2026-11.org.odxtarget:demo", luns={0: lu})
    result = target.execute(ScsiCommand(cdb=..., nexus=..., lun=0, data_out=...))
    response = target.task_management(TaskManagementFunction.LOGICAL_UNIT_RESET, nexus, lun=0)
    target.nexus_lost(nexus)        # session ended / connection dropped without logout
    target.nexus_logged_out(nexus)  # clean logout (same effect on SPC-2 reservations)
    target.set_task_aborter(abort)  # front end: abort(lu, nexuses) for PREEMPT AND ABORT
    view = target.masked({0: MaskedLun(1, write_protect=True)})  # one initiator's LUN mask

LUN masking (targetcli's mapped LUNs; docs/configuration.md, "ACLs"): ``masked`` gives the
target as one initiator sees it, a ``ScsiTarget`` of its own that maps each LUN number the
initiator uses to one of the target's logical units, some of them write-protected. The front
end hands that view to the initiator's sessions, so REPORT LUNS, routing, MODE SENSE's WP
bit, write refusals (DATA PROTECT, WRITE PROTECTED) and the copy manager's own-target test
all follow the mask without knowing about ACLs.

Rules every implementation keeps:
* ``execute`` never raises: every failure is a status (+ sense) in the ScsiResult;
* all calls come from one thread (the front end's event loop), so no locking is needed inside;
* a LogicalUnit may be mapped into several ScsiTargets; its per-nexus state (unit
  attentions, reservations) lives in the LogicalUnit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Callable

from odxtarget.scsi.constants import Ascq, Opcode
from odxtarget.scsi.dispatch import error_result
from odxtarget.storage.work import StorageWork
from odxtarget.scsi.errors import InternalTargetFailure, InvalidOpcode, LogicalUnitNotSupported, ScsiError
from odxtarget.scsi.handlers import inquiry as inquiry_handlers
from odxtarget.scsi.handlers import misc
from odxtarget.scsi.lu import LogicalUnit
from odxtarget.scsi.types import ItNexus, ScsiCommand, ScsiResult, Status, TaskManagementFunction, TmfResponse

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MaskedLun:
    """What one LUN of a masked view shows: the target's LUN ``lun``, read-only when
    ``write_protect``."""

    lun: int
    write_protect: bool = False


class ScsiTarget:
    """LUN number -> LogicalUnit, plus what belongs to the target rather than to one LU."""

    def __init__(self, name: str, luns: dict[int, LogicalUnit] | None = None,
                 port_groups: tuple[int, ...] = (1,), *, write_protected_luns: Iterable[int] = ()):
        self.name = name
        self._luns: dict[int, LogicalUnit] = dict(luns or {})
        self._port_groups = port_groups
        self._parent: ScsiTarget | None = None
        #: LUNs whose medium this port refuses to change (a mapped LUN's write_protect):
        #: DATA PROTECT, WRITE PROTECTED (27h/00h) and WP in MODE SENSE (SBC-4 6.5.1).
        self.write_protected_luns: frozenset[int] = frozenset(write_protected_luns)
        self._task_aborter: Callable[[LogicalUnit, frozenset[ItNexus]], None] | None = None

    # -- configuration --------------------------------------------------------------------

    @property
    def port_groups(self) -> tuple[int, ...]:
        """The target port groups of every gateway that serves this target, one port each
        (REPORT TARGET PORT GROUPS, SPC-4 6.37); all active/optimized (docs/rbd.md). A masked
        view reports its target's."""
        return self._parent.port_groups if self._parent is not None else self._port_groups

    @port_groups.setter
    def port_groups(self, groups: tuple[int, ...]) -> None:
        self._port_groups = groups

    def masked(self, mapped: Mapping[int, MaskedLun]) -> ScsiTarget:
        """This target as an initiator with a LUN mask sees it: LUN ``n`` of the view is the
        logical unit at ``mapped[n].lun`` here (entries naming a LUN this target lacks are left
        out). The view shares the logical units, the port groups and the task aborter; its
        map is fixed, so a change to the mask means a new view."""
        view = ScsiTarget(self.name, {number: self._luns[entry.lun] for number, entry in mapped.items()
                                      if entry.lun in self._luns},
                          write_protected_luns=(number for number, entry in mapped.items() if entry.write_protect))
        view._parent = self
        view._task_aborter = self._task_aborter
        return view

    def write_protects(self, lu: LogicalUnit) -> bool:
        """``lu`` is mapped here only under write-protected LUNs: a third-party copy must not
        write it on behalf of this port's initiators."""
        numbers = [number for number, unit in self._luns.items() if unit is lu]
        return bool(numbers) and all(number in self.write_protected_luns for number in numbers)

    @property
    def luns(self) -> dict[int, LogicalUnit]:
        return dict(self._luns)

    def lun_numbers(self) -> list[int]:
        return sorted(self._luns)

    def add_lun(self, lun: int, lu: LogicalUnit) -> None:
        if lun in self._luns:
            raise ValueError(f"LUN {lun} already mapped")
        misc.encode_lun(lun)  # raises for LUNs we cannot report
        self._luns[lun] = lu

    def remove_lun(self, lun: int) -> LogicalUnit:
        return self._luns.pop(lun)

    def logical_unit(self, lun: int) -> LogicalUnit | None:
        """The LU mapped at ``lun`` (None: none), without copying the map like ``luns``."""
        return self._luns.get(lun)

    # -- commands -------------------------------------------------------------------------

    def execute(self, command: ScsiCommand) -> ScsiResult:
        """Run one command. Never raises."""
        lu = self._luns.get(command.lun)
        if lu is not None:
            return lu.execute(command, self)
        return self._execute_without_lu(command)

    def _execute_without_lu(self, command: ScsiCommand) -> ScsiResult:
        """A LUN with no logical unit: INQUIRY (qualifier 011b), REPORT LUNS and REQUEST SENSE
        work, everything else is LOGICAL UNIT NOT SUPPORTED (SPC-4 4.? / SAM-5 5.9.4)."""
        try:
            cdb = command.cdb
            if not cdb:
                raise InvalidOpcode(0)
            opcode = cdb[0]
            if opcode == Opcode.INQUIRY and len(cdb) >= 6:
                if cdb[1] & inquiry_handlers.EVPD or cdb[2]:
                    raise LogicalUnitNotSupported(command.lun)
                data = inquiry_handlers.absent_lu_inquiry()[:int.from_bytes(cdb[3:5], "big")]
                return ScsiResult(Status.GOOD, data, b"", len(data))
            if opcode == Opcode.REPORT_LUNS and len(cdb) >= 12:
                return misc.report_luns(None, command, self)
            if opcode == Opcode.REQUEST_SENSE and len(cdb) >= 6:
                return misc.request_sense(None, command, self)
            raise LogicalUnitNotSupported(command.lun)
        except ScsiError as exc:
            return error_result(exc)
        except Exception:  # noqa: BLE001 - never raise to the front end
            log.exception("internal error for LUN %d without logical unit", command.lun)
            return error_result(InternalTargetFailure())

    def data_out_length(self, cdb: bytes, lun: int = 0) -> int | None:
        """Data-out bytes a CDB asks for, or None (not a data-out command, or not decodable)."""
        lu = self._luns.get(lun)
        if lu is None or not cdb:
            return None
        try:
            spec = lu.commands.lookup(cdb)
            if spec.data_out_length is None or len(cdb) < spec.cdb_length:
                return None
            return spec.data_out_length(cdb, lu.block_size)
        except (ScsiError, IndexError, ValueError):
            return None

    def solicited_data_out(self, cdb: bytes, lun: int = 0) -> int:
        """Data-out bytes worth asking the initiator for: what the CDB asks for, or 0 when it asks
        for none or for more than the LU takes in one command (SBC-4 6.6.4 MAXIMUM TRANSFER
        LENGTH; parameter lists are far smaller), which the command's own checks then refuse
        from the CDB alone. Front ends size Data-Out buffers by this, never by the initiator's
        expected length alone (docs/security.md)."""
        length = self.data_out_length(cdb, lun)
        lu = self._luns.get(lun)
        if length is None or lu is None or length > lu.max_transfer_blocks * lu.block_size:
            return 0
        return length

    # -- task management and nexus events ---------------------------------------------------

    def task_management(self, function: TaskManagementFunction, nexus: ItNexus, lun: int | None = None,
                        *, unit_attention: bool = True) -> int:
        """Apply a task management function's effect on core state (SAM-5 7.x); returns the
        RFC 7143 11.6.1 response code. Aborting queued commands is the front end's job.
        ``unit_attention=False``: the front end's fabric reports resets to the nexuses itself."""
        function = int(function)
        if function in (TaskManagementFunction.TARGET_WARM_RESET, TaskManagementFunction.TARGET_COLD_RESET):
            for lu in set(self._luns.values()):
                lu.reset(Ascq.POWER_ON_RESET_OR_BUS_DEVICE_RESET, unit_attention=unit_attention)
            return TmfResponse.FUNCTION_COMPLETE
        if function == TaskManagementFunction.TASK_REASSIGN or function == TaskManagementFunction.CLEAR_ACA:
            return TmfResponse.NOT_SUPPORTED
        if function not in set(TaskManagementFunction):
            return TmfResponse.NOT_SUPPORTED
        lu = self._luns.get(lun) if lun is not None else None
        if lu is None:
            return TmfResponse.LUN_DOES_NOT_EXIST
        if function == TaskManagementFunction.LOGICAL_UNIT_RESET:
            lu.reset(Ascq.BUS_DEVICE_RESET_FUNCTION_OCCURRED, unit_attention=unit_attention)
        # ABORT TASK / ABORT TASK SET / CLEAR TASK SET: no core state to change.
        return TmfResponse.FUNCTION_COMPLETE

    def reset_announcements(self, function: TaskManagementFunction, lun: int | None = None) -> list[StorageWork]:
        """After a LOGICAL UNIT RESET or target reset: the storage work that resets the same
        logical units on the other gateways serving them (``shared_reservations``); a front
        end answers the TMF once it is done, so every path sees the unit attention at once."""
        function = int(function)
        if function in (TaskManagementFunction.TARGET_WARM_RESET, TaskManagementFunction.TARGET_COLD_RESET):
            units, condition = set(self._luns.values()), Ascq.POWER_ON_RESET_OR_BUS_DEVICE_RESET
        elif function == TaskManagementFunction.LOGICAL_UNIT_RESET and lun in self._luns:
            units, condition = {self._luns[lun]}, Ascq.BUS_DEVICE_RESET_FUNCTION_OCCURRED
        else:
            return []
        return [lu.shared_reservations.announce_reset(condition) for lu in units
                if lu.shared_reservations is not None]

    def set_task_aborter(self, aborter: Callable[[LogicalUnit, frozenset[ItNexus]], None] | None) -> None:
        """The front end's ``aborter(lu, nexuses)``: abort the tasks those I_T nexuses have queued
        for ``lu``, wherever it is mapped. The core holds no queued tasks of its own."""
        self._task_aborter = aborter

    def abort_tasks(self, lu: LogicalUnit, nexuses: frozenset[ItNexus]) -> None:
        """PREEMPT AND ABORT (SPC-4 5.13.11.5): the preempted nexuses' tasks for ``lu`` end
        without a response. A front end that registered no aborter runs commands one at a
        time and has nothing queued."""
        if self._task_aborter is not None and nexuses:
            self._task_aborter(lu, nexuses)

    def nexus_lost(self, nexus: ItNexus) -> None:
        """I_T nexus loss (SAM-5 6.3.4): SPC-2 reservations released (persistent reservation
        registrations stay), 29h/07h when it returns."""
        for lu in set(self._luns.values()):
            lu.nexus_lost(nexus)

    def nexus_logged_out(self, nexus: ItNexus) -> None:
        for lu in set(self._luns.values()):
            lu.nexus_logged_out(nexus)
