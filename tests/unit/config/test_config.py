"""Config loading, validation messages, defaults and the dump/parse round trip."""

from __future__ import annotations

import copy
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from odxtarget.config import (
    AclConfig,
    ChapConfig,
    ConfigError,
    DaemonConfig,
    ExtentConfig,
    LunMapping,
    PortalConfig,
    RbdConfig,
    StorageObjectConfig,
    TargetConfig,
    demo_config_dict,
    dump_config,
    format_size,
    iscsi_name_problem,
    load_config,
    parse_config,
    parse_size,
    save_config,
)

REPO = Path(__file__).resolve().parents[3]
BASE = "/etc/odxtarget"
SOURCE = f"{BASE}/config.json"
IQN = "iqn.2026-11.org.odxtarget:demo"
INITIATOR = "iqn.1994-05.com.redhat:client1"
GIB = 1 << 30


def minimal() -> dict:
    """A small valid config to break one piece at a time."""
    return {
        "schema_version": 1,
        "storage_objects": [
            {"name": "disk0", "size": "1G", "extents": [{"path": "disk0.img"}]},
            {"name": "disk1", "size": 4096, "block_size": 4096, "extents": [{"path": "disk1.img"}]},
        ],
        "targets": [
            {
                "iqn": IQN,
                "portals": [{"ip": "127.0.0.1", "port": 3260}],
                "luns": [{"lun": 0, "storage_object": "disk0"}, {"lun": 1, "storage_object": "disk1"}],
                "demo_mode": True,
            }
        ],
    }


def full() -> dict:
    """Every field set, including CHAP, ACLs, multiple extents and a read-only LUN."""
    return {
        "schema_version": 1,
        "frontend": "native",
        "state_dir": "/var/lib/odxtarget",
        "log_level": "debug",
        "storage_objects": [
            {
                "name": "striped",
                "size": "3M",
                "block_size": 512,
                "read_only": False,
                "serial": "ODX-0001",
                "wwn": "6001405ABCDEF0123456789ABCDEF012",
                "write_cache": False,
                "extents": [
                    {"path": "/srv/a.img", "offset": "1M", "length": "1M"},
                    {"path": "/srv/b.img", "offset": 0, "length": None},
                ],
            },
            {
                "name": "golden",
                "size": 8192,
                "block_size": 4096,
                "read_only": True,
                "serial": None,
                "wwn": None,
                "write_cache": True,
                "extents": [{"path": "/srv/golden.img", "offset": 0, "length": 8192}],
            },
        ],
        "targets": [
            {
                "iqn": IQN,
                "tpgt": 2,
                "alias": "demo disks",
                "portals": [{"ip": "127.0.0.1", "port": 3260}, {"ip": "::1", "port": 3261}],
                "luns": [{"lun": 0, "storage_object": "striped"}, {"lun": 16383, "storage_object": "golden"}],
                "demo_mode": False,
                "chap": {
                    "userid": "target-user",
                    "password": "secret-12-ch",
                    "mutual_userid": "odx",
                    "mutual_password": "other-secret-16b",
                },
                "acls": [
                    {"initiator": INITIATOR, "chap": None},
                    {"initiator": "eui.0123456789ABCDEF", "chap": {"userid": "u2", "password": "another-secret"}},
                ],
            },
            {"iqn": "naa.60014050123456789abcdef012345678", "luns": [{"lun": 0, "storage_object": "golden"}],
             "demo_mode": True},
        ],
    }


def problems_of(obj, source=SOURCE) -> list[str]:
    with pytest.raises(ConfigError) as failure:
        parse_config(obj, source)
    return failure.value.problems


# -- happy paths --------------------------------------------------------------------------------


def test_minimal_config_gets_defaults_and_resolved_paths():
    config = parse_config(minimal(), SOURCE)
    assert config.frontend == "native" and config.log_level == "info"
    assert config.state_dir == "/var/lib/odxtarget"
    disk0, disk1 = config.storage_objects
    assert disk0 == StorageObjectConfig(
        name="disk0", size=GIB, extents=[ExtentConfig(f"{BASE}/disk0.img", 0, None)],
    )
    assert disk1.block_size == 4096 and disk1.size == 4096
    (target,) = config.targets
    assert target == TargetConfig(
        iqn=IQN, portals=[PortalConfig("127.0.0.1", 3260)],
        luns=[LunMapping(0, "disk0"), LunMapping(1, "disk1")], demo_mode=True,
    )


def test_full_config_parses_every_field():
    config = parse_config(full(), SOURCE)
    striped, golden = config.storage_objects
    assert striped.size == 3 << 20 and striped.write_cache is False and striped.serial == "ODX-0001"
    assert striped.wwn == "6001405abcdef0123456789abcdef012"  # normalised to lowercase
    assert striped.extents == [ExtentConfig("/srv/a.img", 1 << 20, 1 << 20), ExtentConfig("/srv/b.img", 0, None)]
    assert golden.read_only is True
    target = config.targets[0]
    assert target.tpgt == 2 and target.alias == "demo disks"
    assert target.portals[1] == PortalConfig("::1", 3261)
    assert target.chap == ChapConfig("target-user", "secret-12-ch", "odx", "other-secret-16b")
    assert target.acls == [
        AclConfig(INITIATOR, None),
        AclConfig("eui.0123456789ABCDEF", ChapConfig("u2", "another-secret")),
    ]
    assert config.targets[1].portals == [PortalConfig()]  # default portal
    assert config.log_level == "debug"


@pytest.mark.parametrize("factory", [minimal, full, demo_config_dict])
def test_dump_then_parse_round_trips(factory):
    config = parse_config(factory(), SOURCE)
    dumped = dump_config(config)
    assert json.loads(json.dumps(dumped)) == dumped  # plain JSON types only
    assert parse_config(dumped, "/elsewhere/config.json") == config  # absolute paths now


def test_dump_spells_sizes_readably():
    dumped = dump_config(parse_config(full(), SOURCE))
    assert dumped["storage_objects"][0]["size"] == "3M"
    assert dumped["storage_objects"][1]["size"] == "8K"


def test_default_extent_is_named_after_the_object_in_state_dir():
    obj = minimal()
    obj["state_dir"] = "state"
    del obj["storage_objects"][0]["extents"]
    config = parse_config(obj, SOURCE)
    assert config.state_dir == f"{BASE}/state"
    assert config.storage_objects[0].extents == [ExtentConfig(f"{BASE}/state/disk0.img")]


def test_log_level_is_case_insensitive():
    obj = minimal()
    obj["log_level"] = "WARNING"
    assert parse_config(obj, SOURCE).log_level == "warning"


def test_parse_does_not_modify_its_input():
    obj = full()
    before = copy.deepcopy(obj)
    parse_config(obj, SOURCE)
    assert obj == before


def test_the_example_demo_config_is_what_demo_config_writes_and_is_valid():
    path = REPO / "examples" / "demo.json"
    assert json.loads(path.read_text()) == demo_config_dict()
    config = load_config(str(path))
    assert [so.extents[0].path for so in config.storage_objects] == [
        str(REPO / "examples" / "disk0.img"), str(REPO / "examples" / "disk1.img"),
    ]
    assert config.targets[0].iqn == IQN and config.targets[0].demo_mode


# -- the table of bad configs --------------------------------------------------------------------


def mutate(change):
    obj = minimal()
    change(obj)
    return obj


def so0(obj):
    return obj["storage_objects"][0]


def t0(obj):
    return obj["targets"][0]


BAD_CONFIGS = [
    ("top level not an object", [], ["(top level): expected an object, got an array"]),
    ("unknown top key", mutate(lambda o: o.update(targetz=[])),
     ['targetz: unknown key (did you mean "targets"?)']),
    ("schema version", mutate(lambda o: o.update(schema_version=2)),
     ["schema_version: unsupported version 2 (this odxtarget reads version 1)"]),
    ("frontend", mutate(lambda o: o.update(frontend="spdk")),
     ['frontend: "spdk" is not supported (expected "native", "lio")']),
    ("log level", mutate(lambda o: o.update(log_level="loud")),
     ['log_level: "loud" is not supported (expected "debug", "info", "warning", "error", "critical")']),
    ("storage_objects not array", mutate(lambda o: o.update(storage_objects={})),
     ["storage_objects: expected an array, got an object", 'targets[0].luns[0].storage_object: no storage '
      'object named "disk0"', 'targets[0].luns[1].storage_object: no storage object named "disk1"']),
    ("unknown storage key", mutate(lambda o: so0(o).update(blocksize=512)),
     ['storage_objects[0].blocksize: unknown key (did you mean "block_size"?)']),
    ("missing size", mutate(lambda o: so0(o).pop("size")),
     ["storage_objects[0].size: missing required key"]),
    ("zero size", mutate(lambda o: so0(o).update(size=0)), ["storage_objects[0].size: must be positive"]),
    ("bad size text", mutate(lambda o: so0(o).update(size="1X")),
     ['storage_objects[0].size: invalid size "1X": expected an integer or a number with a K, M, G or T suffix']),
    ("size type", mutate(lambda o: so0(o).update(size=1.5)),
     ["storage_objects[0].size: expected a size (integer or string), got a number (1.5)"]),
    ("size not multiple", mutate(lambda o: so0(o).update(size=1000)),
     ["storage_objects[0].size: 1000 bytes is not a multiple of block_size 512"]),
    ("size not multiple of 4096", mutate(lambda o: o["storage_objects"][1].update(size="6K")),
     ["storage_objects[1].size: 6144 bytes is not a multiple of block_size 4096"]),
    ("block size", mutate(lambda o: so0(o).update(block_size=1024)),
     ["storage_objects[0].block_size: must be 512 or 4096, got 1024"]),
    ("bool type", mutate(lambda o: so0(o).update(read_only="yes")),
     ['storage_objects[0].read_only: expected true or false, got a string ("yes")']),
    ("int is not bool", mutate(lambda o: so0(o).update(write_cache=1)),
     ["storage_objects[0].write_cache: expected true or false, got a number (1)"]),
    ("bad name", mutate(lambda o: so0(o).update(name="disk 0")),
     ['storage_objects[0].name: "disk 0" is not a valid name (1 to 64 of A-Z a-z 0-9 _ . -, not starting with _ . -)',
      'targets[0].luns[0].storage_object: no storage object named "disk0"']),
    ("duplicate name", mutate(lambda o: o["storage_objects"][1].update(name="disk0")),
     ['storage_objects[1].name: duplicate storage object name "disk0" (also storage_objects[0])',
      'targets[0].luns[1].storage_object: no storage object named "disk1"']),
    ("same object twice in a target", mutate(lambda o: t0(o)["luns"][1].update(storage_object="disk0")),
     ['targets[0].luns[1].storage_object: "disk0" is already mapped in this target (at targets[0].luns[0])']),
    ("storage_objects a number", mutate(lambda o: o.update(storage_objects=5)),
     ["storage_objects: expected an array, got a number (5)",
      'targets[0].luns[0].storage_object: no storage object named "disk0"',
      'targets[0].luns[1].storage_object: no storage object named "disk1"']),
    ("serial", mutate(lambda o: so0(o).update(serial="has space")),
     ["storage_objects[0].serial: must be 1 to 64 printable ASCII characters without spaces"]),
    ("duplicate serial", mutate(lambda o: [so.update(serial="S1") for so in o["storage_objects"]]),
     ['storage_objects[1].serial: duplicate serial "S1" (also storage_objects[0])']),
    ("wwn", mutate(lambda o: so0(o).update(wwn="5001405abcdef0123456789abcdef012")),
     ["storage_objects[0].wwn: must be 32 hex digits starting with 6 (an NAA-6 designator, SPC-4 7.8.6.6.4)"]),
    ("no extents", mutate(lambda o: so0(o).update(extents=[])),
     ["storage_objects[0].extents: needs at least one extent"]),
    ("extent without path", mutate(lambda o: so0(o).update(extents=[{"offset": 0}])),
     ["storage_objects[0].extents[0].path: missing required key"]),
    ("empty path", mutate(lambda o: so0(o).update(extents=[{"path": ""}])),
     ["storage_objects[0].extents[0].path: must not be empty"]),
    ("extent offset alignment", mutate(lambda o: so0(o).update(extents=[{"path": "a", "offset": 100}])),
     ["storage_objects[0].extents[0].offset: 100 is not a multiple of block_size 512"]),
    ("open extent not last", mutate(lambda o: so0(o).update(
        extents=[{"path": "a", "length": None}, {"path": "b", "length": "512M"}])),
     ["storage_objects[0].extents[0].length: only the last extent may be null (the rest of the size)"]),
    ("extents too short", mutate(lambda o: so0(o).update(extents=[{"path": "a", "length": "512M"}])),
     ["storage_objects[0].extents: the extents cover 536870912 bytes but size is 1073741824"]),
    ("nothing left", mutate(lambda o: so0(o).update(extents=[{"path": "a", "length": "1G"}, {"path": "b"}])),
     ["storage_objects[0].extents[1].length: nothing is left for this open-ended extent: the earlier "
      "extents already cover 1073741824 of 1073741824 bytes"]),
    ("zero length", mutate(lambda o: so0(o).update(extents=[{"path": "a", "length": 0}, {"path": "b"}])),
     ["storage_objects[0].extents[0].length: must be positive (or null for the rest)"]),
    ("overlap across objects", mutate(lambda o: (
        so0(o).update(extents=[{"path": "shared.img", "offset": 0, "length": None}]),
        o["storage_objects"][1].update(extents=[{"path": "./shared.img", "offset": "1020M"}]))),
     ["storage_objects[1].extents[0]: overlaps storage_objects[0].extents[0] in /etc/odxtarget/shared.img "
      "(bytes [0, 1073741824) and [1069547520, 1069551616))"]),
    ("targets not array", mutate(lambda o: o.update(targets="x")),
     ['targets: expected an array, got a string ("x")']),
    ("missing iqn", mutate(lambda o: t0(o).pop("iqn")), ["targets[0].iqn: missing required key"]),
    ("bad iqn", mutate(lambda o: t0(o).update(iqn="iqn.2026-11.org.odxtarget:my_disk")),
     ['targets[0].iqn: "iqn.2026-11.org.odxtarget:my_disk" is not a valid iqn name: expected '
      "iqn.yyyy-mm.reversed.domain[:identifier] using only a-z, 0-9, '-', '.', ':' (RFC 3720 3.2.6.3.1)"]),
    ("uppercase iqn", mutate(lambda o: t0(o).update(iqn="iqn.2026-11.org.odxtarget:Demo")),
     ['targets[0].iqn: "iqn.2026-11.org.odxtarget:Demo" must be lowercase (RFC 3720 3.2.6.1 names are '
      'case-folded): "iqn.2026-11.org.odxtarget:demo"']),
    ("bad month", mutate(lambda o: t0(o).update(iqn="iqn.2026-13.org.odxtarget")),
     ['targets[0].iqn: "iqn.2026-13.org.odxtarget" has month 13 in its date (RFC 3720 3.2.6.3.1 wants yyyy-mm)']),
    ("no prefix", mutate(lambda o: t0(o).update(iqn="target0")),
     ['targets[0].iqn: "target0" must start with "iqn.", "eui." or "naa." (RFC 3720 3.2.6.3)']),
    ("bad eui", mutate(lambda o: t0(o).update(iqn="eui.12345")),
     ['targets[0].iqn: "eui.12345" is not a valid eui name: expected eui. and 16 hex digits (RFC 3720 3.2.6.3.2)']),
    ("bad naa", mutate(lambda o: t0(o).update(iqn="naa.1234567890abcdef12")),
     ['targets[0].iqn: "naa.1234567890abcdef12" is not a valid naa name: expected naa. and 16 or 32 hex '
      "digits (RFC 3980)"]),
    ("duplicate target", mutate(lambda o: o["targets"].append(copy.deepcopy(t0(o)))),
     [f'targets[1].iqn: duplicate target "{IQN}" (also targets[0])']),
    ("tpgt range", mutate(lambda o: t0(o).update(tpgt=70000)),
     ["targets[0].tpgt: must be between 0 and 65535, got 70000"]),
    ("alias", mutate(lambda o: t0(o).update(alias="a\nb")),
     ["targets[0].alias: must be printable text of at most 255 bytes"]),
    ("no portals", mutate(lambda o: t0(o).update(portals=[])), ["targets[0].portals: needs at least one portal"]),
    ("bad ip", mutate(lambda o: t0(o).update(portals=[{"ip": "localhost"}])),
     ['targets[0].portals[0].ip: "localhost" is not an IPv4 or IPv6 address']),
    ("port range", mutate(lambda o: t0(o).update(portals=[{"ip": "127.0.0.1", "port": 65536}])),
     ["targets[0].portals[0].port: must be between 0 and 65535, got 65536"]),
    ("port type", mutate(lambda o: t0(o).update(portals=[{"ip": "127.0.0.1", "port": "3260"}])),
     ['targets[0].portals[0].port: expected an integer, got a string ("3260")']),
    ("duplicate portal", mutate(lambda o: t0(o).update(portals=[{"ip": "127.0.0.1"}, {"ip": "127.0.0.1", "port": 3260}])),
     ["targets[0].portals[1]: duplicate portal 127.0.0.1:3260 (also targets[0].portals[0])"]),
    ("missing storage object", mutate(lambda o: t0(o)["luns"][1].update(storage_object="disk9")),
     ['targets[0].luns[1].storage_object: no storage object named "disk9"']),
    ("duplicate lun", mutate(lambda o: t0(o)["luns"][1].update(lun=0)),
     ["targets[0].luns[1].lun: duplicate LUN 0 (also targets[0].luns[0])"]),
    ("lun range", mutate(lambda o: t0(o)["luns"][1].update(lun=16384)),
     ["targets[0].luns[1].lun: must be between 0 and 16383, got 16384"]),
    ("lun missing key", mutate(lambda o: t0(o)["luns"][1].pop("lun")), ["targets[0].luns[1].lun: missing required key"]),
    ("short chap secret", mutate(lambda o: t0(o).update(chap={"userid": "u", "password": "short"})),
     ["targets[0].chap.password: is 5 bytes; CHAP secrets must be at least 12 bytes (RFC 7143 9.2.1)"]),
    ("mutual without one-way", mutate(lambda o: t0(o).update(
        chap={"mutual_userid": "t", "mutual_password": "mutual-secret-1"})),
     ["targets[0].chap: mutual CHAP needs one-way CHAP too: set userid and password"]),
    ("half mutual", mutate(lambda o: t0(o).update(
        chap={"userid": "u", "password": "one-way-secret", "mutual_userid": "t"})),
     ["targets[0].chap.mutual_password: mutual CHAP needs both mutual_userid and mutual_password"]),
    ("same secret both ways", mutate(lambda o: t0(o).update(chap={
        "userid": "u", "password": "one-way-secret", "mutual_userid": "t", "mutual_password": "one-way-secret"})),
     ["targets[0].chap.mutual_password: must differ from password (RFC 7143 9.2.1: a secret is never used in "
      "both directions)"]),
    ("chap missing password", mutate(lambda o: t0(o).update(chap={"userid": "u"})),
     ["targets[0].chap.password: missing required key"]),
    ("chap unknown key", mutate(lambda o: t0(o).update(chap={"userid": "u", "password": "one-way-secret", "secret": "x"})),
     ['targets[0].chap.secret: unknown key (expected one of: userid, password, mutual_userid, mutual_password)']),
    ("bad acl initiator", mutate(lambda o: t0(o).update(acls=[{"initiator": "client1"}])),
     ['targets[0].acls[0].initiator: "client1" must start with "iqn.", "eui." or "naa." (RFC 3720 3.2.6.3)']),
    ("duplicate acl", mutate(lambda o: t0(o).update(acls=[{"initiator": INITIATOR}, {"initiator": INITIATOR}])),
     [f'targets[0].acls[1].initiator: duplicate ACL for "{INITIATOR}" (also targets[0].acls[0])']),
    ("acl chap", mutate(lambda o: t0(o).update(acls=[{"initiator": INITIATOR, "chap": {"userid": "u", "password": "x" * 11}}])),
     ["targets[0].acls[0].chap.password: is 11 bytes; CHAP secrets must be at least 12 bytes (RFC 7143 9.2.1)"]),
    ("port groups without own tpgt", mutate(lambda o: t0(o).update(tpgt=3, port_groups=[1, 2])),
     ["targets[0].port_groups: must include this target's own tpgt 3"]),
    ("port group values", mutate(lambda o: t0(o).update(port_groups=[1, 1, 0, "2"])),
     ["targets[0].port_groups[1]: duplicate port group 1",
      "targets[0].port_groups[2]: must be a TPGT between 1 and 65535, got a number (0)",
      'targets[0].port_groups[3]: must be a TPGT between 1 and 65535, got a string ("2")']),
    ("rbd and extents", mutate(lambda o: so0(o).update(rbd={"image": "lun0"})),
     ["storage_objects[0].rbd: a storage object has either extents or rbd, not both"]),
    ("rbd without image", mutate(lambda o: (so0(o).pop("extents"), so0(o).update(rbd={"pool": "p"}))),
     ["storage_objects[0].rbd.image: missing required key"]),
    ("rbd image name", mutate(lambda o: (so0(o).pop("extents"), so0(o).update(rbd={"image": "a@snap"}))),
     ['storage_objects[0].rbd.image: "a@snap" is not a valid RBD name (no "/" or "@", no spaces or control'
      " characters)"]),
    ("rbd client", mutate(lambda o: (so0(o).pop("extents"), so0(o).update(rbd={"image": "a", "client": "client.gw"}))),
     ['storage_objects[0].rbd.client: give the user id without "client." ("gw")']),
    ("rbd unknown key", mutate(lambda o: (so0(o).pop("extents"), so0(o).update(rbd={"image": "a", "poool": "x"}))),
     ['storage_objects[0].rbd.poool: unknown key (did you mean "pool"?)']),
    ("rbd image twice", mutate(lambda o: [(so.pop("extents"), so.update(rbd={"image": "same"}))
                                           for so in o["storage_objects"]]),
     ["storage_objects[1].rbd: image rbd/same is also used by storage_objects[0].rbd"]),
]


def test_port_groups_default_to_the_target_alone_and_round_trip():
    config = parse_config(minimal(), SOURCE)
    assert config.targets[0].port_groups == [] and config.targets[0].target_port_groups() == [1]
    obj = mutate(lambda o: t0(o).update(tpgt=2, port_groups=[2, 1]))
    config = parse_config(obj, SOURCE)
    assert config.targets[0].target_port_groups() == [1, 2]
    assert parse_config(dump_config(config), SOURCE) == config


def test_an_rbd_storage_object_parses_with_defaults_and_round_trips():
    obj = minimal()
    so0(obj).pop("extents")
    so0(obj)["rbd"] = {"image": "lun0", "conf": "ceph.conf", "keyring": "keys/gw.keyring", "client": "gw"}
    config = parse_config(obj, SOURCE)
    storage = config.storage_objects[0]
    assert storage.extents == []
    assert storage.rbd == RbdConfig(image="lun0", pool="rbd", conf=f"{BASE}/ceph.conf", client="gw",
                                    keyring=f"{BASE}/keys/gw.keyring")
    assert storage.describe_storage() == "rbd image rbd/lun0"
    assert parse_config(dump_config(config), SOURCE) == config
    assert dump_config(config)["storage_objects"][0]["rbd"]["keyring"] == f"{BASE}/keys/gw.keyring"
    assert "extents" not in dump_config(config)["storage_objects"][0]


@pytest.mark.parametrize("obj, expected", [(obj, expected) for _, obj, expected in BAD_CONFIGS],
                         ids=[name for name, _, _ in BAD_CONFIGS])
def test_bad_config_is_rejected_with_exact_message(obj, expected):
    assert problems_of(obj) == expected


def test_every_problem_is_reported_at_once():
    obj = minimal()
    so0(obj)["block_size"] = 1000
    t0(obj)["portals"][0]["port"] = 70000
    t0(obj)["luns"][1]["storage_object"] = "nope"
    with pytest.raises(ConfigError) as failure:
        parse_config(obj, SOURCE)
    assert failure.value.problems == [
        "storage_objects[0].block_size: must be 512 or 4096, got 1000",
        "targets[0].portals[0].port: must be between 0 and 65535, got 70000",
        'targets[0].luns[1].storage_object: no storage object named "nope"',
    ]
    assert str(failure.value).splitlines() == [f"{SOURCE}: 3 problems:"] + [
        f"  {problem}" for problem in failure.value.problems
    ]


def test_one_problem_is_one_line():
    error = ConfigError("c.json", ["targets[0].iqn: missing required key"])
    assert str(error) == "c.json: targets[0].iqn: missing required key"


# -- warnings -----------------------------------------------------------------------------------


def test_warnings_for_legal_but_suspicious_settings(caplog):
    obj = minimal()
    t0(obj)["demo_mode"] = False
    t0(obj)["luns"] = [{"lun": 0, "storage_object": "disk0"}]
    t0(obj)["chap"] = {"userid": "u", "password": "a-secret-longer-than-16"}
    with caplog.at_level(logging.WARNING, logger="odxtarget.config"):
        parse_config(obj, SOURCE)
    assert [record.getMessage() for record in caplog.records] == [
        f"{SOURCE}: targets[0].chap.password: is 23 bytes; some initiators (Windows) accept at most 16",
        f"{SOURCE}: targets[0]: target {IQN} has demo_mode false and no ACLs: no initiator can log in",
        f'{SOURCE}: storage object "disk1" is not mapped by any target',
    ]


# -- files ----------------------------------------------------------------------------------------


def test_load_resolves_relative_paths_against_the_file(tmp_path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "odx.json"
    path.write_text(json.dumps(minimal()))
    config = load_config(str(path))
    assert config.storage_objects[0].extents[0].path == str(tmp_path / "conf" / "disk0.img")


def test_load_missing_file_says_so(tmp_path):
    path = str(tmp_path / "absent.json")
    with pytest.raises(ConfigError) as failure:
        load_config(path)
    assert str(failure.value) == (
        f"{path}: config file not found (write one with `odxtarget demo-config --dir DIR`, or pass --config FILE)"
    )


def test_load_invalid_json_gives_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "targets": [\n}\n')
    with pytest.raises(ConfigError) as failure:
        load_config(str(path))
    assert failure.value.problems == ["line 3 column 1: invalid JSON: Expecting value"]


def test_load_reports_repeated_keys(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"schema_version": 1, "log_level": "info", "log_level": "debug"}')
    with pytest.raises(ConfigError) as failure:
        load_config(str(path))
    assert failure.value.problems == ["log_level: key appears more than once"]


def test_save_config_is_atomic_private_and_loadable(tmp_path):
    path = tmp_path / "saved.json"
    path.write_text("old")
    config = parse_config(full(), SOURCE)
    save_config(config, str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["saved.json"]  # no temporary left behind
    assert load_config(str(path)) == config


# -- helpers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, size", [
    (0, 0), (4096, 4096), ("4096", 4096), ("4K", 4096), ("4k", 4096), (" 2 M ", 2 << 20),
    ("1G", 1 << 30), ("3T", 3 << 40),
])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5G", "1GB", "-1", "G", True, None, -4096, 1.0])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("size, text", [(1 << 30, "1G"), (1536 << 20, "1536M"), (512, 512), (4096, "4K"), (3 << 40, "3T")])
def test_format_size(size, text):
    assert format_size(size) == text
    assert parse_size(text) == size


@pytest.mark.parametrize("name", [
    "iqn.2026-11.org.odxtarget:demo", "iqn.2001-04.com.example", "iqn.2001-04.com.example:storage:disk-a.b",
    "eui.02004567A425678D", "naa.52004567BA64678D", "naa.62004567BA64678D0123456789ABCDEF",
])
def test_valid_iscsi_names(name):
    assert iscsi_name_problem(name) is None


@pytest.mark.parametrize("name", [
    "iqn.2001-4.com.example", "iqn.2001-04", "iqn.2001-04.com example", "iqn.2001-04.com.example:a/b",
    "iqn.2001-04.com.example:" + "x" * 200, "eui.02004567A425678", "naa.0123", "IQN.2001-04.com.example",
])
def test_invalid_iscsi_names(name):
    assert iscsi_name_problem(name) is not None


def test_dataclass_defaults_are_the_documented_ones():
    assert DaemonConfig() == parse_config({}, SOURCE)
