"""Portals separate targets: one daemon serves target X on 127.0.0.1:P1 and target Y on
127.0.0.1:P2 (and, on P1, a target Z whose ACL admits one other initiator only).

A target is reachable, and listed by SendTargets, only through its own portals, and never listed
to an initiator its ACL refuses (docs/security.md, "Portals"; RFC 7143 Appendix D: SendTargets
reports the targets the initiator may access, with their addresses).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.adversarial.support import (
    LOGIN_NOT_FOUND, RAW_INITIATOR, Arena, DaemonLog, adversary_spec, assert_logs_clean, describe_pdu, start_arena)
from tests.integration.raw_initiator import NOP_IN, TEXT_RSP, LoginFailed, RawInitiator, encode_text
from tests.support.daemon import MAIN_PORTAL, MIB, AclSpec, LunSpec, TargetSpec

pytestmark = pytest.mark.integration

TARGET_Y = "iqn.2026-11.org.odxtarget:portal-y"
TARGET_Z = "iqn.2026-11.org.odxtarget:acl-only"
Z_ADMIN = "iqn.2026-11.org.odxtarget.test:z-admin"
SECOND_PORTAL = "second"
TPGT_Y = 2


@pytest.fixture(scope="module")
def portal_arena(session_daemon_factory) -> Iterator[Arena]:
    spec = adversary_spec(extra_targets=[
        TargetSpec(iqn=TARGET_Y, luns=[LunSpec(lun=0, size=8 * MIB, name="y0")], portals=[SECOND_PORTAL],
                   tpgt=TPGT_Y, demo_mode=True),
        TargetSpec(iqn=TARGET_Z, luns=[LunSpec(lun=0, size=8 * MIB, name="z0")], portals=[MAIN_PORTAL],
                   acls=[AclSpec(Z_ADMIN)], demo_mode=False),
    ])
    arena = start_arena(session_daemon_factory(spec))
    yield arena       # at the end the daemon's whole log is checked once more
    arena.witness.stop()
    arena.daemon.stop()
    assert_logs_clean([arena.daemon])


@pytest.fixture
def arena(portal_arena: Arena, attach_log_on_failure) -> Arena:
    """The shared daemon, with the witness and the log marked at the start of this test."""
    log = DaemonLog(portal_arena.daemon)
    attach_log_on_failure(log)
    return Arena(portal_arena.daemon, portal_arena.witness, log)


def port_of(arena: Arena, portal: str) -> int:
    return arena.daemon.ports[portal]


def discover(arena: Arena, portal: str, *, initiator: str = RAW_INITIATOR, value: str = "All") -> dict[str, list[str]]:
    """SendTargets=<value> in a discovery session through ``portal``: target name -> its addresses."""
    raw = RawInitiator(arena.daemon.host, port_of(arena, portal), initiator=initiator)
    try:
        raw.login("", session_type="Discovery")
        answer, pairs = raw.text(encode_text({"SendTargets": value}))
        assert answer.opcode == TEXT_RSP and answer.flags & 0x80, describe_pdu(answer)
    finally:
        raw.close()
    targets: dict[str, list[str]] = {}
    current = None
    for key, item in pairs:
        if key == "TargetName":
            current = targets.setdefault(item, [])
        else:
            assert key == "TargetAddress" and current is not None, f"unexpected pair {key}={item} in {pairs}"
            current.append(item)
    return targets


def listing(arena: Arena, *targets: tuple[str, str, int]) -> dict[str, list[str]]:
    """What SendTargets must report for (iqn, portal name, tpgt) triples: each with one address."""
    return {iqn: [f"127.0.0.1:{port_of(arena, portal)},{tpgt}"] for iqn, portal, tpgt in targets}


@pytest.mark.parametrize(("target", "portal"), [(TARGET_Y, MAIN_PORTAL), ("X", SECOND_PORTAL)],
                         ids=["Y-through-P1", "X-through-P2"])
def test_login_through_another_targets_portal_is_not_found(arena: Arena, target: str, portal: str) -> None:
    """02/03 NOT FOUND: "the requested iSCSI Target Name does not exist at this address"
    (RFC 7143 11.13.5)."""
    iqn = arena.daemon.iqn if target == "X" else target
    raw = RawInitiator(arena.daemon.host, port_of(arena, portal))
    with pytest.raises(LoginFailed) as refused:
        raw.login(iqn)
    raw.close()
    assert (refused.value.status_class, refused.value.status_detail) == LOGIN_NOT_FOUND
    arena.assert_everyone_else_served()


def test_login_through_the_targets_own_portal_works(arena: Arena) -> None:
    raw = RawInitiator(arena.daemon.host, port_of(arena, SECOND_PORTAL))
    raw.login(TARGET_Y)
    assert raw.ping().opcode == NOP_IN
    raw.close()
    arena.assert_everyone_else_served()


def test_send_targets_through_a_portal_lists_only_its_targets(arena: Arena) -> None:
    """Discovery through P1 lists X with P1's address only (Z's ACL refuses this initiator);
    through P2 it lists Y with P2's address only."""
    assert discover(arena, MAIN_PORTAL) == listing(arena, (arena.daemon.iqn, MAIN_PORTAL, 1))
    assert discover(arena, SECOND_PORTAL) == listing(arena, (TARGET_Y, SECOND_PORTAL, TPGT_Y))
    arena.assert_everyone_else_served()


def test_send_targets_by_name_does_not_reach_through_another_portal(arena: Arena) -> None:
    """SendTargets=<Y> through P1 reports nothing: Y is not behind P1 (Appendix D)."""
    assert discover(arena, MAIN_PORTAL, value=TARGET_Y) == {}
    arena.assert_everyone_else_served()


def test_target_is_listed_only_to_initiators_its_acl_admits(arena: Arena) -> None:
    """Z appears for the initiator its ACL names and for nobody else, by All or by name."""
    assert discover(arena, MAIN_PORTAL, initiator=Z_ADMIN) == listing(
        arena, (arena.daemon.iqn, MAIN_PORTAL, 1), (TARGET_Z, MAIN_PORTAL, 1))
    assert discover(arena, MAIN_PORTAL, value=TARGET_Z) == {}
    arena.assert_everyone_else_served()
