"""Moving SCSI data over one connection: what Data-Out we solicit, and how Data-In is framed
(RFC 7143 11.7, 11.8; docs/security.md "Limits").

Data-Out: a write's bursts are solicited by R2T only once its whole buffer fits the
connection's ``IscsiLimits.max_data_out_bytes`` (``DataOutBudget``); a task may always go when
no other task has bursts outstanding, so the bound is the budget plus one command (at most the
16 MiB MAXIMUM TRANSFER LENGTH). A task that does not fit waits in the budget's queue, oldest
first, until executed or aborted tasks free room.

Data-In: ``frame_data_in`` cuts a command's data into Data-In PDUs of at most
MaxXmitDataSegmentLength, ending each MaxBurstLength sequence with the F bit, and can carry
the command's status in the last PDU (the "phase collapse" of RFC 7143 11.7.3). It is the
READ hot path, so it packs headers with one precompiled struct and appends the buffers to the
caller's output list without copying the data.
"""

from __future__ import annotations

from collections import deque

from odxtarget.transport.iscsi import pdu as P
from odxtarget.transport.iscsi.task import ScsiTask

_DATA_IN = P.DATA_IN_STRUCT.pack
_OPCODE_DATA_IN = int(P.Opcode.SCSI_DATA_IN)
_RESERVED_TAG = P.RESERVED_TAG
_BHS = P.BHS_SIZE
_FINAL = 0x80
_STATUS = 0x01
_OVERFLOW = 0x04
_UNDERFLOW = 0x02


class DataOutBudget:
    """Data-Out buffered or solicited on one connection, bounded by ``limit`` bytes."""

    __slots__ = ("limit", "reserved", "waiting")

    def __init__(self, limit: int):
        self.limit = limit
        self.reserved = 0
        self.waiting: deque[ScsiTask] = deque()

    def reserve(self, task: ScsiTask, size: int) -> None:
        task.reserved += size
        self.reserved += size

    def release(self, task: ScsiTask) -> None:
        self.reserved -= task.reserved
        task.reserved = 0

    def fits(self, size: int, bursts_outstanding: bool) -> bool:
        """``size`` more bytes may be solicited: they fit, or no burst is outstanding at all."""
        return self.reserved + size <= self.limit or not bursts_outstanding

    def wait(self, task: ScsiTask) -> None:
        if task not in self.waiting:
            self.waiting.append(task)

    def clear(self) -> None:
        self.reserved = 0
        self.waiting.clear()


def frame_data_in(out: list, *, initiator_task_tag: int, lun_field: bytes, data_in, length: int,
                  max_xmit: int, max_burst: int, header_digest: bool, data_digest: bool,
                  exp_cmd_sn: int, max_cmd_sn: int, status: int | None = None, stat_sn: int = 0,
                  overflow: bool = False, underflow: bool = False, residual: int = 0) -> tuple[int, int]:
    """Append the Data-In PDUs for the first ``length`` bytes of ``data_in`` to ``out``.

    With ``status`` set, the last PDU carries it (S bit, StatSN, residuals). Returns how many
    PDUs were framed and how many bytes they take on the wire, headers included.
    """
    view = data_in if type(data_in) is memoryview else memoryview(data_in)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    collapse = status is not None
    if length <= max_xmit and length <= max_burst:
        # one PDU: the common 4 KiB case
        if collapse:
            header = _DATA_IN(_OPCODE_DATA_IN,
                              _FINAL | _STATUS | (_OVERFLOW if overflow else 0) | (_UNDERFLOW if underflow else 0),
                              0, status, length, lun_field, initiator_task_tag, _RESERVED_TAG, stat_sn,
                              exp_cmd_sn, max_cmd_sn, 0, 0, residual)
        else:
            header = _DATA_IN(_OPCODE_DATA_IN, _FINAL, 0, 0, length, lun_field, initiator_task_tag, _RESERVED_TAG,
                              0, exp_cmd_sn, max_cmd_sn, 0, 0, 0)
        out.extend(P.frame_pdu(header, view[:length] if length < len(view) else view, header_digest, data_digest))
        return 1, length + _BHS
    frame = P.frame_pdu
    offset = 0
    data_sn = 0
    burst_left = max_burst
    while offset < length:
        size = length - offset
        if size > max_xmit:
            size = max_xmit
        if size > burst_left:
            size = burst_left
        last = offset + size >= length
        burst_left -= size
        # F ends each Data-In sequence (MaxBurstLength) and the last PDU (RFC 7143 11.7.1).
        flags = _FINAL if (last or burst_left == 0) else 0
        if burst_left == 0:
            burst_left = max_burst
        if last and collapse:
            flags |= _FINAL | _STATUS | (_OVERFLOW if overflow else 0) | (_UNDERFLOW if underflow else 0)
            header = _DATA_IN(_OPCODE_DATA_IN, flags, 0, status, size, lun_field, initiator_task_tag, _RESERVED_TAG,
                              stat_sn, exp_cmd_sn, max_cmd_sn, data_sn, offset, residual)
        else:
            header = _DATA_IN(_OPCODE_DATA_IN, flags, 0, 0, size, lun_field, initiator_task_tag, _RESERVED_TAG, 0,
                              exp_cmd_sn, max_cmd_sn, data_sn, offset, 0)
        out.extend(frame(header, view[offset:offset + size], header_digest, data_digest))
        offset += size
        data_sn += 1
    return data_sn, length + _BHS * data_sn
