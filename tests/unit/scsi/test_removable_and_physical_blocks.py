"""Removable media (RMB=1: START STOP UNIT eject/load, PREVENT ALLOW MEDIUM REMOVAL, NOT READY
without a medium) and physical block size (READ CAPACITY(16) LBPPBE) per logical unit."""

from __future__ import annotations

import pytest

from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.storage.memory import MemoryBackend
from tests.unit.scsi.helpers import (
    NEXUS_A, NEXUS_B, inquiry, mode_sense6, read10, read_capacity16, ready, rsoc, tur, write10)

EJECT = bytes((0x1B, 0, 0, 0, 0x02, 0))
LOAD = bytes((0x1B, 0, 0, 0, 0x03, 0))
POWER_CONDITION_WITH_EJECT = bytes((0x1B, 0, 0, 0, 0x12, 0))   # PC=1: LOEJ/START are ignored


def prevent(on: bool) -> bytes:
    return bytes((0x1E, 0, 0, 0, 1 if on else 0, 0))


def test_fixed_disk_reports_rmb_0_and_ignores_eject():
    harness = ready()
    assert harness.good(inquiry()).data_in[1] & 0x80 == 0
    harness.good(EJECT)
    harness.good(tur())
    assert harness.read(0, 1) == bytes(512)


def test_removable_lu_ejects_and_loads():
    harness = ready(removable=True)
    assert harness.good(inquiry()).data_in[1] & 0x80 == 0x80
    harness.good(EJECT)
    for cdb in (tur(), read10(0, 1), write10(0, 1), read_capacity16()):
        sense = harness.check(cdb, bytes(512) if cdb[0] == 0x2A else b"")
        assert (sense.key, sense.asc, sense.ascq) == (0x2, 0x3A, 0x00)
    # discovery, mode pages and opcodes still answer without a medium
    for cdb in (inquiry(), mode_sense6(), rsoc()):
        harness.good(cdb)
    harness.good(LOAD)
    harness.good(tur())


def test_power_condition_makes_loej_ignored():
    harness = ready(removable=True)
    harness.good(POWER_CONDITION_WITH_EJECT)
    harness.good(tur())


def test_prevent_allow_medium_removal_per_nexus():
    harness = ready(removable=True)
    harness.login(NEXUS_B)
    harness.good(prevent(True), nexus=NEXUS_A)
    harness.good(prevent(True), nexus=NEXUS_B)
    sense = harness.check(EJECT)
    assert (sense.key, sense.asc, sense.ascq) == (0x5, 0x53, 0x02)
    harness.good(prevent(False), nexus=NEXUS_A)
    assert harness.check(EJECT).asc == 0x53, "NEXUS_B still prevents removal"
    harness.target.nexus_lost(NEXUS_B)   # prevention ends with the nexus
    harness.good(EJECT)
    harness.good(prevent(True))
    assert harness.check(LOAD).asc == 0x53, "a prevented medium may not change either"


def test_lun_reset_clears_prevention():
    harness = ready(removable=True)
    harness.good(prevent(True))
    harness.lu.reset()
    harness.login()
    harness.good(EJECT)


def test_prevent_field_for_changers_is_refused():
    harness = ready(removable=True)
    sense = harness.check(bytes((0x1E, 0, 0, 0, 0x02, 0)))
    assert (sense.key, sense.asc) == (0x5, 0x24)
    assert sense.field_pointer == (True, 4, 1)


@pytest.mark.parametrize(("block_size", "physical", "exponent"),
                         [(512, None, 0), (512, 4096, 3), (4096, 4096, 0), (512, 1024, 1)])
def test_read_capacity_16_reports_logical_blocks_per_physical_block(block_size, physical, exponent):
    harness = ready(block_size=block_size, physical_block_size=physical)
    data = harness.good(read_capacity16()).data_in
    assert data[13] & 0x0F == exponent
    assert data[13] >> 4 == 0  # no protection information


@pytest.mark.parametrize("physical", [768, 256, 512 * (1 << 16)])
def test_physical_block_size_must_be_a_power_of_two_multiple(physical):
    with pytest.raises(ValueError, match="physical block size"):
        LogicalUnit(LogicalUnitConfig(name="x", backend=MemoryBackend(1 << 20), physical_block_size=physical))
