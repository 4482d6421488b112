"""The daemon as systemd runs it (docs/deployment.md): sd_notify READY/WATCHDOG/STOPPING on a
datagram socket the test binds, journal-style log lines when stderr is ``JOURNAL_STREAM``,
SIGHUP reloading the config file (seen through libiscsi logins and REPORT LUNS), the live log
level from odxtargetcli, and the log line of every admin change."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from odxtarget.admin.client import AdminClient
from tests.support import libiscsi
from tests.support.daemon import (
    REPO_ROOT,
    STOP_TIMEOUT_SECONDS,
    DaemonProcess,
    DaemonSpec,
    LunSpec,
    MIB,
    port_accepts,
)

pytestmark = pytest.mark.integration

NOTIFY_TIMEOUT = 30.0
LOG_TIMEOUT = 30.0
HOST_A = "iqn.2026-11.org.example:host-a"
HOST_B = "iqn.2026-11.org.example:host-b"
SECRET = "twelve-chars1"


def control_socket(daemon: DaemonProcess) -> Path:
    return daemon.directory / "state" / "control.sock"


def wait_for_log(daemon: DaemonProcess, pattern: str, after: int = 0) -> re.Match:
    """The first match of ``pattern`` in the daemon's log past character ``after``."""
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        match = re.compile(pattern, re.MULTILINE).search(daemon.log_text(), after)
        if match is not None:
            return match
        assert daemon.running, f"the daemon exited\n{daemon.log_text()}"
        assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n{daemon.log_text()}"
        time.sleep(0.05)


def wait_for_path(path: Path) -> None:
    deadline = time.monotonic() + LOG_TIMEOUT
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.05)


def report_luns(daemon: DaemonProcess, initiator: str) -> list[int]:
    """REPORT LUNS (SPC-4 6.33) over a fresh libiscsi session as ``initiator``."""
    allocation = 4096
    cdb = struct.pack(">BBBBBBIBB", 0xA0, 0, 0, 0, 0, 0, allocation, 0, 0)
    with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0, initiator_name=initiator) as session:
        data = session.checked("REPORT LUNS", 0, cdb, data_in_len=allocation).data
    length = struct.unpack_from(">I", data)[0]
    return sorted(struct.unpack_from(">H", data, 8 + offset)[0] & 0x3FFF for offset in range(0, length, 8))


def edit_config(daemon: DaemonProcess, edit) -> None:
    document = json.loads(daemon.config_path.read_text())
    edit(document)
    daemon.config_path.write_text(json.dumps(document, indent=2) + "\n")


def reload(daemon: DaemonProcess) -> str:
    """SIGHUP, then the log from the reload's start to its outcome line."""
    start = len(daemon.log_text())
    daemon.process.send_signal(signal.SIGHUP)
    outcome = wait_for_log(daemon, r"configuration (reloaded from|not reloaded).*\n", start)
    return daemon.log_text()[start:outcome.end()]


# -- sd_notify ------------------------------------------------------------------------------


def test_ready_comes_once_the_portal_listens_then_watchdog_pings_and_stopping_on_sigterm(tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.settimeout(NOTIFY_TIMEOUT)
    daemon = DaemonProcess(DaemonSpec(luns=[LunSpec(size=4 * MIB)]), tmp_path / "daemon")
    daemon.environment = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
    try:
        daemon.spawn()
        first = listener.recv(4096).decode().split("\n")
        # Checked on receipt: READY=1 must not come before the portal and the control socket.
        assert port_accepts(daemon.host, daemon.port)
        with AdminClient(str(control_socket(daemon))) as client:
            assert client.call("status")["pid"] == daemon.pid
        assert first[0] == "READY=1"
        assert first[1] == f"STATUS=serving 1 target(s), 1 LUN(s) on 127.0.0.1:{daemon.port}"

        pings = [listener.recv(4096) for _ in range(3)]
        assert pings == [b"WATCHDOG=1"] * 3

        daemon.process.send_signal(signal.SIGHUP)
        messages = [listener.recv(4096).decode() for _ in range(2)]
        while not messages[-1].startswith("READY=1"):
            messages.append(listener.recv(4096).decode())
        assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in messages)

        daemon.process.send_signal(signal.SIGTERM)
        while (message := listener.recv(4096).decode()) == "WATCHDOG=1":
            pass
        assert message == "STOPPING=1\nSTATUS=SIGTERM received: shutting down"
        assert daemon.process.wait(STOP_TIMEOUT_SECONDS) == 0
    finally:
        daemon.stop()
        listener.close()


# -- journald -------------------------------------------------------------------------------


def test_under_journald_lines_carry_a_syslog_priority_and_no_timestamp(tmp_path):
    daemon = DaemonProcess(DaemonSpec(luns=[LunSpec(size=4 * MIB)]), tmp_path / "daemon")
    daemon.log_path.touch()
    status = os.stat(daemon.log_path)   # the daemon's stderr is this file, opened for append
    daemon.environment = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
    try:
        daemon.start()
        wait_for_path(control_socket(daemon))
        daemon.config_path.write_text("{not json")
        assert "not reloaded" in reload(daemon)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
    lines = [line for line in daemon.log_text().splitlines() if not line.startswith("===== start")]
    assert f"<6>odxtarget.daemon: listening on 127.0.0.1:{daemon.port}" in lines
    assert any(re.fullmatch(r"<3>odxtarget\.admin: configuration not reloaded, still serving the previous one: .+", line)
               for line in lines)
    assert "<6>odxtarget: stopped" in lines or "<6>odxtarget.daemon: stopped" in lines
    for line in lines:
        assert re.match(r"<[2-7]>odxtarget[\w.]*: ", line), line
        assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line), line


def test_a_journal_stream_that_is_not_stderr_keeps_the_timestamped_format(tmp_path):
    daemon = DaemonProcess(DaemonSpec(luns=[LunSpec(size=4 * MIB)]), tmp_path / "daemon")
    other = tmp_path / "elsewhere"
    other.touch()
    status = os.stat(other)
    daemon.environment = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
    try:
        daemon.start()
    finally:
        daemon.stop()
    listening = next(line for line in daemon.log_text().splitlines() if "listening on" in line)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO    odxtarget\.daemon: listening on ", listening)


# -- SIGHUP ---------------------------------------------------------------------------------


def test_sighup_applies_the_edited_file_and_refuses_a_broken_one_while_serving(tmp_path):
    daemon = DaemonProcess(DaemonSpec(luns=[LunSpec(size=4 * MIB)]), tmp_path / "daemon")
    try:
        daemon.start()
        wait_for_path(control_socket(daemon))
        assert report_luns(daemon, HOST_B) == [0]

        def add_lun_admit_only_host_a_and_debug(document):
            document["storage_objects"].append({
                "name": "disk1", "size": 4 * MIB, "block_size": 512,
                "extents": [{"path": str(daemon.directory / "disk1.img"), "offset": 0, "length": None}]})
            target = document["targets"][0]
            target["luns"].append({"lun": 1, "storage_object": "disk1"})
            target["demo_mode"] = False
            target["acls"] = [{"initiator": HOST_A}]
            document["log_level"] = "debug"

        edit_config(daemon, add_lun_admit_only_host_a_and_debug)
        assert "configuration reloaded from" in reload(daemon)
        assert report_luns(daemon, HOST_A) == [0, 1]
        with pytest.raises(libiscsi.LoginError):
            report_luns(daemon, HOST_B)
        with AdminClient(str(control_socket(daemon))) as client:
            assert client.call("log.level") == {"level": "debug"}

        good = daemon.config_path.read_text()
        for broken in ("{not json", good.replace(f'"{HOST_A}"', '"not an iqn"')):
            daemon.config_path.write_text(broken)
            text = reload(daemon)
            assert re.search(r"ERROR +odxtarget\.admin: configuration not reloaded, still serving the previous one: "
                             + re.escape(str(daemon.config_path)) + ": ", text), text
            assert daemon.running
            assert report_luns(daemon, HOST_A) == [0, 1]
            with pytest.raises(libiscsi.LoginError):
                report_luns(daemon, HOST_B)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()


class DaemonWithoutControlSocket(DaemonProcess):
    def command(self) -> list[str]:
        return [*super().command(), "--no-control-socket"]


def test_sighup_reloads_without_a_control_socket_too(tmp_path):
    daemon = DaemonWithoutControlSocket(DaemonSpec(luns=[LunSpec(size=4 * MIB)]), tmp_path / "daemon")
    try:
        daemon.start()
        assert report_luns(daemon, HOST_B) == [0]
        edit_config(daemon, lambda document: document["targets"][0].update(
            demo_mode=False, acls=[{"initiator": HOST_A}]))
        assert "configuration reloaded from" in reload(daemon)
        assert report_luns(daemon, HOST_A) == [0]
        with pytest.raises(libiscsi.LoginError):
            report_luns(daemon, HOST_B)
        assert not control_socket(daemon).exists()
        assert daemon.terminate() == 0
    finally:
        daemon.stop()


# -- log level and who changed what ---------------------------------------------------------


def shell(daemon: DaemonProcess, *command: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["NO_COLOR"] = "1"
    result = subprocess.run([sys.executable, "-m", "odxtarget.admin", "--socket", str(control_socket(daemon)),
                             *command], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout


def test_the_shell_changes_the_log_level_live_and_every_change_is_logged_with_its_author(tmp_path):
    daemon = DaemonProcess(DaemonSpec(luns=[LunSpec(size=4 * MIB)]), tmp_path / "daemon")
    try:
        daemon.start()
        wait_for_path(control_socket(daemon))
        assert shell(daemon, "loglevel").strip() == "log level: info"
        assert report_luns(daemon, HOST_A) == [0]
        assert "Normal session logged in" in daemon.log_text()

        assert shell(daemon, "loglevel", "debug").strip() == "Log level is now debug."
        assert shell(daemon, "loglevel").strip() == "log level: debug"
        with AdminClient(str(control_socket(daemon))) as client:
            client.call("acl.create", iqn=daemon.iqn, initiator=HOST_A)

        assert shell(daemon, "loglevel", "warning").strip() == "Log level is now warning."
        mark = len(daemon.log_text())
        assert report_luns(daemon, HOST_A) == [0]
        shell(daemon, "loglevel", "info")
        back = wait_for_log(daemon, r"INFO +odxtarget\.admin: log level is info", mark)
        assert "Normal session logged in" not in daemon.log_text()[mark:back.start()]

        tpg = f"/iscsi/{daemon.iqn}/tpg1"
        shell(daemon, tpg, "set", "auth", "userid=alice", f"password={SECRET}")
        wait_for_log(daemon, r"tpg\.set_auth", mark)

        log = daemon.log_text()
        changes = re.findall(r"INFO +odxtarget\.admin: admin change by uid (\d+) pid (\d+): (.*)", log)
        assert [change for _, _, change in changes] == [
            'log.set_level level="debug": done',
            f'acl.create iqn="{daemon.iqn}" initiator="{HOST_A}": done',
            # log.set_level warning is not logged: its line is INFO, below the level it set
            'log.set_level level="info": done',
            f'tpg.set_auth iqn="{daemon.iqn}" userid="alice" password="***": done',
        ]
        assert {int(uid) for uid, _, _ in changes} == {os.getuid()}
        assert int(changes[1][1]) == os.getpid()
        assert int(changes[0][1]) not in (os.getpid(), daemon.pid)   # an odxtargetcli process
        assert SECRET not in log
    finally:
        daemon.stop()
