"""An ACL's mapped LUNs (LUN masking): parsing, validation messages, the dump round trip."""

from __future__ import annotations

import copy

import pytest

from odxtarget.config import AclConfig, ConfigError, MappedLunConfig, dump_config, parse_config

IQN = "iqn.2026-11.org.odxtarget:tenants"
HOST_A = "iqn.1991-05.com.microsoft:host-a"
HOST_B = "iqn.1991-05.com.microsoft:host-b"
SOURCE = "/etc/odxtarget/config.json"


def two_tenants() -> dict:
    return {
        "storage_objects": [{"name": f"disk{n}", "size": "1M", "extents": [{"path": f"disk{n}.img"}]}
                            for n in range(3)],
        "targets": [{
            "iqn": IQN,
            "luns": [{"lun": n, "storage_object": f"disk{n}"} for n in range(3)],
            "acls": [
                {"initiator": HOST_A, "mapped_luns": [{"mapped_lun": 0, "lun": 1},
                                                      {"mapped_lun": 1, "lun": 2, "write_protect": True}]},
                {"initiator": HOST_B},
            ],
        }],
    }


def test_mapped_luns_parse_and_absent_means_every_lun():
    config = parse_config(two_tenants(), SOURCE)
    host_a, host_b = config.targets[0].acls
    assert host_a == AclConfig(HOST_A, None, [MappedLunConfig(0, 1, False), MappedLunConfig(1, 2, True)])
    assert host_b.mapped_luns is None


def test_an_empty_list_masks_every_lun():
    obj = two_tenants()
    obj["targets"][0]["acls"][1]["mapped_luns"] = []
    assert parse_config(obj, SOURCE).targets[0].acls[1].mapped_luns == []


def test_mapped_luns_round_trip_and_are_dumped_only_when_set():
    config = parse_config(two_tenants(), SOURCE)
    dumped = dump_config(config)
    acls = dumped["targets"][0]["acls"]
    assert acls[0]["mapped_luns"] == [{"mapped_lun": 0, "lun": 1, "write_protect": False},
                                      {"mapped_lun": 1, "lun": 2, "write_protect": True}]
    assert "mapped_luns" not in acls[1]
    assert parse_config(dumped, SOURCE) == config


def _with_mapped(*entries) -> dict:
    obj = two_tenants()
    obj["targets"][0]["acls"][0]["mapped_luns"] = list(entries)
    return obj


@pytest.mark.parametrize("entries, expected", [
    ([{"mapped_lun": 0, "lun": 7}],
     "targets[0].acls[0].mapped_luns[0].lun: the target has no LUN 7 (its LUNs: 0, 1, 2)"),
    ([{"mapped_lun": 0, "lun": 1}, {"mapped_lun": 0, "lun": 2}],
     "targets[0].acls[0].mapped_luns[1].mapped_lun: duplicate mapped LUN 0 (also targets[0].acls[0].mapped_luns[0])"),
    ([{"mapped_lun": 16384, "lun": 1}],
     "targets[0].acls[0].mapped_luns[0].mapped_lun: must be between 0 and 16383, got 16384"),
    ([{"mapped_lun": -1, "lun": 1}],
     "targets[0].acls[0].mapped_luns[0].mapped_lun: must be between 0 and 16383, got -1"),
    ([{"mapped_lun": 0}], "targets[0].acls[0].mapped_luns[0].lun: missing required key"),
    ([{"mapped_lun": 0, "lun": 1, "write_protect": "yes"}],
     'targets[0].acls[0].mapped_luns[0].write_protect: expected true or false, got a string ("yes")'),
    ([{"mapped_lun": 0, "lun": 1, "wp": True}],
     'targets[0].acls[0].mapped_luns[0].wp: unknown key (expected one of: mapped_lun, lun, write_protect)'),
    (["0"], "targets[0].acls[0].mapped_luns[0]: expected an object, got a string (\"0\")"),
])
def test_bad_mapped_luns_are_refused_with_their_path(entries, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config(_with_mapped(*entries), SOURCE)
    assert caught.value.problems == [expected]


def test_mapped_luns_must_be_an_array():
    obj = two_tenants()
    obj["targets"][0]["acls"][0]["mapped_luns"] = {"mapped_lun": 0}
    with pytest.raises(ConfigError) as caught:
        parse_config(obj, SOURCE)
    assert caught.value.problems == ["targets[0].acls[0].mapped_luns: expected an array, got an object"]


def test_one_target_lun_may_be_shown_under_two_numbers():
    config = parse_config(_with_mapped({"mapped_lun": 0, "lun": 1}, {"mapped_lun": 5, "lun": 1}), SOURCE)
    assert [m.lun for m in config.targets[0].acls[0].mapped_luns] == [1, 1]


def test_parse_does_not_modify_mapped_luns():
    obj = two_tenants()
    before = copy.deepcopy(obj)
    parse_config(obj, SOURCE)
    assert obj == before


def test_check_config_summary_shows_each_masked_acl():
    from odxtarget.daemon import summary_lines

    lines = summary_lines(parse_config(two_tenants(), SOURCE))
    assert f"  ACL {HOST_A} sees: 0=LUN 1, 1=LUN 2 read-only" in lines
    assert not any(HOST_B in line for line in lines)
