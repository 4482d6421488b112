"""Runs the commands of one TCMU ring through the SCSI core; no I/O of its own.

Theory of operation
-------------------
One ``CommandProcessor`` serves one TCMU device, i.e. one logical unit. LIO keeps REPORT
LUNS, task management and (by default) persistent reservations in the kernel; every other
CDB arrives here. The ring carries no I_T nexus, so every command runs on one synthetic
nexus per device (``lu_nexus``): unit attentions, SPC-2 reservations and ODX list
identifiers are therefore scoped per LU, not per initiator (see docs/lio.md).

The ring carries no task attribute either (a ring entry is a command id, a CDB and iovecs),
so every command is SIMPLE (SAM-5 8.6).

``process`` handles one wake-up: fetch the batch (``cmd_head`` read once), run each command
through ``execute``, write the completion of each one that ended at once, and tell the caller
whether the kernel must be notified (one ``write()`` per batch). A command that waits for
storage, or for older tasks of its logical unit, comes back as a ``Pending``: it goes to the
device's ``CommandRunner`` (``transport.workers.CommandDriver``), the commands behind it keep
being processed, and its completion is written when the runner reports the end, out of order
(CAP_OOOC: ``CommandRing.complete`` writes it into the oldest unconsumed slot). Completions
written outside ``process`` ask the owner to notify the kernel soon (``notify_soon``); the
owner then calls ``take_notification`` once for the whole batch the workers delivered.

Buffer lifetimes (docs/lio.md, "How commands are served"): the kernel frees a command's data
blocks only when it consumes that command's completion, so the Data-Out view handed to the
core -- and through it to the storage workers -- stays valid until this processor writes the
completion, which it does only after the last piece of storage work has returned. Data-In is
copied from the core's buffer into the iovecs on the loop, at completion. The ring slot
itself may be reused as soon as the tail passes it: the CDB and iovecs were copied out at
fetch time.

Task management (TMR notifications): LIO aborts the commands itself and waits until the
handler has completed each one it lists (the status is not seen by the initiator). A listed
command still in flight is aborted through the runner: one queued behind older tasks or
between two pieces of work ends at once, one whose work is on a worker finishes that piece
first; each is then completed once with TASK ABORTED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from odxtarget.scsi.execution import AbortOutcome, Pending, TaskAttribute
from odxtarget.scsi.types import ItNexus, ScsiCommand, ScsiResult, Status, TaskManagementFunction
from odxtarget.transport.tcmu.ring import (CommandRing, RingCommand, RingError, TmrNotification,
                                           TmrType, gather, scatter, zero_fill)

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


class ScsiPort(Protocol):
    """What the processor needs of the SCSI core (``odxtarget.scsi.target.ScsiTarget``)."""

    def execute(self, command: ScsiCommand) -> ScsiResult | Pending: ...

    def data_out_length(self, cdb: bytes, lun: int = 0) -> int | None: ...

    def task_management(self, function: TaskManagementFunction, nexus: ItNexus, lun: int | None = None, *,
                        unit_attention: bool = True) -> int: ...


class CommandRunner(Protocol):
    """Runs the core's ``Pending`` commands off the loop (``transport.workers.CommandDriver``)."""

    def run(self, pending: Pending, done: Callable[[ScsiResult | None], None]) -> None: ...

    def abort(self, pending: Pending) -> AbortOutcome: ...


def lu_nexus(device_name: str, target_port: str = "lio") -> ItNexus:
    """The synthetic I_T nexus of a TCMU device: stable across restarts, one per LU, shared by
    every initiator LIO lets in."""
    return ItNexus(initiator_port=f"tcmu:{device_name},i,0x0", target_port=f"{target_port},t,0x1",
                   shared=True)


@dataclass(eq=False, slots=True)
class InFlight:
    """A command from the ring that the runner is executing.

    ``data_out`` is the buffer the core was given (a view on the data area for one iovec),
    kept until the completion is written; ``abort_status`` is what the command is answered
    with if it ends aborted.
    """

    command: RingCommand
    pending: Pending
    data_out: memoryview | bytes
    abort_status: int = _TASK_ABORTED
    aborted: bool = False


class CommandProcessor:
    """Moves commands between one ``CommandRing`` and the SCSI core."""

    def __init__(self, ring: CommandRing, target: ScsiPort, nexus: ItNexus, runner: CommandRunner,
                 notify_soon: Callable[[], None]):
        self.ring = ring
        self.target = target
        self.nexus = nexus
        self._runner = runner
        self._notify_soon = notify_soon
        self._memory = ring.memory
        self._in_flight: dict[int, InFlight] = {}       # by cmd_id
        self._told_tail = ring.tail()                   # the tail the kernel was last told of
        self._given_up = False
        #: Why the ring was given up while completing a command outside ``process``; the owner
        #: checks it when notified (``process`` raises ``RingError`` itself).
        self.failure: RingError | None = None

    @property
    def in_flight(self) -> int:
        """Commands the runner is executing (their storage work may be on a worker)."""
        return len(self._in_flight)

    @property
    def in_flight_ids(self) -> list[int]:
        return list(self._in_flight)

    # -- the batch --------------------------------------------------------------------------

    def process(self) -> bool:
        """Fetch and run one batch; True when the kernel must be notified (completions were
        written, or PAD/TMR entries consumed)."""
        for entry in self.ring.fetch():
            if self._given_up:
                break                  # a completion broke the ring: the owner gives it up
            if type(entry) is RingCommand:
                self._run(entry)
            else:
                self._on_tmr(entry)
        return self.take_notification()

    def take_notification(self) -> bool:
        """True once for everything written to the ring since the last call: the caller then
        ``write()``s to the uio fd, once for the whole batch."""
        tail = self.ring.tail()
        if tail == self._told_tail:
            return False
        self._told_tail = tail
        return True

    def _run(self, command: RingCommand) -> None:
        iovecs = command.iovecs
        if len(iovecs) == 1:
            data_out = gather(self._memory, iovecs)
        elif iovecs and self.target.data_out_length(command.cdb, DEVICE_LUN) is not None:
            data_out = gather(self._memory, iovecs)
        else:
            data_out = b""
        outcome = self.target.execute(ScsiCommand(
            cdb=command.cdb, nexus=self.nexus, lun=DEVICE_LUN, data_out=data_out,
            expected_transfer_length=command.data_length, task_tag=command.cmd_id,
            task_attribute=TaskAttribute.SIMPLE))
        if isinstance(outcome, Pending):
            flight = InFlight(command, outcome, data_out)
            self._in_flight[command.cmd_id] = flight
            self._runner.run(outcome, lambda result: self._ended(flight, result))
            return
        _release(data_out)
        self._complete(command, outcome)

    def _ended(self, flight: InFlight, result: ScsiResult | None) -> None:
        """The runner reports the end of a command (``None``: it was aborted). Runs on the loop,
        after its last piece of storage work has returned."""
        if self._in_flight.get(flight.command.cmd_id) is not flight:
            return                     # answered already: completing an id twice breaks the ring
        del self._in_flight[flight.command.cmd_id]
        _release(flight.data_out)
        try:
            if result is None or flight.aborted:
                self._complete_aborted(flight)
            else:
                self._complete(flight.command, result)
        except RingError as error:     # not the loop's reader: record it for the owner
            self.failure = error
            self.give_up()
        self._notify_soon()

    # -- completions --------------------------------------------------------------------------

    def _complete(self, command: RingCommand, result: ScsiResult) -> None:
        """Write the completion of ``command``, with its Data-In copied into the iovecs."""
        if self._given_up:
            return
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

    def _complete_aborted(self, flight: InFlight) -> None:
        if not self._given_up:
            self.ring.complete(flight.command.cmd_id, flight.abort_status)

    def _is_data_in(self, command: RingCommand) -> bool:
        return self.target.data_out_length(command.cdb, DEVICE_LUN) is None

    def _pad_short(self, iovecs, written: int, total: int) -> None:
        if written < total and not self.ring.supports_read_len:
            zero_fill(self._memory, iovecs, written)

    # -- task management and shutdown ---------------------------------------------------------

    def _on_tmr(self, tmr: TmrNotification) -> None:
        """LIO ran a task management function: abort the listed commands still in flight (LIO
        answers them itself once we have completed them) and apply resets to core state.

        No unit attention of ours for a reset: LIO reports it to the nexuses it knows, and one
        on our shared nexus would go to whichever initiator sends the next command."""
        for cmd_id in tmr.cmd_ids:
            self.abort(cmd_id)
        function = _RESETS.get(tmr.tmr_type)
        if function is not None:
            self.target.task_management(function, self.nexus, DEVICE_LUN, unit_attention=False)

    def abort(self, cmd_id: int, status: int = _TASK_ABORTED) -> AbortOutcome | None:
        """Abort command ``cmd_id`` if it is in flight (None otherwise: it was answered, or
        never fetched). It is answered once, with ``status``, when it has stopped: at once
        unless its storage work is on a worker, then when that piece returns."""
        flight = self._in_flight.get(cmd_id)
        if flight is None:
            return None
        flight.abort_status = status
        if flight.aborted:
            return AbortOutcome.FINISHING
        flight.aborted = True
        outcome = self._runner.abort(flight.pending)
        if outcome is AbortOutcome.STOPPED or outcome is AbortOutcome.ALREADY_DONE:
            # The runner reports only commands that were queued or had work on a worker;
            # one stopped between steps (or finished unreported) is answered here.
            self._ended(flight, None)
        return outcome

    def abort_all(self, status: int) -> None:
        """Abort every command in flight, each answered with ``status`` once stopped (a clean
        stop answers BUSY, so initiators retry: docs/lio.md, "Restart, crash and stop")."""
        for cmd_id in list(self._in_flight):
            self.abort(cmd_id, status)

    def give_up(self) -> None:
        """The ring is going away (device removed, ring broken): nothing more is written to
        it. Commands in flight are aborted; ``in_flight`` drops to 0 once the storage work
        already on workers has returned, and only then may the mapping be closed."""
        self._given_up = True
        self.abort_all(_TASK_ABORTED)


def _release(data_out: memoryview | bytes) -> None:
    """Drop our view on data blocks the kernel will reuse once the completion is consumed."""
    if type(data_out) is memoryview:
        try:
            data_out.release()
        except BufferError:        # still exported: a bug, but the command must be answered
            log.warning("a Data-Out view is still in use when its command completes")

