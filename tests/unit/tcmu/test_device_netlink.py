"""uio name parsing, sysfs discovery, and the TCM-USER netlink codec (no kernel needed)."""

from __future__ import annotations

import struct

import pytest

from odxtarget.transport.tcmu import netlink as nl
from odxtarget.transport.tcmu.device import TcmuDeviceInfo, parse_uio_name, scan_sysfs
from odxtarget.transport.tcmu.lio_config import MAX_TRANSFER_BYTES, backstore_spec
from odxtarget.config import ExtentConfig, StorageObjectConfig


def test_parses_our_uio_names_only():
    info = parse_uio_name("uio3", "tcm-user/2/disk0/odx/disk0")
    assert info == TcmuDeviceInfo(uio="uio3", hba=2, device_name="disk0", config="disk0")
    assert info.minor == 3 and info.dev_path() == "/dev/uio3"
    assert info.configfs_dir() == "/sys/kernel/config/target/core/user_2/disk0"
    assert parse_uio_name("uio0", "tcm-user/0/x/rbd/pool/img") is None      # tcmu-runner's
    assert parse_uio_name("uio0", "tcm-user/0/x") is None                    # no dev_config
    assert parse_uio_name("uio0", "tcm-user/0/x/odx/") is None
    assert parse_uio_name("uio0", "other/0/x/odx/y") is None
    assert parse_uio_name("uio0", "tcm-user/0/x/odx/a/b").config == "a/b"


def test_scan_sysfs_finds_ours_in_minor_order(tmp_path):
    for uio, name in (("uio10", "tcm-user/1/b/odx/b"), ("uio2", "tcm-user/1/a/odx/a"),
                      ("uio3", "tcm-user/0/c/file/c"), ("uio4", "something else")):
        (tmp_path / "class" / "uio" / uio).mkdir(parents=True)
        (tmp_path / "class" / "uio" / uio / "name").write_text(name + "\n")
    assert [i.uio for i in scan_sysfs(sysfs_root=str(tmp_path))] == ["uio2", "uio10"]
    assert scan_sysfs(sysfs_root=str(tmp_path / "missing")) == []


def _genl(family: int, command: int, attrs: bytes) -> bytes:
    payload = struct.pack("=BBH", command, 2, 0) + attrs
    return struct.pack("=IHHII", 16 + len(payload), family, 0, 0, 0) + payload


def test_family_reply_gives_id_and_config_group():
    group = nl.pack_attr(1, nl.pack_attr(nl.CTRL_ATTR_MCAST_GRP_ID, struct.pack("=I", 9))
                         + nl.pack_attr(nl.CTRL_ATTR_MCAST_GRP_NAME, b"config\0"))
    attrs = (nl.pack_attr(nl.CTRL_ATTR_FAMILY_ID, struct.pack("=H", 27))
             + nl.pack_attr(nl.CTRL_ATTR_FAMILY_NAME, b"TCM-USER\0")
             + nl.pack_attr(nl.CTRL_ATTR_MCAST_GROUPS, group))
    assert nl.parse_family_reply(_genl(nl.GENL_ID_CTRL, 1, attrs)) == (27, {"config": 9})


def test_family_reply_error_names_the_module():
    error = struct.pack("=IHHII", 36, nl.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -2) + bytes(16)
    with pytest.raises(nl.NetlinkError, match="target_core_user"):
        nl.parse_family_reply(error)


def test_getfamily_request_layout():
    request = nl.getfamily_request("TCM-USER", sequence=5)
    length, msg_type, flags, sequence, _pid = struct.unpack_from("=IHHII", request)
    assert (length, msg_type, flags, sequence) == (len(request), nl.GENL_ID_CTRL, 1, 5)
    assert request[16] == nl.CTRL_CMD_GETFAMILY
    assert nl.parse_attrs(request[20:]) == {nl.CTRL_ATTR_FAMILY_NAME: b"TCM-USER\0"}


def test_added_and_reconfig_events_parse():
    added = (nl.pack_attr(nl.ATTR_DEVICE, b"tcm-user/0/d/odx/d\0")
             + nl.pack_attr(nl.ATTR_MINOR, struct.pack("=I", 4))
             + nl.pack_attr(nl.ATTR_DEVICE_ID, struct.pack("=I", 77)))
    ((msg_type, payload),) = nl.split_messages(_genl(30, nl.CMD_ADDED_DEVICE, added))
    event = nl.parse_event(payload)
    assert msg_type == 30
    assert (event.kind, event.name, event.uio, event.device_id) == ("added", "tcm-user/0/d/odx/d",
                                                                    "uio4", 77)
    reconfig = added + nl.pack_attr(nl.ATTR_DEV_SIZE, struct.pack("=Q", 1 << 30))
    event = nl.parse_event(nl.split_messages(_genl(30, nl.CMD_RECONFIG_DEVICE, reconfig))[0][1])
    assert (event.kind, event.dev_size) == ("reconfig", 1 << 30)
    assert nl.parse_event(struct.pack("=BBH", 7, 2, 0)) is None     # SET_FEATURES: not an event


def test_backstore_spec_disables_netlink_replies_and_sizes_transfers():
    so = StorageObjectConfig(name="disk0", size=1 << 30, extents=[ExtentConfig("/x")],
                             block_size=4096)
    spec = backstore_spec(so)
    assert spec.config == "odx/disk0" and spec.size == 1 << 30
    assert spec.hw_max_sectors == MAX_TRANSFER_BYTES // 4096
    assert "nl_reply_supported=-1" in spec.control.split(",")
    assert "hw_block_size=4096" in spec.control.split(",")
    assert ":" not in spec.config and spec.serial
