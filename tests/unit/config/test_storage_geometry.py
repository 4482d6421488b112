"""physical_block_size and removable on storage objects: parsed, validated, dumped back."""

from __future__ import annotations

import pytest

from odxtarget.config import ConfigError, dump_config, parse_config


def document(**storage) -> dict:
    return {
        "storage_objects": [{"name": "disk0", "size": "1M", **storage}],
        "targets": [{"iqn": "iqn.2026-11.org.odxtarget:t", "luns": [{"lun": 0, "storage_object": "disk0"}],
                     "demo_mode": True}],
    }


def test_defaults_are_a_fixed_disk_with_physical_equal_to_logical():
    so = parse_config(document()).storage_objects[0]
    assert (so.physical_block_size, so.removable) == (None, False)
    dumped = dump_config(parse_config(document()))["storage_objects"][0]
    assert "physical_block_size" not in dumped and "removable" not in dumped


def test_512e_and_removable_round_trip():
    config = parse_config(document(physical_block_size=4096, removable=True))
    so = config.storage_objects[0]
    assert (so.physical_block_size, so.removable) == (4096, True)
    assert parse_config(dump_config(config)).storage_objects[0] == so


@pytest.mark.parametrize(("storage", "message"), [
    ({"physical_block_size": 3000},
     "storage_objects[0].physical_block_size: must be block_size (512) times a power of two up to 32768, got 3000"),
    ({"physical_block_size": 256}, "storage_objects[0].physical_block_size: must be at least 512, got 256"),
    ({"block_size": 4096, "physical_block_size": 512},
     "storage_objects[0].physical_block_size: must be at least 4096, got 512"),
    ({"removable": "yes"}, 'storage_objects[0].removable: expected true or false, got a string ("yes")'),
])
def test_bad_geometry_is_refused_with_its_path(storage, message):
    with pytest.raises(ConfigError) as error:
        parse_config(document(**storage))
    assert message in error.value.problems
