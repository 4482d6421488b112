"""Who changed what (odxtarget.admin.audit, logged by the control socket with SO_PEERCRED),
the live log level (log.level, log.set_level) and re-reading the config file (config.reload,
what SIGHUP runs through odxtarget.admin.reload)."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import pytest

from odxtarget.admin.audit import Peer, describe_change, redacted
from odxtarget.admin.ops import OPERATIONS
from odxtarget.admin.protocol import AdminError, encode
from odxtarget.admin.reload import ConfigReloader
from odxtarget.admin.server import ControlServer
from odxtarget.config import dump_config, save_config
from odxtarget.systemd import ServiceNotifier

from tests.unit.admin.conftest import IQN, MIB

SECRET = "twelve-chars1"


@pytest.fixture(autouse=True)
def restore_root_level():
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def build_target(admin) -> None:
    admin.call("extent.create", name="disk0", size=4 * MIB)
    admin.call("target.create", iqn=IQN)
    admin.call("lun.create", iqn=IQN, storage_object="disk0")


# -- audit ------------------------------------------------------------------------------------


def test_passwords_are_redacted_and_everything_else_is_kept():
    args = {"iqn": IQN, "userid": "alice", "password": SECRET, "mutual_userid": "tgt",
            "mutual_password": "other-secret1"}
    assert redacted(args) == {"iqn": IQN, "userid": "alice", "password": "***", "mutual_userid": "tgt",
                              "mutual_password": "***"}
    assert redacted({"password": ""}) == {"password": ""}   # clearing a credential stays visible
    line = describe_change("tpg.set_auth", args)
    assert SECRET not in line and "other-secret1" not in line
    assert line == f'tpg.set_auth iqn="{IQN}" userid="alice" password="***" mutual_userid="tgt" mutual_password="***"'


def test_only_operations_that_look_are_left_out_of_the_audit():
    looking = {name for name, spec in OPERATIONS.items() if spec.reads_only}
    assert {"status", "tree", "config.get", "sessions.list", "log.level"} <= looking
    assert not looking & {"extent.create", "tpg.set_auth", "acl.set_auth", "config.restore",
                          "config.reload", "config.save", "log.set_level", "odx.revoke"}


def test_peer_is_described_by_uid_and_pid():
    assert Peer(pid=1234, uid=0).describe() == "uid 0 pid 1234"
    assert Peer(pid=None, uid=None).describe() == "uid ? pid ?"


def test_every_change_over_the_control_socket_is_logged_with_the_peer(admin, tmp_path, caplog):
    build_target(admin)
    path = str(tmp_path / "control" / "control.sock")
    replies: list[dict] = []

    async def session() -> None:
        server = ControlServer(admin.ops, path)
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            for op, args in (("tpg.set_auth", {"iqn": IQN, "userid": "alice", "password": SECRET}),
                             ("status", {}),
                             ("extent.create", {"name": "disk0", "size": "1M"}),
                             ("log.set_level", {"level": "debug"})):
                writer.write(encode({"op": op, "args": args}))
                replies.append(json.loads(await reader.readline()))
            writer.close()
        finally:
            await server.close()

    caplog.set_level(logging.INFO, logger="odxtarget.admin")
    asyncio.run(session())
    assert [reply["ok"] for reply in replies] == [True, True, False, True]
    changes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("admin change by")]
    who = f"admin change by uid {os.getuid()} pid {os.getpid()}: "
    assert changes == [
        who + f'tpg.set_auth iqn="{IQN}" userid="alice" password="***": done',
        who + 'extent.create name="disk0" size="1M": refused: ' + replies[2]["error"],
        who + 'log.set_level level="debug": done',
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.getMessage().startswith("admin change"))
    assert not any(SECRET in r.getMessage() for r in caplog.records)


# -- log level ------------------------------------------------------------------------------


def test_log_level_changes_live_and_saveconfig_keeps_it(admin):
    logging.getLogger().setLevel(logging.INFO)
    assert admin.call("log.level") == {"level": "info"}
    assert admin.call("log.set_level", level="DEBUG") == {"level": "debug"}
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    assert admin.call("log.level") == {"level": "debug"}
    assert admin.daemon.config.log_level == "debug"
    assert admin.call("status")["unsaved_changes"] is True
    admin.call("config.save")
    assert json.loads(admin.config_path.read_text())["log_level"] == "debug"


def test_an_unknown_log_level_is_refused_and_changes_nothing(admin):
    logging.getLogger().setLevel(logging.INFO)
    with pytest.raises(AdminError, match=r"unknown level 'verbose' \(expected one of: debug, info"):
        admin.call("log.set_level", level="verbose")
    assert logging.getLogger().getEffectiveLevel() == logging.INFO
    assert admin.daemon.config.log_level == "info"


# -- reload -----------------------------------------------------------------------------------


def edited_file(admin, edit) -> None:
    document = dump_config(admin.daemon.config)
    edit(document)
    save_config(document, str(admin.config_path))


def test_reload_applies_the_edited_file_including_its_log_level(admin):
    build_target(admin)
    admin.call("config.save")
    logging.getLogger().setLevel(logging.INFO)

    def add_lun_and_debug(document):
        document["storage_objects"].append(
            {**document["storage_objects"][0], "name": "disk1",
             "extents": [{"path": admin.daemon.config.state_dir + "/disk1.img", "offset": 0, "length": None}],
             "serial": None, "wwn": None})
        document["targets"][0]["luns"].append({"lun": 1, "storage_object": "disk1"})
        document["log_level"] = "debug"

    edited_file(admin, add_lun_and_debug)
    assert admin.call("config.reload") == {"path": str(admin.config_path)}
    assert admin.ops.live.scsi_target(IQN).lun_numbers() == [0, 1]
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    assert admin.call("status")["unsaved_changes"] is False


def test_reload_of_a_broken_file_is_refused_and_changes_nothing(admin):
    build_target(admin)
    admin.call("config.save")
    before = admin.daemon.config
    admin.config_path.write_text('{"schema_version": 1, "targets": [{"iqn": "nope"}]}')
    with pytest.raises(AdminError, match=rf"^{admin.config_path}: targets\[0\]\.iqn:"):
        admin.call("config.reload")
    assert admin.daemon.config is before
    assert admin.ops.live.scsi_target(IQN).lun_numbers() == [0]


def test_the_reloader_logs_the_outcome_and_tells_systemd(admin, tmp_path, caplog):
    import socket

    build_target(admin)
    admin.call("config.save")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.settimeout(10)
    notifier = ServiceNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    reloader = ConfigReloader(admin.ops, notifier, lambda: "serving")
    caplog.set_level(logging.INFO, logger="odxtarget.admin")
    try:
        assert asyncio.run(reloader.reload()) is True
        assert listener.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
        assert listener.recv(4096) == b"READY=1\nSTATUS=serving"
        admin.config_path.write_text("{not json")
        assert asyncio.run(reloader.reload()) is False
        assert listener.recv(4096).startswith(b"RELOADING=1")
        assert listener.recv(4096) == b"READY=1\nSTATUS=serving"
    finally:
        notifier.close()
        listener.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(f"configuration not reloaded, still serving the previous one: {admin.config_path}")
    assert f"configuration reloaded from {admin.config_path}" in [r.getMessage() for r in caplog.records]
    assert admin.ops.live.scsi_target(IQN).lun_numbers() == [0]
