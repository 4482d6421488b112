"""The block.create operation (``/backstores/block create``) on loop devices: the device's size
by default, the storage it opens, resizing within the device, and one-line refusals."""

from __future__ import annotations

from odxtarget.storage.block import BlockDeviceBackend

from .conftest import IQN, MIB
from .test_ops import refused


def test_a_block_storage_object_takes_the_device_size_and_opens_the_device(admin, loop_devices):
    device = loop_devices(12 * MIB)
    result = admin.call("block.create", name="lv0", dev=device.path)
    assert (result["name"], result["path"], result["size"]) == ("lv0", device.path, 12 * MIB)
    admin.call("target.create", iqn=IQN)
    admin.call("lun.create", iqn=IQN, storage_object="/backstores/block/lv0")
    backend = admin.daemon.backends["lv0"]
    assert isinstance(backend, BlockDeviceBackend) and backend.size == 12 * MIB
    backend.write(0, b"\x42" * 4096)
    backend.flush()
    with open(device.path, "rb") as raw:
        assert raw.read(4096) == b"\x42" * 4096


def test_size_and_block_size_are_checked_against_the_device(admin, loop_devices):
    device = loop_devices(8 * MIB)
    result = admin.call("block.create", name="lv0", dev=device.path, size="4M", block_size="4096")
    assert result["size"] == 4 * MIB
    admin.call("extent.resize", name="lv0", size="8M")
    assert admin.daemon.backends["lv0"].size == 8 * MIB
    assert refused(admin, "extent.resize", name="lv0", size="16M") == (
        f"/backstores/block/lv0: size: 16777216 bytes is more than {device.path} holds (8388608 bytes)")
    assert refused(admin, "block.create", name="lv1", dev=device.path) == (
        f"/backstores/block/lv1: block.path: device {device.path} is also used by storage_objects[0].block.path")


def test_a_missing_device_is_refused(admin, tmp_path):
    assert refused(admin, "block.create", name="lv0", dev=str(tmp_path / "absent")) == (
        f"/backstores/block/lv0: block.path: {tmp_path / 'absent'}: cannot open: No such file or directory")
    assert refused(admin, "block.create", name="lv0", dev="/dev/null", block_size=1024) == (
        "block_size must be 512 or 4096, got 1024")
