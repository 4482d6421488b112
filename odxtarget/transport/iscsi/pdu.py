"""iSCSI PDU codec (RFC 7143 11): the 48-byte Basic Header Segment of every opcode, AHS,
padding, CRC32C digests, and a framer that cuts a TCP byte stream into PDUs.

Theory of operation
-------------------
Every PDU type is a slots dataclass with a precompiled ``struct.Struct`` covering the whole
BHS (checked to be 48 bytes at import time), ``unpack(bhs, data=b"", ahs=b"")`` and
``pack() -> bytes`` (the BHS only; ``encode_pdu`` adds digests, data and padding). The word
at offset 4 (TotalAHSLength << 24 | DataSegmentLength) is packed from ``len(data)`` and
``len(ahs)`` so the two can never disagree.

Dataclasses are not frozen: a frozen slots dataclass assigns through ``object.__setattr__``,
which doubles construction time, and the codec sits on the per-command hot path.

``PduFramer`` is sans-IO: ``feed(bytes)`` returns the complete ``RawPdu`` objects found so
far. A PDU that lies wholly inside one received chunk is returned as memoryviews into that
chunk (no copy); a PDU that straddles reads is assembled once into a buffer of exactly its
size. Digest and length errors raise ``PduFramingError`` with what the connection must do.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import crc32c as _crc32c

from odxtarget.scsi.types import TmfResponse  # noqa: F401  (one enum for core and PDUs: P.TmfResponse)

BHS_SIZE = 48
DIGEST_SIZE = 4
RESERVED_TAG = 0xFFFFFFFF           # RFC 7143 11.2.1.6 / 11.18: "no tag"
MAX_DATA_SEGMENT_LENGTH = (1 << 24) - 1
# Login PDUs are framed before any MaxRecvDataSegmentLength is declared (RFC 7143 13.12: 8192 in
# the login phase); we tolerate up to this much so a sloppy initiator gets a login reject, not a drop.
LOGIN_DATA_SEGMENT_ALLOWANCE = 65536

_crc = _crc32c.crc32c
_DIGEST = struct.Struct("<I")       # RFC 7143 13.1: CRC32C sent least significant byte first
_WORD4 = struct.Struct(">I")


def crc32c_digest(*parts) -> bytes:
    """The 4-byte CRC32C digest of the concatenation of ``parts``."""
    value = 0
    for part in parts:
        value = _crc(part, value)
    return _DIGEST.pack(value)


def padding_for(length: int) -> int:
    """RFC 7143 11.2.3: data segments are padded to a multiple of 4 bytes."""
    return -length & 3


_PADS = (b"", b"\0", b"\0\0", b"\0\0\0")


class Opcode(enum.IntEnum):
    """RFC 7143 11.2.1.2."""

    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MANAGEMENT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    SCSI_DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MANAGEMENT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    SCSI_DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    READY_TO_TRANSFER = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


INITIATOR_OPCODES = frozenset({Opcode.NOP_OUT, Opcode.SCSI_COMMAND, Opcode.TASK_MANAGEMENT_REQUEST,
                               Opcode.LOGIN_REQUEST, Opcode.TEXT_REQUEST, Opcode.SCSI_DATA_OUT,
                               Opcode.LOGOUT_REQUEST, Opcode.SNACK_REQUEST})


class RejectReason(enum.IntEnum):
    """RFC 7143 11.17.1."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OPERATION_REJECT = 0x0A
    WAITING_FOR_LOGOUT = 0x0C


class AhsType(enum.IntEnum):
    """RFC 7143 11.2.2.1."""

    EXTENDED_CDB = 1
    BIDIRECTIONAL_READ_LENGTH = 2


class PduFramingError(Exception):
    """The byte stream cannot be trusted any more: the connection must be dropped.

    Raised for a header digest error or a data segment longer than we declared (RFC 7143
    7.8: without markers the next PDU boundary cannot be found reliably). ``reject_reason``
    is set when a Reject should go out before closing; ``bhs`` is the offending header.
    """

    def __init__(self, message: str, *, reject_reason: int | None = None, bhs: bytes = b""):
        super().__init__(message)
        self.reject_reason = reject_reason
        self.bhs = bhs
        self.pdus_before: list = []


def _word4(ahs_length: int, data_length: int) -> int:
    return ((ahs_length // 4) << 24) | data_length


def _check_size(st: struct.Struct) -> struct.Struct:
    assert st.size == BHS_SIZE, st.format   # our CTASSERT: every BHS layout is exactly 48 bytes
    return st


def decode_lun(raw: bytes) -> int:
    """SAM-5 4.7.2 single-level LUN: peripheral (00b) and flat (01b) addressing."""
    method = raw[0] >> 6
    if method == 1:
        return ((raw[0] & 0x3F) << 8) | raw[1]
    return raw[1] if method == 0 else -1


def encode_lun(lun: int) -> bytes:
    """The 8-byte LUN field for ``lun``: peripheral addressing below 256, flat above."""
    if lun < 256:
        return bytes((0, lun, 0, 0, 0, 0, 0, 0))
    return bytes((0x40 | (lun >> 8), lun & 0xFF, 0, 0, 0, 0, 0, 0))


_ZERO_LUN = bytes(8)


# --------------------------------------------------------------------------- initiator PDUs

@dataclass(slots=True)
class NopOut:
    """RFC 7143 11.18."""

    OPCODE = Opcode.NOP_OUT
    _S = _check_size(struct.Struct(">BBHI8sIIII16x"))
    immediate: bool = False
    lun: bytes = _ZERO_LUN
    initiator_task_tag: int = RESERVED_TAG
    target_transfer_tag: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    data: bytes | memoryview = b""

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE | (0x40 if self.immediate else 0), 0x80, 0, _word4(0, len(self.data)),
                            self.lun, self.initiator_task_tag, self.target_transfer_tag, self.cmd_sn,
                            self.exp_stat_sn)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "NopOut":
        b0, _, _, _, lun, itt, ttt, cmd_sn, exp_stat_sn = cls._S.unpack_from(bhs)
        return cls(bool(b0 & 0x40), bytes(lun), itt, ttt, cmd_sn, exp_stat_sn, data)


@dataclass(slots=True)
class ScsiCommandPdu:
    """RFC 7143 11.3. ``cdb`` includes the extended CDB AHS bytes when there was one."""

    OPCODE = Opcode.SCSI_COMMAND
    _S = _check_size(struct.Struct(">BBHI8sIIII16s"))
    immediate: bool = False
    final: bool = True
    read: bool = False
    write: bool = False
    task_attribute: int = 0
    lun: bytes = _ZERO_LUN
    initiator_task_tag: int = 0
    expected_data_transfer_length: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    cdb: bytes = bytes(16)
    data: bytes | memoryview = b""
    bidirectional_read_length: int | None = None

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE | (0x40 if self.immediate else 0),
                            (0x80 if self.final else 0) | (0x40 if self.read else 0)
                            | (0x20 if self.write else 0) | (self.task_attribute & 7),
                            0, _word4(len(self.ahs()), len(self.data)), self.lun, self.initiator_task_tag,
                            self.expected_data_transfer_length, self.cmd_sn, self.exp_stat_sn,
                            self.cdb[:16].ljust(16, b"\0"))

    def ahs(self) -> bytes:
        """The AHS this command needs (RFC 7143 11.2.2): extended CDB, bidi read length."""
        out = b""
        if len(self.cdb) > 16:
            extra = self.cdb[16:]
            # AHSLength counts the reserved byte and the CDB bytes past the 16th; pad to 4 bytes.
            out += (struct.pack(">HBB", len(extra) + 1, AhsType.EXTENDED_CDB, 0) + extra
                    + _PADS[padding_for(len(extra) + 4)])
        if self.bidirectional_read_length is not None:
            out += struct.pack(">HBBI", 5, AhsType.BIDIRECTIONAL_READ_LENGTH, 0, self.bidirectional_read_length)
        return out

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "ScsiCommandPdu":
        b0, b1, _, _, lun, itt, edtl, cmd_sn, exp_stat_sn, cdb = cls._S.unpack_from(bhs)
        bidi = None
        if ahs:
            for ahs_type, value in iter_ahs(ahs):
                if ahs_type == AhsType.EXTENDED_CDB:
                    cdb = cdb + bytes(value[1:])    # first byte of the AHS-specific field is reserved
                elif ahs_type == AhsType.BIDIRECTIONAL_READ_LENGTH:
                    bidi = struct.unpack_from(">I", value, 1)[0]
        return cls(bool(b0 & 0x40), bool(b1 & 0x80), bool(b1 & 0x40), bool(b1 & 0x20), b1 & 7, bytes(lun), itt,
                   edtl, cmd_sn, exp_stat_sn, cdb, data, bidi)


def iter_ahs(ahs):
    """Yield (type, body) for each AHS (RFC 7143 11.2.2): AHSLength counts the body from byte 3 on."""
    pos = 0
    view = memoryview(ahs)
    while pos + 3 <= len(view):
        length, ahs_type = struct.unpack_from(">HB", view, pos)
        body = view[pos + 3:pos + 3 + length]
        if len(body) != length:
            raise ValueError("AHS runs past TotalAHSLength")
        yield ahs_type, body
        pos += 3 + length + padding_for(3 + length)


@dataclass(slots=True)
class TaskManagementRequest:
    """RFC 7143 11.5."""

    OPCODE = Opcode.TASK_MANAGEMENT_REQUEST
    _S = _check_size(struct.Struct(">BBHI8sIIIIII8x"))
    immediate: bool = True
    function: int = 0
    lun: bytes = _ZERO_LUN
    initiator_task_tag: int = 0
    referenced_task_tag: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    ref_cmd_sn: int = 0
    exp_data_sn: int = 0

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE | (0x40 if self.immediate else 0), 0x80 | (self.function & 0x7F), 0,
                            _word4(0, 0), self.lun, self.initiator_task_tag, self.referenced_task_tag,
                            self.cmd_sn, self.exp_stat_sn, self.ref_cmd_sn, self.exp_data_sn)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "TaskManagementRequest":
        b0, b1, _, _, lun, itt, rtt, cmd_sn, exp_stat_sn, ref, exp_data_sn = cls._S.unpack_from(bhs)
        return cls(bool(b0 & 0x40), b1 & 0x7F, bytes(lun), itt, rtt, cmd_sn, exp_stat_sn, ref, exp_data_sn)


@dataclass(slots=True)
class LoginRequest:
    """RFC 7143 11.12."""

    OPCODE = Opcode.LOGIN_REQUEST
    _S = _check_size(struct.Struct(">BBBBI6sHIH2xII16x"))
    transit: bool = False
    cont: bool = False
    csg: int = 0
    nsg: int = 0
    version_max: int = 0
    version_min: int = 0
    isid: bytes = bytes(6)
    tsih: int = 0
    initiator_task_tag: int = 0
    cid: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    data: bytes | memoryview = b""

    def pack(self) -> bytes:
        flags = (0x80 if self.transit else 0) | (0x40 if self.cont else 0) | (self.csg & 3) << 2 | (self.nsg & 3)
        return self._S.pack(self.OPCODE | 0x40, flags, self.version_max, self.version_min,
                            _word4(0, len(self.data)), self.isid, self.tsih, self.initiator_task_tag, self.cid,
                            self.cmd_sn, self.exp_stat_sn)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "LoginRequest":
        _, b1, vmax, vmin, _, isid, tsih, itt, cid, cmd_sn, exp_stat_sn = cls._S.unpack_from(bhs)
        return cls(bool(b1 & 0x80), bool(b1 & 0x40), (b1 >> 2) & 3, b1 & 3, vmax, vmin, bytes(isid), tsih, itt,
                   cid, cmd_sn, exp_stat_sn, data)


@dataclass(slots=True)
class TextRequest:
    """RFC 7143 11.10."""

    OPCODE = Opcode.TEXT_REQUEST
    _S = _check_size(struct.Struct(">BBHI8sIIII16x"))
    immediate: bool = False
    final: bool = True
    cont: bool = False
    lun: bytes = _ZERO_LUN
    initiator_task_tag: int = 0
    target_transfer_tag: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    data: bytes | memoryview = b""

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE | (0x40 if self.immediate else 0),
                            (0x80 if self.final else 0) | (0x40 if self.cont else 0), 0,
                            _word4(0, len(self.data)), self.lun, self.initiator_task_tag, self.target_transfer_tag,
                            self.cmd_sn, self.exp_stat_sn)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "TextRequest":
        b0, b1, _, _, lun, itt, ttt, cmd_sn, exp_stat_sn = cls._S.unpack_from(bhs)
        return cls(bool(b0 & 0x40), bool(b1 & 0x80), bool(b1 & 0x40), bytes(lun), itt, ttt, cmd_sn, exp_stat_sn,
                   data)


@dataclass(slots=True)
class DataOut:
    """RFC 7143 11.7."""

    OPCODE = Opcode.SCSI_DATA_OUT
    _S = _check_size(struct.Struct(">BBHI8sII4xI4xII4x"))
    final: bool = False
    lun: bytes = _ZERO_LUN
    initiator_task_tag: int = 0
    target_transfer_tag: int = RESERVED_TAG
    exp_stat_sn: int = 0
    data_sn: int = 0
    buffer_offset: int = 0
    data: bytes | memoryview = b""

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE, 0x80 if self.final else 0, 0, _word4(0, len(self.data)), self.lun,
                            self.initiator_task_tag, self.target_transfer_tag, self.exp_stat_sn, self.data_sn,
                            self.buffer_offset)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "DataOut":
        _, b1, _, _, lun, itt, ttt, exp_stat_sn, data_sn, offset = cls._S.unpack_from(bhs)
        return cls(bool(b1 & 0x80), bytes(lun), itt, ttt, exp_stat_sn, data_sn, offset, data)


class LogoutReason(enum.IntEnum):
    """RFC 7143 11.14.1."""

    CLOSE_SESSION = 0
    CLOSE_CONNECTION = 1
    REMOVE_CONNECTION_FOR_RECOVERY = 2


@dataclass(slots=True)
class LogoutRequest:
    """RFC 7143 11.14."""

    OPCODE = Opcode.LOGOUT_REQUEST
    _S = _check_size(struct.Struct(">BBHI8xIH2xII16x"))
    immediate: bool = False
    reason: int = LogoutReason.CLOSE_SESSION
    initiator_task_tag: int = 0
    cid: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE | (0x40 if self.immediate else 0), 0x80 | (self.reason & 0x7F), 0,
                            _word4(0, 0), self.initiator_task_tag, self.cid, self.cmd_sn, self.exp_stat_sn)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "LogoutRequest":
        b0, b1, _, _, itt, cid, cmd_sn, exp_stat_sn = cls._S.unpack_from(bhs)
        return cls(bool(b0 & 0x40), b1 & 0x7F, itt, cid, cmd_sn, exp_stat_sn)


@dataclass(slots=True)
class SnackRequest:
    """RFC 7143 11.16 (we run at ErrorRecoveryLevel 0 and reject every SNACK)."""

    OPCODE = Opcode.SNACK_REQUEST
    _S = _check_size(struct.Struct(">BBHI8sII4xI8xII"))
    snack_type: int = 0
    lun: bytes = _ZERO_LUN
    initiator_task_tag: int = RESERVED_TAG
    target_transfer_tag: int = RESERVED_TAG
    exp_stat_sn: int = 0
    beg_run: int = 0
    run_length: int = 0

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE, 0x80 | (self.snack_type & 0x0F), 0, _word4(0, 0), self.lun,
                            self.initiator_task_tag, self.target_transfer_tag, self.exp_stat_sn, self.beg_run,
                            self.run_length)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "SnackRequest":
        _, b1, _, _, lun, itt, ttt, exp_stat_sn, beg, run = cls._S.unpack_from(bhs)
        return cls(b1 & 0x0F, bytes(lun), itt, ttt, exp_stat_sn, beg, run)


# --------------------------------------------------------------------------- target PDUs

@dataclass(slots=True)
class NopIn:
    """RFC 7143 11.19."""

    OPCODE = Opcode.NOP_IN
    _S = _check_size(struct.Struct(">BBHI8sIIIII12x"))
    lun: bytes = _ZERO_LUN
    initiator_task_tag: int = RESERVED_TAG
    target_transfer_tag: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    data: bytes | memoryview = b""

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE, 0x80, 0, _word4(0, len(self.data)), self.lun, self.initiator_task_tag,
                            self.target_transfer_tag, self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "NopIn":
        _, _, _, _, lun, itt, ttt, stat_sn, exp, mx = cls._S.unpack_from(bhs)
        return cls(bytes(lun), itt, ttt, stat_sn, exp, mx, data)


class ScsiResponseCode(enum.IntEnum):
    """RFC 7143 11.4.3."""

    COMMAND_COMPLETED_AT_TARGET = 0x00
    TARGET_FAILURE = 0x01


@dataclass(slots=True)
class ScsiResponse:
    """RFC 7143 11.4. ``data`` is the sense data segment (2-byte SenseLength + sense, 11.4.7)."""

    OPCODE = Opcode.SCSI_RESPONSE
    _S = _check_size(struct.Struct(">BBBBI8xIIIIIIII"))
    bidi_read_overflow: bool = False
    bidi_read_underflow: bool = False
    residual_overflow: bool = False
    residual_underflow: bool = False
    response: int = ScsiResponseCode.COMMAND_COMPLETED_AT_TARGET
    status: int = 0
    initiator_task_tag: int = 0
    snack_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    exp_data_sn: int = 0
    bidi_read_residual_count: int = 0
    residual_count: int = 0
    data: bytes | memoryview = b""

    def pack(self) -> bytes:
        flags = (0x80 | (0x10 if self.bidi_read_overflow else 0) | (0x08 if self.bidi_read_underflow else 0)
                 | (0x04 if self.residual_overflow else 0) | (0x02 if self.residual_underflow else 0))
        return self._S.pack(self.OPCODE, flags, self.response, self.status, _word4(0, len(self.data)),
                            self.initiator_task_tag, self.snack_tag, self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn,
                            self.exp_data_sn, self.bidi_read_residual_count, self.residual_count)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "ScsiResponse":
        _, b1, resp, status, _, itt, snack, stat_sn, exp, mx, exp_data_sn, bidi, resid = cls._S.unpack_from(bhs)
        return cls(bool(b1 & 0x10), bool(b1 & 0x08), bool(b1 & 0x04), bool(b1 & 0x02), resp, status, itt, snack,
                   stat_sn, exp, mx, exp_data_sn, bidi, resid, data)

    @property
    def sense(self) -> bytes:
        """The sense bytes without the SenseLength prefix (empty when there is none)."""
        if len(self.data) < 2:
            return b""
        length = struct.unpack_from(">H", self.data)[0]
        return bytes(self.data[2:2 + length])


def sense_segment(sense: bytes) -> bytes:
    """RFC 7143 11.4.7: the data segment of a SCSI Response that carries sense data."""
    return struct.pack(">H", len(sense)) + sense if sense else b""


@dataclass(slots=True)
class TaskManagementResponse:
    """RFC 7143 11.6."""

    OPCODE = Opcode.TASK_MANAGEMENT_RESPONSE
    _S = _check_size(struct.Struct(">BBBBI8xI4xIII12x"))
    response: int = TmfResponse.FUNCTION_COMPLETE
    initiator_task_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE, 0x80, self.response, 0, _word4(0, 0), self.initiator_task_tag,
                            self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "TaskManagementResponse":
        _, _, resp, _, _, itt, stat_sn, exp, mx = cls._S.unpack_from(bhs)
        return cls(resp, itt, stat_sn, exp, mx)


@dataclass(slots=True)
class LoginResponse:
    """RFC 7143 11.13."""

    OPCODE = Opcode.LOGIN_RESPONSE
    _S = _check_size(struct.Struct(">BBBBI6sHI4xIIIBB10x"))
    transit: bool = False
    cont: bool = False
    csg: int = 0
    nsg: int = 0
    version_max: int = 0
    version_active: int = 0
    isid: bytes = bytes(6)
    tsih: int = 0
    initiator_task_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    status_class: int = 0
    status_detail: int = 0
    data: bytes | memoryview = b""

    def pack(self) -> bytes:
        flags = (0x80 if self.transit else 0) | (0x40 if self.cont else 0) | (self.csg & 3) << 2 | (self.nsg & 3)
        return self._S.pack(self.OPCODE, flags, self.version_max, self.version_active, _word4(0, len(self.data)),
                            self.isid, self.tsih, self.initiator_task_tag, self.stat_sn, self.exp_cmd_sn,
                            self.max_cmd_sn, self.status_class, self.status_detail)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "LoginResponse":
        _, b1, vmax, vact, _, isid, tsih, itt, stat_sn, exp, mx, sc, sd = cls._S.unpack_from(bhs)
        return cls(bool(b1 & 0x80), bool(b1 & 0x40), (b1 >> 2) & 3, b1 & 3, vmax, vact, bytes(isid), tsih, itt,
                   stat_sn, exp, mx, sc, sd, data)


@dataclass(slots=True)
class TextResponse:
    """RFC 7143 11.11."""

    OPCODE = Opcode.TEXT_RESPONSE
    _S = _check_size(struct.Struct(">BBHI8sIIIII12x"))
    final: bool = True
    cont: bool = False
    lun: bytes = _ZERO_LUN
    initiator_task_tag: int = 0
    target_transfer_tag: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    data: bytes | memoryview = b""

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE, (0x80 if self.final else 0) | (0x40 if self.cont else 0), 0,
                            _word4(0, len(self.data)), self.lun, self.initiator_task_tag, self.target_transfer_tag,
                            self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "TextResponse":
        _, b1, _, _, lun, itt, ttt, stat_sn, exp, mx = cls._S.unpack_from(bhs)
        return cls(bool(b1 & 0x80), bool(b1 & 0x40), bytes(lun), itt, ttt, stat_sn, exp, mx, data)


@dataclass(slots=True)
class DataIn:
    """RFC 7143 11.7. ``status`` is meaningful only with the S bit (status phase collapse)."""

    OPCODE = Opcode.SCSI_DATA_IN
    _S = _check_size(struct.Struct(">BBBBI8sIIIIIIII"))
    final: bool = False
    acknowledge: bool = False
    residual_overflow: bool = False
    residual_underflow: bool = False
    has_status: bool = False
    status: int = 0
    lun: bytes = _ZERO_LUN
    initiator_task_tag: int = 0
    target_transfer_tag: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    data_sn: int = 0
    buffer_offset: int = 0
    residual_count: int = 0
    data: bytes | memoryview = b""

    def pack(self) -> bytes:
        flags = ((0x80 if self.final else 0) | (0x40 if self.acknowledge else 0)
                 | (0x04 if self.residual_overflow else 0) | (0x02 if self.residual_underflow else 0)
                 | (0x01 if self.has_status else 0))
        return self._S.pack(self.OPCODE, flags, 0, self.status if self.has_status else 0, _word4(0, len(self.data)),
                            self.lun, self.initiator_task_tag, self.target_transfer_tag, self.stat_sn,
                            self.exp_cmd_sn, self.max_cmd_sn, self.data_sn, self.buffer_offset, self.residual_count)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "DataIn":
        _, b1, _, status, _, lun, itt, ttt, stat_sn, exp, mx, data_sn, offset, resid = cls._S.unpack_from(bhs)
        return cls(bool(b1 & 0x80), bool(b1 & 0x40), bool(b1 & 0x04), bool(b1 & 0x02), bool(b1 & 0x01), status,
                   bytes(lun), itt, ttt, stat_sn, exp, mx, data_sn, offset, resid, data)


# The Data-In BHS, packed without a dataclass on the READ hot path; same layout as DataIn._S.
DATA_IN_STRUCT = DataIn._S


class LogoutResponseCode(enum.IntEnum):
    """RFC 7143 11.15.1."""

    CLOSED_SUCCESSFULLY = 0
    CID_NOT_FOUND = 1
    RECOVERY_NOT_SUPPORTED = 2
    CLEANUP_FAILED = 3


@dataclass(slots=True)
class LogoutResponse:
    """RFC 7143 11.15."""

    OPCODE = Opcode.LOGOUT_RESPONSE
    _S = _check_size(struct.Struct(">BBBBI8xI4xIII4xHH4x"))
    response: int = LogoutResponseCode.CLOSED_SUCCESSFULLY
    initiator_task_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    time2wait: int = 0
    time2retain: int = 0

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE, 0x80, self.response, 0, _word4(0, 0), self.initiator_task_tag,
                            self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn, self.time2wait, self.time2retain)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "LogoutResponse":
        _, _, resp, _, _, itt, stat_sn, exp, mx, t2w, t2r = cls._S.unpack_from(bhs)
        return cls(resp, itt, stat_sn, exp, mx, t2w, t2r)


@dataclass(slots=True)
class ReadyToTransfer:
    """R2T, RFC 7143 11.8."""

    OPCODE = Opcode.READY_TO_TRANSFER
    _S = _check_size(struct.Struct(">BBHI8sIIIIIIII"))
    lun: bytes = _ZERO_LUN
    initiator_task_tag: int = 0
    target_transfer_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    r2t_sn: int = 0
    buffer_offset: int = 0
    desired_data_transfer_length: int = 0

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE, 0x80, 0, _word4(0, 0), self.lun, self.initiator_task_tag,
                            self.target_transfer_tag, self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn, self.r2t_sn,
                            self.buffer_offset, self.desired_data_transfer_length)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "ReadyToTransfer":
        _, _, _, _, lun, itt, ttt, stat_sn, exp, mx, r2t_sn, offset, length = cls._S.unpack_from(bhs)
        return cls(bytes(lun), itt, ttt, stat_sn, exp, mx, r2t_sn, offset, length)


class AsyncEvent(enum.IntEnum):
    """RFC 7143 11.9.1."""

    SCSI_ASYNC_EVENT = 0
    LOGOUT_REQUESTED = 1
    CONNECTION_DROP = 2
    SESSION_DROP = 3
    NEGOTIATION_REQUESTED = 4
    TASK_TERMINATION = 5


@dataclass(slots=True)
class AsyncMessage:
    """RFC 7143 11.9."""

    OPCODE = Opcode.ASYNC_MESSAGE
    _S = _check_size(struct.Struct(">BBHI8sI4xIIIBBHHH4x"))
    lun: bytes = _ZERO_LUN
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    async_event: int = 0
    async_vcode: int = 0
    parameter1: int = 0
    parameter2: int = 0
    parameter3: int = 0
    data: bytes | memoryview = b""

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE, 0x80, 0, _word4(0, len(self.data)), self.lun, RESERVED_TAG, self.stat_sn,
                            self.exp_cmd_sn, self.max_cmd_sn, self.async_event, self.async_vcode, self.parameter1,
                            self.parameter2, self.parameter3)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "AsyncMessage":
        _, _, _, _, lun, _, stat_sn, exp, mx, event, vcode, p1, p2, p3 = cls._S.unpack_from(bhs)
        return cls(bytes(lun), stat_sn, exp, mx, event, vcode, p1, p2, p3, data)


@dataclass(slots=True)
class Reject:
    """RFC 7143 11.17. ``data`` is the complete header (BHS) of the rejected PDU."""

    OPCODE = Opcode.REJECT
    _S = _check_size(struct.Struct(">BBBBI8xI4xIIII8x"))
    reason: int = RejectReason.PROTOCOL_ERROR
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    data_sn: int = 0
    data: bytes | memoryview = b""

    def pack(self) -> bytes:
        return self._S.pack(self.OPCODE, 0x80, self.reason, 0, _word4(0, len(self.data)), RESERVED_TAG,
                            self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn, self.data_sn)

    @classmethod
    def unpack(cls, bhs, data=b"", ahs=b"") -> "Reject":
        _, _, reason, _, _, _, stat_sn, exp, mx, data_sn = cls._S.unpack_from(bhs)
        return cls(reason, stat_sn, exp, mx, data_sn, data)


PDU_CLASSES: dict[int, type] = {cls.OPCODE: cls for cls in (
    NopOut, ScsiCommandPdu, TaskManagementRequest, LoginRequest, TextRequest, DataOut, LogoutRequest, SnackRequest,
    NopIn, ScsiResponse, TaskManagementResponse, LoginResponse, TextResponse, DataIn, LogoutResponse,
    ReadyToTransfer, AsyncMessage, Reject)}


# --------------------------------------------------------------------------- framing

@dataclass(slots=True)
class RawPdu:
    """One framed PDU: the BHS, the AHS and the data segment without padding or digests."""

    bhs: bytes | memoryview
    ahs: bytes | memoryview = b""
    data: bytes | memoryview = b""
    data_digest_error: bool = False   # RFC 7143 7.8: the connection Rejects it (reason 02h)
    #: The views refer to the chunk given to ``PduFramer.feed``: copy what outlives the chunk.
    borrowed: bool = False

    @property
    def opcode(self) -> int:
        return self.bhs[0] & 0x3F

    @property
    def immediate(self) -> bool:
        return bool(self.bhs[0] & 0x40)

    @property
    def initiator_task_tag(self) -> int:
        return struct.unpack_from(">I", self.bhs, 16)[0]

    def decode(self):
        """The typed PDU object; raises KeyError for an unknown opcode."""
        return PDU_CLASSES[self.opcode].unpack(self.bhs, self.data, self.ahs)


def encode_pdu(pdu, header_digest: bool = False, data_digest: bool = False) -> list:
    """The buffers that carry ``pdu`` on the wire (for ``writelines``): BHS[+AHS][+digest][data+pad[+digest]]."""
    bhs = pdu.pack()
    ahs = pdu.ahs() if isinstance(pdu, ScsiCommandPdu) else b""
    return frame_pdu(bhs + ahs if ahs else bhs, getattr(pdu, "data", b""), header_digest, data_digest)


def frame_pdu(header: bytes, data, header_digest: bool, data_digest: bool) -> list:
    """Add digests and padding around an already packed header (BHS + AHS) and its data."""
    if header_digest:
        header = header + _DIGEST.pack(_crc(header))
    if not data:
        return [header]
    pad = _PADS[-len(data) & 3]
    if data_digest:
        value = _crc(data)
        if pad:
            value = _crc(pad, value)
        return [header, data, pad + _DIGEST.pack(value)]
    if pad:
        return [header, data, pad]
    return [header, data]


class PduFramer:
    """Cuts a byte stream into ``RawPdu`` objects (RFC 7143 11.2 + 13.1 digests).

    ``max_recv_data_segment_length`` is what we declared; a PDU whose data segment is
    longer raises ``PduFramingError`` once its header is checked (RFC 7143
    13.12: the initiator must not exceed it; we cannot find the next PDU reliably).
    Digests and limits can change once login ends (``configure``).
    """

    __slots__ = ("header_digest", "data_digest", "max_recv_data_segment_length", "_head", "_assembly",
                 "_assembly_fill", "_layout")

    def __init__(self, max_recv_data_segment_length: int = 8192, header_digest: bool = False,
                 data_digest: bool = False):
        self.header_digest = header_digest
        self.data_digest = data_digest
        self.max_recv_data_segment_length = max_recv_data_segment_length
        self._head = bytearray()                 # partial BHS (fewer than 48 bytes seen)
        self._assembly: bytearray | None = None  # a PDU that straddles reads, sized exactly
        self._assembly_fill = 0
        self._layout: tuple | None = None

    def configure(self, *, max_recv_data_segment_length: int, header_digest: bool, data_digest: bool) -> None:
        self.max_recv_data_segment_length = max_recv_data_segment_length
        self.header_digest = header_digest
        self.data_digest = data_digest

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete PDU."""
        return len(self._head) + self._assembly_fill

    def _layout_of(self, bhs) -> tuple[int, int, int, int]:
        """(ahs_length, data_length, data_offset, total_length) from a BHS; validates lengths."""
        word = _WORD4.unpack_from(bhs, 4)[0]
        ahs_length = (word >> 24) * 4
        data_length = word & 0xFFFFFF
        limit = self.max_recv_data_segment_length
        if (bhs[0] & 0x3F) == Opcode.LOGIN_REQUEST:
            limit = max(limit, LOGIN_DATA_SEGMENT_ALLOWANCE)
        if data_length > limit:
            raise PduFramingError(
                f"data segment of {data_length} bytes exceeds our MaxRecvDataSegmentLength "
                f"{self.max_recv_data_segment_length}",
                reject_reason=RejectReason.PROTOCOL_ERROR, bhs=bytes(bhs[:BHS_SIZE]))
        data_offset = BHS_SIZE + ahs_length + (DIGEST_SIZE if self.header_digest else 0)
        total = data_offset
        if data_length:
            total += data_length + (-data_length & 3) + (DIGEST_SIZE if self.data_digest else 0)
        return ahs_length, data_length, data_offset, total

    def _cut(self, view: memoryview, layout) -> RawPdu:
        ahs_length, data_length, data_offset, _ = layout
        header_end = BHS_SIZE + ahs_length
        if self.header_digest:
            expected = _DIGEST.unpack_from(view, header_end)[0]
            if _crc(view[:header_end]) != expected:
                raise PduFramingError("header digest error", bhs=bytes(view[:BHS_SIZE]))
        data = view[data_offset:data_offset + data_length] if data_length else b""
        pdu = RawPdu(view[:BHS_SIZE], view[BHS_SIZE:header_end] if ahs_length else b"", data)
        if data_length and self.data_digest:
            padded = data_length + (-data_length & 3)
            expected = _DIGEST.unpack_from(view, data_offset + padded)[0]
            if _crc(view[data_offset:data_offset + padded]) != expected:
                pdu.data_digest_error = True
        return pdu

    def feed(self, chunk: bytes | memoryview) -> list[RawPdu]:
        """Consume ``chunk``; return every PDU it completes, in order.

        A PDU whose data digest is wrong comes back with ``data_digest_error`` set (the stream
        itself is intact). Header digest and length errors raise ``PduFramingError``; the
        PDUs decoded before the bad one are in ``error.pdus_before``, and the framer must
        not be fed again. A PDU wholly inside ``chunk`` is a view of it (``borrowed``); one
        that spanned chunks was assembled in memory of its own.
        """
        out: list[RawPdu] = []
        view = memoryview(chunk)
        pos = 0
        end = len(view)
        try:
            if self._assembly is not None or self._head:
                pos = self._continue(view, out)
            while pos < end:
                if end - pos < BHS_SIZE:
                    self._head += view[pos:end]
                    break
                layout = self._layout_of(view[pos:pos + BHS_SIZE])
                total = layout[3]
                if end - pos >= total:
                    pdu = self._cut(view[pos:pos + total], layout)
                    pdu.borrowed = True
                    out.append(pdu)
                    pos += total
                else:
                    self._start_assembly(layout, view[pos:end])
                    break
        except PduFramingError as error:
            error.pdus_before = out
            raise
        return out

    def _start_assembly(self, layout, first) -> None:
        self._layout = layout
        self._assembly = bytearray(layout[3])
        self._assembly[:len(first)] = first
        self._assembly_fill = len(first)

    def _continue(self, view: memoryview, out: list) -> int:
        pos = 0
        if self._head:
            need = BHS_SIZE - len(self._head)
            self._head += view[:need]
            pos = min(need, len(view))
            if len(self._head) < BHS_SIZE:
                return pos
            head = bytes(self._head)
            self._head = bytearray()
            layout = self._layout_of(head)
            self._start_assembly(layout, head)
        assert self._assembly is not None
        need = len(self._assembly) - self._assembly_fill
        take = min(need, len(view) - pos)
        self._assembly[self._assembly_fill:self._assembly_fill + take] = view[pos:pos + take]
        self._assembly_fill += take
        pos += take
        if self._assembly_fill == len(self._assembly):
            assembled, layout = self._assembly, self._layout
            self._assembly, self._assembly_fill, self._layout = None, 0, None
            out.append(self._cut(memoryview(assembled), layout))
        return pos
