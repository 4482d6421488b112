"""EXTENDED COPY(LID1) parameter lists (SPC-4 6.3): block-to-block segments between LUs that
Identification CSCD descriptors (E4h) name. Parsing only; the copy manager runs them.

Checks, in the order libiscsi's ExtendedCopy tests and SPC-4 6.3.1 expect:

1. the header fits and the descriptor lists fit in the PARAMETER LIST LENGTH, and their
   total is within MAXIMUM DESCRIPTOR LIST LENGTH -> PARAMETER LIST LENGTH ERROR (1Ah/00h);
2. too many CSCD / segment descriptors -> 26h/06h / 26h/08h;
3. unsupported CSCD / segment descriptor type codes -> 26h/07h / 26h/09h;
4. bad fields (inline data, LIST ID USAGE 11b with a list id, descriptor lengths) -> 26h/00h.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from odxtarget.copy.constants import (
    BLOCK_TO_BLOCK_SEGMENT_SIZE, CSCD_DESCRIPTOR_SIZE, XCOPY_HEADER_SIZE, DescriptorCode,
)
from odxtarget.copy.errors import (
    TooManySegmentDescriptors, TooManyTargetDescriptors, UnsupportedSegmentDescriptorType,
    UnsupportedTargetDescriptorType,
)
from odxtarget.copy.limits import CopyLimits
from odxtarget.scsi.errors import InvalidFieldInParameterList, ParameterListLengthError

#: LIST ID USAGE (header byte 1 bits 4:3): 11b means "no list identifier" (SPC-4 6.3.1).
LIST_ID_USAGE_SHIFT = 3
LIST_ID_USAGE_MASK = 0x03
LIST_ID_USAGE_NONE = 0x03
#: Block-to-block segment byte 1: DC (count in destination blocks), CAT.
SEGMENT_DC = 0x02
#: Identification CSCD byte 1 bits 4:0: peripheral device type (00h = block device).
PERIPHERAL_TYPE_MASK = 0x1F
SEGMENT_HEADER_SIZE = 4

_SEGMENT = struct.Struct(">BBHHH2xHQQ")


@dataclass(frozen=True, slots=True)
class Cscd:
    """An Identification CSCD descriptor: which LU, by designator."""

    designator_type: int
    designator: bytes
    peripheral_type: int
    block_size: int


@dataclass(frozen=True, slots=True)
class Segment:
    source_index: int
    destination_index: int
    blocks: int
    count_in_destination_blocks: bool
    source_lba: int
    destination_lba: int
    offset: int  # of the descriptor in the parameter list, for field pointers


@dataclass(frozen=True, slots=True)
class ExtendedCopyList:
    list_id: int
    list_id_usage: int
    cscds: tuple[Cscd, ...]
    segments: tuple[Segment, ...]

    @property
    def holds_results(self) -> bool:
        return self.list_id_usage != LIST_ID_USAGE_NONE


def parse_extended_copy(data, limits: CopyLimits) -> ExtendedCopyList:
    if len(data) < XCOPY_HEADER_SIZE:
        raise ParameterListLengthError("EXTENDED COPY parameter list shorter than its header")
    list_id = data[0]
    usage = (data[1] >> LIST_ID_USAGE_SHIFT) & LIST_ID_USAGE_MASK
    cscd_length = struct.unpack_from(">H", data, 2)[0]
    segment_length, inline_length = struct.unpack_from(">II", data, 8)
    if cscd_length + segment_length > limits.max_descriptor_list_length:
        raise ParameterListLengthError("descriptor lists exceed MAXIMUM DESCRIPTOR LIST LENGTH")
    if XCOPY_HEADER_SIZE + cscd_length + segment_length + inline_length > len(data):
        raise ParameterListLengthError("descriptor lists longer than the parameter list")
    if cscd_length // CSCD_DESCRIPTOR_SIZE > limits.max_cscd_descriptors:
        raise TooManyTargetDescriptors()
    if cscd_length % CSCD_DESCRIPTOR_SIZE:
        raise InvalidFieldInParameterList(2, None, "CSCD DESCRIPTOR LIST LENGTH not a multiple of 32")
    cscds = []
    for index in range(cscd_length // CSCD_DESCRIPTOR_SIZE):
        cscds.append(_parse_cscd(data, XCOPY_HEADER_SIZE + index * CSCD_DESCRIPTOR_SIZE))
    segments = _parse_segments(data, XCOPY_HEADER_SIZE + cscd_length, segment_length, limits)
    if inline_length:
        raise InvalidFieldInParameterList(12, None, "inline data is not supported")
    if usage == LIST_ID_USAGE_NONE and list_id:
        raise InvalidFieldInParameterList(0, None, "LIST ID USAGE 11b needs LIST IDENTIFIER 0")
    return ExtendedCopyList(list_id, usage, tuple(cscds), tuple(segments))


def _parse_cscd(data, offset: int) -> Cscd:
    code = data[offset]
    if code != DescriptorCode.IDENTIFICATION:
        raise UnsupportedTargetDescriptorType(offset, code)
    # Byte 1: LU ID TYPE and NUL are ignored (SPC-4 makes NUL obsolete); bits 4:0 device type.
    peripheral_type = data[offset + 1] & PERIPHERAL_TYPE_MASK
    designator_type = data[offset + 5] & 0x0F
    length = min(data[offset + 7], 20)
    designator = bytes(data[offset + 8:offset + 8 + length])
    block_size = int.from_bytes(data[offset + 29:offset + 32], "big")
    return Cscd(designator_type, designator, peripheral_type, block_size)


def _parse_segments(data, start: int, length: int, limits: CopyLimits) -> list[Segment]:
    segments: list[Segment] = []
    offset = start
    end = start + length
    while offset < end:
        if offset + SEGMENT_HEADER_SIZE > end:
            raise InvalidFieldInParameterList(offset, None, "truncated segment descriptor")
        code = data[offset]
        descriptor_length = SEGMENT_HEADER_SIZE + struct.unpack_from(">H", data, offset + 2)[0]
        if len(segments) >= limits.max_segment_descriptors:
            raise TooManySegmentDescriptors(offset)
        if code != DescriptorCode.BLOCK_TO_BLOCK:
            raise UnsupportedSegmentDescriptorType(offset, code)
        if descriptor_length != BLOCK_TO_BLOCK_SEGMENT_SIZE or offset + descriptor_length > end:
            raise InvalidFieldInParameterList(offset + 2, None, "bad block-to-block descriptor length")
        _, flags, _, source, destination, blocks, source_lba, destination_lba = _SEGMENT.unpack_from(data, offset)
        segments.append(Segment(source, destination, blocks, bool(flags & SEGMENT_DC),
                                source_lba, destination_lba, offset))
        offset += descriptor_length
    return segments


def build_extended_copy(list_id: int, cscds: list[bytes], segments: list[tuple], usage: int = 0) -> bytes:
    """An EXTENDED COPY(LID1) parameter list; segments are (src, dst, blocks, src_lba, dst_lba)."""
    cscd_bytes = b"".join(cscds)
    segment_bytes = b"".join(
        _SEGMENT.pack(DescriptorCode.BLOCK_TO_BLOCK, 0, BLOCK_TO_BLOCK_SEGMENT_SIZE - SEGMENT_HEADER_SIZE,
                      source, destination, blocks, source_lba, destination_lba)
        for source, destination, blocks, source_lba, destination_lba in segments)
    header = struct.pack(">BBH4xII", list_id, (usage & LIST_ID_USAGE_MASK) << LIST_ID_USAGE_SHIFT,
                         len(cscd_bytes), len(segment_bytes), 0)
    return header + cscd_bytes + segment_bytes
