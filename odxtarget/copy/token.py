"""The 512-byte ROD token (SPC-4 5.16.6.2, SBC-4 4.28.5): building and reading its fields.

Layout (offsets in the token):

====== ============================================================================
0-3    ROD TYPE
6-7    ROD TOKEN LENGTH = 01F8h
8-15   COPY MANAGER ROD TOKEN IDENTIFIER (a per-daemon counter; never reused soon)
16-47  CREATOR LOGICAL UNIT DESCRIPTOR: an Identification CSCD descriptor (E4h)
48-63  NUMBER OF BYTES REPRESENTED (16-byte integer)
96-127 DEVICE TYPE SPECIFIC DATA: READ CAPACITY(16) bytes 8-31 at creation
128-   TARGET DEVICE DESCRIPTOR: designation descriptor naming this copy manager
256-   EXTENDED ROD TOKEN DATA: 256 random bytes from ``secrets`` (2048 bits)
====== ============================================================================

Nothing in a token is trusted: the store compares the whole token, in constant time,
with the one it issued under the same identifier.
"""

from __future__ import annotations

import secrets
import struct

from odxtarget.copy.constants import ROD_TOKEN_LENGTH, ROD_TOKEN_SIZE, RodType, DescriptorCode

CREATOR_DESCRIPTOR_OFFSET = 16
BYTES_REPRESENTED_OFFSET = 48
DEVICE_TYPE_SPECIFIC_OFFSET = 96
TARGET_DEVICE_DESCRIPTOR_OFFSET = 128
TARGET_DEVICE_DESCRIPTOR_SPACE = 128
RANDOM_OFFSET = 256
RANDOM_BYTES = ROD_TOKEN_SIZE - RANDOM_OFFSET

_HEADER = struct.Struct(">I2xHQ")

# Designation descriptor fields (SPC-4 7.8.6.1).
CODE_SET_BINARY = 0x01
CODE_SET_UTF8 = 0x03
DESIGNATOR_T10_VENDOR = 0x01
DESIGNATOR_NAA = 0x03
DESIGNATOR_SCSI_NAME = 0x08
ASSOCIATION_TARGET_DEVICE = 0x20
#: Identification CSCD: designator field is 20 bytes (SPC-4 6.3.6.2).
CSCD_DESIGNATOR_SPACE = 20
#: Block device type specific CSCD parameters: PAD bit in byte 28 (SPC-4 6.3.6.1).
CSCD_PAD = 0x04
#: READ CAPACITY(16) byte 14 that the core reports: LBPME | LBPRZ.
_LBPME_LBPRZ = 0xC0


def creator_descriptor(naa_designator: bytes, block_size: int) -> bytes:
    """The LU's Identification CSCD descriptor (E4h): LU ID TYPE 00b, device type 00h, NAA."""
    descriptor = bytearray(32)
    descriptor[0] = DescriptorCode.IDENTIFICATION
    descriptor[4] = CODE_SET_BINARY
    descriptor[5] = DESIGNATOR_NAA  # association 00b: the logical unit
    descriptor[7] = len(naa_designator)
    descriptor[8:8 + len(naa_designator)] = naa_designator
    descriptor[29:32] = block_size.to_bytes(3, "big")
    return bytes(descriptor)


def target_device_descriptor(name: str) -> bytes:
    """A SCSI name string designator (association target device) naming this copy manager."""
    raw = name.encode("utf-8")[:TARGET_DEVICE_DESCRIPTOR_SPACE - 8] + b"\x00"
    raw += bytes(-len(raw) % 4)
    return bytes((CODE_SET_UTF8, ASSOCIATION_TARGET_DEVICE | DESIGNATOR_SCSI_NAME, 0, len(raw))) + raw


def build_token(rod_type: int, token_id: int, creator: bytes, bytes_represented: int,
                block_size: int, block_count: int, manager_name: str) -> bytes:
    token = bytearray(ROD_TOKEN_SIZE)
    _HEADER.pack_into(token, 0, rod_type, ROD_TOKEN_LENGTH, token_id)
    token[CREATOR_DESCRIPTOR_OFFSET:CREATOR_DESCRIPTOR_OFFSET + 32] = creator
    token[BYTES_REPRESENTED_OFFSET:BYTES_REPRESENTED_OFFSET + 16] = bytes_represented.to_bytes(16, "big")
    # READ CAPACITY(16) bytes 8-31 (SBC-4 4.28.5): block length, then byte 14's LBPME/LBPRZ.
    struct.pack_into(">I", token, DEVICE_TYPE_SPECIFIC_OFFSET, block_size)
    token[DEVICE_TYPE_SPECIFIC_OFFSET + 6] = _LBPME_LBPRZ
    descriptor = target_device_descriptor(manager_name)
    token[TARGET_DEVICE_DESCRIPTOR_OFFSET:TARGET_DEVICE_DESCRIPTOR_OFFSET + len(descriptor)] = descriptor
    token[RANDOM_OFFSET:] = secrets.token_bytes(RANDOM_BYTES)
    return bytes(token)


def rod_type_of(token: bytes) -> int:
    return struct.unpack_from(">I", token, 0)[0]


def token_length_of(token: bytes) -> int:
    return struct.unpack_from(">H", token, 6)[0]


def token_id_of(token: bytes) -> int:
    return struct.unpack_from(">Q", token, 8)[0]


def creator_designator_of(token: bytes) -> bytes:
    """The designator bytes of the token's creator LU descriptor."""
    length = min(token[CREATOR_DESCRIPTOR_OFFSET + 7], CSCD_DESIGNATOR_SPACE)
    start = CREATOR_DESCRIPTOR_OFFSET + 8
    return bytes(token[start:start + length])


def bytes_represented_of(token: bytes) -> int:
    return int.from_bytes(token[BYTES_REPRESENTED_OFFSET:BYTES_REPRESENTED_OFFSET + 16], "big")


def is_zero_token(token: bytes) -> bool:
    """The block device zero ROD token is recognised by its ROD TYPE alone (SBC-4 4.28.4)."""
    return rod_type_of(token) == RodType.BLOCK_DEVICE_ZERO


def make_zero_token() -> bytes:
    """The well-known zero token as Windows' MAKE_ZERO_TOKEN and ddpt build it."""
    token = bytearray(ROD_TOKEN_SIZE)
    struct.pack_into(">I2xH", token, 0, RodType.BLOCK_DEVICE_ZERO, ROD_TOKEN_LENGTH)
    return bytes(token)
