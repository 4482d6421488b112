"""How much data-out a command gets versus what its CDB asks for.

The rules (core contract, and what libiscsi's iSCSIResiduals tests expect):

* no data-out at all for a CDB that wants some: the command ends GOOD and does nothing
  (``NoDataOut``, caught by the dispatcher) -- an initiator that sent Expected Data Transfer
  Length 0 gets an overflow residual, not an error;
* some but not enough: CHECK CONDITION, INVALID FIELD IN COMMAND INFORMATION UNIT (0Eh/03h),
  except that a plain WRITE given whole blocks writes those blocks (``whole_blocks``);
* more than enough: the extra is ignored -- except for the commands whose data-out length
  is part of their meaning (COMPARE AND WRITE, WRITE SAME), which use ``exact``.
"""

from __future__ import annotations

from odxtarget.scsi.errors import InvalidFieldInCdb, InvalidFieldInCommandInformationUnit
from odxtarget.scsi.types import ScsiCommand


class NoDataOut(Exception):
    """Control flow, not an error: the command ends GOOD without touching anything."""

    def __init__(self, transfer_length: int):
        super().__init__(transfer_length)
        self.transfer_length = transfer_length


def take(command: ScsiCommand, required: int):
    """The first ``required`` data-out bytes (a memoryview when cut)."""
    data = command.data_out
    received = len(data)
    if received == required:
        return data
    if received == 0:
        raise NoDataOut(required)
    if received < required:
        raise InvalidFieldInCommandInformationUnit(f"data-out {received} bytes, CDB requires {required}")
    return memoryview(data)[:required]


def whole_blocks(command: ScsiCommand, required: int, block_size: int):
    """For WRITE: the data-out cut to whole blocks when shorter than required.

    Returns ``(data, blocks)``. Only called when the length differs from ``required``.
    """
    data = command.data_out
    received = len(data)
    if received > required:
        return memoryview(data)[:required], required // block_size
    if received == 0:
        raise NoDataOut(required)
    if received % block_size:
        raise InvalidFieldInCommandInformationUnit(f"data-out {received} bytes, CDB requires {required}")
    return data, received // block_size


def exact(command: ScsiCommand, required: int, length_field_byte: int):
    """Data-out that must match the CDB exactly (SBC-4 COMPARE AND WRITE, WRITE SAME).

    An Expected Data Transfer Length that differs from what the CDB implies is an invalid
    CDB (the transfer length field is wrong for the data the initiator sends).
    """
    expected = command.expected_transfer_length
    data = command.data_out
    if (expected and expected != required) or len(data) > required:
        raise InvalidFieldInCdb(length_field_byte, None,
                                f"data-out length {max(expected, len(data))} does not match CDB ({required})")
    if required == 0:
        return b""
    return take(command, required)
