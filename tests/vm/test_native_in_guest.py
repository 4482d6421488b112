"""The native front end (odxtarget's own iSCSI server) seen by the kernel's open-iscsi initiator:
discovery, login, 8 MiB written and read back through /dev/sdX, logout. It runs in the guest
next to LIO, on its own port."""

from __future__ import annotations

import json
import os

import pytest

from tests.vm.guest_support import (MIB, NATIVE_PORT, NATIVE_TARGET_IQN, WORKDIR, OdxtargetDaemon,
                                    direct_read, direct_write, login, logout, run, session_disks,
                                    storage_object, wait_for_disks)

PORTAL = f"127.0.0.1:{NATIVE_PORT}"
NATIVE_LUN_BYTES = 16 * MIB


@pytest.fixture
def native_daemon():
    WORKDIR.mkdir(parents=True, exist_ok=True)
    (WORKDIR / "native0.img").unlink(missing_ok=True)
    config = {
        "schema_version": 1, "frontend": "native", "state_dir": str(WORKDIR / "native-state"),
        "storage_objects": [storage_object("native0", NATIVE_LUN_BYTES, WORKDIR)],
        "targets": [{"iqn": NATIVE_TARGET_IQN, "demo_mode": True,
                     "portals": [{"ip": "127.0.0.1", "port": NATIVE_PORT}],
                     "luns": [{"lun": 0, "storage_object": "native0"}]}],
    }
    path = WORKDIR / "native.json"
    path.write_text(json.dumps(config, indent=2))
    daemon = OdxtargetDaemon(path, "native")
    daemon.start()
    yield daemon
    logout(NATIVE_TARGET_IQN, PORTAL)
    daemon.stop()


def test_open_iscsi_against_the_native_front_end(native_daemon):
    discovered = run("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", PORTAL).stdout
    assert NATIVE_TARGET_IQN in discovered, discovered
    login(NATIVE_TARGET_IQN, PORTAL)
    found = wait_for_disks(NATIVE_TARGET_IQN, 1)
    assert 0 in found, f"no /dev/sdX after logging in to the native front end: {found}"
    block, _ = found[0]
    data = os.urandom(8 * MIB)
    direct_write(block, 4 * MIB, data)
    assert direct_read(block, 4 * MIB, len(data)) == data
    with open(WORKDIR / "native0.img", "rb") as image:
        image.seek(4 * MIB)
        assert image.read(len(data)) == data
    assert "odxtarget" in run("sg_inq", block).stdout
    completed = logout(NATIVE_TARGET_IQN, PORTAL)
    assert completed.returncode == 0, completed.stderr
    assert session_disks(NATIVE_TARGET_IQN) == {}
    assert native_daemon.stop() == 0
