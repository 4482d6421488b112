"""REPORT SUPPORTED OPERATION CODES (SPC-4 6.35), generated from the LU's command table: the
same usage bytes that validate CDBs are reported, so the two cannot drift apart."""

from __future__ import annotations

import struct

from odxtarget.scsi.cdb import U16, U32
from odxtarget.scsi.constants import ReportingOptions
from odxtarget.scsi.errors import InvalidFieldInCdb
from odxtarget.scsi.types import ScsiResult, Status

GOOD = Status.GOOD
RCTD = 0x80
REPORTING_OPTIONS_MASK = 0x07
# All-commands descriptor byte 5; one-command byte 1.
CTDP = 0x02
SERVACTV = 0x01
ONE_COMMAND_CTDP = 0x80
SUPPORT_NOT_SUPPORTED = 0x01
SUPPORT_STANDARD = 0x03
TIMEOUTS_DESCRIPTOR_LENGTH = 0x0A

_COMMAND_DESCRIPTOR = struct.Struct(">BxHxBH")


def timeouts_descriptor(spec) -> bytes:
    return struct.pack(">HxxII", TIMEOUTS_DESCRIPTOR_LENGTH, spec.nominal_timeout, spec.recommended_timeout)


def _all_commands(lu, rctd: bool) -> bytes:
    parts = []
    for spec in lu.commands:
        has_sa = spec.service_action is not None
        flags = (CTDP if rctd else 0) | (SERVACTV if has_sa else 0)
        parts.append(_COMMAND_DESCRIPTOR.pack(spec.opcode, spec.service_action or 0, flags, spec.cdb_length))
        if rctd:
            parts.append(timeouts_descriptor(spec))
    body = b"".join(parts)
    return U32.pack(len(body)) + body


def _one_command(spec, rctd: bool) -> bytes:
    if spec is None:
        return bytes((0, SUPPORT_NOT_SUPPORTED, 0, 0))
    header = bytes((0, (ONE_COMMAND_CTDP if rctd else 0) | SUPPORT_STANDARD)) + U16.pack(spec.cdb_length)
    return header + spec.usage + (timeouts_descriptor(spec) if rctd else b"")


def report_supported_operation_codes(lu, command, target) -> ScsiResult:
    cdb = command.cdb
    rctd = bool(cdb[2] & RCTD)
    options = cdb[2] & REPORTING_OPTIONS_MASK
    opcode = cdb[3]
    service_action = U16.unpack_from(cdb, 4)[0]
    table = lu.commands
    if options == ReportingOptions.ALL_COMMANDS:
        data = _all_commands(lu, rctd)
    elif options == ReportingOptions.ONE_COMMAND_OPCODE:
        if table.has_service_actions(opcode):
            raise InvalidFieldInCdb(3, None, f"opcode {opcode:02X}h has service actions")
        data = _one_command(table.find(opcode), rctd)
    elif options == ReportingOptions.ONE_COMMAND_OPCODE_AND_SERVICE_ACTION:
        if table.find(opcode) is not None and not table.has_service_actions(opcode):
            raise InvalidFieldInCdb(3, None, f"opcode {opcode:02X}h has no service actions")
        data = _one_command(table.find(opcode, service_action), rctd)
    elif options == ReportingOptions.ONE_COMMAND_OPCODE_SA_IF_ANY:
        spec = table.find(opcode, service_action) if table.has_service_actions(opcode) else table.find(opcode)
        data = _one_command(spec, rctd)
    else:
        raise InvalidFieldInCdb(2, 2, f"REPORTING OPTIONS {options} not supported")
    data = data[:U32.unpack_from(cdb, 6)[0]]
    return ScsiResult(GOOD, data, b"", len(data))
