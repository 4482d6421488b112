"""Fixtures of the guest test suite: runs only inside the vm-test guest (scripts/vm-test).

On the host (no LIO, no configfs) nothing here is collected. In the guest, one session-wide
odxtarget runs in LIO mode on a 64 MiB sparse LUN, and open-iscsi logs in to it on
127.0.0.1:3260; the tests use the resulting /dev/sdX and /dev/sgN.
"""

from __future__ import annotations

import json
import os
import time

import pytest

IN_GUEST = os.environ.get("ODXTARGET_IN_GUEST") == "1"
if not IN_GUEST:
    collect_ignore_glob = ["test_*.py", "guest_support.py"]
else:
    from tests.vm.guest_support import (DEVICE_TIMEOUT, PORTAL, STORAGE_OBJECT, TARGET_IQN,
                                        WORKDIR, LUN_BYTES, IscsiDisk, LioDaemon,
                                        find_session_disk, run)


@pytest.fixture(scope="session")
def lio_daemon():
    WORKDIR.mkdir(parents=True, exist_ok=True)
    image = WORKDIR / f"{STORAGE_OBJECT}.img"
    image.unlink(missing_ok=True)
    config = {
        "schema_version": 1, "frontend": "lio", "state_dir": str(WORKDIR), "log_level": "debug",
        "storage_objects": [{"name": STORAGE_OBJECT, "size": LUN_BYTES, "block_size": 512,
                             "extents": [{"path": str(image)}]}],
        "targets": [{"iqn": TARGET_IQN, "portals": [{"ip": "127.0.0.1", "port": 3260}],
                     "luns": [{"lun": 0, "storage_object": STORAGE_OBJECT}],
                     "demo_mode": True}],
    }
    config_path = WORKDIR / "config.json"
    config_path.write_text(json.dumps(config, indent=2))
    daemon = LioDaemon(config_path)
    daemon.start()
    daemon.image = image
    yield daemon
    daemon.stop()
    from odxtarget.transport.tcmu.__main__ import load_lio_config
    from odxtarget.transport.tcmu.lio_config import LioConfigurator

    LioConfigurator(load_lio_config(str(config_path))).remove()


@pytest.fixture(scope="session")
def iscsi_disk(lio_daemon):
    run("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", PORTAL)
    run("iscsiadm", "-m", "node", "-T", TARGET_IQN, "-p", PORTAL, "--login")
    deadline = time.monotonic() + DEVICE_TIMEOUT
    found = find_session_disk()
    while found is None and time.monotonic() < deadline:
        time.sleep(0.5)
        found = find_session_disk()
    if found is None:
        pytest.fail("no /dev/sdX after iSCSI login")
    yield IscsiDisk(found[0], found[1], lio_daemon.image)
    run("iscsiadm", "-m", "node", "-T", TARGET_IQN, "-p", PORTAL, "--logout", check=False)
