"""Property: whatever rtslib-shaped saveconfig.json targetcli could have written, the import is a
configuration odxtarget accepts, and every backstore, LUN, mapped LUN and ACL is either in it or
named on a line of its own (docs/migrating.md)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from odxtarget.config import parse_config
from odxtarget.config.targetcli_import import import_saveconfig
from tests.unit.config.test_targetcli_import import parseable

PLUGINS = ("fileio", "block", "ramdisk", "pscsi", "user")
names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
secrets = st.sampled_from(["short", "twelve-chars1", "sixteen-chars-01", "same-secret-12"])


@st.composite
def storage_objects(draw) -> list[dict]:
    objects = []
    for name in draw(st.lists(names, min_size=1, max_size=5, unique=True)):
        plugin = draw(st.sampled_from(PLUGINS))
        block_size = draw(st.sampled_from([512, 512, 4096, 1024]))
        item = {"name": name, "plugin": plugin, "wwn": draw(st.uuids()).__str__(),
                "attributes": {"block_size": block_size,
                               "emulate_3pc": draw(st.sampled_from([0, 1, 1])),
                               "queue_depth": draw(st.integers(1, 256))}}
        if plugin in ("fileio", "ramdisk", "user"):
            item["size"] = draw(st.integers(0, 1 << 34))
        if plugin in ("fileio", "block", "pscsi"):
            item["dev"] = f"/srv/{name}.img" if plugin == "fileio" else f"/dev/{name}"
        if plugin == "block":
            item["readonly"] = draw(st.booleans())
        item["write_back"] = draw(st.booleans())
        objects.append(item)
    return objects


@st.composite
def saveconfigs(draw) -> dict:
    objects = draw(storage_objects())
    targets = []
    for index in range(draw(st.integers(0, 3))):
        tpgs = []
        for tag in draw(st.lists(st.integers(0, 4), min_size=0, max_size=2, unique=True)):
            luns = [{"index": number, "storage_object": f"/backstores/{so['plugin']}/{so['name']}"}
                    for number, so in zip(draw(st.lists(st.integers(0, 20), max_size=4, unique=True)),
                                          draw(st.lists(st.sampled_from(objects), max_size=4)))]
            acls = []
            for host in draw(st.lists(names, max_size=3, unique=True)):
                acl = {"node_wwn": f"iqn.2026-11.org.example:{host}",
                       "mapped_luns": [{"index": mapped, "tpg_lun": draw(st.integers(0, 20)),
                                        "write_protect": draw(st.booleans())}
                                       for mapped in draw(st.lists(st.integers(0, 20), max_size=3, unique=True))]}
                if draw(st.booleans()):
                    acl["chap_userid"], acl["chap_password"] = host, draw(secrets)
                    if draw(st.booleans()):
                        acl["chap_mutual_userid"], acl["chap_mutual_password"] = "target", draw(secrets)
                acls.append(acl)
            tpg = {"tag": tag, "enable": draw(st.booleans()) or tag == 1,
                   "attributes": {"authentication": draw(st.sampled_from([0, 1])),
                                  "generate_node_acls": draw(st.sampled_from([0, 1])),
                                  "demo_mode_write_protect": draw(st.sampled_from([0, 1]))},
                   "parameters": {"TargetAlias": "LIO Target"},
                   "luns": luns, "node_acls": acls,
                   "portals": [{"ip_address": draw(st.sampled_from(["0.0.0.0", "127.0.0.1", "192.0.2.1", "::"])),
                                "port": 3260, "iser": draw(st.booleans()), "offload": False}]}
            if draw(st.booleans()):
                tpg["chap_userid"], tpg["chap_password"] = "demo", draw(secrets)
            tpgs.append(tpg)
        fabric = draw(st.sampled_from(["iscsi", "iscsi", "loopback"]))
        targets.append({"fabric": fabric, "wwn": f"iqn.2026-11.org.example:t{index}", "tpgs": tpgs})
    return {"storage_objects": objects, "targets": targets, "fabric_modules": []}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(saved=saveconfigs())
def test_the_import_always_parses_and_accounts_for_everything(saved):
    result = import_saveconfig(saved)
    with tempfile.TemporaryDirectory() as directory:
        parsed = parse_config(parseable(result.config, Path(directory)), f"{directory}/odxtarget.json")
    report = "\n".join(result.differences)
    imported = {so.name for so in parsed.storage_objects}
    for so in saved["storage_objects"]:
        assert so["name"] in imported or f"backstore {so['plugin']}/{so['name']}" in report
    by_iqn = {target.iqn: target for target in parsed.targets}
    for target in saved["targets"]:
        config = by_iqn.get(target["wwn"])
        if config is None:
            assert f"target {target['wwn']}" in report
            continue
        where = f"target {target['wwn']} tpg {config.tpgt}"
        tpg = next(t for t in target["tpgs"] if t["tag"] == config.tpgt)
        numbers = {lun.lun for lun in config.luns}
        for lun in tpg["luns"]:
            assert lun["index"] in numbers or f"{where}: LUN {lun['index']} is not imported" in report
        acls = {acl.initiator: acl for acl in config.acls}
        for acl in tpg["node_acls"]:
            imported_acl = acls.get(acl["node_wwn"])
            if imported_acl is None:
                assert f"{where} acl {acl['node_wwn']}: not imported" in report
                continue
            if imported_acl.mapped_luns is None:       # LIO showed every LUN under its own number, writable
                kept = [m for m in acl["mapped_luns"] if m["tpg_lun"] in numbers and m["index"] <= 16383]
                assert sorted(m["index"] for m in kept) == sorted(numbers)
                assert all(m["index"] == m["tpg_lun"] and not m["write_protect"] for m in kept)
                continue
            shown = {m.mapped_lun for m in imported_acl.mapped_luns}
            for mapped in acl["mapped_luns"]:
                assert mapped["index"] in shown or (
                    f"{where} acl {acl['node_wwn']}: mapped LUN {mapped['index']} is not imported" in report)
        if config.demo_mode and config.chap is None:
            assert tpg["attributes"]["authentication"] == 0   # LIO let these in without CHAP too
