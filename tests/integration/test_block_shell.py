"""odxtargetcli's /backstores/block against a real daemon: create a storage object on a loop
device as targetcli does (``create name=... dev=...``), map it, use it through libiscsi, save
it, and the one-line errors for a path that is not a block device (docs/block.md)."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_admin_shell import TPG, TARGET, Cli, cli, daemon  # noqa: F401  (fixtures)
from tests.support import libiscsi
from tests.support.daemon import MIB

pytestmark = pytest.mark.integration

BLOCK = 512


def test_create_map_use_and_save_a_block_storage_object(loop_devices, daemon, cli: Cli):
    device = loop_devices(16 * MIB)
    created = cli.ok("/backstores/block", "create", "name=lv0", f"dev={device.path}")
    assert f"Created block storage object lv0 (16MiB, {device.path})" in created
    cli.ok("/backstores/block", "create", "lv1", loop_devices(8 * MIB).path, "size=4M", "block_size=4096")
    listing = cli.ok("ls", "/backstores")
    assert "block" in listing and "lv0" in listing and device.path in listing and "4096-byte blocks" in listing
    assert "lv0" not in cli.ok("ls", "/backstores/extents")
    cli.ok("/iscsi", "create", TARGET)
    assert "Created LUN 0" in cli.ok(f"{TPG}/luns", "create", "/backstores/block/lv0")
    assert "block/lv0" in cli.ok("ls", f"{TPG}/luns")
    cli.ok(TPG, "set", "attribute", "demo_mode=true")
    with libiscsi.connect(daemon.host, daemon.port, TARGET, lun=0) as session:
        session.test_unit_ready(0)
        assert session.write(0, 100, b"\xc3" * (8 * BLOCK), BLOCK).good
        assert session.read(0, 100, 8, BLOCK).data == b"\xc3" * (8 * BLOCK)
    cli.ok("saveconfig")
    saved = {so["name"]: so for so in json.loads(daemon.config_path.read_text())["storage_objects"]}
    assert saved["lv0"]["block"] == {"path": device.path} and "extents" not in saved["lv0"]
    assert saved["lv1"]["size"] in ("4M", 4 * MIB) and saved["lv1"]["block_size"] == 4096


def test_a_path_that_is_not_a_block_device_is_refused_in_one_line(daemon, cli: Cli, tmp_path):
    image = tmp_path / "plain.img"
    image.write_bytes(bytes(4096))
    assert cli.fails("/backstores/block", "create", "name=lv0", f"dev={image}") == (
        f"/backstores/block/lv0: block.path: {image}: not a block device")
    assert "lv0" not in cli.ok("ls", "/backstores")
