"""odxtargetcli's mapped LUNs (targetcli's ``create mapped_lun=N tpg_lun_or_backstore=M``) against
a real daemon, checked through real libiscsi logins: each initiator sees its own map, a
write-protected mapped LUN refuses writes, a change ends the sessions whose map changed, and
``saveconfig`` keeps the maps across a restart."""

from __future__ import annotations

import json
import struct

import pytest

from tests.integration.test_admin_shell import TARGET, TPG, Cli, dropped, wait_for_socket
from tests.support import libiscsi
from tests.support.daemon import DaemonProcess, DaemonSpec, LunSpec, MIB

pytestmark = pytest.mark.integration

HOST_A = "iqn.1991-05.com.microsoft:tenant-a"
HOST_B = "iqn.1991-05.com.microsoft:tenant-b"
REPORT_LUNS = bytes((0xA0, 0, 0, 0, 0, 0)) + struct.pack(">I", 4096) + bytes(2)
BLOCK = 512


@pytest.fixture
def daemon(tmp_path):
    process = DaemonProcess(DaemonSpec(luns=[LunSpec(size=4 * MIB)]), tmp_path / "daemon")
    process.start()
    try:
        wait_for_socket(process.directory / "state" / "control.sock")
        yield process
    finally:
        process.stop()


@pytest.fixture
def cli(daemon):
    return Cli(daemon.directory / "state" / "control.sock")


def reported_luns(session: libiscsi.IscsiSession) -> list[int]:
    data = session.scsi_command(0, REPORT_LUNS, data_in_len=4096).data
    length = struct.unpack_from(">I", data, 0)[0]
    return [struct.unpack_from(">H", data, 8 + at)[0] & 0x3FFF for at in range(0, length, 8)]


def login(daemon, initiator: str, lun: int = 0) -> libiscsi.IscsiSession:
    session = libiscsi.connect(daemon.host, daemon.port, TARGET, lun=lun, initiator_name=initiator)
    for _ in range(4):                                   # take the power-on unit attention
        if session.test_unit_ready(lun).good:
            break
    return session


def build(cli: Cli) -> None:
    cli.ok("/backstores/extents", "create", "name=tenant_a", "size=4M")
    cli.ok("/backstores/extents", "create", "name=tenant_b", "size=4M")
    cli.ok("/iscsi", "create", TARGET)
    cli.ok(f"{TPG}/luns", "create", "/backstores/extents/tenant_a")
    cli.ok(f"{TPG}/luns", "create", "/backstores/extents/tenant_b")
    for host in (HOST_A, HOST_B):
        cli.ok(f"{TPG}/acls", "create", host)
    assert "Created Mapped LUN 0 (TPG LUN 0, read-write)" in cli.ok(
        f"{TPG}/acls/{HOST_A}", "create", "mapped_lun=0", "tpg_lun_or_backstore=0", "write_protect=false")
    assert "Created Mapped LUN 1 (TPG LUN 1, read-only)" in cli.ok(
        f"{TPG}/acls/{HOST_A}", "create", "mapped_lun=1", "tpg_lun_or_backstore=lun1", "write_protect=true")
    assert "Created Mapped LUN 0 (TPG LUN 1, read-write)" in cli.ok(
        f"{TPG}/acls/{HOST_B}", "create", "mapped_lun=0", "tpg_lun_or_backstore=/backstores/extents/tenant_b")


def test_shell_mapped_luns_mask_what_each_initiator_sees(daemon, cli):
    build(cli)
    tree = cli.ok("ls", f"{TPG}/acls")
    assert "Mapped LUNs: 2" in tree and "Mapped LUNs: 1" in tree
    assert "mapped_lun1" in tree and "lun1 ro" in tree and "lun0 rw" in tree
    with login(daemon, HOST_A) as a, login(daemon, HOST_B) as b:
        assert reported_luns(a) == [0, 1] and reported_luns(b) == [0]
        assert a.write(0, 0, b"a" * BLOCK, BLOCK).good
        assert b.write(0, 0, b"b" * BLOCK, BLOCK).good
        for _ in range(4):                                      # LUN 1's power-on unit attention
            if a.test_unit_ready(1).good:
                break
        assert a.read(1, 0, 1, BLOCK).data == b"b" * BLOCK      # B's LU, read-only for A
        refused = a.write(1, 0, b"x" * BLOCK, BLOCK)
        assert (refused.sense_key, refused.asc, refused.ascq) == (0x07, 0x27, 0x00)
        assert b.read(0, 0, 1, BLOCK).data == b"b" * BLOCK

        cli.ok(f"{TPG}/acls/{HOST_A}", "delete", "mapped_lun=1")   # ends A's session, not B's
        assert dropped(a)
        assert b.test_unit_ready(0).good
    with login(daemon, HOST_A) as again:
        assert reported_luns(again) == [0]
        assert again.read(0, 0, 1, BLOCK).data == b"a" * BLOCK
    assert "its mapped LUNs changed by the administrator" in daemon.log_text()


def test_bad_mapped_lun_commands_are_one_line(daemon, cli):
    build(cli)
    assert cli.fails(f"{TPG}/acls/{HOST_B}", "create", "mapped_lun=0", "tpg_lun_or_backstore=1") == (
        f"mapped LUN 0 already exists in the ACL for {HOST_B}")
    assert cli.fails(f"{TPG}/acls/{HOST_B}", "create", "mapped_lun=1", "tpg_lun_or_backstore=7") == (
        f"no LUN 7 in {TARGET} (see `ls /iscsi/{TARGET}/tpg1/luns`)")
    assert cli.fails(f"{TPG}/acls/{HOST_B}", "delete", "mapped_lun=5") == f"no mapped LUN 5 in the ACL for {HOST_B}"
    assert cli.fails(f"{TPG}/luns", "delete", "lun1") == (
        f"LUN 1 of {TARGET} is shown to {HOST_A} (mapped LUN 1), {HOST_B} (mapped LUN 0); delete those mapped"
        " LUNs first")


def test_saveconfig_keeps_the_mapped_luns_across_a_restart(daemon, cli):
    build(cli)
    cli.ok("saveconfig")
    saved = json.loads(daemon.config_path.read_text())
    target = next(t for t in saved["targets"] if t["iqn"] == TARGET)
    acls = {acl["initiator"]: acl.get("mapped_luns") for acl in target["acls"]}
    assert acls[HOST_A] == [{"mapped_lun": 0, "lun": 0, "write_protect": False},
                            {"mapped_lun": 1, "lun": 1, "write_protect": True}]
    daemon.restart()
    wait_for_socket(cli.socket_path)
    with login(daemon, HOST_B) as b:
        assert reported_luns(b) == [0]
