"""Data-in of the THIRD-PARTY COPY IN commands and the Third-party Copy VPD page, byte for byte.

Pure encoders: each takes plain values and returns bytes (the handler cuts them to the
ALLOCATION LENGTH).
"""

from __future__ import annotations

import struct

from odxtarget.copy.constants import (
    CSCD_ID_THIS_LU, ROD_MANAGEMENT_TOKEN_SIZE, ROD_TOKEN_DESCRIPTORS_LENGTH,
    UNITS_BYTES, UNITS_LOGICAL_BLOCKS, UNITS_MEBIBYTES, CopyInAction, CopyOutAction, DescriptorCode,
    RodType, ThirdPartyCopyDescriptor as D,
)
from odxtarget.copy.limits import CopyLimits
from odxtarget.scsi.constants import Opcode

#: RRTI / RECEIVE COPY STATUS(LID4) header before the sense data (SPC-4 6.18.4).
LID4_STATUS_HEADER = struct.Struct(">IBBHIBBBBQH6x")
#: Sense data in RRTI is kept to 255 bytes and padded to a multiple of 4 (SPC-4 6.18.4).
MAX_SENSE_FIELD = 252

#: Commands listed in the Supported Commands descriptor, service actions ascending.
SUPPORTED_COMMANDS = (
    (Opcode.THIRD_PARTY_COPY_OUT, sorted(int(action) for action in CopyOutAction)),
    (Opcode.THIRD_PARTY_COPY_IN, sorted(int(action) for action in CopyInAction)),
)


def lid4_status(service_action: int, status: int, transfer_count: int, sense: bytes,
                completion_status: int, delay: int, token: bytes | None = None,
                with_token_part: bool = True) -> bytes:
    """RECEIVE ROD TOKEN INFORMATION / RECEIVE COPY STATUS(LID4) data (SPC-4 6.18.4, SBC-4 5.x).

    After POPULATE TOKEN with a token: 550 bytes without sense; after WRITE USING TOKEN:
    36 bytes (32 + a zero ROD TOKEN DESCRIPTORS LENGTH). RCS(LID4) has no token part.
    """
    sense = bytes(sense[:MAX_SENSE_FIELD])
    field = sense + bytes(-len(sense) % 4)
    body = bytearray()
    if with_token_part:
        if token is not None:
            body += struct.pack(">IH", ROD_TOKEN_DESCRIPTORS_LENGTH, 0) + token
        else:
            body += struct.pack(">I", 0)
    total = LID4_STATUS_HEADER.size + len(field) + len(body)
    header = LID4_STATUS_HEADER.pack(total - 4, service_action & 0x1F, status & 0x7F, 0, delay,
                                     completion_status, len(field), len(sense), UNITS_LOGICAL_BLOCKS,
                                     transfer_count, 0)
    return header + field + bytes(body)


def lid1_status(status: int, segments_processed: int, transferred_bytes: int) -> bytes:
    """RECEIVE COPY STATUS(LID1) (SPC-4 6.18.2; SPC-3 RECEIVE COPY RESULTS/COPY STATUS)."""
    units, count = UNITS_BYTES, transferred_bytes
    if count > 0xFFFF_FFFF:
        units, count = UNITS_MEBIBYTES, count >> 20
    return struct.pack(">IBHBI", 8, status & 0x7F, segments_processed & 0xFFFF, units, count)


def lid1_failure_details(completion_status: int, sense: bytes) -> bytes:
    """RECEIVE COPY FAILURE DETAILS(LID1) (SPC-4 6.18.3)."""
    body = bytearray(60)
    body[56] = completion_status
    struct.pack_into(">H", body, 58, len(sense))
    body += sense
    struct.pack_into(">I", body, 0, len(body) - 4)
    return bytes(body)


def operating_parameters(limits: CopyLimits) -> bytes:
    """RECEIVE COPY OPERATING PARAMETERS (SPC-4 6.18.5): the EXTENDED COPY(LID1) limits."""
    codes = bytes((DescriptorCode.BLOCK_TO_BLOCK, DescriptorCode.IDENTIFICATION))
    body = bytearray(44)
    body[4] = 0x01  # SNLID: LIST ID USAGE 11b (no list identifier) is supported
    struct.pack_into(">HHII", body, 8, limits.max_cscd_descriptors, limits.max_segment_descriptors,
                     limits.max_descriptor_list_length, limits.max_segment_bytes)
    # 20-23 MAXIMUM INLINE DATA LENGTH 0; 24-27 HELD DATA LIMIT 0; 28-31 stream size 0.
    struct.pack_into(">H", body, 34, limits.max_concurrent_copies)
    body[36] = min(limits.max_concurrent_copies, 0xFF)
    body[37] = 9   # DATA SEGMENT GRANULARITY: 2^9 = 512 bytes
    body[43] = len(codes)
    body += codes
    struct.pack_into(">I", body, 0, len(body) - 4)
    return bytes(body)


def report_all_rod_tokens(tokens: list[bytes]) -> bytes:
    """REPORT ALL ROD TOKENS (SPC-4 6.20): the first 96 bytes of each token."""
    body = b"".join(bytes(token[:ROD_MANAGEMENT_TOKEN_SIZE]) for token in tokens)
    return struct.pack(">I4x", len(body) + 4) + body


# -- Third-party Copy VPD page (SPC-4 7.8.17) ------------------------------------------------

def _descriptor(code: int, body: bytes) -> bytes:
    body = body + bytes(-len(body) % 4)
    return struct.pack(">HH", code, len(body)) + body


def _block_device_rod_limits(limits: CopyLimits, block_size: int) -> bytes:
    """BDRL (SBC-4 6.6.9.3): first, DESCRIPTOR LENGTH 0020h, as Windows demands."""
    body = bytearray(32)
    struct.pack_into(">HIIQQ", body, 6, limits.max_range_descriptors, limits.max_inactivity_timeout,
                     limits.default_inactivity_timeout, limits.max_token_transfer_blocks(block_size),
                     limits.optimal_transfer_blocks(block_size))
    return _descriptor(D.BLOCK_DEVICE_ROD_TOKEN_LIMITS, bytes(body))


def _supported_commands() -> bytes:
    entries = bytearray()
    for opcode, actions in SUPPORTED_COMMANDS:
        entries += bytes((opcode, len(actions))) + bytes(actions)
    return _descriptor(D.SUPPORTED_COMMANDS, bytes((len(entries),)) + bytes(entries))


def _parameter_data(limits: CopyLimits) -> bytes:
    body = bytearray(28)
    struct.pack_into(">HHII", body, 4, limits.max_cscd_descriptors, limits.max_segment_descriptors,
                     limits.max_descriptor_list_length, 0)
    return _descriptor(D.PARAMETER_DATA, bytes(body))


def _supported_descriptors() -> bytes:
    codes = bytes((DescriptorCode.BLOCK_TO_BLOCK, DescriptorCode.IDENTIFICATION))
    return _descriptor(D.SUPPORTED_DESCRIPTORS, bytes((len(codes),)) + codes)


def _supported_cscd_ids() -> bytes:
    return _descriptor(D.SUPPORTED_CSCD_IDS, struct.pack(">HH", 2, CSCD_ID_THIS_LU))


def _rod_token_features(limits: CopyLimits, block_size: int) -> bytes:
    body = bytearray(92)
    body[0] = 0  # REMOTE TOKENS: none
    struct.pack_into(">III", body, 12, limits.min_token_lifetime, limits.max_inactivity_timeout,
                     limits.max_inactivity_timeout)
    struct.pack_into(">H", body, 42, 48)
    block = bytearray(48)  # block ROD device type specific features descriptor
    block[0] = 0x00        # peripheral device type: direct access block device
    struct.pack_into(">H", block, 2, 44)
    struct.pack_into(">HQQQQ", block, 6, max(1, 4096 // block_size), limits.max_token_transfer_bytes,
                     limits.optimal_transfer_bytes, limits.max_token_transfer_bytes,
                     limits.optimal_transfer_bytes)
    body[44:92] = block
    return _descriptor(D.ROD_TOKEN_FEATURES, bytes(body))


TOKEN_IN = 0x02
TOKEN_OUT = 0x01

#: ROD types offered: the snapshot (reflink) PIT default and the cancel-on-write change
#: vulnerable type both in and out; the zero token in only.
SUPPORTED_ROD_TYPES = (
    (RodType.PIT_DEFAULT, TOKEN_IN | TOKEN_OUT),
    (RodType.PIT_CHANGE_VULNERABLE, TOKEN_IN | TOKEN_OUT),
    (RodType.BLOCK_DEVICE_ZERO, TOKEN_IN),
)


def _supported_rod_types() -> bytes:
    descriptors = bytearray()
    for rod_type, flags in SUPPORTED_ROD_TYPES:
        descriptor = bytearray(64)
        struct.pack_into(">IB", descriptor, 0, rod_type, flags)
        descriptors += descriptor
    return _descriptor(D.SUPPORTED_ROD_TOKEN_AND_ROD_TYPES,
                       struct.pack(">2xH", len(descriptors)) + bytes(descriptors))


def _general_copy_operations(limits: CopyLimits) -> bytes:
    body = bytearray(32)
    struct.pack_into(">III", body, 0, limits.max_concurrent_copies, limits.max_concurrent_copies,
                     limits.max_segment_bytes)
    body[12] = 9  # DATA SEGMENT GRANULARITY (log2)
    return _descriptor(D.GENERAL_COPY_OPERATIONS, bytes(body))


def third_party_copy_vpd(limits: CopyLimits, block_size: int) -> bytes:
    """VPD 8Fh body: descriptors in ascending type order, BDRL first."""
    return b"".join((
        _block_device_rod_limits(limits, block_size),
        _supported_commands(),
        _parameter_data(limits),
        _supported_descriptors(),
        _supported_cscd_ids(),
        _rod_token_features(limits, block_size),
        _supported_rod_types(),
        _general_copy_operations(limits),
    ))
