"""A command the front end marks write_protected (a demo-mode session of a target with
demo_mode_write_protect) is treated as on a read-only LU: DATA PROTECT / WRITE PROTECTED for
every medium-changing command, WP in MODE SENSE, reads working; other nexuses are unaffected."""

import pytest

from odxtarget.scsi.execution import complete_inline
from odxtarget.scsi.types import ScsiCommand, Status
from tests.unit.scsi.helpers import (NEXUS_A, NEXUS_B, mode_sense6, mode_sense10, parse_sense, read16, ready,
                                     write16)
from tests.unit.scsi.test_read_only import WRITERS

WP = 0x80


def run(harness, cdb, data=b"", *, protected: bool, nexus=NEXUS_A):
    return complete_inline(harness.target.execute(
        ScsiCommand(bytes(cdb), nexus, 0, data, len(data), write_protected=protected)))


@pytest.mark.parametrize("cdb,data", WRITERS)
def test_every_write_is_write_protected(cdb, data):
    harness = ready()
    result = run(harness, cdb, data, protected=True)
    assert result.status == Status.CHECK_CONDITION
    sense = parse_sense(result.sense)
    assert (sense.key, sense.asc, sense.ascq) == (0x07, 0x27, 0x00)


def test_reads_work_and_the_medium_is_unchanged():
    harness = ready()
    harness.fill(0, b"\x5a" * 512)
    assert run(harness, write16(0, 1), bytes(512), protected=True).status == Status.CHECK_CONDITION
    read = run(harness, read16(0, 1), protected=True)
    assert read.status == Status.GOOD and bytes(read.data_in) == b"\x5a" * 512


def test_mode_sense_reports_wp_only_to_the_protected_nexus():
    harness = ready()
    harness.login(NEXUS_B)
    for sense_cdb, device_specific_at in ((mode_sense6(), 2), (mode_sense10(), 3)):
        protected = run(harness, sense_cdb, protected=True)
        unprotected = run(harness, sense_cdb, protected=False, nexus=NEXUS_B)
        assert protected.data_in[device_specific_at] & WP
        assert not unprotected.data_in[device_specific_at] & WP


def test_another_nexus_still_writes():
    harness = ready()
    harness.login(NEXUS_B)
    assert run(harness, write16(0, 1), b"\x11" * 512, protected=False, nexus=NEXUS_B).status == Status.GOOD
    assert harness.read(0, 1) == b"\x11" * 512
