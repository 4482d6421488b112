"""Third-party copy obeys access control as if the initiator read and wrote itself: the copy
manager at the ScsiTarget.execute level, with stand-in ``CopyAccess`` policies and a second
target (X) whose LU ("secret") the test's own target does not map."""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field

import pytest

from odxtarget.scsi.execution import complete_inline
from odxtarget.config import ExtentConfig
from odxtarget.copy.limits import CopyLimits
from odxtarget.copy.params import build_populate_token_list, build_write_using_token_list
from odxtarget.copy.token import creator_descriptor
from odxtarget.copy.xcopy import build_extended_copy
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.pr_state import PrType
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import ItNexus, ScsiCommand, Status
from odxtarget.storage.extents import FileExtentBackend
from tests.support.copy_cdbs import pt_cdb, rart_cdb, rrti_cdb, wut_cdb, xcopy_cdb
from tests.unit.copy.odx_helpers import MIB, NEXUS, OTHER_NEXUS, Env, pattern, sense_triplet

ILLEGAL, COPY_ABORTED = 0x5, 0xA
X_IQN = "iqn.2026-01.org.test:x"
#: The victim: the only initiator target X admits.
VICTIM = ItNexus("iqn.2026-01.org.test:victim,i,0x800000000003", f"{X_IQN},t,0x1")
#: NEXUS's initiator as it would be logged in to target X.
NEXUS_ON_X = ItNexus("iqn.2026-01.org.test:init,i,0x800000000001", f"{X_IQN},t,0x1")
RESERVE_6 = bytes((0x16, 0, 0, 0, 0, 0))
RELEASE_6 = bytes((0x17, 0, 0, 0, 0, 0))
SECRET = pattern(64 * 512, 77)


@dataclass
class Grants:
    """A stand-in ``CopyAccess``: what the test grants, nothing else."""

    reachable: dict[tuple[ItNexus, int], ItNexus] = field(default_factory=dict)
    own_target: set[tuple[ItNexus, int]] = field(default_factory=set)

    def reach(self, nexus: ItNexus, lu: LogicalUnit) -> ItNexus | None:
        return self.reachable.get((nexus, id(lu)))

    def in_own_target(self, nexus: ItNexus, lu: LogicalUnit) -> bool:
        return (nexus, id(lu)) in self.own_target


@dataclass
class TwoTargets:
    env: Env
    mine: LogicalUnit
    secret: LogicalUnit
    x: ScsiTarget

    def on_x(self, cdb: bytes, data: bytes = b"", nexus: ItNexus = VICTIM):
        return complete_inline(self.x.execute(ScsiCommand(cdb=cdb, nexus=nexus, lun=0, data_out=data,
                                          expected_transfer_length=len(data))))

    def secret_token(self, list_id: int = 1, nexus: ItNexus = VICTIM) -> bytes:
        data = build_populate_token_list([(0, 64)])
        assert self.on_x(pt_cdb(list_id, len(data)), data, nexus).status == Status.GOOD
        info = bytes(self.on_x(rrti_cdb(list_id), nexus=nexus).data_in)
        return info[38:550]


def two_targets(env: Env) -> TwoTargets:
    """The test's target maps "mine" (LUN 0) and "other" (LUN 1); target X maps "secret"."""
    mine = env.add_lu(0, name="mine")
    env.add_lu(1, name="other")
    path = os.path.join(env.directory, "secret.img")
    backend = FileExtentBackend([ExtentConfig(path)], 8 * MIB)
    env.backends.append(backend)
    secret = LogicalUnit(LogicalUnitConfig(name="secret", backend=backend, block_size=512))
    env.manager.attach(secret)
    world = TwoTargets(env, mine, secret, ScsiTarget(X_IQN, {0: secret}))
    for nexus in (VICTIM, NEXUS_ON_X):
        world.on_x(bytes(6), nexus=nexus)                 # TEST UNIT READY: the power-on UA
    world.on_x(struct.pack(">BBQIBB", 0x8A, 0, 0, 64, 0, 0), SECRET)     # WRITE(16)
    return world


@pytest.fixture
def world(ext4_env) -> TwoTargets:
    return two_targets(ext4_env)


def cscd(lu: LogicalUnit) -> bytes:
    return creator_descriptor(lu.naa_designator, lu.block_size)


def xcopy(env: Env, data: bytes, lun: int = 0, nexus: ItNexus = NEXUS):
    return env.run(xcopy_cdb(len(data)), data, lun, nexus)


def check(result, key: int, asc: int, ascq: int) -> None:
    assert result.status == Status.CHECK_CONDITION, f"status {result.status:#x}"
    assert sense_triplet(result) == (key, asc, ascq), result.sense.hex()


# -- EXTENDED COPY: CSCDs resolve only within the command's own target ----------------------------

def test_extended_copy_cannot_read_an_lu_of_another_target(world, caplog):
    env = world.env
    before = env.read(0, 0, 64)
    with caplog.at_level(logging.WARNING, logger="odxtarget.copy.manager"):
        result = xcopy(env, build_extended_copy(1, [cscd(world.secret), cscd(world.mine)], [(0, 1, 64, 0, 0)]))
    check(result, COPY_ABORTED, 0x0D, 0x02)
    assert env.read(0, 0, 64) == before != SECRET
    (record,) = [r for r in caplog.records if "EXTENDED COPY refused" in r.getMessage()]
    message = record.getMessage()
    assert repr(NEXUS.initiator_name) in message and "mine" in message
    assert world.secret.naa_designator.hex() in message


def test_extended_copy_cannot_write_an_lu_of_another_target(world):
    env = world.env
    env.write(0, 0, pattern(64 * 512, 5))
    result = xcopy(env, build_extended_copy(1, [cscd(world.mine), cscd(world.secret)], [(0, 1, 64, 0, 0)]))
    check(result, COPY_ABORTED, 0x0D, 0x02)
    assert bytes(world.on_x(struct.pack(">BBQIBB", 0x88, 0, 0, 64, 0, 0)).data_in) == SECRET


def test_unreachable_and_unknown_designators_answer_alike(world):
    env = world.env
    unknown = bytearray(cscd(world.secret))
    unknown[8:24] = bytes(16)
    hidden = xcopy(env, build_extended_copy(1, [cscd(world.secret), cscd(world.mine)], [(0, 1, 8, 0, 0)]))
    absent = xcopy(env, build_extended_copy(1, [bytes(unknown), cscd(world.mine)], [(0, 1, 8, 0, 0)]))
    assert hidden.sense == absent.sense and hidden.status == absent.status


def test_extended_copy_between_lus_of_its_own_target_still_works(world):
    env = world.env
    data = pattern(32 * 512, 6)
    env.write(1, 0, data)
    other = env.luns[1]
    result = xcopy(env, build_extended_copy(1, [cscd(other), cscd(world.mine)], [(0, 1, 32, 0, 100)]))
    assert result.status == Status.GOOD
    assert env.read(0, 100, 32) == data


def test_the_front_end_decides_what_else_is_in_the_own_target(world):
    """A front end whose ScsiTarget holds one LU (LIO) widens the own target through CopyAccess."""
    env = world.env
    env.manager.use_access(Grants(own_target={(NEXUS, id(world.secret))}))
    result = xcopy(env, build_extended_copy(1, [cscd(world.secret), cscd(world.mine)], [(0, 1, 64, 0, 0)]))
    assert result.status == Status.GOOD
    assert env.read(0, 0, 64) == SECRET


# -- EXTENDED COPY: reservations of every copy target -------------------------------------------

def test_extended_copy_source_reserved_by_another_nexus_is_copy_aborted(world):
    env = world.env
    other = env.luns[1]
    env.write(0, 0, pattern(8 * 512, 8))
    before = env.read(0, 0, 1000)
    env.ok(RESERVE_6, lun=1, nexus=OTHER_NEXUS)
    result = xcopy(env, build_extended_copy(1, [cscd(other), cscd(world.mine)], [(0xFFFF, 0xFFFF, 8, 0, 500),
                                                                                 (0, 1, 8, 0, 0)]))
    check(result, COPY_ABORTED, 0x0D, 0x01)
    assert struct.unpack_from(">I", result.sense, 8)[0] == 1          # the failing segment
    assert env.read(0, 0, 1000) == before                              # checked before any segment ran
    env.ok(RELEASE_6, lun=1, nexus=OTHER_NEXUS)
    assert xcopy(env, build_extended_copy(1, [cscd(other), cscd(world.mine)], [(0, 1, 8, 0, 0)])).status == \
        Status.GOOD


def test_extended_copy_obeys_persistent_reservation_access_classes(world):
    """Write Exclusive held by another nexus lets the copy read the LU, not write it; Exclusive
    Access refuses both (SPC-4 5.13.1, as for READ and WRITE)."""
    env = world.env
    other = env.luns[1]
    prs = other.persistent_reservations
    prs.register(OTHER_NEXUS, 0, 0xABC, ignore_existing=False, aptpl=False)
    prs.reserve(OTHER_NEXUS, 0xABC, PrType.WRITE_EXCLUSIVE)
    read_other = build_extended_copy(1, [cscd(other), cscd(world.mine)], [(0, 1, 8, 0, 0)])
    write_other = build_extended_copy(1, [cscd(world.mine), cscd(other)], [(0, 1, 8, 0, 0)])
    assert xcopy(env, read_other).status == Status.GOOD
    check(xcopy(env, write_other), COPY_ABORTED, 0x0D, 0x01)
    prs.release(OTHER_NEXUS, 0xABC, PrType.WRITE_EXCLUSIVE, 0)
    prs.reserve(OTHER_NEXUS, 0xABC, PrType.EXCLUSIVE_ACCESS)
    check(xcopy(env, read_other), COPY_ABORTED, 0x0D, 0x01)


# -- ROD tokens: only a nexus that could read the source LU may use one -------------------------

def test_token_of_an_unreachable_lu_is_unknown(world, caplog):
    env = world.env
    token = world.secret_token()
    before = env.read(0, 0, 64)
    with caplog.at_level(logging.WARNING, logger="odxtarget.copy.manager"):
        result = env.write_using(0, token, [(0, 64)], list_id=9)
    check(result, ILLEGAL, 0x23, 0x04)
    assert env.read(0, 0, 64) == before
    assert any("WRITE USING TOKEN refused" in r.getMessage() and "secret" in r.getMessage()
               for r in caplog.records)
    info = bytes(env.ok(rrti_cdb(9)).data_in)                         # recorded like any token error
    assert info[5] == 0x02 and info[32 + 12:32 + 14] == b"\x23\x04"


def test_token_reachable_through_another_target_is_accepted(world):
    """Windows copies across adapters: a token made through X is usable through the test's own
    target by an initiator that X admits too."""
    env = world.env
    token = world.secret_token(nexus=NEXUS_ON_X)
    env.manager.use_access(Grants(reachable={(NEXUS, id(world.secret)): NEXUS_ON_X}))
    assert env.write_using(0, token, [(0, 64)]).status == Status.GOOD
    assert env.read(0, 0, 64) == SECRET


def test_dead_or_forged_tokens_of_an_unreachable_lu_say_nothing_more(world):
    env = world.env
    token = world.secret_token()
    forged = bytearray(token)
    forged[300] ^= 0xFF
    check(env.write_using(0, bytes(forged), [(0, 64)]), ILLEGAL, 0x23, 0x04)       # not 05h CORRUPT
    env.clock.advance(3600)
    env.manager.housekeeping()
    check(env.write_using(0, token, [(0, 64)]), ILLEGAL, 0x23, 0x04)               # not 07h EXPIRED
    env.manager.use_access(Grants(reachable={(NEXUS, id(world.secret)): NEXUS_ON_X}))
    check(env.write_using(0, token, [(0, 64)]), ILLEGAL, 0x23, 0x07)


def test_token_source_reservations_use_the_nexus_that_reaches_it(world):
    env = world.env
    token = world.secret_token(nexus=NEXUS_ON_X)
    env.manager.use_access(Grants(reachable={(NEXUS, id(world.secret)): NEXUS_ON_X}))
    assert world.on_x(RESERVE_6, nexus=NEXUS_ON_X).status == Status.GOOD
    assert env.write_using(0, token, [(0, 64)], list_id=3).status == Status.GOOD    # its own reservation
    assert world.on_x(RELEASE_6, nexus=NEXUS_ON_X).status == Status.GOOD
    assert world.on_x(RESERVE_6, nexus=VICTIM).status == Status.GOOD
    env.write(0, 0, bytes(64 * 512))
    result = env.write_using(0, token, [(0, 64)], list_id=4)
    assert result.status == Status.RESERVATION_CONFLICT and result.sense == b""
    assert env.read(0, 0, 64) == bytes(64 * 512)
    info = bytes(env.ok(rrti_cdb(4)).data_in)
    assert info[5] == 0x02 and info[12] == 0x18 and info[14] == 0          # no sense data


def test_report_all_rod_tokens_lists_only_usable_tokens(world):
    env = world.env
    mine = env.token(0, [(0, 8)], list_id=1)
    secret = world.secret_token(list_id=2)

    def listed(run) -> list[bytes]:
        data = bytes(run(rart_cdb(4096)).data_in)
        body = data[8:8 + struct.unpack_from(">I", data, 0)[0] - 4]
        return [body[at:at + 96] for at in range(0, len(body), 96)]

    assert listed(lambda cdb: env.ok(cdb)) == [mine[:96]]
    assert listed(lambda cdb: world.on_x(cdb)) == [secret[:96]]
    env.manager.use_access(Grants(reachable={(NEXUS, id(world.secret)): NEXUS_ON_X}))
    assert sorted(listed(lambda cdb: env.ok(cdb))) == sorted([mine[:96], secret[:96]])


# -- quotas per initiator ----------------------------------------------------------------------------

def test_token_quota_per_initiator(ext4_env):
    env = ext4_env
    env.manager.limits = CopyLimits(max_tokens_per_initiator=2)
    env.add_lu(0)
    first = env.token(0, [(0, 8)], list_id=1)
    env.token(0, [(8, 8)], list_id=2)
    check(env.populate(0, [(16, 8)], list_id=3), ILLEGAL, 0x55, 0x0C)
    assert env.populate(0, [(16, 8)], list_id=3, nexus=OTHER_NEXUS).status == Status.GOOD
    assert env.manager.tokens.tokens_of(NEXUS.initiator_name) == 2
    # a deleted token gives its place back
    assert env.write_using(0, first, [(100, 8)], list_id=4, delete_token=True).status == Status.GOOD
    assert env.populate(0, [(16, 8)], list_id=5).status == Status.GOOD


def test_rod_space_quota_per_initiator(xfs_env):
    env = xfs_env
    env.manager.limits = CopyLimits(max_rod_bytes_per_initiator=64 * 512)
    env.add_lu(0)
    token = env.token(0, [(0, 64)], list_id=1)
    assert struct.unpack_from(">I", token, 0)[0] == 0x00800000                     # a snapshot
    check(env.populate(0, [(64, 8)], list_id=2), ILLEGAL, 0x55, 0x0C)
    assert env.manager.tokens.rod_bytes_of(NEXUS.initiator_name) == 64 * 512
    assert env.populate(0, [(64, 8)], list_id=2, nexus=OTHER_NEXUS).status == Status.GOOD
    assert env.manager.revoke_token(struct.unpack_from(">Q", token, 8)[0])
    assert env.populate(0, [(64, 8)], list_id=3).status == Status.GOOD
    assert env.manager.tokens.rod_bytes_of(NEXUS.initiator_name) == 8 * 512


def test_quota_applies_to_immed_populate_token_through_rrti(ext4_env):
    env = ext4_env
    env.manager.limits = CopyLimits(max_tokens_per_initiator=1)
    env.add_lu(0)
    env.token(0, [(0, 8)], list_id=1)
    data = build_populate_token_list([(8, 8)], immed=True)
    assert env.run(pt_cdb(2, len(data)), data).status == Status.GOOD
    info = bytes(env.ok(rrti_cdb(2)).data_in)
    assert info[5] == 0x02 and info[32 + 12:32 + 14] == b"\x55\x0c"


def test_write_using_token_sent_to_x_by_its_own_nexus_needs_no_grant(world):
    """The LU a command addresses and the LUs of its own target are always reachable."""
    token = world.secret_token()
    data = build_write_using_token_list(token, [(1000, 64)])
    assert world.on_x(wut_cdb(5, len(data)), data).status == Status.GOOD
    assert bytes(world.on_x(struct.pack(">BBQIBB", 0x88, 0, 1000, 64, 0, 0)).data_in) == SECRET
