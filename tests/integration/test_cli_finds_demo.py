"""``make run`` then a plain ``odxtargetcli ls``: the shell finds the demo daemon's control socket
under ./run/ without --socket (docs/admin.md, "Finding the daemon")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import REPO_ROOT, free_port

pytestmark = pytest.mark.integration

DEMO_IQN = "iqn.2026-11.org.odxtarget:demo"
STARTUP_SECONDS = 30.0


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["NO_COLOR"] = "1"
    env.pop("ODXTARGET_CONTROL_SOCKET", None)
    return env


def test_plain_odxtargetcli_ls_finds_the_make_run_daemon(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    env = _environment()
    # The two commands of `make run` (Makefile), from the checkout directory.
    subprocess.run([sys.executable, "-m", "odxtarget", "demo-config", "--dir", "run", "--port", str(free_port())],
                   cwd=checkout, env=env, check=True, capture_output=True, timeout=60)
    with (tmp_path / "daemon.log").open("wb") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "odxtarget", "serve", "--config", "run/odxtarget.json"],
                                  cwd=checkout, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        socket_path = checkout / "run" / "control.sock"
        deadline = time.monotonic() + STARTUP_SECONDS
        while not socket_path.exists():
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
            assert time.monotonic() < deadline, "the demo daemon made no control socket"
            time.sleep(0.1)
        listing = subprocess.run([sys.executable, "-m", "odxtarget.admin", "ls"], cwd=checkout, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0, listing.stderr
        assert DEMO_IQN in listing.stdout
        assert "disk0" in listing.stdout and "disk1" in listing.stdout
        # From another directory nothing is found, and the error says where it looked.
        elsewhere = subprocess.run([sys.executable, "-m", "odxtarget.admin", "ls"], cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=60)
        if not any(Path(p).exists() for p in ("/run/odxtarget/control.sock", "/var/lib/odxtarget/control.sock")):
            assert elsewhere.returncode == 1
            assert str(tmp_path / "run" / "control.sock") in elsewhere.stderr
            assert "Traceback" not in elsewhere.stderr
        # --config names the same daemon from anywhere.
        by_config = subprocess.run([sys.executable, "-m", "odxtarget.admin", "--config",
                                    str(checkout / "run" / "odxtarget.json"), "ls"],
                                   cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert by_config.returncode == 0, by_config.stderr
        assert DEMO_IQN in by_config.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
