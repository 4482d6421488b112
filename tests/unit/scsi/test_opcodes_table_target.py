"""REPORT SUPPORTED OPERATION CODES against the command table, table registration, target
routing (REPORT LUNS, absent LUNs, data_out_length), small commands."""

import struct

import pytest

from odxtarget.scsi.command_table import CommandSpec, CommandTable
from odxtarget.scsi.handlers import standard_commands
from odxtarget.scsi.types import ScsiResult
from tests.unit.scsi.helpers import (CHECK, GOOD, Harness, inquiry, prefetch10, prefetch16,
                                     read_defect10, read_defect12, ready, report_luns, request_sense, rsoc,
                                     start_stop, sync_cache10, sync_cache16, tur, write10)


def _all(h, rctd=0):
    data = bytes(h.good(rsoc(0, rctd=rctd)).data_in)
    length = struct.unpack(">I", data[:4])[0]
    assert length == len(data) - 4
    step = 20 if rctd else 8
    out = []
    for position in range(4, len(data), step):
        opcode, sa, flags, cdb_length = struct.unpack(">BxHxBH", data[position:position + 8])
        out.append((opcode, sa, flags, cdb_length, data[position + 8:position + step]))
    return out


def test_all_commands_match_the_table():
    h = ready()
    listed = _all(h)
    specs = list(h.lu.commands)
    assert [(d[0], d[1]) for d in listed] == [(s.opcode, s.service_action or 0) for s in specs]
    for (opcode, sa, flags, cdb_length, _), spec in zip(listed, specs):
        assert cdb_length == spec.cdb_length
        assert bool(flags & 1) == (spec.service_action is not None)       # SERVACTV
        assert not flags & 2                                             # no CTDP without RCTD
        assert sa == 0 or flags & 1                                      # libiscsi SERVACTV test


def test_rctd_adds_timeouts_descriptors():
    h = ready()
    for opcode, sa, flags, _, timeouts in _all(h, rctd=1):
        assert flags & 2 and struct.unpack(">H", timeouts[:2])[0] == 0x0A


def test_one_command_forms():
    # libiscsi ReportSupportedOpcodes.OneCommand
    h = ready()
    for opcode, sa, flags, cdb_length, _ in _all(h):
        spec = h.lu.commands.find(opcode, sa)
        if flags & 1:
            assert h.check(rsoc(1, opcode, sa)).asc == 0x24
            data = bytes(h.good(rsoc(2, opcode, sa)).data_in)
        else:
            assert h.check(rsoc(2, opcode, sa)).asc == 0x24
            data = bytes(h.good(rsoc(1, opcode, sa)).data_in)
        assert data[1] & 0x07 == 3 and struct.unpack(">H", data[2:4])[0] == cdb_length
        assert data[4:4 + cdb_length] == spec.usage and data[4] == opcode
        assert bytes(h.good(rsoc(3, opcode, sa)).data_in) == data
    timed = bytes(h.good(rsoc(1, 0x28, rctd=1)).data_in)
    assert timed[1] & 0x80 and len(timed) == 4 + 10 + 12
    assert bytes(h.good(rsoc(1, 0xC5)).data_in) == b"\x00\x01\x00\x00"    # not supported
    assert h.check(rsoc(4)).asc == 0x24


def test_usage_data_validates_cdbs():
    """Every bit outside the usage data is refused with a field pointer into that byte."""
    h = ready()
    for spec in h.lu.commands:
        for index in range(1, spec.cdb_length):
            unsupported = ~spec.usage[index] & 0xFF
            if spec.service_action is not None and index == 1:
                continue
            if not unsupported:
                continue
            cdb = bytearray(spec.usage[0:1]) + bytearray(spec.cdb_length - 1)
            if spec.service_action is not None:
                cdb[1] = spec.service_action
            cdb[index] |= unsupported & -unsupported                    # lowest unsupported bit
            sense = h.check(bytes(cdb))
            assert sense.asc == 0x24 and sense.field_pointer[:2] == (True, index), (spec.name, index)


def test_unknown_opcode_and_service_action():
    h = ready()
    assert (h.check(bytes((0xC1,)) + bytes(15)).asc, 0x20) == (0x20, 0x20)
    sense = h.check(bytes((0x9E, 0x11)) + bytes(14))
    assert sense.asc == 0x24 and sense.field_pointer[1] == 1
    assert h.check(bytes((0x3B, 0)) + bytes(8)).asc == 0x20                # WRITE BUFFER: not offered


def test_registration_api():
    h = ready()
    calls = []

    def handler(lu, command, target):
        calls.append(command.cdb[1] & 0x1F)
        return ScsiResult()

    h.lu.commands.register(CommandSpec("POPULATE TOKEN", handler, bytes((0x83, 0x10)) + bytes(14),
                                       service_action=0x10))
    h.good(bytes((0x83, 0x10)) + bytes(14))
    assert calls == [0x10]
    assert h.check(bytes((0x83, 0x11)) + bytes(14)).asc == 0x24
    assert any(d[0] == 0x83 and d[1] == 0x10 for d in _all(h))
    with pytest.raises(ValueError):
        h.lu.commands.register(CommandSpec("dup", handler, bytes((0x83, 0x10)) + bytes(14), service_action=0x10))
    with pytest.raises(ValueError):
        CommandTable(standard_commands()).register(CommandSpec("dup", handler, bytes(6)))
    other = ready()
    assert other.lu.commands.find(0x83, 0x10) is None                   # tables are per LU


def test_report_luns_and_absent_luns():
    h = Harness()
    h.target.add_lun(5, h.lu)
    h.target.add_lun(300, h.lu)
    data = bytes(h.good(report_luns()).data_in)
    assert struct.unpack(">I", data[:4])[0] == 24
    assert [data[8 + 8 * i:16 + 8 * i] for i in range(3)] == [
        bytes(8), bytes((0, 5)) + bytes(6), bytes((0x41, 0x2C)) + bytes(6)]
    assert len(bytes(h.good(report_luns(select=1)).data_in)) == 8
    assert h.check(report_luns(select=3)).asc == 0x24
    absent = h.run(inquiry(), lun=9)
    assert absent.status == GOOD and absent.data_in[0] == 0x7F
    assert h.run(report_luns(), lun=9).status == GOOD
    sense = bytes(h.run(request_sense(), lun=9).data_in)
    assert (sense[2], sense[12]) == (5, 0x25)
    result = h.run(tur(), lun=9)
    assert result.status == CHECK and result.sense[12] == 0x25


def test_data_out_length():
    h = ready()
    t = h.target
    assert t.data_out_length(write10(0, 3)) == 1536
    assert t.data_out_length(bytes((0x28,)) + bytes(9)) is None          # READ
    assert t.data_out_length(bytes((0x89,)) + bytes(12) + b"\x02\x00\x00") == 2048
    assert t.data_out_length(bytes((0x93, 0x01)) + bytes(14)) == 0      # WRITE SAME NDOB
    assert t.data_out_length(bytes((0x2F, 0x00)) + bytes(5) + b"\x00\x04\x00") == 0   # VERIFY BYTCHK 0
    assert t.data_out_length(bytes((0x2F, 0x06)) + bytes(5) + b"\x00\x04\x00") == 512  # BYTCHK 11b
    assert t.data_out_length(write10(0, 1), lun=4) is None
    assert t.data_out_length(b"") is None and t.data_out_length(b"\x2a") is None


def test_small_commands():
    h = ready(blocks=100)
    h.good(tur())
    for cdb in (start_stop(0), start_stop(1), start_stop(0, loej=1), start_stop(1, immed=1, pc=3)):
        h.good(cdb)
    assert bytes(h.good(read_defect10(1, 1, 0)).data_in) == bytes((0, 0x18, 0, 0))
    assert bytes(h.good(read_defect12()).data_in) == bytes(8)
    h.good(sync_cache10())
    h.good(sync_cache16(10, 5, immed=1))
    assert h.backend.flushes == 2
    assert h.check(sync_cache10(101, 0)).asc == 0x21
    for builder in (prefetch10, prefetch16):
        assert h.good(builder(0, 10)).status == GOOD          # GOOD, never CONDITION MET
        h.good(builder(0, 1, immed=1, group=3))
        h.good(builder(99, 1))
        assert h.check(builder(99, 2)).asc == 0x21
        assert h.check(builder(101, 0)).asc == 0x21
