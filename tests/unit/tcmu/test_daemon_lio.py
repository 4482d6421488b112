"""``"frontend": "lio"`` in the daemon: the config accepts it, and the daemon builds the LIO front
end (not the iSCSI server) over the same logical units, with the ODX copy manager attached."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from odxtarget.config import parse_config
from odxtarget.daemon import Daemon, DaemonError, default_factories

MIB = 1 << 20


def lio_config(tmp_path, frontend: str = "lio"):
    return parse_config({
        "schema_version": 1, "frontend": frontend, "state_dir": str(tmp_path / "state"),
        "storage_objects": [
            {"name": "disk0", "size": 4 * MIB, "extents": [{"path": str(tmp_path / "disk0.img")}]},
            {"name": "disk1", "size": 2 * MIB, "extents": [{"path": str(tmp_path / "disk1.img")}]},
        ],
        "targets": [{"iqn": "iqn.2026-11.org.odxtarget:t", "demo_mode": True,
                     "portals": [{"ip": "127.0.0.1", "port": 3260}],
                     "luns": [{"lun": 0, "storage_object": "disk0"}, {"lun": 1, "storage_object": "disk1"}]}],
    }, "test.json")


class RecordingFrontend:
    """Stands in for LioFrontend: records what the daemon built it with and how it was driven."""

    def __init__(self, config, logical_units, *, fail_with: BaseException | None = None):
        self.config = config
        self.logical_units = dict(logical_units)
        self.calls: list[str] = []
        self.fail_with = fail_with
        self.addresses = [("127.0.0.1", 3260)]

    async def start(self):
        self.calls.append("start")
        if self.fail_with is not None:
            raise self.fail_with

    async def shutdown(self, grace: float = 10.0):
        self.calls.append(f"shutdown({grace})")


def factories_with(frontends: list, **frontend_options):
    def build(config, logical_units):
        frontend = RecordingFrontend(config, logical_units, **frontend_options)
        frontends.append(frontend)
        return frontend

    def no_server(targets):
        raise AssertionError("the iSCSI server must not be built in LIO mode")

    return dataclasses.replace(default_factories(), server=no_server, lio_frontend=build)


def test_config_accepts_the_lio_frontend(tmp_path):
    assert lio_config(tmp_path).frontend == "lio"


def test_daemon_builds_the_lio_frontend_over_copy_capable_logical_units(tmp_path):
    frontends: list[RecordingFrontend] = []
    daemon = Daemon(lio_config(tmp_path), factories_with(frontends))

    async def scenario():
        await daemon.start()
        (frontend,) = frontends
        assert frontend.calls == ["start"]
        assert sorted(frontend.logical_units) == ["disk0", "disk1"]
        assert frontend.logical_units["disk0"] is daemon.logical_units["disk0"]
        assert all(lu.third_party_copy for lu in frontend.logical_units.values())
        assert daemon.copy_manager is not None and daemon._copy_pump is not None
        assert daemon.targets == []
        await daemon.stop(grace=1.5)
        assert frontend.calls == ["start", "shutdown(1.5)"]
        assert daemon.backends == {} and daemon.copy_manager is None

    asyncio.run(scenario())


def test_a_failing_lio_start_is_a_daemon_error_and_closes_storage(tmp_path):
    frontends: list[RecordingFrontend] = []
    daemon = Daemon(lio_config(tmp_path), factories_with(frontends, fail_with=OSError(19, "No such device")))
    with pytest.raises(DaemonError, match="cannot start the LIO front end"):
        asyncio.run(daemon.start())
    assert daemon.backends == {} and daemon.server is None


def test_native_frontend_still_builds_the_iscsi_server(tmp_path):
    built = []

    def server(targets, limits):
        built.append(targets)
        return RecordingFrontend(None, {})

    factories = dataclasses.replace(default_factories(), server=server, lio_frontend=None)
    daemon = Daemon(lio_config(tmp_path, "native"), factories)

    async def scenario():
        await daemon.start()
        assert len(built) == 1 and [lun for _, t in built[0] for lun in t.luns] == [0, 1]
        await daemon.stop(grace=0)

    asyncio.run(scenario())
