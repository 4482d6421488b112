"""MODE SENSE(6/10) and MODE SELECT(6/10) (SPC-4 6.9-6.12, 7.5; SBC-4 6.5)."""

from __future__ import annotations

import struct

from odxtarget.scsi import dataout
from odxtarget.scsi.cdb import U16
from odxtarget.scsi.constants import ALL_SUBPAGES, ModePage, PageControl
from odxtarget.scsi.dispatch import write_protected_for
from odxtarget.scsi.errors import (InvalidFieldInCdb, InvalidFieldInParameterList, ParameterListLengthError,
                                   SavingParametersNotSupported)
from odxtarget.scsi.mode_pages import MODE_PAGES, render_changeable
from odxtarget.scsi.types import ScsiResult, Status

GOOD = Status.GOOD

DBD = 0x08
LLBAA = 0x10
PAGE_FORMAT = 0x10
SAVE_PAGES = 0x01
PS = 0x80
SPF = 0x40
PAGE_CODE_MASK = 0x3F
# Device-specific parameter of the mode parameter header for direct-access devices (SBC-4 6.5.1).
WP = 0x80
DPOFUA = 0x10
LONGLBA = 0x01
SHORT_BLOCK_DESCRIPTOR_LENGTH = 8
LONG_BLOCK_DESCRIPTOR_LENGTH = 16
MAX_SHORT_DESCRIPTOR_BLOCKS = 0xFFFFFF


def _pages(lu, page_code: int, subpage: int, page_control: int) -> bytes:
    if subpage not in (0, ALL_SUBPAGES) or (subpage == ALL_SUBPAGES and page_code != ModePage.ALL_PAGES):
        raise InvalidFieldInCdb(3, None, f"mode subpage {subpage:02X}h not supported")
    if page_code == ModePage.ALL_PAGES:
        specs = [MODE_PAGES[code] for code in sorted(MODE_PAGES)]
    else:
        spec = MODE_PAGES.get(page_code)
        if spec is None:
            raise InvalidFieldInCdb(2, 5, f"mode page {page_code:02X}h not supported")
        specs = [spec]
    if page_control == PageControl.CHANGEABLE:
        return b"".join(render_changeable(spec, lu.mode_limits) for spec in specs)
    state = lu.default_mode if page_control == PageControl.DEFAULT else lu.mode
    return b"".join(bytes(spec.render(state)) for spec in specs)


def _block_descriptor(lu, long_lba: bool, page_control: int) -> bytes:
    if page_control == PageControl.CHANGEABLE:
        return bytes(LONG_BLOCK_DESCRIPTOR_LENGTH if long_lba else SHORT_BLOCK_DESCRIPTOR_LENGTH)
    if long_lba:
        return struct.pack(">Q4xI", lu.block_count, lu.block_size)
    blocks = min(lu.block_count, MAX_SHORT_DESCRIPTOR_BLOCKS)
    return struct.pack(">I", blocks) + struct.pack(">I", lu.block_size)  # density code 0 in byte 0


def _device_specific(lu, command, target) -> int:
    """WP (SBC-4 6.5.1, the DEVICE-SPECIFIC PARAMETER): the LU is write-protected, or read-only to
    this nexus or at this LUN (``dispatch.write_protected_for``)."""
    return (WP if write_protected_for(lu, command, target) else 0) | DPOFUA


def _page_control(cdb: bytes) -> int:
    page_control = cdb[2] >> 6
    if page_control == PageControl.SAVED:
        raise SavingParametersNotSupported(2, 7)
    return page_control


def mode_sense_6(lu, command, target) -> ScsiResult:
    cdb = command.cdb
    page_control = _page_control(cdb)
    pages = _pages(lu, cdb[2] & PAGE_CODE_MASK, cdb[3], page_control)
    descriptor = b"" if cdb[1] & DBD else _block_descriptor(lu, False, page_control)
    header = bytes((3 + len(descriptor) + len(pages), 0, _device_specific(lu, command, target), len(descriptor)))
    data = (header + descriptor + pages)[:cdb[4]]
    return ScsiResult(GOOD, data, b"", len(data))


def mode_sense_10(lu, command, target) -> ScsiResult:
    cdb = command.cdb
    page_control = _page_control(cdb)
    pages = _pages(lu, cdb[2] & PAGE_CODE_MASK, cdb[3], page_control)
    long_lba = bool(cdb[1] & LLBAA)
    descriptor = b"" if cdb[1] & DBD else _block_descriptor(lu, long_lba, page_control)
    header = struct.pack(">HBBBxH", 6 + len(descriptor) + len(pages), 0, _device_specific(lu, command, target),
                         LONGLBA if long_lba and descriptor else 0, len(descriptor))
    data = (header + descriptor + pages)[:U16.unpack_from(cdb, 7)[0]]
    return ScsiResult(GOOD, data, b"", len(data))


# -- MODE SELECT ------------------------------------------------------------------------------

def _mode_select(lu, command, parameter_list_length: int, header_length: int) -> ScsiResult:
    """Validate everything, then apply; a real change tells the other nexuses (2Ah/01h)."""
    cdb = command.cdb
    if not cdb[1] & PAGE_FORMAT:
        raise InvalidFieldInCdb(1, 4, "MODE SELECT without PF (vendor-specific format)")
    if cdb[1] & SAVE_PAGES:
        raise SavingParametersNotSupported(1, 0)
    if not parameter_list_length:
        return ScsiResult()
    if parameter_list_length < header_length:
        raise ParameterListLengthError("MODE SELECT parameter list shorter than its header")
    data = bytes(dataout.take(command, parameter_list_length))
    if header_length == 4:
        medium_type, descriptor_length = data[1], data[3]
        long_lba = False
    else:
        medium_type, descriptor_length = data[2], U16.unpack_from(data, 6)[0]
        long_lba = bool(data[4] & LONGLBA)
    if medium_type:
        raise InvalidFieldInParameterList(1 if header_length == 4 else 2)
    position = header_length
    if descriptor_length:
        expected = LONG_BLOCK_DESCRIPTOR_LENGTH if long_lba else SHORT_BLOCK_DESCRIPTOR_LENGTH
        if descriptor_length != expected:
            raise InvalidFieldInParameterList(3 if header_length == 4 else 6)
        if position + descriptor_length > len(data):
            raise ParameterListLengthError("block descriptor truncated")
        block_length = int.from_bytes(data[position + descriptor_length - 3:position + descriptor_length], "big")
        if block_length not in (0, lu.block_size):
            raise InvalidFieldInParameterList(position + descriptor_length - 3, None,
                                              f"block length {block_length} cannot be changed")
        position += descriptor_length
    new_state = lu.mode.copy()
    while position < len(data):
        if position + 2 > len(data):
            raise ParameterListLengthError("mode page header truncated")
        page_byte = data[position]
        if page_byte & PS:
            raise InvalidFieldInParameterList(position, 7, "PS bit set in MODE SELECT")
        if page_byte & SPF:
            raise InvalidFieldInParameterList(position, 6, "mode subpages not supported")
        spec = MODE_PAGES.get(page_byte & PAGE_CODE_MASK)
        if spec is None:
            raise InvalidFieldInParameterList(position, 5, f"mode page {page_byte & PAGE_CODE_MASK:02X}h not supported")
        if data[position + 1] != spec.length - 2:
            raise InvalidFieldInParameterList(position + 1, None, "wrong mode page length")
        if position + spec.length > len(data):
            raise ParameterListLengthError("mode page truncated")
        page = data[position:position + spec.length]
        current = spec.render(new_state)
        changeable = spec.changeable_for(lu.mode_limits)
        for index in range(2, spec.length):
            fixed_bits = (page[index] ^ current[index]) & ~changeable[index] & 0xFF
            if fixed_bits:
                raise InvalidFieldInParameterList(position + index, fixed_bits.bit_length() - 1,
                                                  f"mode page {spec.code:02X}h byte {index} is not changeable")
        spec.apply(new_state, page)
        position += spec.length
    if new_state != lu.mode:
        lu.mode = new_state
        lu.mode_parameters_changed(command.nexus)
    return ScsiResult(GOOD, b"", b"", parameter_list_length)


def mode_select_6(lu, command, target) -> ScsiResult:
    return _mode_select(lu, command, command.cdb[4], 4)


def mode_select_10(lu, command, target) -> ScsiResult:
    return _mode_select(lu, command, U16.unpack_from(command.cdb, 7)[0], 8)
