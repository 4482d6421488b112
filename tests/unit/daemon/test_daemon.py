"""Daemon lifecycle with stand-in core and server: build order, sharing, shutdown, signals."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal

import pytest

from odxtarget.config import parse_config
from odxtarget.daemon import Daemon, DaemonError, Factories, format_address, run, serve, summary_lines
from odxtarget.storage.extents import FileExtentBackend

IQN_A = "iqn.2026-11.org.odxtarget:a"
IQN_B = "iqn.2026-11.org.odxtarget:b"


class FakeLogicalUnit:
    def __init__(self, so, backend):
        self.name, self.backend = so.name, backend
        self.reservation_store = None

    def persist_reservations(self, store) -> None:
        self.reservation_store = store


class FakeTarget:
    def __init__(self, name, luns, port_groups=(1,)):
        self.name, self.luns, self.port_groups = name, luns, port_groups


class FakeServer:
    """Records calls in a shared journal; can fail to bind or hang in shutdown."""

    def __init__(self, targets, journal, *, bind_error=None, on_start=None, hang_in_shutdown=False):
        self.targets = targets
        self.journal = journal
        self.bind_error = bind_error
        self.on_start = on_start
        self.hang_in_shutdown = hang_in_shutdown
        self.addresses = []

    async def start(self):
        self.journal.append("server.start")
        if self.bind_error:
            raise self.bind_error
        self.addresses = [(p.ip, p.port) for t, _ in self.targets for p in t.portals]
        if self.on_start:
            self.on_start()

    async def shutdown(self, grace=10.0):
        self.journal.append(("server.shutdown", grace))
        if self.hang_in_shutdown:
            await asyncio.sleep(60)


@pytest.fixture
def journal(monkeypatch):
    """Every backend close lands in the journal too, so ordering can be asserted."""
    entries = []
    real_close = FileExtentBackend.close

    def close(self):
        if self.paths:
            entries.append(("backend.close", os.path.basename(self.paths[0])))
        real_close(self)

    monkeypatch.setattr(FileExtentBackend, "close", close)
    return entries


class FakeFactories(Factories):
    """Factories that also remember the server they made (``made["server"]``)."""

    __slots__ = ("made",)


def factories(journal, **server_options) -> FakeFactories:
    made = {}

    def server(targets, limits):
        made["server"] = FakeServer(targets, journal, **server_options)
        made["limits"] = limits
        return made["server"]

    result = FakeFactories(FakeLogicalUnit, FakeTarget, server)
    result.made = made
    return result


def config_for(tmp_path, port=3260):
    return parse_config({
        "storage_objects": [
            {"name": "disk0", "size": "1M", "extents": [{"path": "disk0.img"}]},
            {"name": "disk1", "size": "2M", "read_only": False, "extents": [{"path": "disk1.img"}]},
        ],
        "targets": [
            {"iqn": IQN_A, "portals": [{"ip": "127.0.0.1", "port": port}], "demo_mode": True,
             "luns": [{"lun": 0, "storage_object": "disk0"}, {"lun": 5, "storage_object": "disk1"}]},
            {"iqn": IQN_B, "portals": [{"ip": "::1", "port": port}], "demo_mode": True,
             "luns": [{"lun": 0, "storage_object": "disk1"}]},
        ],
    }, str(tmp_path / "odx.json"))


def test_start_builds_one_logical_unit_per_storage_object_shared_by_targets(tmp_path, journal, caplog):
    fakes = factories(journal)
    daemon = Daemon(config_for(tmp_path), fakes)

    async def scenario():
        with caplog.at_level(logging.INFO, logger="odxtarget.daemon"):
            await daemon.start()
        server = fakes.made["server"]
        (config_a, target_a), (config_b, target_b) = server.targets
        assert (config_a.iqn, config_b.iqn) == (IQN_A, IQN_B)
        assert target_a.name == IQN_A and sorted(target_a.luns) == [0, 5]
        assert target_a.luns[5] is target_b.luns[0] is daemon.logical_units["disk1"]
        assert isinstance(target_a.luns[0].backend, FileExtentBackend)
        assert target_a.luns[0].backend.size == 1 << 20
        await daemon.stop()

    asyncio.run(scenario())
    assert os.path.getsize(tmp_path / "disk1.img") == 2 << 20  # created (sparse)
    messages = [record.getMessage() for record in caplog.records]
    assert "listening on 127.0.0.1:3260" in messages
    assert "listening on [::1]:3260" in messages
    assert f"target {IQN_A} tpgt 1 on 127.0.0.1:3260: demo mode (any initiator), 2 LUNs" in messages
    assert any(m.startswith("  LUN 5: disk1, 2 MiB (4096 x 512-byte blocks), read-write") for m in messages)


def test_stop_shuts_the_server_down_before_closing_storage(tmp_path, journal):
    daemon = Daemon(config_for(tmp_path), factories(journal))

    async def scenario():
        await daemon.start()
        await daemon.stop(grace=2.5)

    asyncio.run(scenario())
    assert journal == [
        "server.start", ("server.shutdown", 2.5), ("backend.close", "disk0.img"), ("backend.close", "disk1.img"),
    ]
    assert daemon.backends == {}


def test_a_port_that_cannot_be_bound_is_a_clear_error_and_closes_storage(tmp_path, journal):
    bind_error = OSError(errno.EADDRINUSE, "error while attempting to bind on address ('127.0.0.1', 3260): "
                                           "address already in use")
    daemon = Daemon(config_for(tmp_path), factories(journal, bind_error=bind_error))
    with pytest.raises(DaemonError) as failure:
        asyncio.run(daemon.start())
    assert str(failure.value) == (
        "cannot start the iSCSI server: error while attempting to bind on address ('127.0.0.1', 3260): "
        "address already in use"
    )
    assert journal[0] == "server.start" and ("backend.close", "disk0.img") in journal
    assert daemon.backends == {}


def test_storage_that_cannot_be_opened_names_the_object_and_file(tmp_path, journal):
    config = config_for(tmp_path)
    config.storage_objects[1].extents[0].path = str(tmp_path / "missing-dir" / "disk1.img")
    daemon = Daemon(config, factories(journal))
    with pytest.raises(DaemonError) as failure:
        asyncio.run(daemon.start())
    assert str(failure.value) == (
        f"storage object \"disk1\": [Errno 2] cannot open: No such file or directory: "
        f"'{tmp_path}/missing-dir/disk1.img'"
    )
    assert journal == [("backend.close", "disk0.img")]  # the one opened before is closed again


def test_sigterm_stops_serve_gracefully(tmp_path, journal):
    def send_sigterm():
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)

    asyncio.run(serve(config_for(tmp_path), factories(journal, on_start=send_sigterm)))
    assert journal == [
        "server.start", ("server.shutdown", 10.0), ("backend.close", "disk0.img"), ("backend.close", "disk1.img"),
    ]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # our handler is gone again


def test_a_second_signal_cuts_shutdown_short_but_storage_is_still_closed(tmp_path, journal):
    def send_two_signals():
        loop = asyncio.get_running_loop()
        loop.call_soon(os.kill, os.getpid(), signal.SIGINT)
        loop.call_later(0.05, os.kill, os.getpid(), signal.SIGINT)

    run(config_for(tmp_path), factories(journal, on_start=send_two_signals, hang_in_shutdown=True))
    assert journal[:2] == ["server.start", ("server.shutdown", 10.0)]
    assert sorted(journal[2:]) == [("backend.close", "disk0.img"), ("backend.close", "disk1.img")]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_writes_are_synced_at_shutdown(tmp_path, journal, monkeypatch):
    synced = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr("odxtarget.storage.extents.os.fdatasync", lambda fd: (synced.append(fd), real_fdatasync(fd)))
    daemon = Daemon(config_for(tmp_path), factories(journal))

    async def scenario():
        await daemon.start()
        backend = daemon.backends["disk0"]
        backend.write(0, b"\xab" * 512)
        fd = backend.extents_for(0, 512)[0].fd
        await daemon.stop()
        return fd

    fd = asyncio.run(scenario())
    assert fd in synced
    assert (tmp_path / "disk0.img").read_bytes()[:512] == b"\xab" * 512


def test_format_address():
    assert format_address(("127.0.0.1", 3260)) == "127.0.0.1:3260"
    assert format_address(("::1", 3260, 0, 0)) == "[::1]:3260"
    assert format_address("unix:/x") == "unix:/x"


def test_summary_lines_describe_access_and_luns(tmp_path):
    config = parse_config({
        "storage_objects": [{"name": "ro", "size": "4K", "block_size": 4096, "read_only": True,
                             "write_cache": False, "extents": [{"path": "ro.img"}]}],
        "targets": [{"iqn": IQN_A, "luns": [{"lun": 3, "storage_object": "ro"}],
                     "chap": {"userid": "u", "password": "twelve-bytes", "mutual_userid": "t",
                              "mutual_password": "other-secret"},
                     "acls": [{"initiator": "iqn.1994-05.com.redhat:c1"}]}],
    }, str(tmp_path / "c.json"))
    assert summary_lines(config) == [
        f"target {IQN_A} tpgt 1 on 127.0.0.1:3260: 1 ACL, CHAP (mutual), 1 LUN",
        f"  LUN 3: ro, 4 KiB (1 x 4096-byte blocks), read-only, write cache off, {tmp_path}/ro.img",
    ]


def test_the_front_ends_meet_the_contracts_the_daemon_and_admin_rely_on():
    """odxtarget/frontend.py: the native server changes live; behind LIO the kernel owns
    targets and portals, so the admin interface must not treat that front end as live."""
    from odxtarget.config import DaemonConfig
    from odxtarget.frontend import Frontend, LiveFrontend
    from odxtarget.transport.iscsi.limits import IscsiLimits
    from odxtarget.transport.iscsi.server import IscsiServer
    from odxtarget.transport.tcmu.frontend import LioFrontend

    native = IscsiServer([], limits=IscsiLimits())
    lio = LioFrontend(DaemonConfig(frontend="lio"), {}, manage_lio=False)
    assert isinstance(native, LiveFrontend)
    assert isinstance(lio, Frontend) and not isinstance(lio, LiveFrontend)
