"""The mapped_lun operations (LUN masking, docs/admin.md): validation, saving, and the sessions
whose map changed ending while every other session survives."""

from __future__ import annotations

import json

import pytest

from odxtarget.admin.protocol import AdminError
from odxtarget.config import load_config

from .conftest import IQN
from .test_session_admission import HOST_A, HOST_B, OTHER_IQN, StandInServer, StandInSession

REASON = "its mapped LUNs changed by the administrator"


@pytest.fixture
def served(admin):
    """One target with LUNs 0 and 1 and ACLs for hosts A and B (each logged in), plus another
    target where host A is logged in too."""
    server = StandInServer()
    admin.daemon.server = server
    for name in ("disk0", "disk1", "disk2"):
        admin.call("extent.create", name=name, size="4M")
    admin.call("target.create", iqn=IQN)
    admin.call("lun.create", iqn=IQN, storage_object="disk0")
    admin.call("lun.create", iqn=IQN, storage_object="disk1")
    for host in (HOST_A, HOST_B):
        admin.call("acl.create", iqn=IQN, initiator=host)
    admin.call("target.create", iqn=OTHER_IQN)
    admin.call("lun.create", iqn=OTHER_IQN, storage_object="disk2")
    admin.call("tpg.set", iqn=OTHER_IQN, demo_mode=True)
    for tsih, (iqn, host) in enumerate([(IQN, HOST_A), (IQN, HOST_B), (OTHER_IQN, HOST_A)], 1):
        server.registry.live.append(StandInSession(iqn, host, tsih))
    return server.registry


def _acl(admin, initiator: str) -> dict:
    target = next(t for t in admin.call("config.get")["targets"] if t["iqn"] == IQN)
    return next(a for a in target["acls"] if a["initiator"] == initiator)


def test_creating_a_mapped_lun_masks_the_acl_and_ends_only_its_sessions(admin, served):
    result = admin.call("mapped_lun.create", iqn=IQN, initiator=HOST_A, mapped_lun="0", lun="1",
                        write_protect="true")
    assert (result["mapped_lun"], result["lun"], result["write_protect"]) == (0, 1, True)
    assert _acl(admin, HOST_A)["mapped_luns"] == [{"mapped_lun": 0, "lun": 1, "write_protect": True}]
    assert "mapped_luns" not in _acl(admin, HOST_B)
    assert served.ended == [(HOST_A, 1, REASON)]
    assert served.survivors() == {(IQN, HOST_B), (OTHER_IQN, HOST_A)}


def test_deleting_a_mapped_lun_ends_the_sessions_and_leaves_an_empty_map(admin, served):
    admin.call("mapped_lun.create", iqn=IQN, initiator=HOST_B, mapped_lun=3, lun=0)
    served.live.append(StandInSession(IQN, HOST_B, 9))
    admin.call("mapped_lun.delete", iqn=IQN, initiator=HOST_B, mapped_lun=3)
    assert served.ended == [(HOST_B, 2, REASON), (HOST_B, 9, REASON)]
    assert _acl(admin, HOST_B)["mapped_luns"] == []


def test_a_target_lun_change_ends_only_the_sessions_whose_map_shows_it(admin, served):
    admin.call("mapped_lun.create", iqn=IQN, initiator=HOST_A, mapped_lun=0, lun=1)
    served.ended.clear()
    served.live.append(StandInSession(IQN, HOST_A, 7))
    admin.call("lun.delete", iqn=IQN, lun=0)          # A's map does not show LUN 0: A stays
    assert served.ended == []
    admin.call("lun.create", iqn=IQN, storage_object="disk0", lun=0)
    assert served.ended == []


@pytest.mark.parametrize("args, message", [
    ({"mapped_lun": 0, "lun": 5}, f"no LUN 5 in {IQN} (see `ls /iscsi/{IQN}/tpg1/luns`)"),
    ({"mapped_lun": 16384, "lun": 0},
     f"/iscsi/{IQN}/tpg1/acls/{HOST_A}: mapped_luns[0].mapped_lun: must be between 0 and 16383, got 16384"),
    ({"mapped_lun": "x", "lun": 0}, "mapped_lun.create: mapped_lun: expected an integer, got 'x'"),
])
def test_bad_mapped_luns_are_refused_and_change_nothing(admin, served, args, message):
    before = admin.call("config.get")
    with pytest.raises(AdminError) as caught:
        admin.call("mapped_lun.create", iqn=IQN, initiator=HOST_A, **args)
    assert str(caught.value) == message
    assert admin.call("config.get") == before and served.ended == []


def test_duplicates_unknown_entries_and_lun_deletion_in_use_are_refused(admin, served):
    admin.call("mapped_lun.create", iqn=IQN, initiator=HOST_A, mapped_lun=0, lun=1)
    with pytest.raises(AdminError, match=f"mapped LUN 0 already exists in the ACL for {HOST_A}"):
        admin.call("mapped_lun.create", iqn=IQN, initiator=HOST_A, mapped_lun=0, lun=0)
    with pytest.raises(AdminError, match=f"no mapped LUN 4 in the ACL for {HOST_A}"):
        admin.call("mapped_lun.delete", iqn=IQN, initiator=HOST_A, mapped_lun=4)
    with pytest.raises(AdminError) as caught:
        admin.call("lun.delete", iqn=IQN, lun=1)
    assert str(caught.value) == (f"LUN 1 of {IQN} is shown to {HOST_A} (mapped LUN 0); delete those mapped"
                                 " LUNs first")


def test_saveconfig_keeps_mapped_luns(admin, served):
    admin.call("mapped_lun.create", iqn=IQN, initiator=HOST_A, mapped_lun=2, lun=0, write_protect=True)
    admin.call("config.save")
    saved = json.loads(admin.config_path.read_text())
    acl = next(a for a in saved["targets"][0]["acls"] if a["initiator"] == HOST_A)
    assert acl["mapped_luns"] == [{"mapped_lun": 2, "lun": 0, "write_protect": True}]
    assert load_config(str(admin.config_path)).targets[0].acls[0].mapped_luns[0].write_protect


def test_sessions_list_the_luns_of_their_own_map(admin, served):
    admin.call("mapped_lun.create", iqn=IQN, initiator=HOST_A, mapped_lun=4, lun=1)
    served.live.append(StandInSession(IQN, HOST_A, 8))
    admin.daemon.server.sessions = lambda: [{"initiator": s.initiator_name, "tsih": s.tsih, "target": s.target_name}
                                            for s in served.sessions()]
    listed = {(s["target"], s["initiator"]): s["luns"] for s in admin.call("sessions.list")}
    assert listed == {(IQN, HOST_A): [4], (IQN, HOST_B): [0, 1], (OTHER_IQN, HOST_A): [0]}
