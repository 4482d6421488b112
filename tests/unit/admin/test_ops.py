"""The typed operations layer: every change validated like a config file, applied to the live
objects, refused with one line and nothing changed when it cannot be made."""

from __future__ import annotations

import json
import os
import stat

import pytest

from odxtarget.scsi.execution import complete_inline
from odxtarget.admin import saving
from odxtarget.admin.protocol import AdminError
from odxtarget.config import dump_config, load_config
from odxtarget.scsi.constants import Ascq
from odxtarget.scsi.types import ItNexus

from .conftest import INITIATOR, IQN, MIB

NEXUS = ItNexus(f"{INITIATOR},i,0x400001370000", f"{IQN},t,0x0001")


def build_target(admin, luns=("disk0", "disk1")):
    for name in luns:
        admin.call("extent.create", name=name, size="4M")
    admin.call("target.create", iqn=IQN)
    for name in luns:
        admin.call("lun.create", iqn=IQN, storage_object=f"/backstores/extents/{name}")


def refused(admin, op, **args) -> str:
    """The one-line refusal of a request, checking the running config did not change."""
    before = dump_config(admin.daemon.config)
    with pytest.raises(AdminError) as error:
        admin.call(op, **args)
    assert dump_config(admin.daemon.config) == before
    message = str(error.value)
    assert "\n" not in message
    return message


def test_create_target_with_two_luns_builds_live_objects(admin):
    build_target(admin)
    scsi_target = admin.ops.live.scsi_target(IQN)
    assert scsi_target.lun_numbers() == [0, 1]
    assert scsi_target.luns[1] is admin.daemon.logical_units["disk1"]
    assert admin.daemon.logical_units["disk0"].block_count == 4 * MIB // 512
    assert os.path.getsize(admin.daemon.config.state_dir + "/disk0.img") == 4 * MIB
    assert [m.lun for m in admin.daemon.config.targets[0].luns] == [0, 1]


def test_strings_from_the_shell_are_converted_to_the_operation_types(admin):
    result = admin.call("extent.create", name="big", size="8M", block_size="4096", read_only="yes")
    assert result["size"] == 8 * MIB
    so = admin.daemon.config.storage_objects[0]
    assert (so.block_size, so.read_only) == (4096, True)
    assert admin.daemon.logical_units["big"].write_protected


@pytest.mark.parametrize("op, args, expected", [
    ("extent.create", {"name": "d", "size": "12Q"}, 'size: invalid size "12Q"'),
    ("extent.create", {"name": "d", "size": "1M", "colour": "red"}, "unknown parameter 'colour'"),
    ("extent.create", {"name": "d", "size": "1M", "block_size": 1024}, "block_size must be 512 or 4096"),
    ("extent.create", {"name": "d", "size": "1000"}, "not a multiple of block_size 512"),
    ("extent.create", {"name": "_bad", "size": "1M"}, "is not a valid name"),
    ("extent.create", {"size": "1M"}, "missing parameter 'name'"),
    ("extent.create", {"name": "d", "size": "1M", "read_only": "maybe"}, "expected true or false"),
    ("target.create", {"iqn": "iqn.2026-13.bad:x"}, "has month 13"),
    ("lun.create", {"iqn": IQN, "storage_object": "nothing"}, 'no storage object "nothing"'),
    ("lun.delete", {"iqn": IQN, "lun": 7}, "no LUN 7"),
    ("acl.delete", {"iqn": IQN, "initiator": INITIATOR}, "no ACL for"),
    ("frobnicate", {}, "unknown operation 'frobnicate'"),
    ("extent.creat", {}, "did you mean 'extent.create'"),
])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(admin, op, args, expected):
    build_target(admin)
    assert expected in refused(admin, op, **args)


def test_duplicates_are_refused(admin):
    build_target(admin)
    assert refused(admin, "extent.create", name="disk0", size="1M") == 'storage object "disk0" already exists'
    assert refused(admin, "target.create", iqn=IQN) == f"target {IQN} already exists"
    assert refused(admin, "lun.create", iqn=IQN, storage_object="disk0", lun=0) == f"LUN 0 already exists in {IQN}"
    admin.call("acl.create", iqn=IQN, initiator=INITIATOR)
    assert "already exists" in refused(admin, "acl.create", iqn=IQN, initiator=INITIATOR)


def test_deleting_a_mapped_storage_object_is_refused_until_unmapped(admin):
    build_target(admin)
    message = refused(admin, "extent.delete", name="disk1")
    assert message == f'storage object "disk1" is mapped as LUN 1 of {IQN}; delete the LUN first'
    admin.call("lun.delete", iqn=IQN, lun=1)
    assert admin.ops.live.scsi_target(IQN).lun_numbers() == [0]
    admin.call("extent.delete", name="disk1")
    assert "disk1" not in admin.daemon.logical_units
    assert "disk1" not in admin.daemon.backends


def test_a_change_the_validator_rejects_names_the_shell_path(admin):
    build_target(admin)
    admin.call("acl.create", iqn=IQN, initiator=INITIATOR)
    message = refused(admin, "acl.set_auth", iqn=IQN, initiator=INITIATOR, userid="alice", password="short")
    assert message == (f"/iscsi/{IQN}/tpg1/acls/{INITIATOR}: auth password: is 5 bytes; CHAP secrets must be"
                       " at least 12 bytes (RFC 7143 9.2.1)")
    assert "mutual_password" in refused(admin, "acl.set_auth", iqn=IQN, initiator=INITIATOR, userid="alice",
                                        password="twelve-chars1", mutual_userid="tgt")


def test_chap_credentials_merge_and_clear(admin):
    build_target(admin)
    admin.call("acl.create", iqn=IQN, initiator=INITIATOR)
    admin.call("acl.set_auth", iqn=IQN, initiator=INITIATOR, userid="alice", password="twelve-chars1")
    admin.call("acl.set_auth", iqn=IQN, initiator=INITIATOR, mutual_userid="target",
               mutual_password="other-secret1")
    chap = admin.daemon.config.targets[0].acls[0].chap
    assert (chap.userid, chap.password, chap.mutual_userid, chap.mutual_password) == (
        "alice", "twelve-chars1", "target", "other-secret1")
    admin.call("acl.set_auth", iqn=IQN, initiator=INITIATOR, mutual_userid="", mutual_password="")
    assert admin.daemon.config.targets[0].acls[0].chap.mutual_userid is None
    admin.call("acl.set_auth", iqn=IQN, initiator=INITIATOR, userid="", password="")
    assert admin.daemon.config.targets[0].acls[0].chap is None
    admin.call("tpg.set_auth", iqn=IQN, userid="bob", password="twelve-chars2")
    assert admin.daemon.config.targets[0].chap.userid == "bob"


def test_growing_a_mapped_lu_is_live_and_raises_capacity_unit_attention(admin):
    build_target(admin)
    lu = admin.daemon.logical_units["disk0"]
    lu.register_nexus(NEXUS)
    lu.pop_unit_attention(NEXUS)
    admin.call("extent.resize", name="disk0", size="8M")
    assert lu.block_count == 8 * MIB // 512
    assert lu.backend.size == 8 * MIB
    assert lu.pending_unit_attentions(NEXUS) == (Ascq.CAPACITY_DATA_HAS_CHANGED,)
    assert os.path.getsize(admin.daemon.config.state_dir + "/disk0.img") == 8 * MIB
    assert "would cut off data" in refused(admin, "extent.resize", name="disk0", size="1M")


def test_read_only_flag_applies_to_the_running_lu(admin):
    build_target(admin)
    lu = admin.daemon.logical_units["disk0"]
    data = b"x" * 512
    lu.backend.write(0, data)
    admin.call("extent.set", name="disk0", read_only=True)
    assert lu.write_protected and lu.backend.read_only
    with pytest.raises(OSError):
        lu.backend.write(0, data)
    admin.call("extent.set", name="disk0", read_only="false")
    assert not lu.write_protected
    buffer = bytearray(512)
    lu.backend.read_into(0, memoryview(buffer))
    assert bytes(buffer) == data


def test_block_size_of_an_existing_object_cannot_change_live(admin):
    build_target(admin)
    # Only restoreconfig could ask for it; the live layer refuses before touching anything.
    from dataclasses import replace
    import asyncio
    old = admin.daemon.config
    new = replace(old, storage_objects=[replace(old.storage_objects[0], block_size=4096,
                                                size=old.storage_objects[0].size)] + old.storage_objects[1:])
    with pytest.raises(AdminError, match="block size cannot change"):
        asyncio.run(admin.ops.live.apply(old, new))
    assert admin.daemon.logical_units["disk0"].block_size == 512


def test_deleting_a_target_removes_its_live_object(admin):
    build_target(admin)
    admin.call("target.delete", iqn=IQN)
    assert admin.daemon.targets == []
    assert admin.ops.live.scsi_target(IQN) is None


def test_saveconfig_is_atomic_private_and_keeps_dated_backups(admin):
    build_target(admin)
    admin.call("acl.create", iqn=IQN, initiator=INITIATOR)
    assert admin.call("status")["unsaved_changes"] is True
    first = admin.call("config.save")
    assert first["backup"] is not None and os.path.exists(first["backup"])
    assert stat.S_IMODE(os.stat(admin.config_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(first["backup"]).st_mode) == 0o600
    assert json.loads(open(first["backup"]).read())["targets"] == []   # the file before this save
    saved = load_config(str(admin.config_path))
    assert dump_config(saved) == dump_config(admin.daemon.config)
    assert admin.call("status")["unsaved_changes"] is False
    admin.call("config.save")
    assert len(admin.call("config.backups")) == 2
    assert not [name for name in os.listdir(admin.config_path.parent) if name.endswith(".tmp")]


def test_backups_are_rotated(admin, monkeypatch):
    monkeypatch.setattr(saving, "MAX_BACKUPS", 3)
    for _ in range(5):
        admin.call("config.save")
    assert len(saving.list_backups(str(admin.config_path))) == 3


def test_clear_and_restore_need_confirmation_and_round_trip(admin):
    build_target(admin)
    admin.call("config.save")
    assert "confirm=true" in refused(admin, "config.clear")
    assert "confirm=true" in refused(admin, "config.restore")
    admin.call("config.clear", confirm="true")
    assert admin.daemon.config.targets == [] and admin.daemon.logical_units == {}
    admin.call("config.restore", confirm=True)
    assert admin.ops.live.scsi_target(IQN).lun_numbers() == [0, 1]
    assert admin.call("status")["unsaved_changes"] is False


def test_restore_of_an_invalid_file_changes_nothing(admin, tmp_path):
    build_target(admin)
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "targets": [{"iqn": "nope"}]}')
    message = refused(admin, "config.restore", path=str(bad), confirm=True)
    assert message.startswith(f"{bad}: targets[0].iqn:")
    assert admin.ops.live.scsi_target(IQN) is not None


def test_odx_operations_say_clearly_when_there_is_no_copy_manager(admin):
    assert admin.call("status")["odx"] is True   # the real daemon runs one
    admin.daemon.copy_manager.close()
    admin.daemon.copy_manager = None            # as a daemon built without third-party copy
    assert admin.call("status")["odx"] is False
    assert refused(admin, "odx.tokens") == "ODX copy offload is not running in this daemon (no copy manager)"


def test_a_storage_object_created_live_keeps_persistent_reservations_across_restarts(admin):
    """APTPL needs the LU's reservation file: live-created LUs get it like those loaded at start."""
    import struct

    from odxtarget.scsi.types import ScsiCommand, Status

    build_target(admin, luns=("disk0",))
    lu = admin.daemon.logical_units["disk0"]
    target = admin.ops.live.scsi_target(IQN)
    for _ in range(3):  # clear unit attentions
        target.execute(ScsiCommand(bytes(6), NEXUS, 0))
    register_aptpl = struct.pack(">QQ4xB3x", 0, 0x1234, 0x01)  # SERVICE ACTION KEY, APTPL=1
    cdb = struct.pack(">BBB2xIBB", 0x5F, 0x00, 0, len(register_aptpl), 0, 0)
    result = complete_inline(target.execute(ScsiCommand(cdb, NEXUS, 0, register_aptpl, len(register_aptpl))))
    assert result.status == Status.GOOD, result.sense.hex()
    saved = os.path.join(admin.daemon.config.state_dir, "reservations")
    assert os.listdir(saved), "the APTPL registration must be on disk"
    assert lu.persistent_reservations.registrations


def test_live_topology_changes_are_refused_in_lio_mode(admin):
    """Under LIO the kernel owns targets and LUNs: refuse up front, change nothing."""
    admin.daemon.config.frontend = "lio"
    message = refused(admin, "extent.create", name="disk0", size="4M")
    assert message.startswith('frontend "lio": LIO owns targets, portals and LUNs')
    assert "disk0" not in admin.daemon.logical_units


def test_demo_mode_write_protect_is_a_tpg_attribute_that_saves_and_gates_open_portals(admin):
    build_target(admin)
    admin.call("tpg.set", iqn=IQN, demo_mode="true")
    message = refused(admin, "portal.create", iqn=IQN, ip="192.0.2.10", port=3260)
    assert "lets any initiator write without CHAP on 192.0.2.10:3260" in message
    admin.call("tpg.set", iqn=IQN, demo_mode_write_protect="true")
    assert admin.daemon.config.targets[0].demo_mode_write_protect is True
    admin.call("config.save")
    saved = json.loads(open(admin.config_path).read())
    assert saved["targets"][0]["demo_mode_write_protect"] is True
    assert load_config(str(admin.config_path)).targets[0].demo_mode_write_protect is True
    admin.call("tpg.set", iqn=IQN, demo_mode_write_protect=False)
    assert admin.daemon.config.targets[0].demo_mode_write_protect is False
