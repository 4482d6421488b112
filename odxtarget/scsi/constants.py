"""Named SCSI numbers: operation codes, service actions, VPD and mode pages, sense codes.

No other module of the core spells an opcode or an ASC/ASCQ as a bare number; they import
these names (house style, section 6).
"""

from __future__ import annotations

import enum


class Opcode(enum.IntEnum):
    """Operation codes the core knows (SPC-4 and SBC-4 names)."""

    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    READ_6 = 0x08
    WRITE_6 = 0x0A
    INQUIRY = 0x12
    MODE_SELECT_6 = 0x15
    RESERVE_6 = 0x16
    RELEASE_6 = 0x17
    MODE_SENSE_6 = 0x1A
    START_STOP_UNIT = 0x1B
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    WRITE_AND_VERIFY_10 = 0x2E
    VERIFY_10 = 0x2F
    PRE_FETCH_10 = 0x34
    SYNCHRONIZE_CACHE_10 = 0x35
    READ_DEFECT_DATA_10 = 0x37
    WRITE_SAME_10 = 0x41
    UNMAP = 0x42
    MODE_SELECT_10 = 0x55
    RESERVE_10 = 0x56
    RELEASE_10 = 0x57
    MODE_SENSE_10 = 0x5A
    PERSISTENT_RESERVE_IN = 0x5E
    PERSISTENT_RESERVE_OUT = 0x5F
    THIRD_PARTY_COPY_OUT = 0x83
    THIRD_PARTY_COPY_IN = 0x84
    READ_16 = 0x88
    COMPARE_AND_WRITE = 0x89
    WRITE_16 = 0x8A
    ORWRITE_16 = 0x8B
    WRITE_AND_VERIFY_16 = 0x8E
    VERIFY_16 = 0x8F
    PRE_FETCH_16 = 0x90
    SYNCHRONIZE_CACHE_16 = 0x91
    WRITE_SAME_16 = 0x93
    SERVICE_ACTION_IN_16 = 0x9E
    REPORT_LUNS = 0xA0
    MAINTENANCE_IN = 0xA3
    READ_12 = 0xA8
    WRITE_12 = 0xAA
    WRITE_AND_VERIFY_12 = 0xAE
    VERIFY_12 = 0xAF
    READ_DEFECT_DATA_12 = 0xB7


class ServiceActionIn16(enum.IntEnum):
    """Service actions of SERVICE ACTION IN(16) (SBC-4 5.x)."""

    READ_CAPACITY_16 = 0x10
    GET_LBA_STATUS = 0x12


class PersistentReserveIn(enum.IntEnum):
    """Service actions of PERSISTENT RESERVE IN (SPC-4 6.15.1)."""

    READ_KEYS = 0x00
    READ_RESERVATION = 0x01
    REPORT_CAPABILITIES = 0x02
    READ_FULL_STATUS = 0x03


class PersistentReserveOut(enum.IntEnum):
    """Service actions of PERSISTENT RESERVE OUT (SPC-4 6.16.2)."""

    REGISTER = 0x00
    RESERVE = 0x01
    RELEASE = 0x02
    CLEAR = 0x03
    PREEMPT = 0x04
    PREEMPT_AND_ABORT = 0x05
    REGISTER_AND_IGNORE_EXISTING_KEY = 0x06
    REGISTER_AND_MOVE = 0x07


class MaintenanceIn(enum.IntEnum):
    """Service actions of MAINTENANCE IN (SPC-4 6.x)."""

    REPORT_TARGET_PORT_GROUPS = 0x0A
    REPORT_SUPPORTED_OPERATION_CODES = 0x0C


#: The SERVICE ACTION field of every service-action opcode we know sits in CDB byte 1, bits 4..0.
SERVICE_ACTION_MASK = 0x1F


class VpdPage(enum.IntEnum):
    SUPPORTED_VPD_PAGES = 0x00
    UNIT_SERIAL_NUMBER = 0x80
    DEVICE_IDENTIFICATION = 0x83
    THIRD_PARTY_COPY = 0x8F
    BLOCK_LIMITS = 0xB0
    BLOCK_DEVICE_CHARACTERISTICS = 0xB1
    LOGICAL_BLOCK_PROVISIONING = 0xB2


class ModePage(enum.IntEnum):
    CACHING = 0x08
    CONTROL = 0x0A
    INFORMATIONAL_EXCEPTIONS_CONTROL = 0x1C
    ALL_PAGES = 0x3F


#: MODE SENSE subpage code asking for every subpage (SPC-4 6.11).
ALL_SUBPAGES = 0xFF


class PageControl(enum.IntEnum):
    """The PC field of MODE SENSE (SPC-4 6.11.1)."""

    CURRENT = 0
    CHANGEABLE = 1
    DEFAULT = 2
    SAVED = 3


class Ascq(enum.IntEnum):
    """Additional sense code and qualifier pairs, as ``asc << 8 | ascq`` (SPC-4 4.5.6)."""

    NO_ADDITIONAL_SENSE = 0x0000
    WRITE_ERROR = 0x0C00
    INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT = 0x0E03
    UNRECOVERED_READ_ERROR = 0x1100
    PARAMETER_LIST_LENGTH_ERROR = 0x1A00
    MISCOMPARE_DURING_VERIFY = 0x1D00
    INVALID_COMMAND_OPERATION_CODE = 0x2000
    LBA_OUT_OF_RANGE = 0x2100
    INVALID_FIELD_IN_CDB = 0x2400
    LOGICAL_UNIT_NOT_SUPPORTED = 0x2500
    INVALID_FIELD_IN_PARAMETER_LIST = 0x2600
    PARAMETER_VALUE_INVALID = 0x2602
    INVALID_RELEASE_OF_PERSISTENT_RESERVATION = 0x2604
    WRITE_PROTECTED = 0x2700
    SOFTWARE_WRITE_PROTECTED = 0x2702
    SPACE_ALLOCATION_FAILED_WRITE_PROTECT = 0x2707
    POWER_ON_RESET_OR_BUS_DEVICE_RESET = 0x2900
    POWER_ON_OCCURRED = 0x2901
    BUS_DEVICE_RESET_FUNCTION_OCCURRED = 0x2903
    I_T_NEXUS_LOSS_OCCURRED = 0x2907
    MODE_PARAMETERS_CHANGED = 0x2A01
    RESERVATIONS_PREEMPTED = 0x2A03
    RESERVATIONS_RELEASED = 0x2A04
    REGISTRATIONS_PREEMPTED = 0x2A05
    CAPACITY_DATA_HAS_CHANGED = 0x2A09
    SAVING_PARAMETERS_NOT_SUPPORTED = 0x3900
    MEDIUM_NOT_PRESENT = 0x3A00
    MEDIUM_REMOVAL_PREVENTED = 0x5302
    REPORTED_LUNS_DATA_HAS_CHANGED = 0x3F0E
    INTERNAL_TARGET_FAILURE = 0x4400
    INSUFFICIENT_REGISTRATION_RESOURCES = 0x5504

    @property
    def asc(self) -> int:
        return self.value >> 8

    @property
    def ascq(self) -> int:
        return self.value & 0xFF


class VersionDescriptor(enum.IntEnum):
    """Standard INQUIRY version descriptors we claim (SPC-4 6.4.2, table of version descriptors)."""

    SAM_5 = 0x00A0
    SPC_4 = 0x0460
    SBC_3 = 0x04C0
    SBC_4 = 0x0600
    ISCSI = 0x0960


class LunReportSelect(enum.IntEnum):
    """SELECT REPORT field of REPORT LUNS (SPC-4 6.33)."""

    ALL_LOGICAL_UNITS = 0x00
    WELL_KNOWN_ONLY = 0x01
    ALL_WITH_WELL_KNOWN = 0x02


class ReportingOptions(enum.IntEnum):
    """REPORTING OPTIONS of REPORT SUPPORTED OPERATION CODES (SPC-4 6.35)."""

    ALL_COMMANDS = 0
    ONE_COMMAND_OPCODE = 1
    ONE_COMMAND_OPCODE_AND_SERVICE_ACTION = 2
    ONE_COMMAND_OPCODE_SA_IF_ANY = 3


class ProvisioningStatus(enum.IntEnum):
    """GET LBA STATUS provisioning status (SBC-4 5.6)."""

    MAPPED = 0
    DEALLOCATED = 1
    ANCHORED = 2
