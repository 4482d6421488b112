"""Which sessions see their LUNs write-protected (discovery.session_write_protected), decided at
login and again when the administrator publishes a changed target (SessionRegistry.set_target)."""

from __future__ import annotations

from odxtarget.config import AclConfig, TargetConfig
from odxtarget.transport.iscsi.discovery import session_write_protected
from odxtarget.transport.iscsi.negotiation import SessionParameters
from odxtarget.transport.iscsi.session import SessionRegistry

IQN = "iqn.2026-11.org.example:t"
LISTED = "iqn.2026-11.org.example:listed"
STRANGER = "iqn.2026-11.org.example:stranger"


class TargetPortDouble:
    def set_task_aborter(self, aborter) -> None:
        self.aborter = aborter


def target(write_protect: bool) -> TargetConfig:
    return TargetConfig(iqn=IQN, demo_mode=True, demo_mode_write_protect=write_protect,
                        acls=[AclConfig(LISTED)])


def test_only_initiators_no_acl_names_are_write_protected():
    assert session_write_protected(target(True), STRANGER) is True
    assert session_write_protected(target(True), LISTED.upper()) is False   # names compare case-insensitively
    assert session_write_protected(target(False), STRANGER) is False


def test_the_registry_decides_at_login_and_on_a_live_change():
    registry = SessionRegistry([(target(False), TargetPortDouble())])
    stranger = registry.create(session_type="Normal", initiator_name=STRANGER, initiator_alias=None,
                               isid=b"\x40\x00\x01\x37\x00\x00", target_name=IQN,
                               parameters=SessionParameters(), exp_cmd_sn=1)
    listed = registry.create(session_type="Normal", initiator_name=LISTED, initiator_alias=None,
                             isid=b"\x40\x00\x01\x37\x00\x01", target_name=IQN,
                             parameters=SessionParameters(), exp_cmd_sn=1)
    assert (stranger.write_protected, listed.write_protected) == (False, False)
    registry.set_target(target(True), TargetPortDouble())
    assert (stranger.write_protected, listed.write_protected) == (True, False)
    registry.set_target(target(False), TargetPortDouble())
    assert stranger.write_protected is False
