"""Test helpers for the SCSI core: a LU/target pair over MemoryBackend, CDB builders, sense parsing.

CDB builders follow the field layouts of SBC-4/SPC-4 (and the way libiscsi's scsi-lowlevel
marshals them), so the tests exercise the same bytes iscsi-test-cu sends.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from odxtarget.scsi.execution import complete_inline
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import ItNexus, ScsiCommand, ScsiResult, Status
from odxtarget.storage.memory import MemoryBackend

TARGET_NAME = "iqn.2026-11.org.odxtarget:unit"
NEXUS_A = ItNexus("iqn.1994-05.com.example:a,i,0x400001370000", f"{TARGET_NAME},t,0x1")
NEXUS_B = ItNexus("iqn.1994-05.com.example:b,i,0x400001370001", f"{TARGET_NAME},t,0x1")
NEXUS_C = ItNexus("iqn.1994-05.com.example:a,i,0x400001370002", f"{TARGET_NAME},t,0x1")

GOOD = Status.GOOD
CHECK = Status.CHECK_CONDITION
CONFLICT = Status.RESERVATION_CONFLICT


@dataclass
class Sense:
    key: int
    asc: int
    ascq: int
    information: int | None
    sks: bytes | None
    descriptor: bool

    @property
    def field_pointer(self) -> tuple[bool, int, int | None] | None:
        """(in_cdb, byte, bit or None) from a sense-key specific field pointer."""
        if not self.sks or not self.sks[0] & 0x80:
            return None
        bit = self.sks[0] & 0x07 if self.sks[0] & 0x08 else None
        return bool(self.sks[0] & 0x40), struct.unpack(">H", self.sks[1:3])[0], bit


def parse_sense(raw: bytes) -> Sense:
    code = raw[0] & 0x7F
    if code in (0x70, 0x71):
        information = struct.unpack(">I", raw[3:7])[0] if raw[0] & 0x80 else None
        sks = raw[15:18] if raw[15] & 0x80 else None
        return Sense(raw[2] & 0x0F, raw[12], raw[13], information, sks, False)
    assert code in (0x72, 0x73), raw.hex()
    information = sks = None
    position = 8
    while position < 8 + raw[7]:
        kind, length = raw[position], raw[position + 1]
        body = raw[position + 2:position + 2 + length]
        if kind == 0x00:
            information = struct.unpack(">Q", body[2:10])[0]
        elif kind == 0x02:
            sks = body[2:5]
        position += 2 + length
    return Sense(raw[1] & 0x0F, raw[2], raw[3], information, sks, True)


class Harness:
    """One LU behind one target, plus convenience calls."""

    def __init__(self, blocks: int = 2048, block_size: int = 512, read_only: bool = False,
                 granularity: int = 4096, luns: dict | None = None, **config):
        self.backend = MemoryBackend(blocks * block_size, granularity)
        self.lu = LogicalUnit(LogicalUnitConfig(name="unit-lu", backend=self.backend, block_size=block_size,
                                                read_only=read_only, **config))
        self.target = ScsiTarget(TARGET_NAME, luns if luns is not None else {0: self.lu})
        self.block_size = block_size
        self.blocks = blocks

    def run(self, cdb, data_out: bytes = b"", nexus: ItNexus = NEXUS_A, lun: int = 0,
            expected_transfer_length: int = 0) -> ScsiResult:
        return complete_inline(self.target.execute(ScsiCommand(bytes(cdb), nexus, lun, data_out, expected_transfer_length)))

    def login(self, nexus: ItNexus = NEXUS_A) -> None:
        """What libiscsi does after login: TEST UNIT READY until no unit attention."""
        for _ in range(10):
            if self.run(tur(), nexus=nexus).status == GOOD:
                return
        raise AssertionError("unit attentions never cleared")

    def good(self, cdb, data_out: bytes = b"", **kw) -> ScsiResult:
        result = self.run(cdb, data_out, **kw)
        assert result.status == GOOD, (result.status, parse_sense(result.sense) if result.sense else None)
        return result

    def check(self, cdb, data_out: bytes = b"", **kw) -> Sense:
        result = self.run(cdb, data_out, **kw)
        assert result.status == CHECK, result.status
        assert result.data_in in (b"", bytearray())
        return parse_sense(result.sense)

    def fill(self, lba: int, data: bytes) -> None:
        self.good(write16(lba, len(data) // self.block_size), data)

    def read(self, lba: int, blocks: int) -> bytes:
        return bytes(self.good(read16(lba, blocks)).data_in)


def ready(**kw) -> Harness:
    harness = Harness(**kw)
    harness.login()
    return harness


# -- CDB builders --------------------------------------------------------------------------

def tur() -> bytes:
    return bytes(6)


def inquiry(evpd: int = 0, page: int = 0, alloc: int = 255) -> bytes:
    return bytes((0x12, evpd, page)) + struct.pack(">H", alloc) + b"\x00"


def request_sense(desc: int = 0, alloc: int = 252) -> bytes:
    return bytes((0x03, desc, 0, 0, alloc, 0))


def read6(lba: int, blocks: int) -> bytes:
    return bytes((0x08, (lba >> 16) & 0x1F, (lba >> 8) & 0xFF, lba & 0xFF, blocks & 0xFF, 0))


def write6(lba: int, blocks: int) -> bytes:
    return bytes((0x0A,)) + read6(lba, blocks)[1:]


def _cdb10(opcode: int, lba: int, blocks: int, byte1: int = 0, group: int = 0) -> bytes:
    return struct.pack(">BBIBHB", opcode, byte1, lba & 0xFFFFFFFF, group, blocks, 0)


def _cdb12(opcode: int, lba: int, blocks: int, byte1: int = 0, group: int = 0) -> bytes:
    return struct.pack(">BBIIBB", opcode, byte1, lba & 0xFFFFFFFF, blocks, group, 0)


def _cdb16(opcode: int, lba: int, blocks: int, byte1: int = 0, group: int = 0) -> bytes:
    return struct.pack(">BBQIBB", opcode, byte1, lba & 0xFFFFFFFFFFFFFFFF, blocks, group, 0)


def read10(lba, blocks, byte1=0):
    return _cdb10(0x28, lba, blocks, byte1)


def write10(lba, blocks, byte1=0):
    return _cdb10(0x2A, lba, blocks, byte1)


def read12(lba, blocks, byte1=0):
    return _cdb12(0xA8, lba, blocks, byte1)


def write12(lba, blocks, byte1=0):
    return _cdb12(0xAA, lba, blocks, byte1)


def read16(lba, blocks, byte1=0):
    return _cdb16(0x88, lba, blocks, byte1)


def write16(lba, blocks, byte1=0):
    return _cdb16(0x8A, lba, blocks, byte1)


def verify10(lba, blocks, bytchk=1, byte1=0):
    return _cdb10(0x2F, lba, blocks, byte1 | (bytchk << 1))


def verify12(lba, blocks, bytchk=1, byte1=0):
    return _cdb12(0xAF, lba, blocks, byte1 | (bytchk << 1))


def verify16(lba, blocks, bytchk=1, byte1=0):
    return _cdb16(0x8F, lba, blocks, byte1 | (bytchk << 1))


def write_verify10(lba, blocks, bytchk=1, byte1=0):
    return _cdb10(0x2E, lba, blocks, byte1 | (bytchk << 1))


def write_verify12(lba, blocks, bytchk=1, byte1=0):
    return _cdb12(0xAE, lba, blocks, byte1 | (bytchk << 1))


def write_verify16(lba, blocks, bytchk=1, byte1=0):
    return _cdb16(0x8E, lba, blocks, byte1 | (bytchk << 1))


def orwrite16(lba, blocks, byte1=0):
    return _cdb16(0x8B, lba, blocks, byte1)


def compare_and_write(lba, blocks, byte1=0):
    return struct.pack(">BBQ3xBBB", 0x89, byte1, lba, blocks, 0, 0)


def write_same10(lba, blocks, unmap=False, anchor=False, byte1=0):
    return _cdb10(0x41, lba, blocks, byte1 | (0x08 if unmap else 0) | (0x10 if anchor else 0))


def write_same16(lba, blocks, unmap=False, anchor=False, ndob=False, byte1=0):
    return _cdb16(0x93, lba, blocks, byte1 | (0x08 if unmap else 0) | (0x10 if anchor else 0) | (1 if ndob else 0))


def unmap_cdb(param_len: int, anchor: bool = False) -> bytes:
    return struct.pack(">BB4xBHB", 0x42, 1 if anchor else 0, 0, param_len, 0)


def unmap_params(extents) -> bytes:
    body = b"".join(struct.pack(">QI4x", lba, blocks) for lba, blocks in extents)
    return struct.pack(">HH4x", 6 + len(body), len(body)) + body


def get_lba_status(lba: int, alloc: int = 24) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x12, lba & 0xFFFFFFFFFFFFFFFF, alloc, 0, 0)


def read_capacity10() -> bytes:
    return bytes((0x25,)) + bytes(9)


def read_capacity16(alloc: int = 32) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x10, 0, alloc, 0, 0)


def sync_cache10(lba=0, blocks=0, immed=0):
    return _cdb10(0x35, lba, blocks, 0x02 if immed else 0)


def sync_cache16(lba=0, blocks=0, immed=0):
    return _cdb16(0x91, lba, blocks, 0x02 if immed else 0)


def prefetch10(lba, blocks, immed=0, group=0):
    return _cdb10(0x34, lba, blocks, 0x02 if immed else 0, group)


def prefetch16(lba, blocks, immed=0, group=0):
    return _cdb16(0x90, lba, blocks, 0x02 if immed else 0, group)


def mode_sense6(page=0x3F, pc=0, dbd=0, subpage=0, alloc=255) -> bytes:
    return bytes((0x1A, 0x08 if dbd else 0, (pc << 6) | page, subpage, alloc, 0))


def mode_sense10(page=0x3F, pc=0, dbd=0, llbaa=0, subpage=0, alloc=1024) -> bytes:
    return struct.pack(">BBBB3xHB", 0x5A, (0x08 if dbd else 0) | (0x10 if llbaa else 0), (pc << 6) | page,
                       subpage, alloc, 0)


def mode_select6(length: int, pf: int = 1, sp: int = 0) -> bytes:
    return bytes((0x15, (0x10 if pf else 0) | (1 if sp else 0), 0, 0, length, 0))


def mode_select10(length: int, pf: int = 1, sp: int = 0) -> bytes:
    return struct.pack(">BB5xHB", 0x55, (0x10 if pf else 0) | (1 if sp else 0), length, 0)


def rsoc(options: int = 0, opcode: int = 0, sa: int = 0, rctd: int = 0, alloc: int = 65535) -> bytes:
    return struct.pack(">BBBBHIBB", 0xA3, 0x0C, (0x80 if rctd else 0) | options, opcode, sa, alloc, 0, 0)


def report_luns(select: int = 0, alloc: int = 4096) -> bytes:
    return struct.pack(">BB B3xIBB", 0xA0, 0, select, alloc, 0, 0)


def reserve6():
    return bytes((0x16, 0, 0, 0, 0, 0))


def release6():
    return bytes((0x17, 0, 0, 0, 0, 0))


def reserve10():
    return bytes((0x56,)) + bytes(9)


def release10():
    return bytes((0x57,)) + bytes(9)


def start_stop(start=1, loej=0, immed=0, pc=0):
    return bytes((0x1B, immed, 0, 0, (pc << 4) | (2 if loej else 0) | start, 0))


def read_defect10(plist=0, glist=0, fmt=0, alloc=32):
    return struct.pack(">BBB4xHB", 0x37, 0, (0x10 if plist else 0) | (0x08 if glist else 0) | fmt, alloc, 0)


def read_defect12(plist=0, glist=0, fmt=0, alloc=32):
    return struct.pack(">BBIIBB", 0xB7, (0x10 if plist else 0) | (0x08 if glist else 0) | fmt, 0, alloc, 0, 0)


def pattern(blocks: int, block_size: int, seed: int = 0) -> bytes:
    return bytes(((i * 7 + seed) & 0xFF) for i in range(blocks * block_size))
