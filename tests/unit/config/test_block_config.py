"""The ``block`` storage object (docs/block.md): parsing against real loop devices, its exact
problem messages, and the dump/parse round trip."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odxtarget.config import BlockConfig, ConfigError, dump_config, parse_config

MIB = 1 << 20
SOURCE = "/etc/odxtarget/config.json"
IQN = "iqn.2026-11.org.odxtarget:demo"


def config_with(*storage_objects: dict) -> dict:
    return {
        "schema_version": 1,
        "storage_objects": list(storage_objects),
        "targets": [{"iqn": IQN, "demo_mode": True,
                     "luns": [{"lun": n, "storage_object": so["name"]} for n, so in enumerate(storage_objects)]}],
    }


def problems_of(obj: dict) -> list[str]:
    with pytest.raises(ConfigError) as failure:
        parse_config(obj, SOURCE)
    return failure.value.problems


@pytest.fixture
def device(loop_devices):
    return loop_devices(8 * MIB + 4096)


def test_the_size_defaults_to_the_device_and_round_trips(device):
    config = parse_config(config_with({"name": "lv", "block": {"path": device.path}}), SOURCE)
    (so,) = config.storage_objects
    assert so.block == BlockConfig(device.path) and so.extents == [] and so.rbd is None
    assert so.size == 8 * MIB + 4096
    assert so.describe_storage() == f"block device {device.path}"
    dumped = dump_config(config)["storage_objects"][0]
    assert dumped["block"] == {"path": device.path} and "extents" not in dumped
    assert parse_config(dump_config(config), SOURCE) == config


def test_the_default_size_is_whole_blocks_of_the_device(device):
    config = parse_config(config_with({"name": "lv", "block_size": 4096, "block": {"path": device.path}}), SOURCE)
    assert config.storage_objects[0].size == 8 * MIB + 4096
    odd = parse_config(config_with({"name": "lv", "block": {"path": device.path}, "size": "4M"}), SOURCE)
    assert odd.storage_objects[0].size == 4 * MIB


def test_a_size_larger_than_the_device_is_refused(device):
    assert problems_of(config_with({"name": "lv", "size": "16M", "block": {"path": device.path}})) == [
        f"storage_objects[0].size: 16777216 bytes is more than {device.path} holds (8392704 bytes)"]


def test_a_size_that_is_not_whole_blocks_is_refused(device):
    assert problems_of(config_with({"name": "lv", "size": 4096 + 512, "block_size": 4096,
                                    "block": {"path": device.path}})) == [
        "storage_objects[0].size: 4608 bytes is not a multiple of block_size 4096"]


def test_a_block_size_below_the_device_sector_is_refused(loop_devices):
    device = loop_devices(4 * MIB, sector_size=4096)
    assert problems_of(config_with({"name": "lv", "block": {"path": device.path}})) == [
        f"storage_objects[0].block: {device.path} has 4096-byte logical sectors: block_size 512 is too small"]
    parse_config(config_with({"name": "lv", "block_size": 4096, "block": {"path": device.path}}), SOURCE)


def test_a_missing_device_is_refused(tmp_path):
    missing = tmp_path / "vg0" / "lv"
    assert problems_of(config_with({"name": "lv", "block": {"path": str(missing)}})) == [
        f"storage_objects[0].block.path: {missing}: cannot open: No such file or directory"]


def test_a_regular_file_is_not_a_block_device(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4096))
    assert problems_of(config_with({"name": "lv", "size": 4096, "block": {"path": str(image)}})) == [
        f"storage_objects[0].block.path: {image}: not a block device"]


def test_block_is_exclusive_with_extents_and_rbd(device):
    assert problems_of(config_with({"name": "lv", "block": {"path": device.path},
                                    "extents": [{"path": "x.img"}], "rbd": {"image": "x"}})) == [
        "storage_objects[0].block: a storage object has either extents or block, not both",
        "storage_objects[0].block: a storage object has either rbd or block, not both",
    ]


def test_the_block_section_needs_a_path_and_nothing_else(device):
    assert problems_of(config_with({"name": "lv", "block": {"dev": device.path}})) == [
        'storage_objects[0].block.dev: unknown key (expected one of: path)',
        "storage_objects[0].block.path: missing required key",
    ]


def test_extents_still_need_a_size():
    assert problems_of(config_with({"name": "disk", "extents": [{"path": "d.img"}]})) == [
        "storage_objects[0].size: missing required key"]


def test_one_device_in_two_storage_objects_is_refused(device, tmp_path):
    alias = tmp_path / "alias"
    alias.symlink_to(device.path)
    assert problems_of(config_with({"name": "a", "block": {"path": device.path}},
                                   {"name": "b", "block": {"path": str(alias)}})) == [
        f"storage_objects[1].block.path: device {alias} is also used by storage_objects[0].block.path"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.integers(min_value=0, max_value=(8 * MIB + 4096) // 512 + 64),
       block_size=st.sampled_from([512, 4096]),
       extra=st.sampled_from([0, 0, 0, 512, 1000]))
def test_any_size_is_accepted_exactly_when_it_is_whole_blocks_that_fit(device, blocks, block_size, extra):
    size = blocks * 512 + extra
    obj = config_with({"name": "lv", "size": size, "block_size": block_size, "block": {"path": device.path}})
    fits = 0 < size <= device.size and size % block_size == 0
    if fits:
        config = parse_config(obj, SOURCE)
        assert config.storage_objects[0].size == size
        assert parse_config(dump_config(config), SOURCE) == config
    else:
        assert len(problems_of(obj)) >= 1
