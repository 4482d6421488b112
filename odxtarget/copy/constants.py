"""Named numbers of third-party copy (SPC-4 5.16/6.3-6.5, SBC-4 4.28/5.x, SPC-5 Annex E).

Offsets and codes only; no logic. The protocol digest in docs/odx.md explains them.
"""

from __future__ import annotations

import enum


class CopyOutAction(enum.IntEnum):
    """Service actions of THIRD-PARTY COPY OUT (83h)."""

    EXTENDED_COPY_LID1 = 0x00
    POPULATE_TOKEN = 0x10
    WRITE_USING_TOKEN = 0x11
    COPY_OPERATION_ABORT = 0x1C


class CopyInAction(enum.IntEnum):
    """Service actions of THIRD-PARTY COPY IN (84h)."""

    RECEIVE_COPY_STATUS_LID1 = 0x00
    RECEIVE_COPY_OPERATING_PARAMETERS = 0x03
    RECEIVE_COPY_FAILURE_DETAILS_LID1 = 0x04
    RECEIVE_COPY_STATUS_LID4 = 0x05
    RECEIVE_ROD_TOKEN_INFORMATION = 0x07
    REPORT_ALL_ROD_TOKENS = 0x08


class RodType(enum.IntEnum):
    """ROD types (SPC-5 Annex E)."""

    ACCESS_UPON_REFERENCE = 0x0001_0000
    PIT_DEFAULT = 0x0080_0000
    PIT_CHANGE_VULNERABLE = 0x0080_0001
    PIT_PERSISTENT = 0x0080_0002
    PIT_ANY = 0x0080_FFFF
    BLOCK_DEVICE_ZERO = 0xFFFF_0001


class CopyStatus(enum.IntEnum):
    """COPY OPERATION STATUS of RRTI / RECEIVE COPY STATUS(LID4) (SPC-4 6.18.x)."""

    COMPLETED = 0x01
    COMPLETED_WITH_ERRORS = 0x02
    COMPLETED_PARTIAL = 0x03   # "without errors but with partial ROD token usage"
    IN_PROGRESS_FOREGROUND = 0x11
    IN_PROGRESS_BACKGROUND = 0x12
    TERMINATED = 0x60


class Lid1Status(enum.IntEnum):
    """COPY MANAGER STATUS of RECEIVE COPY STATUS(LID1) (SPC-3 6.17.3)."""

    IN_PROGRESS = 0x00
    COMPLETED = 0x01
    FAILED = 0x02


class ThirdPartyCopyDescriptor(enum.IntEnum):
    """Third-party Copy VPD descriptor types (SPC-4 7.8.17); ascending is their page order."""

    BLOCK_DEVICE_ROD_TOKEN_LIMITS = 0x0000
    SUPPORTED_COMMANDS = 0x0001
    PARAMETER_DATA = 0x0004
    SUPPORTED_DESCRIPTORS = 0x0008
    SUPPORTED_CSCD_IDS = 0x000C
    ROD_TOKEN_FEATURES = 0x0106
    SUPPORTED_ROD_TOKEN_AND_ROD_TYPES = 0x0108
    GENERAL_COPY_OPERATIONS = 0x8001


class DescriptorCode(enum.IntEnum):
    """EXTENDED COPY segment and CSCD descriptor type codes (SPC-4 6.3.6, 6.3.7)."""

    BLOCK_TO_BLOCK = 0x02
    IDENTIFICATION = 0xE4


#: TRANSFER COUNT UNITS: logical blocks (SPC-4 6.18.4), the only unit Windows accepts.
UNITS_LOGICAL_BLOCKS = 0xF1
#: TRANSFER COUNT UNITS of LID1 status: bytes, and mebibytes when bytes overflow 32 bits.
UNITS_BYTES = 0x00
UNITS_MEBIBYTES = 0x02
#: ESTIMATED STATUS UPDATE DELAY once an operation is complete (SPC-4 6.18.4).
DELAY_COMPLETE = 0xFFFF_FFFE
#: ROD TOKEN LENGTH: bytes following byte 7 of a 512-byte token (SPC-4 5.16.6.2).
ROD_TOKEN_LENGTH = 0x01F8
ROD_TOKEN_SIZE = 512
#: ROD TOKEN DESCRIPTORS LENGTH in RRTI when it carries one token (512 + 2 reserved bytes).
ROD_TOKEN_DESCRIPTORS_LENGTH = ROD_TOKEN_SIZE + 2
#: Bytes of a token reported by REPORT ALL ROD TOKENS (the ROD management token).
ROD_MANAGEMENT_TOKEN_SIZE = 96
#: CSCD ID meaning "the logical unit that received the EXTENDED COPY" (SPC-4 6.3.1).
CSCD_ID_THIS_LU = 0xFFFF
#: The 16-byte block device range descriptor of PT/WUT (SBC-4 5.x).
RANGE_DESCRIPTOR_SIZE = 16
#: CSCD descriptors are 32 bytes (SPC-4 6.3.6.1).
CSCD_DESCRIPTOR_SIZE = 32
#: Block-to-block segment descriptor size (SPC-4 6.3.7.5).
BLOCK_TO_BLOCK_SEGMENT_SIZE = 28
#: EXTENDED COPY(LID1) parameter list header (SPC-4 6.3.1).
XCOPY_HEADER_SIZE = 16
#: SAM status TASK ABORTED, as EXTENDED COPY COMPLETION STATUS of a terminated operation.
SAM_TASK_ABORTED = 0x40
SAM_GOOD = 0x00
SAM_CHECK_CONDITION = 0x02
