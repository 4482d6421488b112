"""SCSI-3 persistent reservations in the core: PERSISTENT RESERVE IN/OUT, the access table,
unit attentions, the generation, SPC-2 interplay, resets, APTPL persistence, the abort hook."""

from __future__ import annotations

import json
import os
import struct

import pytest

from odxtarget.scsi.pr_state import PersistentReservations, PrType, Reservation
from odxtarget.scsi.types import ItNexus
from odxtarget.scsi.types import TaskManagementFunction as TMF
from odxtarget.storage.reservation_file import ReservationFile, file_name_for
from tests.unit.scsi.helpers import (CHECK, CONFLICT, GOOD, NEXUS_A, NEXUS_B, NEXUS_C, TARGET_NAME, Harness,
                                     parse_sense, read10, release6, reserve6, tur, write10)

# Service actions (SPC-4 6.15.1, 6.16.2).
READ_KEYS, READ_RESERVATION, REPORT_CAPABILITIES, READ_FULL_STATUS = range(4)
REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT_AND_ABORT, REGISTER_AND_IGNORE, REGISTER_AND_MOVE = range(8)
WE, EA, WE_RO, EA_RO, WE_AR, EA_AR = (PrType.WRITE_EXCLUSIVE, PrType.EXCLUSIVE_ACCESS,
                                      PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
                                      PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
                                      PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS,
                                      PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS)
APTPL = 0x01
NEXUS_UNREGISTERED = ItNexus("iqn.1994-05.com.example:d,i,0x400001370009", f"{TARGET_NAME},t,0x1")
#: Never registers, so never gets a reservation unit attention: it reads the PR state.
NEXUS_OBSERVER = ItNexus("iqn.1994-05.com.example:e,i,0x40000137000a", f"{TARGET_NAME},t,0x1")


def prin(action: int, alloc: int = 8192) -> bytes:
    return bytes((0x5E, action, 0, 0, 0, 0, 0)) + struct.pack(">H", alloc) + b"\x00"


def prout(action: int, pr_type: int = 0, scope: int = 0, length: int = 24) -> bytes:
    return bytes((0x5F, action, scope << 4 | pr_type, 0, 0)) + struct.pack(">I", length) + b"\x00"


def params(key: int = 0, action_key: int = 0, flags: int = 0) -> bytes:
    return struct.pack(">QQ4xB3x", key, action_key, flags)


class Pr(Harness):
    """A harness whose nexuses A, B, C and D have all cleared their power-on unit attention."""

    def __init__(self, **kw):
        super().__init__(**kw)
        for nexus in (NEXUS_A, NEXUS_B, NEXUS_C, NEXUS_UNREGISTERED, NEXUS_OBSERVER):
            self.login(nexus)

    def out(self, action: int, key: int = 0, action_key: int = 0, pr_type: int = 0, nexus=NEXUS_A, flags: int = 0,
            scope: int = 0):
        return self.run(prout(action, pr_type, scope), params(key, action_key, flags), nexus=nexus)

    def register(self, nexus, key: int, flags: int = 0) -> None:
        assert self.out(REGISTER_AND_IGNORE, action_key=key, nexus=nexus, flags=flags).status == GOOD

    def keys(self, nexus=NEXUS_OBSERVER) -> tuple[int, list[int]]:
        data = bytes(self.good(prin(READ_KEYS), nexus=nexus).data_in)
        generation, length = struct.unpack_from(">II", data)
        return generation, [struct.unpack_from(">Q", data, 8 + i)[0] for i in range(0, length, 8)]

    def reservation(self, nexus=NEXUS_OBSERVER) -> tuple[int, int] | None:
        data = bytes(self.good(prin(READ_RESERVATION), nexus=nexus).data_in)
        if struct.unpack_from(">I", data, 4)[0] == 0:
            return None
        return struct.unpack_from(">Q", data, 8)[0], data[21] & 0x0F

    def status(self, cdb, data_out=b"", nexus=NEXUS_A) -> int:
        return self.run(cdb, data_out, nexus=nexus).status

    def unit_attention(self, nexus) -> tuple[int, int] | None:
        result = self.run(tur(), nexus=nexus)
        if result.status == GOOD:
            return None
        sense = parse_sense(result.sense)
        assert sense.key == 6
        return sense.asc, sense.ascq


BLOCK = bytes(512)


def can_read(pr: Pr, nexus) -> bool:
    return pr.status(read10(1, 1), nexus=nexus) == GOOD


def can_write(pr: Pr, nexus) -> bool:
    status = pr.status(write10(1, 1), BLOCK, nexus=nexus)
    assert status in (GOOD, CONFLICT)
    return status == GOOD


# -- PERSISTENT RESERVE IN ------------------------------------------------------------------------

def test_read_keys_lists_every_registration_and_keeps_additional_length_when_cut():
    pr = Pr()
    assert pr.keys() == (0, [])
    pr.register(NEXUS_A, 0xA1)
    pr.register(NEXUS_B, 0xB2)
    generation, keys = pr.keys()
    assert generation == 2 and sorted(keys) == [0xA1, 0xB2]
    cut = bytes(pr.good(prin(READ_KEYS, alloc=8)).data_in)
    assert cut == struct.pack(">II", 2, 16)


def test_report_capabilities_advertises_every_type_and_ptpl_only_with_a_store(tmp_path):
    pr = Pr()
    data = bytes(pr.good(prin(REPORT_CAPABILITIES)).data_in)
    length, flags, allow, mask = struct.unpack_from(">HBBH", data)
    assert length == 8 and flags == 0x10 and mask == 0xEA01     # CRH; no SIP_C/ATP_C/PTPL_C
    assert allow & 0x80 and (allow >> 4) & 7 <= 5 and not allow & 1
    pr.lu.persist_reservations(ReservationFile(str(tmp_path / "pr.json")))
    pr.register(NEXUS_A, 1, flags=APTPL)
    data = bytes(pr.good(prin(REPORT_CAPABILITIES)).data_in)
    assert data[2] & 0x01 and data[3] & 0x01                    # PTPL_C, PTPL_A


def test_unknown_prin_service_action_is_invalid_field():
    pr = Pr()
    sense = pr.check(prin(4))
    assert (sense.key, sense.asc) == (5, 0x24)


def test_read_full_status_names_holder_and_transport_ids():
    pr = Pr()
    pr.register(NEXUS_A, 0xA1)
    pr.register(NEXUS_B, 0xB2)
    assert pr.out(RESERVE, key=0xA1, pr_type=WE_RO).status == GOOD
    data = bytes(pr.good(prin(READ_FULL_STATUS)).data_in)
    assert struct.unpack_from(">I", data, 4)[0] == len(data) - 8
    seen = {}
    offset = 8
    while offset < len(data):
        key, flags, scope_type, port, tid_length = struct.unpack_from(">Q4xBB4xHI", data, offset)
        tid = data[offset + 24:offset + 24 + tid_length]
        assert tid[0] == 0x45 and port == 1                    # iSCSI, port format
        seen[tid[4:].rstrip(b"\0").decode()] = (key, flags & 1, scope_type)
        offset += 24 + tid_length
    assert seen == {NEXUS_A.initiator_port: (0xA1, 1, WE_RO), NEXUS_B.initiator_port: (0xB2, 0, 0)}


# -- REGISTER ---------------------------------------------------------------------------------------

def test_register_rules_and_generation():
    pr = Pr()
    assert pr.out(REGISTER, key=5, action_key=1).status == CONFLICT        # unregistered with a key
    assert pr.out(REGISTER, action_key=0).status == GOOD                   # nothing to do
    assert pr.keys() == (0, [])
    assert pr.out(REGISTER, action_key=7).status == GOOD
    assert pr.out(REGISTER, key=0, action_key=8).status == CONFLICT        # wrong current key
    assert pr.out(REGISTER, key=7, action_key=8).status == GOOD            # key change
    assert pr.out(REGISTER_AND_IGNORE, key=999, action_key=9).status == GOOD
    assert pr.keys() == (3, [9])
    assert pr.out(REGISTER, key=9, action_key=0).status == GOOD            # unregister
    assert pr.keys() == (4, [])


def test_spec_i_pt_all_tg_pt_and_aptpl_without_store_are_refused_with_field_pointers():
    pr = Pr()
    for flags, bit in ((0x08, 3), (0x04, 2), (APTPL, 0)):
        sense = parse_sense(pr.out(REGISTER_AND_IGNORE, action_key=1, flags=flags).sense)
        assert (sense.key, sense.asc) == (5, 0x26)
        assert sense.field_pointer == (False, 20, bit)
    assert pr.keys() == (0, [])


def test_parameter_list_length_must_be_24():
    pr = Pr()
    sense = pr.check(prout(REGISTER_AND_IGNORE, length=16), params(action_key=1)[:16])
    assert sense.asc == 0x1A
    sense = pr.check(prout(REGISTER_AND_IGNORE, length=28), params(action_key=1) + bytes(4))
    assert sense.asc == 0x1A


def test_registration_resources_are_bounded(monkeypatch):
    monkeypatch.setattr("odxtarget.scsi.pr_state.MAX_REGISTRATIONS", 2)
    pr = Pr()
    pr.register(NEXUS_A, 1)
    pr.register(NEXUS_B, 2)
    sense = parse_sense(pr.out(REGISTER_AND_IGNORE, action_key=3, nexus=NEXUS_C).sense)
    assert (sense.key, sense.asc, sense.ascq) == (5, 0x55, 0x04)


# -- RESERVE / RELEASE / access table -----------------------------------------------------------

ACCESS = {  # type: (registered B reads, registered B writes, unregistered D reads, unregistered D writes)
    WE: (True, False, True, False),
    EA: (False, False, False, False),
    WE_RO: (True, True, True, False),
    EA_RO: (True, True, False, False),
    WE_AR: (True, True, True, False),
    EA_AR: (True, True, False, False),
}


@pytest.mark.parametrize("pr_type", list(ACCESS), ids=lambda t: t.name)
def test_access_table(pr_type):
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    pr.register(NEXUS_B, 0xB)
    assert pr.out(RESERVE, key=0xA, pr_type=pr_type).status == GOOD
    expected_key = 0 if pr_type in (WE_AR, EA_AR) else 0xA
    assert pr.reservation() == (expected_key, pr_type)
    assert can_read(pr, NEXUS_A) and can_write(pr, NEXUS_A)
    observed = (can_read(pr, NEXUS_B), can_write(pr, NEXUS_B), can_read(pr, NEXUS_UNREGISTERED),
                can_write(pr, NEXUS_UNREGISTERED))
    assert observed == ACCESS[pr_type]
    # PR_ALLOWED commands go through whatever the type.
    assert pr.status(tur(), nexus=NEXUS_UNREGISTERED) == GOOD
    assert pr.status(prin(READ_KEYS), nexus=NEXUS_UNREGISTERED) == GOOD


def test_reserve_conflicts_and_release_rules():
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    pr.register(NEXUS_B, 0xB)
    assert pr.out(RESERVE, key=0xB, pr_type=WE).status == CONFLICT         # not B's... wrong key for A
    assert pr.out(RESERVE, key=0xA, pr_type=WE, nexus=NEXUS_UNREGISTERED).status == CONFLICT
    assert pr.out(RESERVE, key=0xA, pr_type=WE).status == GOOD
    assert pr.out(RESERVE, key=0xA, pr_type=WE).status == GOOD             # same type again: GOOD
    assert pr.out(RESERVE, key=0xA, pr_type=EA).status == CONFLICT         # holder, other type
    assert pr.out(RESERVE, key=0xB, pr_type=WE, nexus=NEXUS_B).status == CONFLICT
    assert pr.out(RELEASE, key=0xB, pr_type=WE, nexus=NEXUS_B).status == GOOD   # not holder: no-op
    assert pr.reservation() == (0xA, WE)
    sense = parse_sense(pr.out(RELEASE, key=0xA, pr_type=EA).sense)
    assert (sense.key, sense.asc, sense.ascq) == (5, 0x26, 0x04)            # INVALID RELEASE
    generation = pr.keys()[0]
    assert pr.out(RELEASE, key=0xA, pr_type=WE).status == GOOD
    assert pr.reservation() is None and pr.keys()[0] == generation         # no generation bump


def test_reserve_checks_scope_and_type_fields():
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    sense = parse_sense(pr.out(RESERVE, key=0xA, pr_type=2).sense)
    assert sense.asc == 0x24 and sense.field_pointer == (True, 2, 3)
    sense = parse_sense(pr.out(RESERVE, key=0xA, pr_type=WE, scope=1).sense)
    assert sense.asc == 0x24 and sense.field_pointer == (True, 2, 7)


def test_release_of_registrants_only_reservation_notifies_other_registrants():
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    pr.register(NEXUS_B, 0xB)
    pr.out(RESERVE, key=0xA, pr_type=WE_RO)
    assert pr.out(RELEASE, key=0xA, pr_type=WE_RO).status == GOOD
    assert pr.unit_attention(NEXUS_B) == (0x2A, 0x04)
    assert pr.unit_attention(NEXUS_A) is None
    assert pr.unit_attention(NEXUS_UNREGISTERED) is None


def test_unregistering_the_holder_releases_but_all_registrants_survive_until_the_last():
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    pr.register(NEXUS_B, 0xB)
    pr.out(RESERVE, key=0xA, pr_type=EA_RO)
    pr.out(REGISTER, key=0xA, action_key=0)
    assert pr.reservation() is None
    assert pr.unit_attention(NEXUS_B) == (0x2A, 0x04)
    pr.register(NEXUS_A, 0xA)
    pr.out(RESERVE, key=0xA, pr_type=WE_AR)
    pr.out(REGISTER, key=0xA, action_key=0)
    assert pr.reservation() == (0, WE_AR)
    assert pr.out(RELEASE, key=0xB, pr_type=WE_AR, nexus=NEXUS_B).status == GOOD   # any registrant holds it
    assert pr.reservation() is None


# -- CLEAR / PREEMPT / PREEMPT AND ABORT / REGISTER AND MOVE ---------------------------------------

def test_clear_drops_everything_and_tells_the_others():
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    pr.register(NEXUS_B, 0xB)
    pr.out(RESERVE, key=0xA, pr_type=EA)
    assert pr.out(CLEAR, key=0xB, nexus=NEXUS_B).status == GOOD
    assert pr.keys() == (3, []) and pr.reservation() is None
    assert pr.unit_attention(NEXUS_A) == (0x2A, 0x03)
    assert pr.unit_attention(NEXUS_B) is None
    assert can_write(pr, NEXUS_UNREGISTERED)


def test_preempt_without_reservation_removes_registrations():
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    pr.register(NEXUS_B, 0xB)
    assert pr.out(PREEMPT, key=0xB, action_key=0xC, pr_type=EA, nexus=NEXUS_B).status == CONFLICT  # no such key
    sense = parse_sense(pr.out(PREEMPT, key=0xB, action_key=0, pr_type=EA, nexus=NEXUS_B).sense)
    assert sense.asc == 0x26 and sense.field_pointer[1] == 8
    assert pr.out(PREEMPT, key=0xB, action_key=0xA, pr_type=EA, nexus=NEXUS_B).status == GOOD
    assert pr.keys() == (3, [0xB]) and pr.reservation() is None
    assert pr.unit_attention(NEXUS_A) == (0x2A, 0x05)


def test_preempt_of_the_holder_moves_the_reservation_and_announces_a_type_change():
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    pr.register(NEXUS_C, 0xA)                     # A's second path, same key
    pr.register(NEXUS_B, 0xB)
    pr.register(NEXUS_UNREGISTERED, 0xD)          # registered bystander after all
    pr.out(RESERVE, key=0xA, pr_type=WE_RO)
    assert pr.out(PREEMPT, key=0xB, action_key=0xA, pr_type=EA_RO, nexus=NEXUS_B).status == GOOD
    assert pr.reservation() == (0xB, EA_RO)
    assert sorted(pr.keys()[1]) == [0xB, 0xD]
    assert pr.unit_attention(NEXUS_A) == (0x2A, 0x05)
    assert pr.unit_attention(NEXUS_C) == (0x2A, 0x05)
    assert pr.unit_attention(NEXUS_UNREGISTERED) == (0x2A, 0x04)    # type changed
    assert pr.unit_attention(NEXUS_B) is None
    assert not can_read(pr, NEXUS_A)


def test_preempt_all_registrants_with_key_zero_takes_over():
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    pr.register(NEXUS_B, 0xB)
    pr.out(RESERVE, key=0xA, pr_type=EA_AR)
    assert pr.out(PREEMPT, key=0xB, action_key=0, pr_type=EA, nexus=NEXUS_B).status == GOOD
    assert pr.reservation() == (0xB, EA) and pr.keys()[1] == [0xB]


def test_preempt_and_abort_asks_the_front_end_to_abort_only_the_preempted_nexuses():
    pr = Pr()
    calls = []
    pr.target.set_task_aborter(lambda lu, nexuses: calls.append((lu, nexuses)))
    pr.register(NEXUS_A, 0xA)
    pr.register(NEXUS_C, 0xA)
    pr.register(NEXUS_B, 0xB)
    pr.out(RESERVE, key=0xA, pr_type=WE_RO)
    assert pr.out(PREEMPT, key=0xB, action_key=0xA, pr_type=WE_RO, nexus=NEXUS_B).status == GOOD
    assert calls == []                                             # plain PREEMPT aborts nothing
    assert pr.unit_attention(NEXUS_A) == (0x2A, 0x05)
    pr.register(NEXUS_A, 0xA)
    assert pr.out(PREEMPT_AND_ABORT, key=0xB, action_key=0xA, pr_type=WE_RO, nexus=NEXUS_B).status == GOOD
    assert calls == [(pr.lu, frozenset({NEXUS_A}))]


def transport_id(initiator_port: str) -> bytes:
    name = initiator_port.encode() + b"\0"
    name = name.ljust(max(20, (len(name) + 3) // 4 * 4), b"\0")
    return bytes((0x45, 0)) + struct.pack(">H", len(name)) + name


def test_register_and_move_hands_the_reservation_to_another_nexus():
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    pr.out(RESERVE, key=0xA, pr_type=WE)
    name, isid = NEXUS_B.initiator_port.split(",i,0x")
    tid = transport_id(f"{name},i,0x{isid.upper()}")            # ISID case does not matter
    move = struct.pack(">QQxBHI", 0xA, 0xBB, 0x02, 1, len(tid)) + tid
    assert pr.status(prout(REGISTER_AND_MOVE, length=len(move)), move) == GOOD
    assert pr.reservation() == (0xBB, WE)
    assert pr.keys()[1] == [0xBB]                                  # UNREG dropped A
    assert can_write(pr, NEXUS_B) and not can_write(pr, NEXUS_A)
    bad_port = struct.pack(">QQxBHI", 0xBB, 0xCC, 0, 7, len(tid)) + tid
    sense = pr.check(prout(REGISTER_AND_MOVE, length=len(bad_port)), bad_port, nexus=NEXUS_B)
    assert sense.asc == 0x26 and sense.field_pointer[1] == 18


# -- interplay with SPC-2 reservations, resets, nexus loss --------------------------------------

def test_spc2_reserve_and_persistent_reservations_exclude_each_other():
    pr = Pr()
    pr.good(reserve6(), nexus=NEXUS_B)
    assert pr.out(REGISTER_AND_IGNORE, action_key=1).status == CONFLICT     # PROUT under SPC-2 RESERVE
    assert pr.status(prin(READ_KEYS)) == CONFLICT
    pr.good(release6(), nexus=NEXUS_B)
    pr.register(NEXUS_A, 0xA)
    assert pr.status(reserve6(), nexus=NEXUS_B) == CONFLICT               # registrations exist
    assert pr.status(release6(), nexus=NEXUS_B) == GOOD                   # nothing to release
    pr.out(RESERVE, key=0xA, pr_type=EA)
    assert pr.status(reserve6()) == GOOD and pr.lu.reservation_holder is None   # holder: no-op
    assert pr.status(release6()) == GOOD and pr.reservation() == (0xA, EA)
    assert pr.status(reserve6(), nexus=NEXUS_B) == CONFLICT
    assert pr.status(release6(), nexus=NEXUS_B) == CONFLICT


def test_persistent_reservations_survive_lu_reset_target_reset_and_nexus_loss():
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    pr.out(RESERVE, key=0xA, pr_type=WE)
    pr.target.task_management(TMF.LOGICAL_UNIT_RESET, NEXUS_B, lun=0)
    pr.target.task_management(TMF.TARGET_WARM_RESET, NEXUS_B)
    pr.target.nexus_lost(NEXUS_A)
    pr.target.nexus_logged_out(NEXUS_A)
    for nexus in (NEXUS_A, NEXUS_B, NEXUS_OBSERVER):
        pr.login(nexus)
    assert pr.reservation() == (0xA, WE) and pr.keys()[1] == [0xA]
    assert not can_write(pr, NEXUS_B) and can_write(pr, NEXUS_A)


def test_no_reservation_means_no_pr_object_on_the_fast_path():
    pr = Pr()
    pr.register(NEXUS_A, 0xA)
    assert pr.lu.pr_reservation is None                     # registrations alone gate nothing
    pr.out(RESERVE, key=0xA, pr_type=WE)
    assert isinstance(pr.lu.pr_reservation, Reservation)
    pr.out(RELEASE, key=0xA, pr_type=WE)
    assert pr.lu.pr_reservation is None


# -- ODX commands under reservations ------------------------------------------------------------

def test_copy_manager_rows_carry_pr_classes():
    from odxtarget.copy import CopyManager
    from odxtarget.scsi.command_table import CommandFlags as F

    pr = Pr()
    CopyManager(None).attach(pr.lu)
    flags = {spec.name: spec.flags for spec in pr.lu.commands if spec.opcode in (0x83, 0x84)}
    assert flags["POPULATE TOKEN"] & F.PR_READ
    assert not flags["WRITE USING TOKEN"] & (F.PR_READ | F.PR_ALLOWED)
    assert not flags["EXTENDED COPY(LID1)"] & (F.PR_READ | F.PR_ALLOWED)
    assert all(flags[name] & F.PR_READ for name in flags if name.startswith("RECEIVE"))
    pr.register(NEXUS_A, 0xA)
    pr.out(RESERVE, key=0xA, pr_type=WE)
    wut = bytes((0x83, 0x11, 0, 0, 0, 0)) + struct.pack(">II", 1, 0) + bytes(2)
    assert pr.status(wut, nexus=NEXUS_B) == CONFLICT
    assert pr.status(wut, nexus=NEXUS_A) == GOOD                  # length 0: no-op for the holder


# -- APTPL -----------------------------------------------------------------------------------------

def test_aptpl_state_is_saved_atomically_and_restored(tmp_path):
    path = tmp_path / "state" / "reservations" / file_name_for("unit-lu")
    pr = Pr()
    pr.lu.persist_reservations(ReservationFile(str(path)))
    pr.register(NEXUS_A, 0xA, flags=APTPL)
    pr.register(NEXUS_B, 0xB, flags=APTPL)
    pr.out(RESERVE, key=0xA, pr_type=WE_RO)
    document = json.loads(path.read_text())
    assert document["reservation"]["type"] == WE_RO and len(document["registrations"]) == 2
    assert [name for name in os.listdir(path.parent) if name != path.name] == []   # no temp left
    restarted = Harness()
    assert restarted.lu.persist_reservations(ReservationFile(str(path)))
    state = restarted.lu.persistent_reservations
    assert state.generation == 2 and state.registrations == {NEXUS_A: 0xA, NEXUS_B: 0xB}
    assert restarted.lu.pr_reservation.holder == NEXUS_A
    restarted.login(NEXUS_UNREGISTERED)
    assert restarted.run(write10(1, 1), BLOCK, nexus=NEXUS_UNREGISTERED).status == CONFLICT


def test_aptpl_off_removes_the_file_and_save_failure_rolls_back(tmp_path):
    path = tmp_path / "pr.json"
    pr = Pr()
    pr.lu.persist_reservations(ReservationFile(str(path)))
    pr.register(NEXUS_A, 0xA, flags=APTPL)
    assert path.exists()
    pr.register(NEXUS_A, 0xA)                                    # same key, APTPL=0
    assert not path.exists()

    class BrokenStore:
        def load(self):
            return None

        def save(self, document):
            raise OSError(28, "No space left on device")

        def remove(self):
            raise OSError(28, "No space left on device")

    broken = Pr()
    broken.lu.persist_reservations(BrokenStore())
    result = broken.out(REGISTER_AND_IGNORE, action_key=1, flags=APTPL)
    assert result.status == CHECK and parse_sense(result.sense).key == 4
    assert broken.keys() == (0, [])                              # rolled back


def test_unreadable_store_is_logged_and_ignored(tmp_path, caplog):
    path = tmp_path / "pr.json"
    path.write_text("{not json")
    pr = Harness()
    assert not pr.lu.persist_reservations(ReservationFile(str(path)))
    assert "not restored" in caplog.text and path.exists()


def test_file_names_are_single_path_components():
    assert file_name_for("disk0") == "disk0.json"
    for name in ("../etc/passwd", ".hidden", "a/b", ""):
        escaped = file_name_for(name)
        assert "/" not in escaped and not escaped.startswith(".")


def test_state_machine_without_lu_publishes_reservation():
    published = []
    state = PersistentReservations(published.append)
    state.register(NEXUS_A, 0, 5, ignore_existing=False, aptpl=False)
    state.reserve(NEXUS_A, 5, PrType.EXCLUSIVE_ACCESS)
    assert published[-1].conflicts(NEXUS_B, 0) and not published[-1].conflicts(NEXUS_A, 0)
