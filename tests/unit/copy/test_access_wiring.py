"""The daemon gives the copy manager its front end's ``CopyAccess``: the native server's, read
live from its registry, or LIO's over the configured TPGs."""

from __future__ import annotations

import asyncio
import dataclasses

from odxtarget.config import parse_config
from odxtarget.daemon import Daemon, default_factories
from odxtarget.scsi.lu import LogicalUnit
from odxtarget.transport.iscsi.copy_access import IscsiCopyAccess
from odxtarget.transport.iscsi.session import make_nexus
from odxtarget.transport.tcmu.copy_access import LioCopyAccess
from odxtarget.transport.tcmu.frontend import LioFrontend
from odxtarget.transport.tcmu.handler import TcmuHandler

MIB = 1 << 20
X, Y = "iqn.2026-11.org.odxtarget:x", "iqn.2026-11.org.odxtarget:y"
HOST = "iqn.2026-11.org.example:host"
ISID = bytes.fromhex("400001370000")


def config(tmp_path, frontend: str):
    return parse_config({
        "schema_version": 1, "frontend": frontend, "state_dir": str(tmp_path / "state"),
        "storage_objects": [
            {"name": "disk0", "size": 2 * MIB, "extents": [{"path": str(tmp_path / "disk0.img")}]},
            {"name": "disk1", "size": 2 * MIB, "extents": [{"path": str(tmp_path / "disk1.img")}]},
        ],
        "targets": [
            {"iqn": X, "acls": [{"initiator": HOST}], "portals": [{"ip": "127.0.0.1", "port": 0}],
             "luns": [{"lun": 0, "storage_object": "disk0"}]},
            {"iqn": Y, "demo_mode": True, "portals": [{"ip": "127.0.0.1", "port": 0}],
             "luns": [{"lun": 0, "storage_object": "disk1"}]},
        ],
    }, str(tmp_path / "odx.json"))


def test_native_daemon_answers_from_the_servers_live_registry(tmp_path):
    daemon = Daemon(config(tmp_path, "native"))

    async def scenario():
        await daemon.start()
        try:
            access = daemon.copy_manager.access
            assert isinstance(access, IscsiCopyAccess)
            disk0: LogicalUnit = daemon.logical_units["disk0"]
            on_y = make_nexus(HOST, ISID, Y, 1)
            assert access.reach(on_y, disk0) == make_nexus(HOST, ISID, X, 1)
            registry = daemon.server.registry
            x_config, x_target = registry.entries()[0]
            registry.set_target(dataclasses.replace(x_config, acls=[]), x_target)   # the ACL deleted live
            assert access.reach(on_y, disk0) is None
        finally:
            await daemon.stop(grace=0)

    asyncio.run(scenario())


def test_lio_daemon_answers_from_the_configured_tpgs(tmp_path):
    def lio_frontend(daemon_config, logical_units):
        handler = TcmuHandler(logical_units, use_udev=False, use_netlink=False, sysfs_root=str(tmp_path / "sys"))
        return LioFrontend(daemon_config, logical_units, manage_lio=False, handler=handler)

    daemon = Daemon(config(tmp_path, "lio"), dataclasses.replace(default_factories(), lio_frontend=lio_frontend))

    async def scenario():
        await daemon.start()
        try:
            assert isinstance(daemon.copy_manager.access, LioCopyAccess)
        finally:
            await daemon.stop(grace=0)

    asyncio.run(scenario())
