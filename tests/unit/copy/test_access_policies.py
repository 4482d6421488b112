"""The front ends' ``CopyAccess`` policies: the native iSCSI server's (targets and ACLs, read
live) and LIO's (the configured TPGs, whoever the sender was)."""

from __future__ import annotations

from odxtarget.config import AclConfig, ChapConfig, LunMapping, MappedLunConfig, TargetConfig
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import ItNexus
from odxtarget.storage.memory import MemoryBackend
from odxtarget.transport.iscsi.copy_access import IscsiCopyAccess, isid_of, target_name_of
from odxtarget.transport.iscsi.session import make_nexus
from odxtarget.transport.tcmu.copy_access import LioCopyAccess
from odxtarget.transport.tcmu.processor import lu_nexus

HOST = "iqn.2026-01.org.test:host"
STRANGER = "iqn.2026-01.org.test:stranger"
X, Y, Z = "iqn.2026-01.org.test:x", "iqn.2026-01.org.test:y", "iqn.2026-01.org.test:z"
ISID = bytes.fromhex("400001370000")


def unit(name: str) -> LogicalUnit:
    return LogicalUnit(LogicalUnitConfig(name=name, backend=MemoryBackend(1 << 20), block_size=512))


SECRET = ChapConfig("host", "secret-of-x1")


def target(iqn: str, names: list[str], *, acls: tuple[str, ...] = (), demo: bool = False, tpgt: int = 1,
           chap: ChapConfig | None = None, acl_chap: ChapConfig | None = None):
    return TargetConfig(iqn, luns=[LunMapping(lun, name) for lun, name in enumerate(names)],
                        acls=[AclConfig(initiator, acl_chap) for initiator in acls], demo_mode=demo, tpgt=tpgt,
                        chap=chap)


# -- native iSCSI ---------------------------------------------------------------------------------

class Iscsi:
    """Targets X (ACL: HOST; LUs a, b), Y (demo mode; LU c at LUN 7) and Z (ACL: STRANGER; LU d)."""

    def __init__(self):
        self.lus = {name: unit(name) for name in "abcd"}
        self.entries = [
            (target(X, ["a", "b"], acls=(HOST,)), ScsiTarget(X, {0: self.lus["a"], 1: self.lus["b"]})),
            (target(Y, ["c"], demo=True, tpgt=3), ScsiTarget(Y, {7: self.lus["c"]})),
            (target(Z, ["d"], acls=(STRANGER,)), ScsiTarget(Z, {0: self.lus["d"]})),
        ]
        self.access = IscsiCopyAccess(lambda: self.entries)


def test_port_names_parse_back():
    nexus = make_nexus(HOST, ISID, X, 5)
    assert isid_of(nexus) == ISID and target_name_of(nexus) == X


def test_iscsi_own_target_gives_the_nexus_itself():
    world = Iscsi()
    nexus = make_nexus(HOST, ISID, X, 1)
    assert world.access.reach(nexus, world.lus["b"]) is nexus
    assert world.access.in_own_target(nexus, world.lus["b"])
    assert not world.access.in_own_target(nexus, world.lus["c"])


def test_iscsi_other_admitting_target_gives_the_initiators_nexus_there():
    world = Iscsi()
    nexus = make_nexus(HOST, ISID, X, 1)
    assert world.access.reach(nexus, world.lus["c"]) == make_nexus(HOST, ISID, Y, 3)   # demo mode
    assert world.access.reach(nexus, world.lus["d"]) is None                           # Z's ACL


def test_iscsi_acl_names_compare_case_insensitively_and_changes_apply_live():
    world = Iscsi()
    nexus = make_nexus(HOST.upper(), ISID, Y, 3)
    assert world.access.reach(nexus, world.lus["a"]) == make_nexus(HOST.upper(), ISID, X, 1)
    world.entries[0] = (target(X, ["a", "b"], acls=(STRANGER,)), world.entries[0][1])   # ACL replaced
    assert world.access.reach(nexus, world.lus["a"]) is None


def test_iscsi_a_claimed_name_does_not_open_a_target_that_demands_chap():
    """Names are claims: a target that demands a CHAP secret counts only when the initiator
    proved that same secret to its own target."""
    world = Iscsi()
    x_target = world.entries[0][1]
    world.entries[0] = (target(X, ["a", "b"], acls=(HOST,), acl_chap=SECRET), x_target)
    on_y = make_nexus(HOST, ISID, Y, 3)
    assert world.access.reach(on_y, world.lus["a"]) is None
    world.entries[1] = (target(Y, ["c"], demo=True, tpgt=3, chap=ChapConfig("host", "secret-of-x1")),
                        world.entries[1][1])
    assert world.access.reach(on_y, world.lus["a"]) == make_nexus(HOST, ISID, X, 1)


def test_iscsi_an_lu_nobody_maps_is_unreachable():
    world = Iscsi()
    assert world.access.reach(make_nexus(HOST, ISID, X, 1), unit("e")) is None


# -- LIO ------------------------------------------------------------------------------------------

def lio(targets: list[TargetConfig], lus: dict[str, LogicalUnit]) -> tuple[LioCopyAccess, dict[str, ItNexus]]:
    nexuses = {name: lu_nexus(name) for name in lus}
    by_nexus = {nexus: name for name, nexus in nexuses.items()}
    return LioCopyAccess(targets, by_nexus.get), nexuses


def test_lio_copies_stay_within_tpgs_that_export_both_lus():
    lus = {name: unit(name) for name in "abc"}
    access, nexus = lio([target(X, ["a", "b"], demo=True), target(Y, ["b", "c"], demo=True)], lus)
    assert access.in_own_target(nexus["a"], lus["b"])           # every TPG with a has b
    assert not access.in_own_target(nexus["b"], lus["a"])       # b is also in Y, which lacks a
    assert not access.in_own_target(nexus["a"], lus["c"])


def test_lio_tokens_follow_who_each_tpg_admits():
    lus = {name: unit(name) for name in "abcd"}
    targets = [
        target(X, ["a"], acls=(HOST,)),
        target(Y, ["b"], acls=(HOST, STRANGER)),
        target(Z, ["c"], demo=True),
        target("iqn.2026-01.org.test:w", ["d"], acls=(STRANGER,)),
    ]
    access, nexus = lio(targets, lus)
    assert access.reach(nexus["a"], lus["b"]) == nexus["a"]     # X admits HOST, Y admits HOST too
    assert access.reach(nexus["b"], lus["a"]) is None           # Y admits STRANGER, X does not
    assert access.reach(nexus["a"], lus["c"]) == nexus["a"]     # a demo-mode TPG admits anyone
    assert access.reach(nexus["c"], lus["a"]) is None           # ... so its initiators reach only demo TPGs
    assert access.reach(nexus["b"], lus["d"]) is None           # HOST cannot reach d


def test_lio_tokens_need_the_same_chap_secret_on_both_tpgs():
    lus = {name: unit(name) for name in "ab"}
    plain, nexus = lio([target(X, ["a"], acls=(HOST,)), target(Y, ["b"], acls=(HOST,), acl_chap=SECRET)], lus)
    assert plain.reach(nexus["a"], lus["b"]) is None
    same, nexus = lio([target(X, ["a"], acls=(HOST,), acl_chap=SECRET),
                       target(Y, ["b"], acls=(HOST,), acl_chap=ChapConfig("host", "secret-of-x1"))], lus)
    assert same.reach(nexus["a"], lus["b"]) == nexus["a"]
    demo, nexus = lio([target(X, ["a"], demo=True), target(Y, ["b"], demo=True, chap=SECRET)], lus)
    assert demo.reach(nexus["a"], lus["b"]) is None


def test_lio_unknown_device_reaches_nothing():
    lus = {"a": unit("a"), "b": unit("b")}
    access, _ = lio([target(X, ["a", "b"], demo=True)], lus)
    stray = lu_nexus("not-ours")
    assert access.reach(stray, lus["b"]) is None and not access.in_own_target(stray, lus["b"])


def test_lio_mapped_luns_narrow_what_copies_reach():
    """LUN masking: a TPG exports an LU only to the initiators whose mapped LUNs show it, and a
    CSCD's LU must be writable for every initiator that reaches the addressed one."""
    lus = {name: unit(name) for name in "ab"}
    masked = TargetConfig(X, luns=[LunMapping(0, "a"), LunMapping(1, "b")],
                          acls=[AclConfig(HOST, mapped_luns=[MappedLunConfig(0, 0)]),
                                AclConfig(STRANGER)])
    access, nexus = lio([masked], lus)
    assert not access.in_own_target(nexus["a"], lus["b"])      # HOST reaches a but not b
    assert access.reach(nexus["a"], lus["b"]) is None
    assert access.in_own_target(nexus["b"], lus["a"])           # only STRANGER reaches b; it sees a
    protected = TargetConfig(X, luns=[LunMapping(0, "a"), LunMapping(1, "b")],
                             acls=[AclConfig(HOST, mapped_luns=[MappedLunConfig(0, 0),
                                                                MappedLunConfig(1, 1, write_protect=True)])])
    access, nexus = lio([protected], lus)
    assert access.reach(nexus["a"], lus["b"]) == nexus["a"]     # b is readable: its tokens are usable
    assert not access.in_own_target(nexus["a"], lus["b"])       # but no EXTENDED COPY may write it


def test_iscsi_mapped_luns_narrow_what_copies_reach():
    """The native front end answers from the initiator's own LUN map at each target."""
    world = Iscsi()
    world.entries[0] = (TargetConfig(X, luns=[LunMapping(0, "a"), LunMapping(1, "b")],
                                     acls=[AclConfig(HOST, mapped_luns=[MappedLunConfig(0, 1)])]),
                        world.entries[0][1])
    on_x = make_nexus(HOST, ISID, X, 1)
    assert world.access.in_own_target(on_x, world.lus["b"])
    assert not world.access.in_own_target(on_x, world.lus["a"])     # X maps a, HOST's map does not
    on_y = make_nexus(HOST, ISID, Y, 3)
    assert world.access.reach(on_y, world.lus["b"]) == on_x
    assert world.access.reach(on_y, world.lus["a"]) is None
