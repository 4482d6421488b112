"""Admin changes end the sessions the new settings would not admit, or admitted under CHAP
credentials that changed (docs/admin.md, "Live changes"); every other session survives."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from odxtarget.admin.live import withdrawn_admission
from odxtarget.config import AclConfig, ChapConfig, PortalConfig, TargetConfig

from .conftest import IQN

HOST_A = "iqn.2026-11.org.example:host-a"
HOST_B = "iqn.2026-11.org.example:host-b"
HOST_C = "iqn.2026-11.org.example:host-c"
OTHER_IQN = "iqn.2026-11.org.example:other"
SECRET_1, SECRET_2, SECRET_3 = "twelve-chars1", "twelve-chars2", "twelve-chars3"


@dataclass(eq=False)
class StandInSession:
    target_name: str
    initiator_name: str
    tsih: int
    closed: bool = False


@dataclass
class StandInRegistry:
    live: list[StandInSession] = field(default_factory=list)
    ended: list[tuple[str, int, str]] = field(default_factory=list)

    def sessions(self) -> list[StandInSession]:
        return [s for s in self.live if not s.closed]

    def terminate(self, session: StandInSession, reason: str) -> None:
        session.closed = True
        self.ended.append((session.initiator_name, session.tsih, reason))

    def survivors(self) -> set[tuple[str, str]]:
        return {(s.target_name, s.initiator_name) for s in self.sessions()}


class StandInServer:
    """A ``LiveFrontend`` like the iSCSI server; sessions are placed by the test."""

    def __init__(self):
        self.registry = StandInRegistry()
        self.addresses = [("127.0.0.1", 3260)]

    async def start(self) -> None:
        pass

    async def shutdown(self, grace: float = 10.0) -> None:
        pass

    def sessions(self) -> list[dict]:
        return [{"initiator": s.initiator_name, "tsih": s.tsih} for s in self.registry.sessions()]

    def set_target(self, config, scsi_target) -> None:
        pass

    def remove_target(self, iqn: str) -> None:
        pass

    async def add_portal(self, ip: str, port: int, tpgt: int) -> None:
        self.addresses.append((ip, port))

    def remove_portal(self, ip: str, port: int) -> None:
        pass


@pytest.fixture
def served(admin):
    """Two targets, each with a LUN; sessions of hosts A, B, C on the first, A on the other."""
    server = StandInServer()
    admin.daemon.server = server
    admin.call("extent.create", name="disk0", size="4M")
    admin.call("extent.create", name="disk1", size="4M")
    for iqn, disk in ((IQN, "disk0"), (OTHER_IQN, "disk1")):
        admin.call("target.create", iqn=iqn)
        admin.call("lun.create", iqn=iqn, storage_object=disk)
        admin.call("tpg.set", iqn=iqn, demo_mode=True)
    for tsih, (iqn, host) in enumerate([(IQN, HOST_A), (IQN, HOST_B), (IQN, HOST_C), (OTHER_IQN, HOST_A)], 1):
        server.registry.live.append(StandInSession(iqn, host, tsih))
    return server.registry


def test_demo_mode_off_ends_the_sessions_no_acl_names(admin, served, caplog):
    admin.call("acl.create", iqn=IQN, initiator=HOST_A)
    assert served.ended == []                                  # demo mode still admits everyone
    with caplog.at_level(logging.WARNING, logger="odxtarget.admin"):
        admin.call("tpg.set", iqn=IQN, demo_mode=False)
    reason = "demo mode turned off and no ACL names the initiator"
    assert sorted(served.ended) == [(HOST_B, 2, reason), (HOST_C, 3, reason)]
    assert served.survivors() == {(IQN, HOST_A), (OTHER_IQN, HOST_A)}
    lines = [r.getMessage() for r in caplog.records if "ending the session" in r.getMessage()]
    assert len(lines) == 2 and all(IQN in line and reason in line for line in lines)
    assert any(HOST_B in line for line in lines) and any(HOST_C in line for line in lines)


def test_removing_an_acl_ends_that_initiators_sessions_unless_demo_mode_admits_it(admin, served):
    for host in (HOST_A, HOST_B, HOST_C):
        admin.call("acl.create", iqn=IQN, initiator=host)
    admin.call("tpg.set", iqn=IQN, demo_mode=False)
    assert served.ended == []
    admin.call("acl.delete", iqn=IQN, initiator=HOST_B)
    assert served.ended == [(HOST_B, 2, "ACL deleted by the administrator")]
    admin.call("tpg.set", iqn=IQN, demo_mode=True)
    admin.call("acl.delete", iqn=IQN, initiator=HOST_C)       # demo mode admits host C anyway
    assert len(served.ended) == 1
    assert served.survivors() == {(IQN, HOST_A), (IQN, HOST_C), (OTHER_IQN, HOST_A)}


def test_changing_target_chap_ends_the_sessions_that_used_it(admin, served):
    admin.call("tpg.set_auth", iqn=IQN, userid="shared", password=SECRET_1)
    reason = "CHAP credentials changed by the administrator"
    assert sorted(served.ended) == [(HOST_A, 1, reason), (HOST_B, 2, reason), (HOST_C, 3, reason)]
    assert served.survivors() == {(OTHER_IQN, HOST_A)}            # the other target is untouched
    served.ended.clear()
    for tsih, host in enumerate((HOST_A, HOST_B, HOST_C), 10):     # they log in again with CHAP
        served.live.append(StandInSession(IQN, host, tsih))
    admin.call("acl.create", iqn=IQN, initiator=HOST_A)
    admin.call("acl.set_auth", iqn=IQN, initiator=HOST_A, userid="host-a", password=SECRET_2)
    assert served.ended == [(HOST_A, 10, reason)]                   # A now needs its own credentials
    served.live.append(StandInSession(IQN, HOST_A, 20))
    admin.call("tpg.set_auth", iqn=IQN, password=SECRET_3)
    assert sorted(served.ended[1:]) == [(HOST_B, 11, reason), (HOST_C, 12, reason)]   # A used its own
    assert (IQN, HOST_A) in served.survivors()


def test_changing_an_acls_chap_ends_only_that_initiators_sessions(admin, served):
    for host in (HOST_A, HOST_B):
        admin.call("acl.create", iqn=IQN, initiator=host)
    admin.call("acl.set_auth", iqn=IQN, initiator=HOST_B, userid="host-b", password=SECRET_1)
    assert served.ended == [(HOST_B, 2, "CHAP credentials changed by the administrator")]
    served.live.append(StandInSession(IQN, HOST_B, 5))
    admin.call("acl.set_auth", iqn=IQN, initiator=HOST_B, mutual_userid="target", mutual_password=SECRET_2)
    assert served.ended[1:] == [(HOST_B, 5, "CHAP credentials changed by the administrator")]
    assert served.survivors() == {(IQN, HOST_A), (IQN, HOST_C), (OTHER_IQN, HOST_A)}


def test_changes_that_admit_the_same_way_end_nothing(admin, served):
    admin.call("acl.create", iqn=IQN, initiator=HOST_A)         # demo mode on: nobody's credentials change
    admin.call("portal.create", iqn=IQN, ip="127.0.0.1", port=3261)
    admin.call("lun.delete", iqn=IQN, lun=0)
    assert served.ended == []


def _target(demo_mode: bool = False, chap: ChapConfig | None = None, acls: tuple[AclConfig, ...] = ()) -> TargetConfig:
    return TargetConfig(iqn=IQN, portals=[PortalConfig("127.0.0.1", 3260)], demo_mode=demo_mode,
                        chap=chap, acls=list(acls))


@pytest.mark.parametrize("before, after, initiator, expected", [
    (_target(True), _target(True), HOST_A, None),
    (_target(True), _target(False), HOST_A, "demo mode turned off and no ACL names the initiator"),
    (_target(True), _target(False, acls=(AclConfig(HOST_A.upper()),)), HOST_A, None),   # names compare caselessly
    (_target(False, acls=(AclConfig(HOST_A),)), _target(False), HOST_A, "ACL deleted by the administrator"),
    (_target(False, acls=(AclConfig(HOST_A),)), _target(True), HOST_A, None),
    (_target(True, acls=(AclConfig(HOST_A, ChapConfig("a", SECRET_1)),)), _target(True), HOST_A,
     "CHAP credentials changed by the administrator"),
    (_target(True, ChapConfig("t", SECRET_1), (AclConfig(HOST_A, ChapConfig("a", SECRET_2)),)),
     _target(True, ChapConfig("t", SECRET_3), (AclConfig(HOST_A, ChapConfig("a", SECRET_2)),)), HOST_A, None),
    (_target(True, ChapConfig("t", SECRET_1)), _target(True, ChapConfig("t", SECRET_1, "m", SECRET_2)), HOST_A,
     "CHAP credentials changed by the administrator"),
])
def test_withdrawn_admission(before, after, initiator, expected):
    assert withdrawn_admission(before, after, initiator) == expected
