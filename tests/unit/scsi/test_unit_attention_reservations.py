"""Unit attentions per I_T nexus, REQUEST SENSE, SPC-2 reservations, task management."""

import pytest

from odxtarget.scsi.types import TaskManagementFunction as TMF
from tests.unit.scsi.helpers import (CONFLICT, NEXUS_A, NEXUS_B, NEXUS_C, Harness, inquiry,
                                     mode_sense6, read10, release6, release10, report_luns,
                                     request_sense, reserve6, reserve10, tur)


def test_new_nexus_gets_power_on_unit_attention_once():
    h = Harness()
    sense = h.check(tur())
    assert (sense.key, sense.asc, sense.ascq) == (6, 0x29, 0x00)
    h.good(tur())
    assert h.check(tur(), nexus=NEXUS_B).asc == 0x29          # per nexus


def test_unsupported_opcode_reports_unit_attention_first():
    h = Harness()
    assert h.check(bytes((0xC0,)) + bytes(5)).key == 6
    sense = h.check(bytes((0xC0,)) + bytes(5))
    assert (sense.key, sense.asc, sense.ascq) == (5, 0x20, 0)


def test_request_sense_reports_and_clears_unit_attention():
    h = Harness()
    h.good(inquiry())                                        # INQUIRY does not clear it
    data = bytes(h.good(request_sense()).data_in)
    assert data[0] == 0x70 and data[2] == 6 and (data[12], data[13]) == (0x29, 0)
    h.good(tur())
    data = bytes(h.good(request_sense(desc=1)).data_in)
    assert data[0] == 0x72 and data[1:4] == b"\x00\x00\x00"  # NO SENSE, descriptor format
    assert len(h.good(request_sense(alloc=8)).data_in) == 8


def test_report_luns_does_not_consume_unit_attention():
    h = Harness()
    h.good(report_luns())
    assert h.check(tur()).key == 6


def test_lun_reset_reaches_every_nexus_including_issuer():
    # libiscsi MultipathIO.Reset: TUR on every path must see a UA after LUN RESET
    h = Harness()
    h.login(NEXUS_A)
    h.login(NEXUS_B)
    h.good(reserve6())
    assert h.target.task_management(TMF.LOGICAL_UNIT_RESET, NEXUS_A, 0) == 0
    for nexus in (NEXUS_A, NEXUS_B):
        sense = h.check(tur(), nexus=nexus)
        assert (sense.key, sense.asc, sense.ascq) == (6, 0x29, 0x03)
    h.good(reserve6(), nexus=NEXUS_B)                         # the reservation went away


@pytest.mark.parametrize("function", [TMF.TARGET_WARM_RESET, TMF.TARGET_COLD_RESET])
def test_target_reset_uses_29_00_and_releases(function):
    # libiscsi's reserve6() helper retries only on 29h/00h
    h = Harness()
    h.login(NEXUS_A)
    h.good(reserve6())
    assert h.target.task_management(function, NEXUS_A, None) == 0
    sense = h.check(reserve6(), nexus=NEXUS_A)
    assert (sense.asc, sense.ascq) == (0x29, 0x00)
    h.login(NEXUS_B)
    h.good(reserve6(), nexus=NEXUS_B)


def test_task_management_responses():
    h = Harness()
    assert h.target.task_management(TMF.LOGICAL_UNIT_RESET, NEXUS_A, 7) == 2
    assert h.target.task_management(TMF.ABORT_TASK, NEXUS_A, 0) == 0
    assert h.target.task_management(TMF.ABORT_TASK_SET, NEXUS_A, 0) == 0
    assert h.target.task_management(TMF.CLEAR_TASK_SET, NEXUS_A, 0) == 0
    assert h.target.task_management(TMF.CLEAR_ACA, NEXUS_A, 0) == 5
    assert h.target.task_management(TMF.TASK_REASSIGN, NEXUS_A, 0) == 5


def test_mode_defaults_restored_by_lu_reset():
    h = Harness()
    h.login()
    h.lu.mode.d_sense = True
    h.target.task_management(TMF.LOGICAL_UNIT_RESET, NEXUS_A, 0)
    assert h.lu.mode.d_sense is False


def test_reserve_release_two_initiators():
    # libiscsi Reserve6.2Initiators
    h = Harness()
    h.login(NEXUS_A)
    h.login(NEXUS_B)
    h.good(reserve6())
    h.good(reserve6())                                        # re-reserve by the holder
    assert h.run(reserve6(), nexus=NEXUS_B).status == CONFLICT
    h.good(release6(), nexus=NEXUS_B)                         # no-op for a non-holder
    h.good(mode_sense6())
    conflict = h.run(mode_sense6(), nexus=NEXUS_B)
    assert conflict.status == CONFLICT and conflict.sense == b""
    assert h.run(tur(), nexus=NEXUS_B).status == CONFLICT
    h.good(inquiry(), nexus=NEXUS_B)                          # allowed while reserved
    h.good(report_luns(), nexus=NEXUS_B)
    h.good(request_sense(), nexus=NEXUS_B)
    h.good(release6())
    h.good(reserve10(), nexus=NEXUS_B)
    assert h.run(read10(0, 1)).status == CONFLICT
    h.good(release10(), nexus=NEXUS_B)
    h.good(read10(0, 1))


def test_reserve_third_party_refused():
    h = Harness()
    h.login()
    assert h.check(bytes((0x16, 0x10, 0, 0, 0, 0))).asc == 0x24
    assert h.check(bytes((0x56, 0x10)) + bytes(8)).asc == 0x24


def test_nexus_loss_releases_and_reports_29_07():
    # libiscsi Reserve6.ITNexusLoss
    h = Harness()
    h.login(NEXUS_A)
    h.login(NEXUS_B)
    h.good(reserve6())
    h.target.nexus_lost(NEXUS_A)
    h.good(reserve6(), nexus=NEXUS_B)
    sense = h.check(tur(), nexus=NEXUS_A)
    assert (sense.asc, sense.ascq) == (0x29, 0x07)


def test_logout_releases_and_forgets():
    # libiscsi Reserve6.Logout
    h = Harness()
    h.login(NEXUS_A)
    h.login(NEXUS_B)
    h.good(reserve6())
    h.target.nexus_logged_out(NEXUS_A)
    h.good(reserve6(), nexus=NEXUS_B)
    assert h.check(tur(), nexus=NEXUS_A).ascq == 0x00         # a new nexus again


def test_unit_attention_queue_is_bounded_and_deduplicated():
    h = Harness()
    h.login(NEXUS_A)
    h.login(NEXUS_C)
    for _ in range(10):
        h.lu.capacity_changed()
        h.lu.mode_parameters_changed(NEXUS_A)
    pending = h.lu.pending_unit_attentions(NEXUS_C)
    assert len(pending) == 2 and len(set(pending)) == 2
    assert len(h.lu.pending_unit_attentions(NEXUS_A)) == 1
