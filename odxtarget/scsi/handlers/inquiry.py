"""INQUIRY: standard data and the VPD pages (SPC-4 6.6, 7.8; SBC-4 6.6).

VPD pages are built by functions registered in a per-LU ``VpdRegistry``; the copy manager
adds page 8Fh with ``lu.vpd_pages.register(VpdPage.THIRD_PARTY_COPY, builder)``. A builder
returns the page body (everything after the 4-byte page header); the header, page length and
the Supported VPD Pages list are the registry's job.
"""

from __future__ import annotations

import struct
from typing import Callable

from odxtarget.scsi.cdb import U16
from odxtarget.scsi.constants import VersionDescriptor, VpdPage
from odxtarget.scsi.errors import InvalidFieldInCdb
from odxtarget.scsi.handlers.alua import TPGS_IMPLICIT
from odxtarget.scsi.types import ItNexus, ScsiResult, Status

GOOD = Status.GOOD

EVPD = 0x01
PERIPHERAL_DIRECT_ACCESS = 0x00
#: Peripheral qualifier 011b + device type 1Fh: no logical unit at this LUN (SPC-4 6.6.2).
PERIPHERAL_NO_LU = 0x7F
SPC_4_VERSION = 0x06
HISUP = 0x10
RESPONSE_DATA_FORMAT = 0x02
THREE_PC = 0x08
CMDQUE = 0x02
STANDARD_INQUIRY_LENGTH = 96
VERSION_DESCRIPTORS_OFFSET = 58
CLAIMED_VERSIONS = (VersionDescriptor.SAM_5, VersionDescriptor.ISCSI, VersionDescriptor.SPC_4,
                    VersionDescriptor.SBC_3, VersionDescriptor.SBC_4)

# Designation descriptor fields (SPC-4 7.8.6.1).
CODE_SET_BINARY = 1
CODE_SET_ASCII = 2
CODE_SET_UTF8 = 3
PROTOCOL_ISCSI = 5
PIV = 0x80
ASSOCIATION_LU = 0x00
ASSOCIATION_TARGET_PORT = 0x10
ASSOCIATION_TARGET_DEVICE = 0x20
DESIGNATOR_T10_VENDOR = 1
DESIGNATOR_NAA = 3
DESIGNATOR_RELATIVE_TARGET_PORT = 4
DESIGNATOR_TARGET_PORT_GROUP = 5
DESIGNATOR_SCSI_NAME = 8

MEDIUM_ROTATION_NON_ROTATING = 0x0001
VPD_PAGE_LENGTH_SBC3 = 0x3C

# Logical Block Provisioning VPD byte 5 (SBC-4 6.6.6).
LBPU = 0x80
LBPWS = 0x40
LBPWS10 = 0x20
LBPRZ_ONE = 0x04
PROVISIONING_FULL = 0x00
PROVISIONING_THIN = 0x02

VpdBuilder = Callable[["object", ItNexus], bytes]


class VpdRegistry:
    """Page code -> body builder; Supported VPD Pages (00h) is always generated, sorted."""

    def __init__(self) -> None:
        self._builders: dict[int, VpdBuilder] = {}

    def register(self, page_code: int, builder: VpdBuilder, replace: bool = False) -> None:
        if page_code == VpdPage.SUPPORTED_VPD_PAGES or (page_code in self._builders and not replace):
            raise ValueError(f"VPD page {page_code:02X}h already registered")
        self._builders[page_code] = builder

    def codes(self) -> list[int]:
        return sorted({VpdPage.SUPPORTED_VPD_PAGES, *self._builders})

    def build(self, page_code: int, lu, nexus: ItNexus) -> bytes:
        if page_code == VpdPage.SUPPORTED_VPD_PAGES:
            body = bytes(self.codes())
        else:
            builder = self._builders.get(page_code)
            if builder is None:
                raise InvalidFieldInCdb(2, None, f"VPD page {page_code:02X}h not supported")
            body = builder(lu, nexus)
        return bytes((PERIPHERAL_DIRECT_ACCESS, page_code)) + U16.pack(len(body)) + body


def _ascii(text: str, length: int) -> bytes:
    return text.encode("ascii", "replace")[:length].ljust(length, b" ")


#: Standard INQUIRY byte 1 bit 7, RMB (SPC-4 6.6.2).
REMOVABLE_MEDIUM = 0x80


def standard_inquiry(lu) -> bytes:
    data = bytearray(STANDARD_INQUIRY_LENGTH)
    data[0] = PERIPHERAL_DIRECT_ACCESS
    data[1] = REMOVABLE_MEDIUM if lu.removable else 0
    data[2] = SPC_4_VERSION
    data[3] = HISUP | RESPONSE_DATA_FORMAT
    data[4] = STANDARD_INQUIRY_LENGTH - 5
    data[5] = TPGS_IMPLICIT | (THREE_PC if lu.third_party_copy else 0)
    data[7] = CMDQUE
    config = lu.config
    data[8:16] = _ascii(config.vendor, 8)
    data[16:32] = _ascii(config.product, 16)
    data[32:36] = _ascii(config.revision, 4)
    for index, version in enumerate(CLAIMED_VERSIONS):
        struct.pack_into(">H", data, VERSION_DESCRIPTORS_OFFSET + 2 * index, version)
    return bytes(data)


def absent_lu_inquiry() -> bytes:
    """Standard INQUIRY data for a LUN with no logical unit (SPC-4 6.6.2, qualifier 011b)."""
    data = bytearray(36)
    data[0] = PERIPHERAL_NO_LU
    data[2] = SPC_4_VERSION
    data[3] = HISUP | RESPONSE_DATA_FORMAT
    data[4] = 31
    return bytes(data)


def inquiry(lu, command, target) -> ScsiResult:
    cdb = command.cdb
    allocation_length = U16.unpack_from(cdb, 3)[0]
    if cdb[1] & EVPD:
        data = lu.vpd_pages.build(cdb[2], lu, command.nexus)
    elif cdb[2]:
        raise InvalidFieldInCdb(2, None, "PAGE CODE set without EVPD")
    else:
        data = standard_inquiry(lu)
    data = data[:allocation_length]
    return ScsiResult(GOOD, data, b"", len(data))


# -- VPD page bodies --------------------------------------------------------------------------

def _designator(code_set: int, piv_association_type: int, value: bytes, protocol: int = 0) -> bytes:
    return bytes(((protocol << 4) | code_set, piv_association_type, 0, len(value))) + value


def _scsi_name(name: str) -> bytes:
    """A SCSI name string: UTF-8, NUL terminated, padded to a multiple of 4 (SPC-4 7.8.6.11)."""
    raw = name.encode("utf-8") + b"\x00"
    return raw + bytes(-len(raw) % 4)


def unit_serial_number(lu, nexus: ItNexus) -> bytes:
    return lu.serial.encode("ascii", "replace")


def device_identification(lu, nexus: ItNexus) -> bytes:
    """VPD 83h: the LU's NAA-6 first (multipath tools take the first LU designator), a T10
    vendor ID, then target port, relative port, port group and target device name."""
    config = lu.config
    descriptors = [
        _designator(CODE_SET_BINARY, ASSOCIATION_LU | DESIGNATOR_NAA, lu.naa_designator),
        _designator(CODE_SET_ASCII, ASSOCIATION_LU | DESIGNATOR_T10_VENDOR,
                    _ascii(config.vendor, 8) + lu.serial.encode("ascii", "replace")),
    ]
    target_port = nexus.target_port
    if target_port:
        descriptors.append(_designator(CODE_SET_UTF8, PIV | ASSOCIATION_TARGET_PORT | DESIGNATOR_SCSI_NAME,
                                       _scsi_name(target_port), PROTOCOL_ISCSI))
    descriptors.append(_designator(CODE_SET_BINARY, PIV | ASSOCIATION_TARGET_PORT | DESIGNATOR_RELATIVE_TARGET_PORT,
                                   struct.pack(">HH", 0, nexus.relative_target_port_id), PROTOCOL_ISCSI))
    descriptors.append(_designator(CODE_SET_BINARY, PIV | ASSOCIATION_TARGET_PORT | DESIGNATOR_TARGET_PORT_GROUP,
                                   struct.pack(">HH", 0, nexus.target_port_group), PROTOCOL_ISCSI))
    target_name = target_port.split(",", 1)[0] if target_port else ""
    if target_name:
        descriptors.append(_designator(CODE_SET_UTF8, PIV | ASSOCIATION_TARGET_DEVICE | DESIGNATOR_SCSI_NAME,
                                       _scsi_name(target_name), PROTOCOL_ISCSI))
    return b"".join(descriptors)


def block_limits(lu, nexus: ItNexus) -> bytes:
    """VPD B0h (SBC-4 6.6.4), SBC-3 length 3Ch. WSNZ=0 (WRITE SAME of 0 blocks runs to the end
    of the LU; libiscsi prints [SKIPPED] for WSNZ=1); no atomic writes."""
    body = bytearray(VPD_PAGE_LENGTH_SBC3)
    body[1] = lu.max_compare_and_write_blocks
    struct.pack_into(">H", body, 2, lu.granularity_blocks)  # OPTIMAL TRANSFER LENGTH GRANULARITY
    struct.pack_into(">I", body, 4, lu.max_transfer_blocks)
    struct.pack_into(">I", body, 8, max(1, 1024 * 1024 // lu.block_size))  # OPTIMAL TRANSFER LENGTH
    struct.pack_into(">I", body, 12, 0)  # MAXIMUM PREFETCH LENGTH: not limited separately
    if lu.thin_provisioned:
        struct.pack_into(">I", body, 16, lu.max_unmap_blocks)
        struct.pack_into(">I", body, 20, lu.max_unmap_descriptors)
    struct.pack_into(">I", body, 24, lu.granularity_blocks)  # OPTIMAL UNMAP GRANULARITY
    struct.pack_into(">I", body, 28, 0)  # UGAVALID 0
    struct.pack_into(">Q", body, 32, lu.max_write_same_blocks)
    return bytes(body)


def block_device_characteristics(lu, nexus: ItNexus) -> bytes:
    body = bytearray(VPD_PAGE_LENGTH_SBC3)
    struct.pack_into(">H", body, 0, MEDIUM_ROTATION_NON_ROTATING)
    return bytes(body)


def logical_block_provisioning(lu, nexus: ItNexus) -> bytes:
    """VPD B2h (SBC-4 6.6.6): UNMAP and WRITE SAME(10/16) with UNMAP, LBPRZ=1, thin; no ANC_SUP.
    Storage that cannot free blocks is reported fully provisioned, with none of them."""
    if not lu.thin_provisioned:
        return bytes((0, 0, PROVISIONING_FULL, 0))
    return bytes((0, LBPU | LBPWS | LBPWS10 | LBPRZ_ONE, PROVISIONING_THIN, 0))


def standard_vpd_pages() -> VpdRegistry:
    registry = VpdRegistry()
    registry.register(VpdPage.UNIT_SERIAL_NUMBER, unit_serial_number)
    registry.register(VpdPage.DEVICE_IDENTIFICATION, device_identification)
    registry.register(VpdPage.BLOCK_LIMITS, block_limits)
    registry.register(VpdPage.BLOCK_DEVICE_CHARACTERISTICS, block_device_characteristics)
    registry.register(VpdPage.LOGICAL_BLOCK_PROVISIONING, logical_block_provisioning)
    return registry
