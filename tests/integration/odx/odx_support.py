"""Shared pieces of the ODX integration tests: expectations as
(status, sense key, ASC, ASCQ) the way libiscsi's test-tool writes them, and a session helper.

Everything goes through the libiscsi binding to the real daemon subprocess; nothing here
imports the copy manager, so the tests check the wire, not the implementation's own encoders
(the parameter-list builders are the documented client API ``odxtarget copy`` uses too).
"""

from __future__ import annotations

import hashlib
import struct
import time
from dataclasses import dataclass

from odxtarget.copy.params import build_populate_token_list, build_write_using_token_list
from odxtarget.initiator import libiscsi
from tests.support.copy_cdbs import coa_cdb, lid4_in_cdb, pt_cdb, wut_cdb

MIB = 1 << 20
BLOCK = 512

# -- expectations: (status, sense key, ASC, ASCQ) -------------------------------------------

GOOD_STATUS = libiscsi.STATUS_GOOD
CHECK = libiscsi.STATUS_CHECK_CONDITION
ILLEGAL_REQUEST = 0x05
COPY_ABORTED = 0x0A
UNIT_ATTENTION = 0x06

GOOD = (GOOD_STATUS, 0, 0, 0)
PARAMETER_LIST_LENGTH_ERROR = (CHECK, ILLEGAL_REQUEST, 0x1A, 0x00)
INVALID_FIELD_IN_CDB = (CHECK, ILLEGAL_REQUEST, 0x24, 0x00)
INVALID_FIELD_IN_PARAMETER_LIST = (CHECK, ILLEGAL_REQUEST, 0x26, 0x00)
TOO_MANY_SEGMENT_DESCRIPTORS = (CHECK, ILLEGAL_REQUEST, 0x26, 0x08)
LBA_OUT_OF_RANGE = (CHECK, ILLEGAL_REQUEST, 0x21, 0x00)
OPERATION_IN_PROGRESS = (CHECK, ILLEGAL_REQUEST, 0x00, 0x16)
UNSUPPORTED_TOKEN_TYPE = (CHECK, ILLEGAL_REQUEST, 0x23, 0x01)
REMOTE_TOKEN_USAGE_NOT_SUPPORTED = (CHECK, ILLEGAL_REQUEST, 0x23, 0x02)
TOKEN_UNKNOWN = (CHECK, ILLEGAL_REQUEST, 0x23, 0x04)
TOKEN_CORRUPT = (CHECK, ILLEGAL_REQUEST, 0x23, 0x05)
TOKEN_REVOKED = (CHECK, ILLEGAL_REQUEST, 0x23, 0x06)
TOKEN_EXPIRED = (CHECK, ILLEGAL_REQUEST, 0x23, 0x07)
TOKEN_CANCELLED = (CHECK, ILLEGAL_REQUEST, 0x23, 0x08)
TOKEN_DELETED = (CHECK, ILLEGAL_REQUEST, 0x23, 0x09)
INVALID_TOKEN_LENGTH = (CHECK, ILLEGAL_REQUEST, 0x23, 0x0A)
COPY_TARGET_UNDERRUN = (CHECK, COPY_ABORTED, 0x0D, 0x04)
INSUFFICIENT_RESOURCES_TO_CREATE_ROD = (CHECK, ILLEGAL_REQUEST, 0x55, 0x0C)

# -- RRTI (SBC-4 5.25 / SPC-4 6.18.4) ------------------------------------------------------

RRTI_HEADER = struct.Struct(">IBBHIBBBBQH6x")
STATUS_COMPLETED = 0x01
STATUS_COMPLETED_WITH_ERRORS = 0x02
STATUS_PARTIAL = 0x03
STATUS_IN_BACKGROUND = 0x12
STATUS_TERMINATED = 0x60
DELAY_COMPLETE = 0xFFFF_FFFE
UNITS_BLOCKS = 0xF1
SAM_TASK_ABORTED = 0x40
ACTION_PT, ACTION_WUT = 0x10, 0x11

ROD_PIT_DEFAULT = 0x0080_0000
ROD_PIT_CHANGE_VULNERABLE = 0x0080_0001
ROD_PIT_ANY = 0x0080_FFFF
ROD_ZERO = 0xFFFF_0001


def expectation(result: libiscsi.Result) -> tuple[int, int, int, int]:
    return (result.status, result.sense_key, result.asc, result.ascq)


def check(result: libiscsi.Result, expected: tuple[int, int, int, int], what: str = "") -> libiscsi.Result:
    assert result.acknowledged, f"{what}: transport failure {result.status:#x}"
    assert expectation(result) == expected, (
        f"{what}: got {result.describe()} {expectation(result)}, expected {expected}")
    return result


def information(result: libiscsi.Result) -> int:
    """INFORMATION of fixed-format sense, which must have VALID=1."""
    sense = result.sense_raw
    assert sense[0] & 0x7F == 0x70 and sense[0] & 0x80, sense.hex()
    return struct.unpack_from(">I", sense, 3)[0]


def pattern(size: int, seed: int) -> bytes:
    """Deterministic bytes, different per seed and per block (cheap for a few MiB)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(struct.pack(">QQ", seed, counter)).digest() * 16
        counter += 1
    return bytes(out[:size])


@dataclass
class Rrti:
    """A parsed RRTI / RECEIVE COPY STATUS(LID4) response."""

    raw: bytes
    available: int
    action: int
    status: int
    operation_counter: int
    delay: int
    completion_status: int
    sense_field_length: int
    sense_length: int
    units: int
    transfer_count: int
    segments: int

    @property
    def sense(self) -> bytes:
        return self.raw[32:32 + self.sense_length]

    @property
    def token(self) -> bytes | None:
        at = 32 + self.sense_field_length
        if len(self.raw) < at + 4 or struct.unpack_from(">I", self.raw, at)[0] == 0:
            return None
        return self.raw[at + 6:at + 6 + 512]

    @classmethod
    def parse(cls, raw: bytes) -> "Rrti":
        return cls(raw, *RRTI_HEADER.unpack_from(raw, 0))


class OdxSession:
    """One logged-in session to a daemon, with every LUN's unit attention taken."""

    def __init__(self, daemon, initiator_name: str = libiscsi.DEFAULT_INITIATOR, *,
                 iqn: str | None = None, luns: list[int] | None = None):
        """A session to ``iqn`` (default: the daemon's main target) whose ``luns`` (default:
        the main target's) have their unit attentions taken."""
        self.daemon = daemon
        luns = [spec.lun for spec in daemon.spec.luns] if luns is None else luns
        self.session = libiscsi.connect(daemon.host, daemon.port, iqn or daemon.iqn, luns[0],
                                        initiator_name=initiator_name)
        for lun in luns:
            for _ in range(8):
                if self.session.test_unit_ready(lun).sense_key != UNIT_ATTENTION:
                    break
        self._list_id = 0x100

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "OdxSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_list_id(self) -> int:
        self._list_id += 1
        return self._list_id

    # -- raw commands ---------------------------------------------------------------------

    def command(self, lun: int, cdb: bytes, data_out: bytes | None = None, data_in_len: int = 0):
        return self.session.scsi_command(lun, cdb, data_out=data_out, data_in_len=data_in_len)

    def populate(self, lun: int, ranges, list_id: int | None = None, **options) -> tuple[int, libiscsi.Result]:
        list_id = self.next_list_id() if list_id is None else list_id
        data = build_populate_token_list(ranges, **options)
        return list_id, self.command(lun, pt_cdb(list_id, len(data)), data)

    def write_using(self, lun: int, token: bytes, ranges, list_id: int | None = None,
                    **options) -> tuple[int, libiscsi.Result]:
        list_id = self.next_list_id() if list_id is None else list_id
        data = build_write_using_token_list(token, ranges, **options)
        return list_id, self.command(lun, wut_cdb(list_id, len(data)), data)

    def rrti(self, lun: int, list_id: int, allocation: int = 1024, action: int = 0x07) -> libiscsi.Result:
        return self.command(lun, lid4_in_cdb(action, list_id, allocation), data_in_len=allocation)

    def rrti_parsed(self, lun: int, list_id: int) -> Rrti:
        result = check(self.rrti(lun, list_id), GOOD, "RRTI")
        return Rrti.parse(result.data)

    def token(self, lun: int, ranges, **options) -> bytes:
        list_id, result = self.populate(lun, ranges, **options)
        check(result, GOOD, "POPULATE TOKEN")
        token = self.rrti_parsed(lun, list_id).token
        assert token is not None and len(token) == 512
        return token

    def abort(self, lun: int, list_id: int) -> libiscsi.Result:
        return self.command(lun, coa_cdb(list_id))

    # -- data -----------------------------------------------------------------------------

    def write(self, lun: int, lba: int, data: bytes, block_size: int = BLOCK) -> None:
        for offset in range(0, len(data), MIB):
            piece = data[offset:offset + MIB]
            check(self.session.write(lun, lba + offset // block_size, piece, block_size), GOOD, "WRITE(16)")

    def read(self, lun: int, lba: int, size: int, block_size: int = BLOCK) -> bytes:
        out = bytearray()
        for offset in range(0, size, MIB):
            blocks = min(MIB, size - offset) // block_size
            result = check(self.session.read(lun, lba + offset // block_size, blocks, block_size), GOOD, "READ(16)")
            out += result.data
        return bytes(out)

    def fill(self, lun: int, lba: int, size: int, seed: int, block_size: int = BLOCK) -> bytes:
        data = pattern(size, seed)
        self.write(lun, lba, data, block_size)
        return data

    def wait_status(self, lun: int, list_id: int, done, timeout: float = 20.0, interval: float = 0.005) -> Rrti:
        """Poll RRTI until ``done(rrti)``; returns that response."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.rrti_parsed(lun, list_id)
            if done(info) or time.monotonic() > deadline:
                return info
            time.sleep(interval)
