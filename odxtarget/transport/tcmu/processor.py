"""Runs the commands of one TCMU ring through the SCSI core; no I/O of its own.

Theory of operation
-------------------
One ``CommandProcessor`` serves one TCMU device, i.e. one logical unit. LIO keeps REPORT
LUNS, task management and (by default) persistent reservations in the kernel; every other
CDB arrives here. The ring carries no I_T nexus, so every command runs on one synthetic
nexus per device (``lu_nexus``): unit attentions, SPC-2 reservations and ODX list
identifiers are therefore scoped per LU, not per initiator (see docs/lio.md).

``process`` handles one wake-up: fetch the batch (``cmd_head`` read once), run each command,
write its completion, and tell the caller whether the kernel must be notified (one
``write()`` per batch). A command whose execution returns an awaitable instead of a
``ScsiResult`` (a long copy, later) is handed to ``defer``; its completion comes later
through ``finish`` and, thanks to out-of-order completion, does not hold up the reads and
writes queued behind it.

Data-Out is given to the core as a zero-copy view on the data area when the buffer is one
iovec. Data-In is copied into the iovecs; when the core returns less than the buffer, the
completion carries READ_LEN (or, on a kernel without it, the rest is zeroed: reused blocks
hold stale bytes of earlier commands).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Awaitable, Callable

from odxtarget.scsi.types import ItNexus, ScsiCommand, ScsiResult, Status, TaskManagementFunction
from odxtarget.transport.tcmu.ring import (CommandRing, RingCommand, TmrNotification, TmrType,
                                           gather, scatter, zero_fill)

log = logging.getLogger(__name__)

#: The LUN every TCMU device is to its per-device ScsiTarget (LIO owns the real LUN numbers).
DEVICE_LUN = 0

_GOOD = int(Status.GOOD)
_CHECK_CONDITION = int(Status.CHECK_CONDITION)
_TASK_ABORTED = int(Status.TASK_ABORTED)

#: TMR notifications whose effect on core state (unit attentions, SPC-2 reservation) the core
#: must apply; aborts only concern commands, which the processor handles itself.
_RESETS = {
    TmrType.LUN_RESET: TaskManagementFunction.LOGICAL_UNIT_RESET,
    TmrType.TARGET_WARM_RESET: TaskManagementFunction.TARGET_WARM_RESET,
    TmrType.TARGET_COLD_RESET: TaskManagementFunction.TARGET_COLD_RESET,
}


def lu_nexus(device_name: str, target_port: str = "lio") -> ItNexus:
    """The synthetic I_T nexus of a TCMU device: stable across restarts, one per LU, shared by
    every initiator LIO lets in."""
    return ItNexus(initiator_port=f"tcmu:{device_name},i,0x0", target_port=f"{target_port},t,0x1",
                   shared=True)


class CommandProcessor:
    """Moves commands between one ``CommandRing`` and a ``ScsiTarget``-like executor."""

    def __init__(self, ring: CommandRing, target: Any, nexus: ItNexus,
                 defer: Callable[[RingCommand, Awaitable[ScsiResult]], Any] | None = None):
        self.ring = ring
        self.target = target
        self.nexus = nexus
        self._defer = defer
        self._memory = ring.memory
        self._deferred: dict[int, Any] = {}   # cmd_id -> the handle defer() returned

    @property
    def deferred_ids(self) -> list[int]:
        return list(self._deferred)

    def process(self) -> bool:
        """Fetch and run one batch; True when completions were written (notify the kernel)."""
        ring = self.ring
        tail_before = ring.tail()
        for entry in ring.fetch():
            if type(entry) is RingCommand:
                self._run(entry)
            else:
                self._on_tmr(entry)
        return ring.tail() != tail_before

    def _run(self, command: RingCommand) -> None:
        iovecs = command.iovecs
        if len(iovecs) == 1:
            data_out = gather(self._memory, iovecs)
        elif iovecs and self.target.data_out_length(command.cdb, DEVICE_LUN) is not None:
            data_out = gather(self._memory, iovecs)
        else:
            data_out = b""
        try:
            result = self.target.execute(ScsiCommand(
                cdb=command.cdb, nexus=self.nexus, lun=DEVICE_LUN, data_out=data_out,
                expected_transfer_length=command.data_length, task_tag=command.cmd_id))
        finally:
            if type(data_out) is memoryview:
                data_out.release()     # nothing may keep a view on blocks the kernel reuses
        if type(result) is ScsiResult:
            self.finish(command, result)
        elif inspect.isawaitable(result) and self._defer is not None:
            self._deferred[command.cmd_id] = self._defer(command, result)
        else:
            log.error("command %s: executor returned %r", command.cdb[:1].hex(), type(result))
            self.ring.complete(command.cmd_id, _CHECK_CONDITION, _INTERNAL_TARGET_FAILURE)

    def finish_deferred(self, command: RingCommand, result: ScsiResult) -> bool:
        """Complete a deferred command; False (and nothing written) if a TMR aborted it
        meanwhile: completing an id twice would break the ring."""
        if command.cmd_id not in self._deferred:
            return False
        del self._deferred[command.cmd_id]
        self.finish(command, result)
        return True

    def finish(self, command: RingCommand, result: ScsiResult) -> None:
        """Write the completion of ``command``."""
        data_in = result.data_in
        read_len = None
        if command.bidi_iovecs:
            written = scatter(self._memory, command.bidi_iovecs, data_in) if data_in else 0
            read_len = written
            self._pad_short(command.bidi_iovecs, written, sum(n for _, n in command.bidi_iovecs))
        elif data_in:
            written = scatter(self._memory, command.iovecs, data_in)
            if written < command.data_length:
                read_len = written
                self._pad_short(command.iovecs, written, command.data_length)
        elif command.data_length and result.status == _GOOD and self._is_data_in(command):
            read_len = 0
        status = int(result.status)
        self.ring.complete(command.cmd_id, status, result.sense if status == _CHECK_CONDITION else b"",
                           read_len)

    def _is_data_in(self, command: RingCommand) -> bool:
        return self.target.data_out_length(command.cdb, DEVICE_LUN) is None

    def _pad_short(self, iovecs, written: int, total: int) -> None:
        if written < total and not self.ring.supports_read_len:
            zero_fill(self._memory, iovecs, written)

    def _on_tmr(self, tmr: TmrNotification) -> None:
        """LIO ran a task management function: complete the aborted commands we still hold
        (LIO answers them itself; the status is not seen) and apply resets to core state.

        No unit attention of ours for a reset: LIO reports it to the nexuses it knows, and one
        on our shared nexus would go to whichever initiator sends the next command."""
        for cmd_id in tmr.cmd_ids:
            self.abort_deferred(cmd_id)
        function = _RESETS.get(tmr.tmr_type)
        if function is not None:
            self.target.task_management(function, self.nexus, DEVICE_LUN, unit_attention=False)

    def abort_deferred(self, cmd_id: int) -> bool:
        """Cancel a deferred command and complete it as aborted; False if not deferred."""
        if cmd_id not in self._deferred:
            return False
        handle = self._deferred.pop(cmd_id)
        cancel = getattr(handle, "cancel", None)
        if cancel is not None:
            cancel()
        self.ring.complete(cmd_id, _TASK_ABORTED)
        return True


#: Fixed-format sense, HARDWARE ERROR / INTERNAL TARGET FAILURE (SPC-4 4.5.3, 44h/00h).
_INTERNAL_TARGET_FAILURE = bytes([0x70, 0, 0x04, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x44, 0x00, 0, 0, 0, 0])
