"""A tiny stand-in for odxtarget.scsi.target.ScsiTarget (used while the core is not there, and
in unit tests that must control what the core answers). It follows the core contract:
``transfer_length`` is what the CDB wants, short data-out of whole blocks writes what came,
empty data-out does nothing, and it records every call."""

from __future__ import annotations

import struct

from odxtarget.scsi.sense import SenseData, SenseKey
from odxtarget.scsi.types import ScsiResult, Status

BLOCK = 512
MAX_TRANSFER = 16 << 20
# opcode -> (struct format, offset) of the transfer length of the writes it serves
_WRITES = {0x2A: (">H", 7), 0xAA: (">I", 6), 0x8A: (">I", 10), 0x2E: (">H", 7), 0xAE: (">I", 6), 0x8E: (">I", 10)}


def _check(key, asc, ascq=0) -> ScsiResult:
    return ScsiResult(status=Status.CHECK_CONDITION, sense=SenseData(key, asc, ascq).fixed())


class ScsiTargetDouble:
    def __init__(self, blocks: int = 2048, luns=(0,)):
        self.data = bytearray(blocks * BLOCK)
        self.blocks = blocks
        self.luns = set(luns)
        self._units: dict[int, object] = {}
        self.commands = []
        self.tmfs = []
        self.lost = []
        self.logged_out = []
        self.tmf_response = 0

    def execute(self, command) -> ScsiResult:
        self.commands.append(command)
        cdb = command.cdb
        op = cdb[0]
        if command.lun not in self.luns and op not in (0x12, 0xA0):
            return _check(SenseKey.ILLEGAL_REQUEST, 0x25)
        if op == 0x00:
            return ScsiResult()
        if op == 0x12:
            alloc = struct.unpack_from(">H", cdb, 3)[0]
            if cdb[1] & 1:
                page = cdb[2]
                if page == 0x00:
                    body = bytes([0, 0, 0, 3, 0x00, 0x80, 0x83])
                elif page == 0x80:
                    body = bytes([0, 0x80, 0, 8]) + b"SERIAL01"
                elif page == 0x83:
                    desc = bytes([1, 3, 0, 16]) + bytes.fromhex("600140500000000000000000000000a1")
                    body = bytes([0, 0x83, 0, len(desc)]) + desc
                else:
                    return _check(SenseKey.ILLEGAL_REQUEST, 0x24)
            else:
                body = bytearray(36)
                body[0] = 0 if command.lun in self.luns else 0x7F
                body[2] = 6
                body[3] = 2
                body[4] = 31
                body[8:16] = b"ODXTGT  "
                body[16:32] = b"double          "
                body[32:36] = b"0001"
                body = bytes(body)
            data = body[:alloc]
            return ScsiResult(data_in=data, transfer_length=len(data))
        if op == 0x25:
            data = struct.pack(">II", self.blocks - 1, BLOCK)
            return ScsiResult(data_in=data, transfer_length=8)
        if op == 0x9E and cdb[1] & 0x1F == 0x10:
            alloc = struct.unpack_from(">I", cdb, 10)[0]
            data = struct.pack(">QI", self.blocks - 1, BLOCK) + bytes(20)
            return ScsiResult(data_in=data[:alloc], transfer_length=min(alloc, 32))
        if op == 0xA0:
            alloc = struct.unpack_from(">I", cdb, 6)[0]
            data = struct.pack(">II", 8 * len(self.luns), 0) + b"".join(
                bytes([0, lun, 0, 0, 0, 0, 0, 0]) for lun in sorted(self.luns))
            return ScsiResult(data_in=data[:alloc], transfer_length=min(alloc, len(data)))
        rw = {0x28: (">I", 2, ">H", 7), 0xA8: (">I", 2, ">I", 6), 0x88: (">Q", 2, ">I", 10),
              0x2A: (">I", 2, ">H", 7), 0xAA: (">I", 2, ">I", 6), 0x8A: (">Q", 2, ">I", 10),
              0x2E: (">I", 2, ">H", 7), 0xAE: (">I", 2, ">I", 6), 0x8E: (">Q", 2, ">I", 10)}
        if op in rw:
            lf, lo, nf, no = rw[op]
            lba = struct.unpack_from(lf, cdb, lo)[0]
            count = struct.unpack_from(nf, cdb, no)[0]
            if lba + count > self.blocks:
                return _check(SenseKey.ILLEGAL_REQUEST, 0x21)
            start, length = lba * BLOCK, count * BLOCK
            if op in (0x28, 0xA8, 0x88):
                return ScsiResult(data_in=memoryview(self.data)[start:start + length], transfer_length=length)
            data = command.data_out
            if len(data) == 0:
                return ScsiResult(transfer_length=length)
            if len(data) < length:
                if len(data) % BLOCK:
                    result = _check(SenseKey.ILLEGAL_REQUEST, 0x0E, 0x03)
                    result.transfer_length = length
                    return result
                length = len(data)
            self.data[start:start + length] = bytes(data[:length])
            return ScsiResult(transfer_length=count * BLOCK, data_out_consumed=length)
        return _check(SenseKey.ILLEGAL_REQUEST, 0x20)

    def data_out_length(self, cdb, lun=0):
        """Blocks x 512 for the WRITE-family opcodes it serves; None for the rest."""
        layout = _WRITES.get(cdb[0]) if cdb else None
        if layout is None or len(cdb) < layout[1] + struct.calcsize(layout[0]):
            return None
        return struct.unpack_from(layout[0], cdb, layout[1])[0] * BLOCK

    def solicited_data_out(self, cdb, lun=0):
        length = self.data_out_length(cdb, lun)
        return 0 if length is None or length > MAX_TRANSFER else length

    def logical_unit(self, lun):
        """One stand-in object per LUN, so the front end can tell the logical units apart."""
        return self._units.setdefault(lun, object()) if lun in self.luns else None

    def masked(self, mapped):
        raise AssertionError("the double has no LUN masks")

    def set_task_aborter(self, aborter):
        self.aborter = aborter

    def task_management(self, function, nexus, lun):
        self.tmfs.append((function, nexus, lun))
        return self.tmf_response

    def reset_announcements(self, function, lun=None):
        return []                   # no logical unit shared with other gateways

    def nexus_lost(self, nexus):
        self.lost.append(nexus)

    def nexus_logged_out(self, nexus):
        self.logged_out.append(nexus)
