"""Small commands: TEST UNIT READY, REQUEST SENSE, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL,
READ DEFECT DATA(10/12), REPORT LUNS (SPC-4 6.x, SBC-4 5.x)."""

from __future__ import annotations

import struct

from odxtarget.scsi.cdb import U16, U32
from odxtarget.scsi.constants import Ascq, LunReportSelect
from odxtarget.scsi.errors import InvalidFieldInCdb, MediumRemovalPrevented
from odxtarget.scsi.sense import SenseData, SenseKey
from odxtarget.scsi.types import ScsiResult, Status

GOOD = Status.GOOD
DESC = 0x01
#: START STOP UNIT byte 1 (its IMMED is bit 0, unlike the READ/WRITE family).
START_STOP_IMMED = 0x01
START_STOP_LOEJ = 0x02
POWER_CONDITION_FIELD = 0xF0
START_STOP_START = 0x01
#: PREVENT field of PREVENT ALLOW MEDIUM REMOVAL byte 4 (01b prevents; 1xb is for changers).
PREVENT_FIELD = 0x01
#: READ DEFECT DATA: REQ_PLIST, REQ_GLIST and DEFECT LIST FORMAT bits (SBC-4 5.x).
DEFECT_REQUEST_BITS = 0x1F
#: Single-level LUN structures (SAM-5 4.7.7): peripheral device addressing up to 255, flat
#: space addressing (01b) up to 16383.
MAX_PERIPHERAL_LUN = 0xFF
FLAT_SPACE_ADDRESSING = 0x40
MAX_FLAT_SPACE_LUN = 0x3FFF


def test_unit_ready(lu, command, target) -> ScsiResult:
    return ScsiResult()


def request_sense(lu, command, target) -> ScsiResult:
    """SPC-4 6.39: report (and clear) a pending unit attention, else NO SENSE; DESC picks the
    format. Status is GOOD: the sense travels as data-in."""
    cdb = command.cdb
    condition = lu.pop_unit_attention(command.nexus) if lu is not None else None
    if condition is not None:
        sense = SenseData(SenseKey.UNIT_ATTENTION, condition.asc, condition.ascq)
    elif lu is None:
        sense = SenseData(SenseKey.ILLEGAL_REQUEST, Ascq.LOGICAL_UNIT_NOT_SUPPORTED.asc,
                          Ascq.LOGICAL_UNIT_NOT_SUPPORTED.ascq)
    else:
        sense = SenseData(SenseKey.NO_SENSE, 0, 0)
    data = sense.pack(bool(cdb[1] & DESC))[:cdb[4]]
    return ScsiResult(GOOD, data, b"", len(data))


def start_stop_unit(lu, command, target) -> ScsiResult:
    """SBC-4 5.x. With LOEJ=1 a removable LU ejects (START=0) or loads (START=1) its medium;
    power conditions and a fixed disk's spin up/down are accepted and have no effect. A non-zero
    POWER CONDITION field makes the device server ignore LOEJ and START."""
    flags = command.cdb[4]
    if lu.removable and flags & START_STOP_LOEJ and not flags & POWER_CONDITION_FIELD:
        if lu.preventing_removal:  # the medium may neither leave nor change while prevented
            raise MediumRemovalPrevented()
        lu.medium_present = bool(flags & START_STOP_START)
    return ScsiResult()


def prevent_allow_medium_removal(lu, command, target) -> ScsiResult:
    """SBC-4 5.x: PREVENT=01b stops START STOP UNIT from ejecting until every nexus that
    prevented allows again (or loses its nexus, or the LU is reset)."""
    if command.cdb[4] & PREVENT_FIELD:
        lu.preventing_removal.add(command.nexus)
    else:
        lu.preventing_removal.discard(command.nexus)
    return ScsiResult()


def read_defect_data_10(lu, command, target) -> ScsiResult:
    """An empty defect list in the requested format (SBC-4 5.x): PLISTV/GLISTV echo the request."""
    cdb = command.cdb
    data = bytes((0, cdb[2] & DEFECT_REQUEST_BITS, 0, 0))[:U16.unpack_from(cdb, 7)[0]]
    return ScsiResult(GOOD, data, b"", len(data))


def read_defect_data_12(lu, command, target) -> ScsiResult:
    cdb = command.cdb
    data = bytes((0, cdb[1] & DEFECT_REQUEST_BITS, 0, 0, 0, 0, 0, 0))[:U32.unpack_from(cdb, 6)[0]]
    return ScsiResult(GOOD, data, b"", len(data))


def encode_lun(lun: int) -> bytes:
    """The 8-byte LUN field for a single-level LUN (SAM-5 4.7.7)."""
    if lun <= MAX_PERIPHERAL_LUN:
        return bytes((0, lun, 0, 0, 0, 0, 0, 0))
    if lun <= MAX_FLAT_SPACE_LUN:
        return bytes((FLAT_SPACE_ADDRESSING | (lun >> 8), lun & 0xFF, 0, 0, 0, 0, 0, 0))
    raise ValueError(f"LUN {lun} cannot be encoded")


def report_luns(lu, command, target) -> ScsiResult:
    cdb = command.cdb
    select = cdb[2]
    if select not in tuple(LunReportSelect):
        raise InvalidFieldInCdb(2, None, f"SELECT REPORT {select:02X}h not supported")
    luns = [] if select == LunReportSelect.WELL_KNOWN_ONLY else (
        target.lun_numbers() if target is not None else [command.lun])
    body = b"".join(encode_lun(lun) for lun in sorted(luns))
    data = (struct.pack(">I4x", len(body)) + body)[:U32.unpack_from(cdb, 6)[0]]
    return ScsiResult(GOOD, data, b"", len(data))
