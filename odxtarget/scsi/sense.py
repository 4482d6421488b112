"""Sense data (SPC-4 4.5): fixed (70h) and descriptor (72h) formats, built by the core and
read back by the initiator side (``SenseData.parse``)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass


class SenseKey(enum.IntEnum):
    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE


@dataclass(frozen=True, slots=True)
class FieldPointer:
    """Sense-key specific field pointer (SPC-4 4.5.2.4.2).

    ``in_cdb`` selects C/D: True when the offending byte is in the CDB, False when it is
    in the parameter list (data-out). ``bit`` is None when the whole byte is wrong.
    """

    in_cdb: bool
    byte: int
    bit: int | None = None

    def pack(self) -> bytes:
        b0 = 0x80 | (0x40 if self.in_cdb else 0)
        if self.bit is not None:
            b0 |= 0x08 | (self.bit & 0x7)
        return bytes((b0,)) + struct.pack(">H", self.byte & 0xFFFF)


@dataclass(frozen=True, slots=True)
class SenseData:
    """The parts of sense data the core produces."""

    key: int
    asc: int
    ascq: int
    information: int | None = None
    command_specific: int | None = None
    field_pointer: FieldPointer | None = None
    sense_key_specific: bytes | None = None  # 3 raw bytes, for keys other than ILLEGAL REQUEST
    #: Bytes after byte 17 of fixed format sense: EXTENDED COPY puts the copy target's own
    #: sense data there (SPC-4 6.3.4.3). Descriptor format has no place for them.
    additional: bytes = b""

    def _sks(self) -> bytes | None:
        if self.field_pointer is not None:
            return self.field_pointer.pack()
        return self.sense_key_specific

    def fixed(self) -> bytes:
        """Fixed format sense data (response code 70h, 18 bytes)."""
        buf = bytearray(18)
        buf[0] = 0x70
        buf[2] = self.key & 0x0F
        if self.information is not None and self.information <= MAX_FIXED_INFORMATION:
            buf[0] |= 0x80
            struct.pack_into(">I", buf, 3, self.information)
        buf[7] = 10
        if self.command_specific is not None:
            struct.pack_into(">I", buf, 8, self.command_specific & 0xFFFFFFFF)
        buf[12] = self.asc
        buf[13] = self.ascq
        sks = self._sks()
        if sks is not None:
            buf[15:18] = sks
        if self.additional:
            buf += self.additional[:MAX_SENSE_BYTES - len(buf)]
            buf[7] = len(buf) - 8
        return bytes(buf)

    def descriptor(self) -> bytes:
        """Descriptor format sense data (response code 72h)."""
        descs = bytearray()
        if self.information is not None:
            descs += bytes((0x00, 0x0A, 0x80, 0)) + struct.pack(">Q", self.information)
        if self.command_specific is not None:
            descs += bytes((0x01, 0x0A, 0, 0)) + struct.pack(">Q", self.command_specific)
        sks = self._sks()
        if sks is not None:
            descs += bytes((0x02, 0x06, 0, 0)) + sks + b"\x00"
        header = bytes((0x72, self.key & 0x0F, self.asc, self.ascq, 0, 0, 0, len(descs)))
        return header + bytes(descs)

    def pack(self, descriptor_format: bool = False) -> bytes:
        return self.descriptor() if descriptor_format else self.fixed()

    @classmethod
    def parse(cls, raw: bytes) -> SenseData | None:
        """Sense key, ASC/ASCQ and INFORMATION (when VALID) of fixed (70h/71h) or descriptor
        (72h/73h) format sense data, as an initiator receives it; None if ``raw`` is neither.
        Fields a short buffer lacks read as 0 (SPC-4 4.5.2.1 lets targets truncate)."""
        if not raw:
            return None
        code = raw[0] & 0x7F
        if code in FIXED_FORMATS and len(raw) >= 3:
            information = struct.unpack_from(">I", raw, 3)[0] if raw[0] & VALID and len(raw) >= 7 else None
            return cls(raw[2] & 0x0F, _byte(raw, 12), _byte(raw, 13), information=information)
        if code in DESCRIPTOR_FORMATS and len(raw) >= 2:
            return cls(raw[1] & 0x0F, _byte(raw, 2), _byte(raw, 3), information=_information_descriptor(raw))
        return None


FIXED_FORMATS = (0x70, 0x71)          # current, deferred
DESCRIPTOR_FORMATS = (0x72, 0x73)
VALID = 0x80                          # byte 0 of fixed format; byte 2 of the information descriptor
#: The fixed format INFORMATION field has 4 bytes; a larger value (an LBA past 2^32) is left out
#: with VALID=0 rather than cut (SPC-4 4.5.3); descriptor format (D_SENSE=1) carries 8 bytes.
MAX_FIXED_INFORMATION = 0xFFFFFFFF
DESCRIPTOR_HEADER_SIZE = 8
INFORMATION_DESCRIPTOR = 0x00
MAX_SENSE_BYTES = 252                 # SPC-4 4.5.1


def _byte(raw: bytes, offset: int) -> int:
    return raw[offset] if len(raw) > offset else 0


def _information_descriptor(raw: bytes) -> int | None:
    end = min(len(raw), DESCRIPTOR_HEADER_SIZE + _byte(raw, 7))
    offset = DESCRIPTOR_HEADER_SIZE
    while offset + 2 <= end:
        kind, length = raw[offset], raw[offset + 1]
        if kind == INFORMATION_DESCRIPTOR and offset + 12 <= end and raw[offset + 2] & VALID:
            return struct.unpack_from(">Q", raw, offset + 4)[0]
        offset += 2 + length
    return None
