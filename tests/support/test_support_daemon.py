"""The daemon launcher's configuration is one odxtarget accepts, with what the test asked for."""

from __future__ import annotations

import json
import socket

from odxtarget.config import parse_config
from tests.support.daemon import (
    MAIN_PORTAL,
    MIB,
    AclSpec,
    ChapSpec,
    DaemonProcess,
    DaemonSpec,
    LunSpec,
    TargetSpec,
    free_port,
    port_accepts,
)


def test_default_spec_config_is_valid_and_on_loopback(tmp_path):
    daemon = DaemonProcess(DaemonSpec(), tmp_path, port=free_port())
    config = parse_config(json.loads(daemon.config_path.read_text()), str(daemon.config_path))
    target = config.targets[0]
    assert (target.portals[0].ip, target.portals[0].port) == ("127.0.0.1", daemon.port)
    assert target.demo_mode is True and target.chap is None
    assert config.storage_objects[0].size == 64 * MIB
    image = daemon.image_path(0)
    assert image.stat().st_size == 64 * MIB and image.stat().st_blocks == 0   # sparse
    assert daemon.url(0) == f"iscsi://127.0.0.1:{daemon.port}/{daemon.iqn}/0"


def test_luns_chap_and_acls_reach_the_config(tmp_path):
    spec = DaemonSpec(
        luns=[LunSpec(lun=0, size=8 * MIB, block_size=4096),
              LunSpec(lun=3, size=4 * MIB, read_only=True, name="ro")],
        chap=ChapSpec("user", "secretsecret12", "target", "mutualsecret12"),
        acls=[AclSpec("iqn.2026-11.org.example:one"),
              AclSpec("iqn.2026-11.org.example:two", ChapSpec("two", "twosecret1234"))],
    )
    daemon = DaemonProcess(spec, tmp_path, port=free_port())
    config = parse_config(json.loads(daemon.config_path.read_text()), str(daemon.config_path))
    by_name = {so.name: so for so in config.storage_objects}
    assert by_name["disk0"].block_size == 4096 and by_name["ro"].read_only is True
    target = config.targets[0]
    assert {(m.lun, m.storage_object) for m in target.luns} == {(0, "disk0"), (3, "ro")}
    assert target.demo_mode is False                     # ACLs given: only listed initiators
    assert target.chap.userid == "user" and target.chap.mutual_userid == "target"
    assert [acl.initiator for acl in target.acls] == ["iqn.2026-11.org.example:one", "iqn.2026-11.org.example:two"]
    assert target.acls[1].chap.userid == "two"
    assert daemon.url(3, user="user", password="secretsecret12").startswith("iscsi://user%secretsecret12@127.0.0.1:")


def test_free_port_is_bindable_and_port_accepts_sees_listeners():
    port = free_port()
    assert not port_accepts("127.0.0.1", port, timeout=0.2)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert port_accepts("127.0.0.1", port)


def test_extra_targets_portals_and_the_iscsi_section_reach_the_config(tmp_path):
    spec = DaemonSpec(
        extra_targets=[
            TargetSpec("iqn.2026-11.org.example:second", luns=[LunSpec(lun=0, size=4 * MIB, name="second0")],
                       portals=["other"], tpgt=2),
            TargetSpec("iqn.2026-11.org.example:shared", luns=[LunSpec(lun=0, size=4 * MIB, name="shared0")],
                       portals=[MAIN_PORTAL, "other"], acls=[AclSpec("iqn.2026-11.org.example:one")]),
        ],
        iscsi={"login_timeout": 3.0, "max_sessions_per_address": 4},
    )
    daemon = DaemonProcess(spec, tmp_path, port=free_port())
    config = parse_config(json.loads(daemon.config_path.read_text()), str(daemon.config_path))
    assert set(daemon.ports) == {MAIN_PORTAL, "other"} and daemon.ports[MAIN_PORTAL] == daemon.port
    assert daemon.ports["other"] != daemon.port
    by_iqn = {target.iqn: target for target in config.targets}
    assert [p.port for p in by_iqn[daemon.iqn].portals] == [daemon.port]
    assert [p.port for p in by_iqn["iqn.2026-11.org.example:second"].portals] == [daemon.ports["other"]]
    assert by_iqn["iqn.2026-11.org.example:second"].tpgt == 2
    assert [p.port for p in by_iqn["iqn.2026-11.org.example:shared"].portals] == [daemon.port, daemon.ports["other"]]
    assert by_iqn["iqn.2026-11.org.example:shared"].demo_mode is False
    assert {so.name for so in config.storage_objects} == {"disk0", "second0", "shared0"}
    assert (tmp_path / "second0.img").stat().st_size == 4 * MIB
    assert config.iscsi.login_timeout == 3.0 and config.iscsi.max_sessions_per_address == 4
    assert "iscsi" not in json.loads(DaemonProcess(DaemonSpec(), tmp_path / "plain").config_path.read_text())
