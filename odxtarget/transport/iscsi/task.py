"""One SCSI task while the target waits for its CmdSN turn or its data-out (RFC 7143 4.2, 11.7, 11.8).

A write task collects data from three sources, in this order: immediate data in the command
PDU, unsolicited Data-Out PDUs (TTT ffffffffh, only when InitialR2T=No, up to
FirstBurstLength) and solicited Data-Out PDUs answering our R2Ts (at most MaxBurstLength
each, at most MaxOutstandingR2T at a time). ``WriteTask`` keeps that bookkeeping; the
connection decides what to send and when to execute.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    # write side -------------------------------------------------------------------------
    buffer: bytearray | None = None
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

    @property
    def data_complete(self) -> bool:
        if self.buffer is None:          # nothing to receive
            return True
        return (self.unsolicited_done and not self.r2ts
                and self.next_r2t_offset >= self.expected_data_transfer_length)
