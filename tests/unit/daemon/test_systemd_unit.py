"""contrib/systemd/odxtarget.service: what the daemon relies on is in it (Type=notify, reload by
SIGHUP, a watchdog, the config and state paths the code defaults to, the address families LIO
needs), and ``systemd-analyze verify`` accepts it, with the LIO drop-in too.

systemd-analyze comes with Debian's systemd package; where it is missing these checks skip,
but under CI=true they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from odxtarget.config import DEFAULT_CONFIG_PATH, DaemonConfig

CONTRIB = Path(__file__).resolve().parents[3] / "contrib" / "systemd"
UNIT = CONTRIB / "odxtarget.service"
LIO_DROP_IN = CONTRIB / "lio.conf"
INSTALLED_COMMAND = "/opt/odxtarget/bin/odxtarget"


def settings(path: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file (a key may repeat), comments left out."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z]+)=(.*)", line.strip())
        if match:
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def test_the_unit_is_a_notify_service_with_watchdog_reload_and_restart():
    unit = settings(UNIT)
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    assert re.fullmatch(r"\d+s", unit["WatchdogSec"][0])
    assert unit["ExecStartPre"] == [f"{INSTALLED_COMMAND} check-config {DEFAULT_CONFIG_PATH}"]
    assert unit["ExecStart"] == [f"{INSTALLED_COMMAND} serve --config {DEFAULT_CONFIG_PATH}"]


def test_the_unit_is_hardened_but_can_write_the_config_and_state_and_reach_lio():
    unit = settings(UNIT)
    state_dir = DaemonConfig().state_dir
    assert unit["ProtectSystem"] == ["strict"]
    writable = " ".join(unit["ReadWritePaths"]).split()
    assert os.path.dirname(DEFAULT_CONFIG_PATH) in writable and state_dir in writable
    assert unit["StateDirectory"] == [os.path.basename(state_dir)]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "ProtectKernelModules", "RestrictSUIDSGID"):
        assert unit[key] == ["yes"], key
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert int(unit["LimitNOFILE"][0]) >= 65536
    assert "PrivateDevices" not in unit    # storage objects may be block devices
    drop_in = settings(LIO_DROP_IN)
    assert drop_in["ProtectKernelModules"] == ["no"] and drop_in["ProtectKernelTunables"] == ["no"]
    assert "/sys/kernel/config" in drop_in["ReadWritePaths"]


def test_systemd_analyze_verify_accepts_the_unit_and_the_lio_drop_in(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but systemd-analyze is missing (Debian package systemd)")
        pytest.skip("systemd-analyze is missing (Debian package systemd)")
    # verify checks that ExecStart= exists: point it at a stand-in executable.
    command = tmp_path / "odxtarget"
    command.write_text("#!/bin/sh\nexit 0\n")
    command.chmod(0o755)
    unit = tmp_path / "odxtarget.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_COMMAND, str(command)))
    for drop_ins in ([], [LIO_DROP_IN]):
        directory = tmp_path / "odxtarget.service.d"
        if drop_ins:
            directory.mkdir()
            shutil.copy(LIO_DROP_IN, directory / LIO_DROP_IN.name)
        result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"})
        assert result.returncode == 0, result.stderr
        ours = [line for line in (result.stdout + result.stderr).splitlines()
                if str(tmp_path) in line or "odxtarget" in line]
        assert ours == [], ours
