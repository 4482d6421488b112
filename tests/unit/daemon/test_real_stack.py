"""``odxtarget serve`` with the real SCSI core and iSCSI server, as a subprocess on loopback.

Skipped until odxtarget.scsi.lu and odxtarget.transport.iscsi.server exist.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from odxtarget.daemon import default_factories

    default_factories()
except ImportError as missing:  # the core or the server is still being built
    pytest.skip(f"real stack not importable: {missing}", allow_module_level=True)

REPO = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT = 20.0


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "odx.json"
    path.write_text(json.dumps({
        "schema_version": 1,
        "storage_objects": [{"name": "disk0", "size": "1M", "extents": [{"path": "disk0.img"}]}],
        "targets": [{"iqn": "iqn.2026-11.org.odxtarget:t", "demo_mode": True,
                     "portals": [{"ip": "127.0.0.1", "port": port}],
                     "luns": [{"lun": 0, "storage_object": "disk0"}]}],
    }))
    return path


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "odxtarget", "serve", "--config", str(config)],
        cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )


def wait_for_line(process: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    """stderr lines up to and including the first containing ``needle``."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=deadline - time.monotonic()):
                break
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if needle in line:
                return lines
    raise AssertionError(f"{needle!r} not seen; stderr so far: {lines}")


def test_serve_listens_and_stops_cleanly_on_sigterm(tmp_path):
    process = start(write_config(tmp_path, 0))  # port 0: the system picks, the log says which
    try:
        lines = wait_for_line(process, "odxtarget.daemon: listening on 127.0.0.1:", STARTUP_TIMEOUT)
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)$", lines[-1]).group(1))
        assert port != 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "stopped" in rest
    assert os.path.getsize(tmp_path / "disk0.img") == 1 << 20


def test_serve_on_a_busy_port_fails_with_one_line(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process = start(write_config(tmp_path, port))
        try:
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("odxtarget: error: cannot start the iSCSI server:"), err
    assert "Traceback" not in err
