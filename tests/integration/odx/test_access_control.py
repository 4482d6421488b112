"""Third-party copy obeys access control, through the real daemon and libiscsi (docs/odx.md,
"Access control"). One daemon, two targets:

* Y (the main target, demo mode): LUN 0 "mine", LUN 1 "spare";
* X (ACL: VICTIM and BOTH only): LUN 0 "secret".

ATTACKER may log in to Y only. It knows (or guesses) the secret LU's NAA designator, which
derives from its name like every LU's, and tries to copy it out with EXTENDED COPY or a ROD
token: the bug class of CVE-2020-28374 / CVE-2021-3139.
"""

from __future__ import annotations

import struct

import pytest

from odxtarget.copy.token import creator_descriptor
from odxtarget.copy.xcopy import build_extended_copy
from odxtarget.scsi.lu import derive_naa, derive_serial
from tests.integration.odx.odx_support import (
    BLOCK, CHECK, COPY_ABORTED, GOOD, INSUFFICIENT_RESOURCES_TO_CREATE_ROD, MIB, TOKEN_UNKNOWN, OdxSession, check,
    pattern,
)
from tests.support.copy_cdbs import rart_cdb, xcopy_cdb
from tests.support.daemon import AclSpec, DaemonProcess, DaemonSpec, LunSpec, TargetSpec

pytestmark = [pytest.mark.integration]

X_IQN = "iqn.2026-11.org.odxtarget:x"
VICTIM = "iqn.2026-11.org.example:victim"
BOTH = "iqn.2026-11.org.example:both"
ATTACKER = "iqn.2026-11.org.example:attacker"
SIZE = 16 * MIB
SECRET_BYTES = 1 * MIB
COPY_TARGET_NOT_REACHABLE = (CHECK, COPY_ABORTED, 0x0D, 0x02)
THIRD_PARTY_DEVICE_FAILURE = (CHECK, COPY_ABORTED, 0x0D, 0x01)
RESERVATION_CONFLICT = 0x18
RESERVE_6 = bytes((0x16, 0, 0, 0, 0, 0))
RELEASE_6 = bytes((0x17, 0, 0, 0, 0, 0))


@pytest.fixture
def filesystem() -> str:
    """Access control does not depend on the ROD type: ext4 only."""
    return "ext4"


def two_targets(odx: dict | None = None) -> DaemonSpec:
    return DaemonSpec(
        luns=[LunSpec(0, SIZE, name="mine"), LunSpec(1, SIZE, name="spare")],
        demo_mode=True,
        extra_targets=[TargetSpec(X_IQN, luns=[LunSpec(0, SIZE, name="secret")],
                                  acls=[AclSpec(VICTIM), AclSpec(BOTH)])],
        extra_config={"odx": odx} if odx else {},
    )


def designator_of(storage_object: str) -> bytes:
    """The E4h CSCD descriptor of an LU, from its name alone: what an attacker can guess."""
    return creator_descriptor(derive_naa(derive_serial(storage_object)), BLOCK)


@pytest.fixture
def daemon(start_daemon) -> DaemonProcess:
    return start_daemon(two_targets())


def on_x(daemon: DaemonProcess, initiator: str) -> OdxSession:
    return OdxSession(daemon, initiator, iqn=X_IQN, luns=[0])


def on_y(daemon: DaemonProcess, initiator: str) -> OdxSession:
    return OdxSession(daemon, initiator)


def xcopy(session: OdxSession, lun: int, cscds: list[bytes], segments: list[tuple]):
    data = build_extended_copy(1, cscds, segments)
    return session.command(lun, xcopy_cdb(len(data)), data)


def listed_tokens(session: OdxSession, lun: int) -> list[bytes]:
    data = check(session.command(lun, rart_cdb(8192), data_in_len=8192), GOOD, "REPORT ALL ROD TOKENS").data
    body = data[8:4 + struct.unpack_from(">I", data, 0)[0]]
    return [body[at:at + 96] for at in range(0, len(body), 96)]


def test_extended_copy_cannot_copy_another_targets_lu(daemon: DaemonProcess):
    with on_x(daemon, VICTIM) as victim, on_y(daemon, ATTACKER) as attacker:
        secret = victim.fill(0, 0, SECRET_BYTES, seed=1)
        assert victim.token(0, [(0, 8)])[16:48] == designator_of("secret")      # the guess is right
        before = attacker.read(0, 0, SECRET_BYTES)
        blocks = SECRET_BYTES // BLOCK
        result = xcopy(attacker, 0, [designator_of("secret"), designator_of("mine")], [(0, 1, blocks, 0, 0)])
        check(result, COPY_TARGET_NOT_REACHABLE, "EXTENDED COPY from target X's LU")
        assert attacker.read(0, 0, SECRET_BYTES) == before != secret
        # swapped: the attacker's data must not overwrite the victim's either
        attacker.fill(0, 0, SECRET_BYTES, seed=2)
        result = xcopy(attacker, 0, [designator_of("mine"), designator_of("secret")], [(0, 1, blocks, 0, 0)])
        check(result, COPY_TARGET_NOT_REACHABLE, "EXTENDED COPY onto target X's LU")
        assert victim.read(0, 0, SECRET_BYTES) == secret
    log = daemon.log_text()
    assert "EXTENDED COPY refused" in log and repr(ATTACKER) in log and "LU secret" in log
    assert derive_naa(derive_serial("secret")).hex() in log


def test_extended_copy_within_its_own_target_still_works(daemon: DaemonProcess):
    with on_y(daemon, ATTACKER) as session:
        data = session.fill(1, 0, SECRET_BYTES, seed=3)
        blocks = SECRET_BYTES // BLOCK
        check(xcopy(session, 0, [designator_of("spare"), designator_of("mine")], [(0, 1, blocks, 0, 4096)]),
              GOOD, "EXTENDED COPY between LUNs of one target")
        assert session.read(0, 4096, SECRET_BYTES) == data


def test_tokens_are_usable_only_by_initiators_that_could_read_their_source(daemon: DaemonProcess):
    with on_x(daemon, VICTIM) as victim, on_y(daemon, ATTACKER) as attacker, \
            on_x(daemon, BOTH) as both_on_x, on_y(daemon, BOTH) as both_on_y:
        secret = victim.fill(0, 0, SECRET_BYTES, seed=4)
        blocks = SECRET_BYTES // BLOCK
        token = victim.token(0, [(0, blocks)])
        before = attacker.read(0, 0, SECRET_BYTES)
        check(attacker.write_using(0, token, [(0, blocks)])[1], TOKEN_UNKNOWN, "a token of target X")
        assert attacker.read(0, 0, SECRET_BYTES) == before != secret
        # Windows copying across adapters: made through X, written through Y by one initiator
        own = both_on_x.token(0, [(0, blocks)])
        check(both_on_y.write_using(0, own, [(8192, blocks)])[1], GOOD, "a token across targets")
        assert both_on_y.read(0, 8192, SECRET_BYTES) == secret


def test_report_all_rod_tokens_lists_only_usable_tokens(daemon: DaemonProcess):
    with on_x(daemon, VICTIM) as victim, on_y(daemon, ATTACKER) as attacker, on_y(daemon, BOTH) as both:
        secret_token = victim.token(0, [(0, 8)])
        mine_token = attacker.token(0, [(0, 8)])
        assert listed_tokens(attacker, 0) == [mine_token[:96]]
        assert sorted(listed_tokens(both, 0)) == sorted([secret_token[:96], mine_token[:96]])


def test_a_reservation_on_the_source_by_another_initiator_fails_the_copy(daemon: DaemonProcess):
    with on_x(daemon, VICTIM) as victim, on_x(daemon, BOTH) as both_on_x, on_y(daemon, BOTH) as both_on_y, \
            on_y(daemon, ATTACKER) as attacker:
        secret = victim.fill(0, 0, 64 * BLOCK, seed=5)
        token = both_on_x.token(0, [(0, 64)])
        check(victim.command(0, RESERVE_6), GOOD, "RESERVE(6) by the victim")
        list_id, result = both_on_y.write_using(0, token, [(0, 64)])
        assert result.acknowledged and result.status == RESERVATION_CONFLICT, result.describe()
        assert both_on_y.rrti_parsed(0, list_id).completion_status == RESERVATION_CONFLICT
        check(victim.command(0, RELEASE_6), GOOD, "RELEASE(6)")
        check(both_on_y.write_using(0, token, [(0, 64)])[1], GOOD, "WUT once released")
        assert both_on_y.read(0, 0, 64 * BLOCK) == secret
        # EXTENDED COPY: a reserved copy target ends the command with COPY ABORTED
        check(both_on_y.command(1, RESERVE_6), GOOD, "RESERVE(6) of the spare LU")
        result = xcopy(attacker, 0, [designator_of("spare"), designator_of("mine")], [(0, 1, 64, 0, 0)])
        check(result, THIRD_PARTY_DEVICE_FAILURE, "EXTENDED COPY from a reserved LU")


def test_token_quota_per_initiator(start_daemon):
    daemon = start_daemon(two_targets({"max_tokens_per_initiator": 2}))
    with on_y(daemon, ATTACKER) as attacker, on_y(daemon, BOTH) as both:
        attacker.token(0, [(0, 8)])
        attacker.token(0, [(8, 8)])
        check(attacker.populate(0, [(16, 8)])[1], INSUFFICIENT_RESOURCES_TO_CREATE_ROD, "a third token")
        assert len(both.token(0, [(16, 8)])) == 512                  # another initiator is not starved
