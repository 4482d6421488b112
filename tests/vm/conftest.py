"""Fixtures of the guest test suite: runs only inside the vm-test guest (scripts/vm-test).

On the host (no LIO, no configfs) nothing here is collected. In the guest, one session-wide
``odxtarget serve`` runs with ``"frontend": "lio"``: target TARGET_IQN has two LUNs (64 and
32 MiB, sparse) that open-iscsi logs in to on 127.0.0.1:3260, and the targets of CU_LUNS each
have one LUN that iscsi-test-cu may destroy (plain, 512e, removable, read-only, and two plain
ones for the suites that need a fresh LU or a delayed portal: guest_support.cu_runs). The
tests use the resulting /dev/sdX and /dev/sgN.
"""

from __future__ import annotations

import json
import os

import pytest

IN_GUEST = os.environ.get("ODXTARGET_IN_GUEST") == "1"
if not IN_GUEST:
    collect_ignore_glob = ["test_*.py", "guest_support.py"]
else:
    from tests.vm.guest_support import (CU_LUN_BYTES, CU_LUNS, CU_RERUN_ON_FAILURE,
                                        CU_TIMEOUT_SECONDS, LIO_PORT, LUN_BYTES, PORTAL,
                                        RESERVE_PORT, RESERVE_PORT_DELAY, SECOND_LUN_BYTES,
                                        SECOND_STORAGE_OBJECT, STORAGE_OBJECT, TARGET_IQN, WORKDIR,
                                        BackgroundCuRuns, IscsiDisk, OdxtargetDaemon, cu_runs,
                                        delay_port, login, logout, storage_object, undelay_ports,
                                        wait_for_disks)


def pytest_collection_modifyitems(config, items):
    """iscsi-test-cu runs in the background from the start (lio_daemon) and is judged after
    the other tests; the SIGKILL test comes last, once iscsi-test-cu, which uses the same
    daemon, has finished."""
    def order(item) -> int:
        if "iscsi_test_cu" in item.nodeid:
            return 1
        return 2 if "sigkill" in item.nodeid else 0

    items.sort(key=order)


@pytest.fixture(scope="session")
def lio_config_path():
    WORKDIR.mkdir(parents=True, exist_ok=True)
    names = [STORAGE_OBJECT, SECOND_STORAGE_OBJECT, *(lun.storage_object for lun in CU_LUNS)]
    for name in names:
        (WORKDIR / f"{name}.img").unlink(missing_ok=True)
    for lun in CU_LUNS:
        if dict(lun.options).get("read_only"):     # odxtarget opens, never creates, a read-only LU
            with open(WORKDIR / f"{lun.storage_object}.img", "wb") as image:
                image.truncate(CU_LUN_BYTES)
    portals = [{"ip": "127.0.0.1", "port": LIO_PORT}]
    config = {
        "schema_version": 1, "frontend": "lio", "state_dir": str(WORKDIR / "lio-state"),
        "log_level": "info",
        "storage_objects": [storage_object(STORAGE_OBJECT, LUN_BYTES, WORKDIR),
                            storage_object(SECOND_STORAGE_OBJECT, SECOND_LUN_BYTES, WORKDIR),
                            *({**storage_object(lun.storage_object, CU_LUN_BYTES, WORKDIR), **dict(lun.options)}
                              for lun in CU_LUNS)],
        "targets": [
            {"iqn": TARGET_IQN, "portals": portals, "demo_mode": True,
             "luns": [{"lun": 0, "storage_object": STORAGE_OBJECT},
                      {"lun": 1, "storage_object": SECOND_STORAGE_OBJECT}]},
            *({"iqn": lun.target_iqn, "portals": [{"ip": "127.0.0.1", "port": lun.port}], "demo_mode": True,
               "luns": [{"lun": 0, "storage_object": lun.storage_object}]} for lun in CU_LUNS),
        ],
    }
    path = WORKDIR / "lio.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture(scope="session")
def lio_daemon(lio_config_path):
    daemon = OdxtargetDaemon(lio_config_path, "lio")
    daemon.start()
    delay_port(RESERVE_PORT, RESERVE_PORT_DELAY)
    daemon.iscsi_test_cu = BackgroundCuRuns(cu_runs(), CU_RERUN_ON_FAILURE, CU_TIMEOUT_SECONDS)
    yield daemon
    daemon.iscsi_test_cu.stop()
    undelay_ports()
    daemon.stop()
    from odxtarget.config import load_config
    from odxtarget.transport.tcmu.lio_config import LioConfigurator

    LioConfigurator(load_config(str(lio_config_path))).remove()


@pytest.fixture(scope="session")
def iscsi_disks(lio_daemon) -> dict[int, IscsiDisk]:
    login(TARGET_IQN, PORTAL)
    found = wait_for_disks(TARGET_IQN, 2)
    if sorted(found) != [0, 1]:
        pytest.fail(f"expected LUNs 0 and 1 as /dev/sdX after the iSCSI login, found {found}")
    disks = {
        0: IscsiDisk(*found[0], WORKDIR / f"{STORAGE_OBJECT}.img", LUN_BYTES),
        1: IscsiDisk(*found[1], WORKDIR / f"{SECOND_STORAGE_OBJECT}.img", SECOND_LUN_BYTES),
    }
    yield disks
    logout(TARGET_IQN, PORTAL)


@pytest.fixture(scope="session")
def iscsi_disk(iscsi_disks) -> IscsiDisk:
    return iscsi_disks[0]
