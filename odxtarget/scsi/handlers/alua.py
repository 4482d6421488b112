"""Asymmetric logical unit access, implicit only (SPC-4 5.16): REPORT TARGET PORT GROUPS.

Every gateway that serves a target is a target port group of one port, numbered by its
portal group tag; every group is active/optimized, since each gateway reaches the same storage
as well as any other (docs/rbd.md, "Several gateways"). INQUIRY reports TPGS=01b: the target
manages the states itself, and SET TARGET PORT GROUPS is not supported.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from odxtarget.scsi.cdb import U32
from odxtarget.scsi.errors import InvalidFieldInCdb
from odxtarget.scsi.types import ItNexus, ScsiResult, Status

if TYPE_CHECKING:
    from odxtarget.scsi.target import ScsiTarget

#: Standard INQUIRY byte 5 TPGS field, 01b: implicit asymmetric access only (SPC-4 6.6.2).
TPGS_IMPLICIT = 0x10
#: REPORT TARGET PORT GROUPS CDB byte 1, bits 7..5 (SPC-4 6.37).
PARAMETER_DATA_FORMAT_SHIFT = 5
PARAMETER_DATA_FORMAT_MASK = 0xE0
LENGTH_ONLY_HEADER = 0b000
EXTENDED_HEADER = 0b001
ACTIVE_OPTIMIZED = 0x0
#: Target port group descriptor byte 1: AO_SUP, the only state a group of ours is ever in.
SUPPORTED_STATES = 0x01
#: STATUS CODE 00h: no status available (no state change was ever made).
NO_STATUS = 0x00
#: Extended header byte 5: seconds an implicit transition may take (none ever happens).
IMPLICIT_TRANSITION_SECONDS = 0


def port_groups_of(target: "ScsiTarget | None", nexus: ItNexus) -> tuple[int, ...]:
    """The groups to report: the target's, or the nexus's own where the front end runs the
    LU without a target (LIO)."""
    return tuple(target.port_groups) if target is not None else (nexus.target_port_group,)


def report_target_port_groups(lu, command, target) -> ScsiResult:
    cdb = command.cdb
    data_format = cdb[1] >> PARAMETER_DATA_FORMAT_SHIFT
    if data_format not in (LENGTH_ONLY_HEADER, EXTENDED_HEADER):
        raise InvalidFieldInCdb(1, 7, f"PARAMETER DATA FORMAT {data_format:03b}b is not supported")
    descriptors = b"".join(
        struct.pack(">BBHBBBBHH", ACTIVE_OPTIMIZED, SUPPORTED_STATES, group, 0, NO_STATUS, 0, 1, 0, group)
        for group in port_groups_of(target, command.nexus))
    if data_format == EXTENDED_HEADER:
        body = bytes((EXTENDED_HEADER << 4, IMPLICIT_TRANSITION_SECONDS, 0, 0)) + descriptors
    else:
        body = descriptors
    data = (U32.pack(len(body)) + body)[:U32.unpack_from(cdb, 6)[0]]
    return ScsiResult(Status.GOOD, data, b"", len(data))
