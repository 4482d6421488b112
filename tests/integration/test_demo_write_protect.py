"""demo_mode_write_protect through real libiscsi logins, and the startup warning of a target
allowed to take unauthenticated writes on a reachable portal (docs/security.md, "Demo mode")."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import libiscsi
from tests.support.daemon import REPO_ROOT, AclSpec, DaemonProcess, DaemonSpec, LunSpec, MIB

pytestmark = pytest.mark.integration

LISTED = "iqn.2026-11.org.example:listed"
STRANGER = "iqn.2026-11.org.example:stranger"
BLOCK = 512
DATA_PROTECT = 0x07
WP = 0x80


def start(directory: Path, **target_keys) -> DaemonProcess:
    daemon = DaemonProcess(DaemonSpec(luns=[LunSpec(size=4 * MIB)], acls=[AclSpec(LISTED)], demo_mode=True),
                           directory)
    daemon.config["targets"][0].update(target_keys)
    daemon.config_path.write_text(json.dumps(daemon.config, indent=2) + "\n")
    return daemon.start()


def mode_sense_10(session) -> bytes:
    result = session.scsi_command(0, struct.pack(">BBBBxxxHx", 0x5A, 0x08, 0x3F, 0, 255), data_in_len=255)
    assert result.good, result.describe()
    return result.data


def test_demo_sessions_are_write_protected_and_acl_sessions_write(tmp_path: Path) -> None:
    daemon = start(tmp_path / "daemon", demo_mode_write_protect=True)
    try:
        with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, 0, initiator_name=LISTED) as listed:
            written = listed.write(0, 0, b"\xa5" * BLOCK, BLOCK)
            assert written.good, written.describe()
            assert not mode_sense_10(listed)[3] & WP
        with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, 0, initiator_name=STRANGER) as stranger:
            refused = stranger.write(0, 0, b"\x00" * BLOCK, BLOCK)
            assert refused.status == libiscsi.STATUS_CHECK_CONDITION
            assert (refused.sense_key, refused.asc, refused.ascq) == (DATA_PROTECT, 0x27, 0x00)
            read = stranger.read(0, 0, 1, BLOCK)
            assert read.good and read.data == b"\xa5" * BLOCK
            assert mode_sense_10(stranger)[3] & WP
    finally:
        daemon.stop()
    assert "demo mode (any initiator, write-protected)" in daemon.log_text()


def test_allowed_unauthenticated_writes_are_warned_about_at_startup(tmp_path: Path) -> None:
    directory = tmp_path / "daemon"
    daemon = DaemonProcess(DaemonSpec(luns=[LunSpec(size=4 * MIB)]), directory)
    daemon.config["targets"][0]["portals"] = [{"ip": "0.0.0.0", "port": daemon.port}]
    daemon.config["targets"][0]["allow_unauthenticated_writes"] = True
    daemon.config_path.write_text(json.dumps(daemon.config, indent=2) + "\n")
    daemon.start()
    try:
        with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, 0, initiator_name=STRANGER) as session:
            assert session.write(0, 0, b"\x01" * BLOCK, BLOCK).good
    finally:
        daemon.stop()
    warnings = [line for line in daemon.log_text().splitlines() if "WARNING" in line and "CHAP" in line]
    assert len(warnings) == 1, daemon.log_text()
    assert (f"target {daemon.iqn} on 0.0.0.0:{daemon.port}: any initiator may log in without CHAP and write"
            " (allow_unauthenticated_writes is set)") in warnings[0]


def test_the_same_file_without_the_key_does_not_start(tmp_path: Path) -> None:
    directory = tmp_path / "daemon"
    daemon = DaemonProcess(DaemonSpec(luns=[LunSpec(size=4 * MIB)]), directory)
    daemon.config["targets"][0]["portals"] = [{"ip": "0.0.0.0", "port": daemon.port}]
    daemon.config_path.write_text(json.dumps(daemon.config, indent=2) + "\n")
    checked = subprocess.run([sys.executable, "-m", "odxtarget", "check-config", str(daemon.config_path)],
                             capture_output=True, text=True, timeout=60, cwd=directory,
                             env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert checked.returncode == 1
    assert f"lets any initiator write without CHAP on 0.0.0.0:{daemon.port}" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_the_shell_turns_it_on_live_for_running_sessions_and_saves_it(tmp_path: Path) -> None:
    daemon = start(tmp_path / "daemon")
    shell = [sys.executable, "-m", "odxtarget.admin", "--socket", str(tmp_path / "daemon" / "state" / "control.sock")]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_COLOR": "1"}
    tpg = f"/iscsi/{daemon.iqn}/tpg1"
    try:
        with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, 0, initiator_name=STRANGER) as stranger:
            assert stranger.write(0, 1, b"\x01" * BLOCK, BLOCK).good
            changed = subprocess.run([*shell, tpg, "set", "attribute", "demo_mode_write_protect=true"],
                                     capture_output=True, text=True, timeout=60, env=env)
            assert changed.returncode == 0, changed.stderr
            refused = stranger.write(0, 1, b"\x02" * BLOCK, BLOCK)    # the same session, next command
            assert (refused.sense_key, refused.asc, refused.ascq) == (DATA_PROTECT, 0x27, 0x00)
            shown = subprocess.run([*shell, tpg, "get", "attribute", "demo_mode_write_protect"],
                                   capture_output=True, text=True, timeout=60, env=env)
            assert "demo_mode_write_protect=true" in shown.stdout
            saved = subprocess.run([*shell, "saveconfig"], capture_output=True, text=True, timeout=60, env=env)
            assert saved.returncode == 0, saved.stderr
        assert json.loads(daemon.config_path.read_text())["targets"][0]["demo_mode_write_protect"] is True
    finally:
        daemon.stop()
