"""Parsing and validating POPULATE TOKEN and WRITE USING TOKEN parameter lists (SBC-4 5.x).

Pure functions over bytes: no I/O, no state. Checks come in the order the parameter list's
fields appear (SBC-4, POPULATE TOKEN and WRITE USING TOKEN parameter lists), each with the
sense code SBC-4 and SPC-4 5.16.6 assign (docs/odx.md, "Results, list identifiers and the
Windows rules").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from odxtarget.copy.constants import RANGE_DESCRIPTOR_SIZE, ROD_TOKEN_SIZE, RodType
from odxtarget.copy.errors import TooManySegmentDescriptors
from odxtarget.copy.limits import CopyLimits
from odxtarget.scsi.errors import InvalidFieldInParameterList, LbaOutOfRange, ParameterListLengthError

#: POPULATE TOKEN DATA LENGTH must be at least 1Eh (header 16 bytes + one descriptor, n-1).
PT_MIN_DATA_LENGTH = 0x1E
PT_HEADER_SIZE = 16
PT_RANGES_LENGTH_OFFSET = 14
#: WRITE USING TOKEN DATA LENGTH must be at least 226h (536-byte header + one descriptor, n-1).
WUT_MIN_DATA_LENGTH = 0x226
WUT_HEADER_SIZE = 536
WUT_TOKEN_OFFSET = 16
WUT_RANGES_LENGTH_OFFSET = 534
WUT_MIN_LIST = WUT_HEADER_SIZE + RANGE_DESCRIPTOR_SIZE

IMMED = 0x01
RTV = 0x02
DEL_TKN = 0x02

_RANGE = struct.Struct(">QI4x")

#: ROD types POPULATE TOKEN may be asked for with RTV=1 (point-in-time types only, SBC-4 5.x).
REQUESTABLE_ROD_TYPES = frozenset({RodType.PIT_DEFAULT, RodType.PIT_CHANGE_VULNERABLE, RodType.PIT_ANY})


@dataclass(frozen=True, slots=True)
class PopulateTokenRequest:
    immed: bool
    rod_type: int | None             # None: RTV=0, the copy manager chooses
    inactivity_timeout: int          # seconds, 0 resolved to the default
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class WriteUsingTokenRequest:
    immed: bool
    delete_token: bool
    offset_into_rod: int             # destination logical blocks
    token: bytes
    ranges: tuple[tuple[int, int], ...]


def parse_ranges(data, start: int, length_field: int, declared: int, block_count: int,
                 block_size: int, limits: CopyLimits) -> tuple[tuple[int, int], ...]:
    """The block device range descriptors at ``data[start:]`` (SBC-4 5.12.3).

    ``declared`` is the BLOCK DEVICE RANGE DESCRIPTOR LENGTH found at ``length_field``. An
    incomplete last descriptor, and any cut off by the PARAMETER LIST LENGTH, is ignored;
    descriptors with zero blocks are skipped.
    """
    if declared < RANGE_DESCRIPTOR_SIZE:
        raise InvalidFieldInParameterList(length_field, None, "no complete range descriptor")
    count = min(declared, max(0, len(data) - start)) // RANGE_DESCRIPTOR_SIZE
    if count > limits.max_range_descriptors:
        raise TooManySegmentDescriptors(length_field)
    ranges = []
    for index in range(count):
        lba, blocks = _RANGE.unpack_from(data, start + index * RANGE_DESCRIPTOR_SIZE)
        if blocks:
            ranges.append((lba, blocks, start + index * RANGE_DESCRIPTOR_SIZE))
    ordered = sorted(ranges)
    for (lba, blocks, _), (next_lba, _, where) in zip(ordered, ordered[1:]):
        if lba + blocks > next_lba:
            raise InvalidFieldInParameterList(where, None, "range descriptors overlap")
    total = sum(blocks for _, blocks, _ in ranges)
    if total > limits.max_token_transfer_blocks(block_size):
        raise InvalidFieldInParameterList(length_field, None,
                                          f"{total} blocks exceed MAXIMUM TOKEN TRANSFER SIZE")
    for lba, blocks, _ in ranges:
        if lba + blocks > block_count:
            raise LbaOutOfRange(lba)
    return tuple((lba, blocks) for lba, blocks, _ in ranges)


def parse_populate_token(data, block_count: int, block_size: int, limits: CopyLimits) -> PopulateTokenRequest:
    if len(data) < PT_HEADER_SIZE:
        raise ParameterListLengthError("POPULATE TOKEN parameter list shorter than 16 bytes")
    data_length = struct.unpack_from(">H", data, 0)[0]
    if data_length < PT_MIN_DATA_LENGTH:
        raise InvalidFieldInParameterList(0, None, f"POPULATE TOKEN DATA LENGTH {data_length} < 30")
    flags = data[2]
    inactivity_timeout = struct.unpack_from(">I", data, 4)[0]
    if inactivity_timeout > limits.max_inactivity_timeout:
        raise InvalidFieldInParameterList(4, None, "INACTIVITY TIMEOUT above the maximum")
    rod_type = None
    if flags & RTV:
        rod_type = struct.unpack_from(">I", data, 8)[0]
        if rod_type not in REQUESTABLE_ROD_TYPES:
            raise InvalidFieldInParameterList(8, None, f"ROD type {rod_type:08X}h not supported")
    declared = struct.unpack_from(">H", data, PT_RANGES_LENGTH_OFFSET)[0]
    ranges = parse_ranges(data, PT_HEADER_SIZE, PT_RANGES_LENGTH_OFFSET, declared, block_count,
                          block_size, limits)
    return PopulateTokenRequest(bool(flags & IMMED), rod_type,
                                inactivity_timeout or limits.default_inactivity_timeout, ranges)


def parse_write_using_token(data, block_count: int, block_size: int, limits: CopyLimits) -> WriteUsingTokenRequest:
    if len(data) < WUT_MIN_LIST:
        raise InvalidFieldInParameterList(0, None, f"WRITE USING TOKEN parameter list of {len(data)} bytes")
    data_length = struct.unpack_from(">H", data, 0)[0]
    if data_length < WUT_MIN_DATA_LENGTH:
        raise InvalidFieldInParameterList(0, None, f"WRITE USING TOKEN DATA LENGTH {data_length} < 550")
    flags = data[2]
    offset_into_rod = struct.unpack_from(">Q", data, 8)[0]
    token = bytes(data[WUT_TOKEN_OFFSET:WUT_TOKEN_OFFSET + ROD_TOKEN_SIZE])
    declared = struct.unpack_from(">H", data, WUT_RANGES_LENGTH_OFFSET)[0]
    ranges = parse_ranges(data, WUT_HEADER_SIZE, WUT_RANGES_LENGTH_OFFSET, declared, block_count,
                          block_size, limits)
    return WriteUsingTokenRequest(bool(flags & IMMED), bool(flags & DEL_TKN), offset_into_rod, token, ranges)


def pack_ranges(ranges) -> bytes:
    return b"".join(_RANGE.pack(lba, blocks) for lba, blocks in ranges)


def build_populate_token_list(ranges, *, immed: bool = False, rod_type: int | None = None,
                              inactivity_timeout: int = 0) -> bytes:
    """The parameter list an initiator sends (used by ``odxtarget copy`` and the tests)."""
    body = pack_ranges(ranges)
    header = struct.pack(">HBxII2xH", PT_HEADER_SIZE - 2 + len(body),
                         (IMMED if immed else 0) | (RTV if rod_type is not None else 0),
                         inactivity_timeout, rod_type or 0, len(body))
    return header + body


def build_write_using_token_list(token: bytes, ranges, *, offset_into_rod: int = 0, immed: bool = False,
                                 delete_token: bool = False) -> bytes:
    body = pack_ranges(ranges)
    header = struct.pack(">HB5xQ", WUT_HEADER_SIZE - 2 + len(body),
                         (IMMED if immed else 0) | (DEL_TKN if delete_token else 0), offset_into_rod)
    return header + bytes(token) + bytes(6) + struct.pack(">H", len(body)) + body
