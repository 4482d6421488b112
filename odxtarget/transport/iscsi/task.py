"""One SCSI task while the target waits for its CmdSN turn or its data-out (RFC 7143 4.2, 11.7, 11.8).

A write task collects data from three sources, in this order: immediate data in the command
PDU, unsolicited Data-Out PDUs (TTT ffffffffh, only when InitialR2T=No, up to
FirstBurstLength) and solicited Data-Out PDUs answering our R2Ts (at most MaxBurstLength
each, at most MaxOutstandingR2T at a time). ``ScsiTask`` keeps that bookkeeping; the
connection decides what to send and when to execute.

What a task buffers is ``DataOutBuffer``: its capacity is what the target solicits (the
smaller of the Expected Data Transfer Length and what the CDB asks for, never the initiator's
number alone), and it holds only the unsolicited data until the connection's Data-Out budget
lets the first R2T go out, so an initiator that announces gigabytes and sends nothing costs
nothing (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class DataOutBuffer:
    """Data-Out bytes of one task, kept up to ``capacity``; bytes beyond it are dropped.

    Unsolicited data (at most FirstBurstLength) is kept as it comes; ``allocate`` makes room for
    the whole ``capacity`` once, when the first R2T is about to go out, so the solicited bursts
    land in place with one copy each and no reallocation.
    """

    __slots__ = ("capacity", "_data")

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._data = bytearray()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def allocated(self) -> bool:
        return len(self._data) == self.capacity

    def allocate(self) -> None:
        """Make room for every byte up to ``capacity`` (keeping what arrived unsolicited)."""
        if len(self._data) < self.capacity:
            whole = bytearray(self.capacity)
            whole[:len(self._data)] = self._data
            self._data = whole

    def write(self, offset: int, data) -> None:
        """Store ``data`` at ``offset``; what lies beyond the capacity is dropped."""
        end = min(offset + len(data), self.capacity)
        if end <= offset:
            return
        if end > len(self._data):
            self._data.extend(bytes(end - len(self._data)))
        self._data[offset:end] = data[:end - offset]

    def contents(self) -> bytearray:
        return self._data


@dataclass(slots=True, eq=False)
class R2tState:
    """One outstanding R2T: the slice of the buffer it asked for and the Data-Outs seen so far."""

    target_transfer_tag: int
    r2t_sn: int
    buffer_offset: int
    length: int
    received: int = 0
    next_data_sn: int = 0


@dataclass(slots=True, eq=False)
class ScsiTask:
    """A SCSI command the connection accepted but has not answered yet."""

    initiator_task_tag: int
    cmd_sn: int
    immediate: bool
    lun_field: bytes              # the 8-byte LUN as received (echoed in Data-In / R2T)
    lun: int
    cdb: bytes
    task_attribute: int
    read: bool
    write: bool
    expected_data_transfer_length: int
    ordered: bool = False         # its CmdSN has been reached (always True for immediate commands)
    in_window: bool = False       # numbered, past ExpCmdSN and unanswered: it holds a window place
    # write side -------------------------------------------------------------------------
    buffer: DataOutBuffer | None = None
    solicit_end: int = 0          # bytes the target asks for in all (R2Ts stop here)
    reserved: int = 0             # bytes of the connection's Data-Out budget this task holds
    unsolicited_limit: int = 0    # bytes the initiator may send without an R2T (incl. immediate data)
    unsolicited_received: int = 0
    unsolicited_done: bool = True
    unsolicited_next_data_sn: int = 0
    next_r2t_offset: int = 0      # first byte no R2T has asked for yet
    next_r2t_sn: int = 0
    r2ts: dict[int, R2tState] = field(default_factory=dict)
    # an iSCSI-level failure found while data was still coming (RFC 7143 7.8 / 11.4.7.2):
    # answer CHECK CONDITION with this sense instead of executing, once all data is in
    failure_sense: bytes | None = None
    # a status to answer instead of executing (TASK SET FULL), once all data is in
    refusal_status: int | None = None

    @property
    def data_complete(self) -> bool:
        if self.buffer is None:          # nothing to receive
            return True
        return self.unsolicited_done and not self.r2ts and self.next_r2t_offset >= self.solicit_end

    @property
    def wants_r2t(self) -> bool:
        """All unsolicited data is in and part of the buffer has not been asked for yet."""
        return self.buffer is not None and self.unsolicited_done and self.next_r2t_offset < self.solicit_end
