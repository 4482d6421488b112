"""A masked view of a target (an ACL's mapped LUNs): its own LUN numbers, routing to the
target's logical units, and write-protected LUNs refused with 27h/00h and shown with WP."""

from __future__ import annotations

import struct

from odxtarget.scsi.execution import complete_inline
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import MaskedLun, ScsiTarget
from odxtarget.scsi.types import ScsiCommand, Status
from odxtarget.storage.memory import MemoryBackend
from tests.unit.scsi.helpers import (NEXUS_A, TARGET_NAME, mode_sense6, mode_sense10, parse_sense, read10,
                                     report_luns, write10)

BLOCK = 512


def _lu(name: str, fill: int) -> LogicalUnit:
    backend = MemoryBackend(64 * BLOCK, 4096)
    backend.write(0, bytes([fill]) * BLOCK)
    return LogicalUnit(LogicalUnitConfig(name=name, backend=backend, block_size=BLOCK))


def _run(target: ScsiTarget, cdb: bytes, lun: int, data: bytes = b""):
    result = complete_inline(target.execute(ScsiCommand(bytes(cdb), NEXUS_A, lun, data, len(data))))
    if result.status == Status.CHECK_CONDITION and lun in target.luns:
        # the first command of a nexus reports its power-on unit attention
        if parse_sense(result.sense).key == 6:
            result = complete_inline(target.execute(ScsiCommand(bytes(cdb), NEXUS_A, lun, data, len(data))))
    return result


def _reported(target: ScsiTarget) -> list[int]:
    data = _run(target, report_luns(), 0).data_in
    length = struct.unpack(">I", data[:4])[0]
    return [struct.unpack(">H", data[8 + i:10 + i])[0] & 0x3FFF for i in range(0, length, 8)]


def _setup():
    units = [_lu(f"lu{n}", 0xA0 + n) for n in range(3)]
    target = ScsiTarget(TARGET_NAME, dict(enumerate(units)), (1, 2))
    view = target.masked({0: MaskedLun(2), 5: MaskedLun(1, write_protect=True)})
    return units, target, view


def test_the_view_reports_and_routes_its_own_numbers():
    units, target, view = _setup()
    assert _reported(view) == [0, 5]
    assert _reported(target) == [0, 1, 2]
    assert view.logical_unit(0) is units[2] and view.logical_unit(5) is units[1]
    assert _run(view, read10(0, 1), 0).data_in == bytes([0xA2]) * BLOCK
    assert _run(view, read10(0, 1), 5).data_in == bytes([0xA1]) * BLOCK


def test_an_unmapped_number_is_logical_unit_not_supported():
    _, _, view = _setup()
    result = _run(view, read10(0, 1), 1)
    sense = parse_sense(result.sense)
    assert (result.status, sense.key, sense.asc, sense.ascq) == (Status.CHECK_CONDITION, 5, 0x25, 0x00)


def test_a_write_protected_lun_refuses_writes_with_write_protected():
    units, _, view = _setup()
    result = _run(view, write10(0, 1), 5, bytes(BLOCK))
    sense = parse_sense(result.sense)
    assert (sense.key, sense.asc, sense.ascq) == (7, 0x27, 0x00)
    stored = bytearray(BLOCK)
    units[1].backend.read_into(0, memoryview(stored))
    assert stored == bytes([0xA1]) * BLOCK
    assert _run(view, write10(0, 1), 0, bytes(BLOCK)).status == Status.GOOD


def test_the_same_logical_unit_stays_writable_through_the_unmasked_target():
    units, target, view = _setup()
    assert _run(target, write10(0, 1), 1, bytes(BLOCK)).status == Status.GOOD
    assert view.write_protects(units[1]) and not target.write_protects(units[1])
    assert not view.write_protects(units[2]) and not view.write_protects(units[0])


def test_mode_sense_shows_wp_only_on_the_write_protected_lun():
    _, _, view = _setup()
    assert _run(view, mode_sense6(), 5).data_in[2] & 0x80
    assert _run(view, mode_sense10(), 5).data_in[3] & 0x80
    assert not _run(view, mode_sense6(), 0).data_in[2] & 0x80


def test_the_view_follows_its_targets_port_groups():
    _, target, view = _setup()
    target.port_groups = (1, 2, 3)
    assert view.port_groups == (1, 2, 3)


def test_entries_naming_a_lun_the_target_lacks_are_left_out():
    _, target, _ = _setup()
    assert target.masked({0: MaskedLun(9), 1: MaskedLun(0)}).lun_numbers() == [1]
