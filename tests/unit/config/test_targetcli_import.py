"""``odxtarget import-targetcli``: targetcli's saveconfig.json (rtslib-fb's dump shape, fixtures in
tests/unit/config/targetcli/) into an odxtarget configuration, with every setting that has no
equivalent reported (docs/migrating.md)."""

from __future__ import annotations

import copy
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from odxtarget.config import parse_config
from odxtarget.config.targetcli_import import TargetcliImportError, import_saveconfig, lio_naa_designator
from odxtarget.scsi.execution import complete_inline
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import ItNexus, ScsiCommand, Status
from odxtarget.storage.memory import MemoryBackend

FIXTURES = Path(__file__).parent / "targetcli"
REPO = Path(__file__).resolve().parents[3]
HYPERV = "iqn.2003-01.org.linux-iscsi.san1.x8664:sn.hyperv"
LAB = "iqn.2003-01.org.linux-iscsi.san1.x8664:sn.lab"
PUBLIC = "iqn.2003-01.org.linux-iscsi.san1.x8664:sn.public"
EXIT_IMPORT_DIFFERS = 3


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def parseable(document: dict, directory: Path) -> dict:
    """``document`` with its block devices (absent on the test host, and probed by the parser)
    replaced by files of the same block size; the test with loop devices checks them as they are."""
    document = copy.deepcopy(document)
    for so in document["storage_objects"]:
        block = so.pop("block", None)
        if block is not None:
            so["size"] = 16 * so["block_size"]
            so["extents"] = [{"path": str(directory / f"{so['name']}.img")}]
    return document


def test_a_single_fileio_target_imports_with_nothing_to_report():
    result = import_saveconfig(fixture("one_fileio.json"))
    assert result.differences == []
    assert result.config == {
        "schema_version": 1, "frontend": "native", "state_dir": "/var/lib/odxtarget", "log_level": "info",
        "storage_objects": [{
            "name": "vmstore", "size": "10G", "block_size": 512, "read_only": False,
            "serial": "8c4f2a61-3b7d-4e19-a5c0-d2e6f7089b13", "wwn": "60014058c4f2a613b7d4e19a5c0d2e6f",
            "write_cache": True, "extents": [{"path": "/srv/iscsi/vmstore.img", "offset": 0, "length": None}],
        }],
        "targets": [{
            "iqn": "iqn.2003-01.org.linux-iscsi.storage1.x8664:sn.4b7e0c2d9a15", "tpgt": 1, "alias": "LIO Target",
            "portals": [{"ip": "192.0.2.10", "port": 3260}], "luns": [{"lun": 0, "storage_object": "vmstore"}],
            "demo_mode": False, "demo_mode_write_protect": True, "chap": None,
            "acls": [{"initiator": "iqn.1991-05.com.microsoft:hyperv1.example.com",
                      "chap": {"userid": "hyperv1", "password": "hyperv-secret1"}}],
        }],
    }


def test_a_multi_target_san_maps_what_has_an_equivalent():
    config = import_saveconfig(fixture("san_cluster.json")).config
    objects = {so["name"]: so for so in config["storage_objects"]}
    assert list(objects) == ["csv1", "data", "data-block", "archive", "lab", "public"]
    assert objects["csv1"]["write_cache"] is False and objects["csv1"]["size"] == "100G"
    assert objects["data-block"] == {
        "name": "data-block", "block_size": 4096, "read_only": False,
        "serial": "0f7c2e94-b85a-4d36-8c1e-5a9b0d3f6e21", "wwn": "60014050f7c2e94b85a4d368c1e5a9b0",
        "write_cache": False, "block": {"path": "/dev/disk/by-id/nvme-eui.0025388b91b2c3d4"},
    }
    assert objects["archive"]["read_only"] is True and "size" not in objects["archive"]
    targets = {target["iqn"]: target for target in config["targets"]}
    assert list(targets) == [HYPERV, LAB, PUBLIC]
    hyperv = targets[HYPERV]
    assert hyperv["alias"] == "hyperv-cluster" and hyperv["tpgt"] == 1 and not hyperv["demo_mode"]
    assert hyperv["portals"] == [{"ip": "0.0.0.0", "port": 3260}, {"ip": "198.51.100.5", "port": 3261}]
    assert hyperv["luns"] == [{"lun": 0, "storage_object": "csv1"}, {"lun": 1, "storage_object": "data"},
                              {"lun": 2, "storage_object": "data-block"}, {"lun": 3, "storage_object": "archive"}]
    acls = {acl["initiator"]: acl for acl in hyperv["acls"]}
    assert list(acls) == ["iqn.1991-05.com.microsoft:hv-a.corp.example", "iqn.1991-05.com.microsoft:hv-b.corp.example",
                          "iqn.2005-03.org.open-iscsi:backup01"]
    node_a = acls["iqn.1991-05.com.microsoft:hv-a.corp.example"]
    assert node_a["chap"] == {"userid": "node-a", "password": "hyperv-node-a1", "mutual_userid": "san1",
                              "mutual_password": "target-answer1"}
    assert node_a["mapped_luns"][3] == {"mapped_lun": 3, "lun": 3, "write_protect": True}
    assert "mapped_luns" not in acls["iqn.1991-05.com.microsoft:hv-b.corp.example"]  # every LUN, own numbers
    assert acls["iqn.2005-03.org.open-iscsi:backup01"]["mapped_luns"] == [
        {"mapped_lun": 0, "lun": 3, "write_protect": False}]
    lab = targets[LAB]
    assert (lab["demo_mode"], lab["demo_mode_write_protect"]) == (True, False)
    assert lab["chap"] == {"userid": "lab", "password": "lab-shared-secret"}
    assert lab["luns"] == [{"lun": 0, "storage_object": "lab"}]
    assert targets[PUBLIC]["allow_unauthenticated_writes"] is True
    assert "allow_unauthenticated_writes" not in lab and "allow_unauthenticated_writes" not in hyperv


def test_everything_without_an_equivalent_is_one_line():
    differences = import_saveconfig(fixture("san_cluster.json")).differences
    hyperv, lab, public = (f"target {HYPERV} tpg 1", f"target {LAB} tpg 1", f"target {PUBLIC} tpg 1")
    assert differences == [
        'backstore block/data: imported as storage object "data-block"',
        "backstore block/data: attribute is_nonrot=1 is not imported (odxtarget behaves as is_nonrot=0)",
        "backstore ramdisk/scratch: not imported (its data lives in kernel memory only); LUNs showing it are"
        " left out",
        "backstore pscsi/tape0: not imported (odxtarget emulates block devices, it does not pass SCSI commands"
        " through); LUNs showing it are left out",
        "backstore user/rbdvol: not imported (a tcmu-runner RBD image, which odxtarget serves itself with an rbd"
        " storage object, docs/rbd.md); LUNs showing it are left out",
        f"target {HYPERV} tpg 2: not imported: odxtarget serves one TPG per target (tpg 1 is imported); move its"
        " portals, LUNs and ACLs there",
        f"{hyperv}: parameter HeaderDigest=CRC32C is not imported (odxtarget negotiates its own; LIO's default is"
        " CRC32C,None)",
        f"{hyperv}: parameter MaxRecvDataSegmentLength=262144 is not imported (odxtarget negotiates its own;"
        " LIO's default is 8192)",
        f"{hyperv}: portal 198.51.100.5:3261: iSER is not imported (odxtarget serves iSCSI over TCP there)",
        f"{hyperv}: LUN 4 is not imported: it shows /backstores/ramdisk/scratch, which is not",
        f"{hyperv} acl iqn.1991-05.com.microsoft:HV-B.corp.example: imported as"
        " iqn.1991-05.com.microsoft:hv-b.corp.example (iqn names are lowercase, RFC 3720 3.2.6.1)",
        f"{hyperv} acl iqn.1991-05.com.microsoft:HV-B.corp.example: mapped LUN 4 is not imported: TPG LUN 4 is not",
        f"{hyperv} acl iqn.2005-03.org.open-iscsi:legacy: CHAP credentials not usable: its password is shorter"
        " than 12 bytes (RFC 7143 9.2.1)",
        f"{hyperv} acl iqn.2005-03.org.open-iscsi:legacy: not imported: its logins would need credentials"
        " odxtarget refuses",
        f"{lab}: LUN 1 is not imported: it shows /backstores/user/rbdvol, which is not",
        f"{lab}: LUN 2 is not imported: it shows /backstores/pscsi/tape0, which is not",
        f"{public}: attribute demo_mode_discovery=0 is not imported (odxtarget behaves as demo_mode_discovery=1)",
        f"{public}: LIO let any initiator write without CHAP (demo mode, demo_mode_write_protect=0): kept with"
        " allow_unauthenticated_writes (docs/security.md)",
        "target naa.5001405b3a9c6e12: not imported: fabric loopback (odxtarget serves iSCSI only)",
        "fabric iscsi: discovery CHAP is not imported: odxtarget's discovery sessions need no authentication and"
        " list only the targets each initiator may log in to",
    ]


@pytest.mark.parametrize("name", ["one_fileio.json", "san_cluster.json"])
def test_the_import_is_a_valid_configuration(name, tmp_path):
    config = import_saveconfig(fixture(name)).config
    parsed = parse_config(parseable(config, tmp_path), str(tmp_path / "odxtarget.json"))
    assert len(parsed.targets) == len(config["targets"])
    assert [so.name for so in parsed.storage_objects] == [so["name"] for so in config["storage_objects"]]


# -- identity: VPD 80h and 83h as LIO answered ------------------------------------------------------


def lio_vpd_naa(unit_serial: str) -> bytes:
    """What LIO puts in its VPD 83h NAA designator, written from target_core_spc.c's rule as a
    string: "6", the company ID 001405, then the serial's first 25 hex digits (anything else
    skipped), zero-padded to 16 bytes."""
    digits = "".join(char for char in unit_serial.lower() if char in "0123456789abcdef")[:25]
    return bytes.fromhex(("6" + "001405" + digits).ljust(32, "0"))


def vpd(lu: LogicalUnit, page: int) -> bytes:
    target = ScsiTarget("iqn.2026-11.org.example:vpd", {0: lu})
    nexus = ItNexus("iqn.2026-11.org.example:host,i,0x1", "iqn.2026-11.org.example:vpd,t,0x1")
    cdb = bytes((0x12, 0x01, page, 0x10, 0x00, 0))
    result = complete_inline(target.execute(ScsiCommand(cdb, nexus, 0, b"", 0)))
    assert result.status == Status.GOOD
    return bytes(result.data_in)


def naa_designator(page: bytes) -> bytes:
    """The first LU-associated NAA designator of a VPD 83h page."""
    at, end = 4, 4 + struct.unpack_from(">H", page, 2)[0]
    while at < end:
        kind, length = page[at + 1], page[at + 3]
        if kind & 0x30 == 0 and kind & 0x0F == 3:
            return page[at + 4:at + 4 + length]
        at += 4 + length
    raise AssertionError("no NAA designator")


@pytest.mark.parametrize("unit_serial", [
    "8c4f2a61-3b7d-4e19-a5c0-d2e6f7089b13",      # rtslib's usual uuid4 unit serial
    "ABCDEF0123456789abcdef0123456789",          # upper case, more than 25 digits
    "sn-00042",                                  # few hex digits: zero filled; letters skipped
])
def test_an_imported_lu_answers_vpd_80h_and_83h_as_lio_did(unit_serial, tmp_path):
    saved = fixture("one_fileio.json")
    saved["storage_objects"][0]["wwn"] = unit_serial
    config = parse_config(parseable(import_saveconfig(saved).config, tmp_path), str(tmp_path / "c.json"))
    so = config.storage_objects[0]
    lu = LogicalUnit(LogicalUnitConfig(name=so.name, backend=MemoryBackend(1 << 20), block_size=so.block_size,
                                       serial=so.serial, wwn=so.wwn))
    page_80 = vpd(lu, 0x80)
    assert page_80[4:4 + struct.unpack_from(">H", page_80, 2)[0]] == unit_serial.encode()
    assert naa_designator(vpd(lu, 0x83)) == lio_vpd_naa(unit_serial)


def test_the_designator_rule_uses_the_company_id():
    assert lio_naa_designator("0123456789abcdef0123456789", company_id=0xABCDEF) == \
        "6abcdef0123456789abcdef012345678"


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("saved, message", [
    ([], "(top level): expected an object"),
    ({"storage_objects": {}}, "(top level).storage_objects: expected an array"),
    ({"storage_objects": [{"plugin": "fileio"}]}, "storage_objects[0].name: expected a string"),
    ({"storage_objects": [{"plugin": "fileio", "name": "a", "dev": "/srv/a.img"}]},
     "storage_objects[0].size: expected an integer"),
    ({"targets": [{"fabric": "iscsi"}]}, "targets[0].wwn: expected a string"),
    ({"targets": [{"wwn": "iqn.2003-01.org.example:t", "tpgs": [{"enable": True}]}]},
     "targets[0].tpgs[0].tag: expected an integer"),
])
def test_a_file_not_in_rtslibs_shape_is_one_clear_error(saved, message):
    with pytest.raises(TargetcliImportError) as caught:
        import_saveconfig(saved)
    assert str(caught.value) == message


def test_write_protect_everywhere_when_lio_had_prod_mode_write_protect():
    saved = fixture("one_fileio.json")
    saved["targets"][0]["tpgs"][0]["attributes"]["prod_mode_write_protect"] = 1
    acl = import_saveconfig(saved).config["targets"][0]["acls"][0]
    assert acl["mapped_luns"] == [{"mapped_lun": 0, "lun": 0, "write_protect": True}]


def test_an_acl_lio_refused_is_not_opened():
    saved = fixture("one_fileio.json")
    for key in ("chap_userid", "chap_password"):
        del saved["targets"][0]["tpgs"][0]["node_acls"][0][key]
    result = import_saveconfig(saved)
    assert result.config["targets"][0]["acls"] == []
    assert result.differences[-1].endswith("not imported: authentication=1 and no CHAP credentials, so LIO"
                                           " refused its logins")


# -- the command ----------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "odxtarget", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_the_command_prints_the_config_and_reports_on_stderr(tmp_path):
    complete = run_cli("import-targetcli", str(FIXTURES / "one_fileio.json"))
    assert (complete.returncode, complete.stderr) == (0, "")
    assert json.loads(complete.stdout) == import_saveconfig(fixture("one_fileio.json")).config
    partial = run_cli("import-targetcli", str(FIXTURES / "san_cluster.json"))
    assert partial.returncode == EXIT_IMPORT_DIFFERS
    lines = partial.stderr.splitlines()
    assert lines == [f"odxtarget import-targetcli: {line}"
                     for line in import_saveconfig(fixture("san_cluster.json")).differences]
    written = tmp_path / "odxtarget.json"
    written.write_text(json.dumps(parseable(json.loads(partial.stdout), tmp_path)))
    checked = run_cli("check-config", str(written))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{written}: OK: 6 storage objects, 3 targets, 6 LUNs")


def test_the_command_fails_in_one_line_on_unreadable_input(tmp_path):
    missing = run_cli("import-targetcli", str(tmp_path / "nope.json"))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == f"odxtarget: error: cannot read {tmp_path / 'nope.json'}: No such file or directory\n"
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    broken = run_cli("import-targetcli", str(garbage))
    assert broken.returncode == 1 and broken.stderr.startswith(f"odxtarget: error: {garbage}: not JSON: ")
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"targets": [{"tpgs": []}]}')
    shape = run_cli("import-targetcli", str(wrong))
    assert shape.returncode == 1
    assert shape.stderr == f"odxtarget: error: {wrong}: targets[0].wwn: expected a string\n"


def test_a_shared_unit_serial_keeps_the_first_lus_identity_only(tmp_path):
    saved = fixture("one_fileio.json")
    twin = copy.deepcopy(saved["storage_objects"][0])
    twin.update(name="twin", dev="/srv/iscsi/twin.img")
    saved["storage_objects"].append(twin)
    result = import_saveconfig(saved)
    first, second = result.config["storage_objects"]
    assert (first["serial"], first["wwn"]) == ("8c4f2a61-3b7d-4e19-a5c0-d2e6f7089b13",
                                               "60014058c4f2a613b7d4e19a5c0d2e6f")
    assert (second["serial"], second["wwn"]) == (None, None)
    assert [line.split(":")[0] for line in result.differences] == ["backstore fileio/twin"] * 2
    parse_config(parseable(result.config, tmp_path), str(tmp_path / "c.json"))


def test_the_import_passes_check_config_with_real_block_devices(tmp_path, loop_devices):
    """The block storage objects as emitted ("block": {"path": ...}, the device's size), over
    loop devices standing in for the saved /dev paths."""
    config = import_saveconfig(fixture("san_cluster.json")).config
    for so in config["storage_objects"]:
        if "block" in so:
            so["block"]["path"] = loop_devices(4 << 20).path
    written = tmp_path / "odxtarget.json"
    written.write_text(json.dumps(config))
    checked = run_cli("check-config", str(written))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{written}: OK: 6 storage objects, 3 targets, 6 LUNs")
    assert "  LUN 2: data-block, 4 MiB (1024 x 4096-byte blocks), read-write, write cache off, block device" \
        in checked.stdout
