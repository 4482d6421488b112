"""Exceptions that carry SCSI status and sense (the h11 rule: handlers raise, dispatch answers).

Handlers raise a ``ScsiError``; only the dispatcher turns it into status and sense. Any other
exception escaping a handler is a bug: the dispatcher logs it and answers HARDWARE ERROR /
INTERNAL TARGET FAILURE (44h/00h).
"""

from __future__ import annotations

from odxtarget.scsi.sense import FieldPointer, SenseData, SenseKey
from odxtarget.scsi.types import Status


class ScsiError(Exception):
    """A command ends with this status (CHECK CONDITION with ``sense`` unless said otherwise)."""

    status: int = Status.CHECK_CONDITION

    def __init__(self, sense: SenseData | None, message: str = "", status: int | None = None):
        self.sense = sense
        if status is not None:
            self.status = status
        if not message and sense is not None:
            message = f"sense {sense.key:X}h/{sense.asc:02X}h/{sense.ascq:02X}h"
        super().__init__(message)


def _sense(key: int, asc: int, ascq: int, **kw) -> SenseData:
    return SenseData(key, asc, ascq, **kw)


class InvalidOpcode(ScsiError):
    def __init__(self, opcode: int, service_action: int | None = None):
        sa = "" if service_action is None else f"/{service_action:02X}h"
        super().__init__(_sense(SenseKey.ILLEGAL_REQUEST, 0x20, 0x00,
                                field_pointer=FieldPointer(True, 0 if service_action is None else 1)),
                         f"invalid command operation code {opcode:02X}h{sa}")


class InvalidFieldInCdb(ScsiError):
    def __init__(self, byte: int, bit: int | None = None, message: str = ""):
        super().__init__(_sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00, field_pointer=FieldPointer(True, byte, bit)),
                         message or f"invalid field in CDB byte {byte}" + ("" if bit is None else f" bit {bit}"))


class InvalidFieldInParameterList(ScsiError):
    def __init__(self, byte: int, bit: int | None = None, message: str = ""):
        super().__init__(_sense(SenseKey.ILLEGAL_REQUEST, 0x26, 0x00, field_pointer=FieldPointer(False, byte, bit)),
                         message or f"invalid field in parameter list byte {byte}" + ("" if bit is None else f" bit {bit}"))


class ParameterListLengthError(ScsiError):
    def __init__(self, message: str = "parameter list length error"):
        super().__init__(_sense(SenseKey.ILLEGAL_REQUEST, 0x1A, 0x00), message)


class LbaOutOfRange(ScsiError):
    def __init__(self, lba: int | None = None):
        super().__init__(_sense(SenseKey.ILLEGAL_REQUEST, 0x21, 0x00), f"LBA out of range ({lba})")


class LogicalUnitNotSupported(ScsiError):
    def __init__(self, lun: int):
        super().__init__(_sense(SenseKey.ILLEGAL_REQUEST, 0x25, 0x00), f"logical unit {lun} not supported")


class WriteProtected(ScsiError):
    def __init__(self):
        super().__init__(_sense(SenseKey.DATA_PROTECT, 0x27, 0x00), "write protected")


class UnitAttention(ScsiError):
    def __init__(self, asc: int, ascq: int, message: str = ""):
        super().__init__(_sense(SenseKey.UNIT_ATTENTION, asc, ascq), message)


class Miscompare(ScsiError):
    def __init__(self, offset: int, asc: int = 0x1D, ascq: int = 0x00):
        super().__init__(_sense(SenseKey.MISCOMPARE, asc, ascq, information=offset),
                         f"miscompare at byte offset {offset}")


class MediumError(ScsiError):
    def __init__(self, asc: int = 0x11, ascq: int = 0x00, lba: int | None = None, message: str = "medium error"):
        super().__init__(_sense(SenseKey.MEDIUM_ERROR, asc, ascq, information=lba), message)


class SpaceAllocationFailed(ScsiError):
    """The storage has no room for the write (filesystem, thin pool or quota full): DATA
    PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (27h/07h), as a thin-provisioned LU reports
    resource exhaustion (SBC-4 4.7.3); INFORMATION holds the LBA when known."""

    def __init__(self, lba: int | None = None, message: str = "space allocation failed"):
        super().__init__(_sense(SenseKey.DATA_PROTECT, 0x27, 0x07, information=lba), message)


class InternalTargetFailure(ScsiError):
    def __init__(self, message: str = "internal target failure"):
        super().__init__(_sense(SenseKey.HARDWARE_ERROR, 0x44, 0x00), message)


class ReservationConflict(ScsiError):
    status = Status.RESERVATION_CONFLICT

    def __init__(self, message: str = "reservation conflict"):
        super().__init__(None, message)


class SoftwareWriteProtected(ScsiError):
    """Writes refused because the control mode page SWP bit is set (SPC-4 7.5.8)."""

    def __init__(self):
        super().__init__(_sense(SenseKey.DATA_PROTECT, 0x27, 0x02), "software write protected")


class InvalidFieldInCommandInformationUnit(ScsiError):
    """Data-out shorter than the CDB requires and not usable (SAM-5 5.3, iSCSI overflow rules)."""

    def __init__(self, message: str = "data-out shorter than the CDB requires"):
        super().__init__(_sense(SenseKey.ILLEGAL_REQUEST, 0x0E, 0x03), message)


class SavingParametersNotSupported(ScsiError):
    """PC=saved in MODE SENSE, or SP=1 in MODE SELECT: we keep no saved pages (SPC-4 6.11)."""

    def __init__(self, byte: int, bit: int | None = None):
        super().__init__(_sense(SenseKey.ILLEGAL_REQUEST, 0x39, 0x00, field_pointer=FieldPointer(True, byte, bit)),
                         "saving parameters not supported")


class MediumNotPresent(ScsiError):
    """A removable medium is ejected (SBC-4 4.x): NOT READY, MEDIUM NOT PRESENT."""

    def __init__(self):
        super().__init__(_sense(SenseKey.NOT_READY, 0x3A, 0x00), "medium not present")


class MediumRemovalPrevented(ScsiError):
    """Eject refused while an I_T nexus prevents medium removal (SBC-4 5.x)."""

    def __init__(self):
        super().__init__(_sense(SenseKey.ILLEGAL_REQUEST, 0x53, 0x02), "medium removal prevented")
