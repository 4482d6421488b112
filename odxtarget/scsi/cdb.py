"""CDB field decoders shared by the handlers: precompiled structs, no allocation on the hot path.

Each decoder takes the raw CDB (bytes, possibly longer than the command: iSCSI pads CDBs to
16 bytes) and returns plain ints. Field offsets follow SBC-4 5.x for the 6/10/12/16-byte
READ/WRITE family; the same shapes serve VERIFY, WRITE AND VERIFY, PRE-FETCH, SYNCHRONIZE
CACHE, ORWRITE and WRITE SAME.
"""

from __future__ import annotations

import struct

#: LBA (4 bytes at 2) and transfer length (2 bytes at 7): the 10-byte shape.
LBA32_LEN16 = struct.Struct(">2xIxH")
#: LBA (4 bytes at 2) and transfer length (4 bytes at 6): the 12-byte shape.
LBA32_LEN32 = struct.Struct(">2xII")
#: LBA (8 bytes at 2) and transfer length (4 bytes at 10): the 16-byte shape.
LBA64_LEN32 = struct.Struct(">2xQI")
#: LBA (8 bytes at 2) alone, e.g. COMPARE AND WRITE, GET LBA STATUS.
LBA64 = struct.Struct(">2xQ")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")

# Byte 1 bits of the READ/WRITE family (SBC-4 5.x).
FUA = 0x08
BYTCHK_SHIFT = 1
BYTCHK_MASK = 0x03


def lba_and_length_6(cdb: bytes) -> tuple[int, int]:
    """READ(6)/WRITE(6): 21-bit LBA; a TRANSFER LENGTH of 0 means 256 blocks (SBC-4 5.x)."""
    lba = ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]
    return lba, cdb[4] or 256

