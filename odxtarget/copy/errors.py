"""Sense conditions of the copy manager (SPC-4 5.16.6.5, SBC-4 4.28; docs/odx.md).

Each is a ``ScsiError``: handlers raise, the core's dispatcher turns them into CHECK CONDITION
with sense. The same objects are stored in list results, so RRTI can report them.
"""

from __future__ import annotations

from odxtarget.scsi.errors import ScsiError
from odxtarget.scsi.sense import FieldPointer, SenseData, SenseKey


class TokenError(ScsiError):
    """INVALID TOKEN OPERATION (23h/xx); Windows maps every one to STATUS_INVALID_TOKEN."""

    def __init__(self, ascq: int, message: str):
        super().__init__(SenseData(SenseKey.ILLEGAL_REQUEST, 0x23, ascq), message)


class TokenCauseNotReportable(TokenError):
    def __init__(self, message: str = "invalid token operation"):
        super().__init__(0x00, message)


class UnsupportedTokenType(TokenError):
    def __init__(self, rod_type: int):
        super().__init__(0x01, f"ROD type {rod_type:08X}h not supported as input")


class RemoteTokenUsageNotSupported(TokenError):
    def __init__(self):
        super().__init__(0x02, "token was created by another copy manager")


class TokenUnknown(TokenError):
    def __init__(self):
        super().__init__(0x04, "token unknown")


class TokenCorrupt(TokenError):
    def __init__(self, message: str = "token corrupt"):
        super().__init__(0x05, message)


class TokenRevoked(TokenError):
    def __init__(self):
        super().__init__(0x06, "token revoked")


class TokenExpired(TokenError):
    def __init__(self):
        super().__init__(0x07, "token expired")


class TokenCancelled(TokenError):
    def __init__(self):
        super().__init__(0x08, "token cancelled: its source data changed")


class TokenDeleted(TokenError):
    def __init__(self):
        super().__init__(0x09, "token deleted")


class InvalidTokenLength(TokenError):
    def __init__(self, length: int):
        super().__init__(0x0A, f"ROD TOKEN LENGTH {length:#06x}, expected 01F8h")


class OperationInProgress(ScsiError):
    """A list identifier that is still active on this I_T nexus (SPC-4 5.16.4.2): 00h/16h."""

    def __init__(self, list_id: int, why: str = "is still in use"):
        super().__init__(SenseData(SenseKey.ILLEGAL_REQUEST, 0x00, 0x16),
                         f"list identifier {list_id:#x} {why}")


class TooManySegmentDescriptors(ScsiError):
    def __init__(self, byte: int = 0):
        super().__init__(SenseData(SenseKey.ILLEGAL_REQUEST, 0x26, 0x08,
                                   field_pointer=FieldPointer(False, byte)),
                         "too many segment descriptors")


class TooManyTargetDescriptors(ScsiError):
    def __init__(self, byte: int = 2):
        super().__init__(SenseData(SenseKey.ILLEGAL_REQUEST, 0x26, 0x06,
                                   field_pointer=FieldPointer(False, byte)),
                         "too many CSCD descriptors")


class UnsupportedTargetDescriptorType(ScsiError):
    def __init__(self, byte: int, code: int):
        super().__init__(SenseData(SenseKey.ILLEGAL_REQUEST, 0x26, 0x07,
                                   field_pointer=FieldPointer(False, byte)),
                         f"unsupported CSCD descriptor type {code:02X}h")


class UnsupportedSegmentDescriptorType(ScsiError):
    def __init__(self, byte: int, code: int):
        super().__init__(SenseData(SenseKey.ILLEGAL_REQUEST, 0x26, 0x09,
                                   field_pointer=FieldPointer(False, byte)),
                         f"unsupported segment descriptor type {code:02X}h")


class InsufficientResourcesToCreateRod(ScsiError):
    """55h/0Ch: the ROD space cap (or the token count cap) is reached (SPC-4 5.16.6.3)."""

    def __init__(self, message: str = "insufficient resources to create ROD"):
        super().__init__(SenseData(SenseKey.ILLEGAL_REQUEST, 0x55, 0x0C), message)


class CopyTargetDataUnderrun(ScsiError):
    """0Dh/04h with INFORMATION = blocks written (SBC-4 4.28.2): the WUT residual rule.

    COPY ABORTED when some blocks were transferred (Windows takes it as partial success and
    continues from there), ILLEGAL REQUEST when none were.
    """

    def __init__(self, transferred_blocks: int):
        key = SenseKey.COPY_ABORTED if transferred_blocks else SenseKey.ILLEGAL_REQUEST
        super().__init__(SenseData(key, 0x0D, 0x04, information=transferred_blocks),
                         f"copy stopped after {transferred_blocks} blocks")
        self.transferred_blocks = transferred_blocks


class CopyAborted(ScsiError):
    """COPY ABORTED with a given ASC/ASCQ, for EXTENDED COPY segment failures (SPC-4 6.3.4).

    ``segment`` goes to COMMAND-SPECIFIC INFORMATION (the failing segment's number) and the
    copy target's own sense data, if any, is appended after byte 17 of fixed format sense.
    """

    def __init__(self, asc: int, ascq: int, message: str, segment: int | None = None,
                 target_sense: bytes = b""):
        super().__init__(SenseData(SenseKey.COPY_ABORTED, asc, ascq, command_specific=segment,
                                   additional=target_sense), message)
