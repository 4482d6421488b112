"""SendTargets answers (RFC 7143 Appendix D) and target visibility."""

from __future__ import annotations

import pytest

from odxtarget.config import AclConfig, PortalConfig, TargetConfig
from odxtarget.transport.iscsi.discovery import (
    format_target_address,
    initiator_may_access,
    send_targets,
    target_addresses,
)
from tests.unit.iscsi_login.helpers import (
    ACL_TARGET,
    INITIATOR,
    OPEN_TARGET,
    OTHER_INITIATOR,
    FakeDirectory,
    standard_directory,
)

ALL_FOR_INITIATOR = [OPEN_TARGET, ACL_TARGET, "iqn.2024-01.org.example:chap", "iqn.2024-01.org.example:mutual",
                     "iqn.2024-01.org.example:oneway"]


def names(pairs):
    return [value for key, value in pairs if key == "TargetName"]


def discover(value, initiator=INITIATOR, **kw):
    return send_targets(value, initiator_name=initiator, session_type="Discovery", session_target=None,
                        directory=kw.pop("directory", standard_directory()), **kw)


def test_all_lists_every_visible_target_with_its_portals():
    pairs = discover("All")
    assert names(pairs) == ALL_FOR_INITIATOR
    assert pairs[:4] == [("TargetName", OPEN_TARGET), ("TargetAddress", "127.0.0.1:3260,1"),
                         ("TargetAddress", "[::1]:3261,1"), ("TargetName", ACL_TARGET)]
    assert pairs[4] == ("TargetAddress", "192.0.2.10:3260,7")


def test_all_hides_targets_whose_acl_does_not_name_the_initiator():
    assert names(discover("All", initiator=OTHER_INITIATOR)) == [OPEN_TARGET, "iqn.2024-01.org.example:chap"]


def test_acl_match_ignores_case():
    target = TargetConfig(iqn="iqn.2024-01.x:t", acls=[AclConfig(INITIATOR.upper())])
    assert initiator_may_access(target, INITIATOR)
    assert not initiator_may_access(target, OTHER_INITIATOR)


def test_named_target_only_if_visible():
    assert names(discover(ACL_TARGET)) == [ACL_TARGET]
    assert discover(ACL_TARGET, initiator=OTHER_INITIATOR) == []
    assert discover("iqn.2024-01.org.example:nosuch") == []


def test_empty_value_in_discovery_lists_nothing():
    assert discover("") == []


@pytest.mark.parametrize("value", ["", "All", OPEN_TARGET])
def test_normal_session_sees_only_its_target(value):
    pairs = send_targets(value, initiator_name=INITIATOR, session_type="Normal", session_target=OPEN_TARGET,
                         directory=standard_directory())
    assert names(pairs) == [OPEN_TARGET]


def test_normal_session_asking_for_another_target_gets_nothing():
    assert send_targets(ACL_TARGET, initiator_name=INITIATOR, session_type="Normal", session_target=OPEN_TARGET,
                        directory=standard_directory()) == []


def test_target_address_formats():
    assert format_target_address("10.0.0.1", 3260, 1) == "10.0.0.1:3260,1"
    assert format_target_address("fe80::1", 3260, 2) == "[fe80::1]:3260,2"
    assert format_target_address("[fe80::1]", 3260, 2) == "[fe80::1]:3260,2"
    assert format_target_address("storage.example.com", 3260, 1) == "storage.example.com:3260,1"


def test_wildcard_portal_reports_the_local_address():
    target = TargetConfig(iqn="iqn.2024-01.x:t", demo_mode=True, tpgt=3,
                          portals=[PortalConfig("0.0.0.0", 3260), PortalConfig("::", 3260)])
    assert target_addresses(target, local_address="192.0.2.5") == ["192.0.2.5:3260,3"]
    assert target_addresses(target) == []


def test_portal_group_tag_override():
    directory = FakeDirectory([TargetConfig(iqn="iqn.2024-01.x:t", demo_mode=True, tpgt=3)])
    pairs = discover("All", directory=directory, portal_group_tag_for=lambda name: 42)
    assert pairs == [("TargetName", "iqn.2024-01.x:t"), ("TargetAddress", "127.0.0.1:3260,42")]
