"""Helpers shared by the guest tests and their fixtures (tests/vm)."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

WORKDIR = Path(os.environ.get("ODXTARGET_VM_WORKDIR", "/tmp/odxtarget-vm"))
TARGET_IQN = "iqn.2026-11.org.odxtarget:vm"
PORTAL = "127.0.0.1:3260"
LUN_BYTES = 64 << 20
STORAGE_OBJECT = "vmdisk0"
START_TIMEOUT = 90.0
DEVICE_TIMEOUT = 60.0


def run(*argv: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


class LioDaemon:
    """``python -m odxtarget.transport.tcmu`` as a child process, restartable."""

    def __init__(self, config_path: Path):
        self.config_path = config_path
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        ready = WORKDIR / "daemon.ready"
        ready.unlink(missing_ok=True)
        log = open(WORKDIR / f"daemon-{self.starts}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "odxtarget.transport.tcmu", "--config", str(self.config_path),
             "--ready-file", str(ready), "--log-level", "debug"],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).resolve().parents[2]))
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"odxtarget exited with {self.process.returncode}; see "
                                   f"{log.name}:\n{Path(log.name).read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("odxtarget did not become ready")
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@dataclass
class IscsiDisk:
    block: str       # /dev/sdX
    generic: str     # /dev/sgN
    image: Path      # the backing file of the LUN


def find_session_disk() -> tuple[str, str] | None:
    for lun_dir in glob.glob("/sys/class/iscsi_session/session*/device/target*/*:*:*:*"):
        blocks = glob.glob(f"{lun_dir}/block/*")
        generics = glob.glob(f"{lun_dir}/scsi_generic/*")
        if blocks and generics:
            block, generic = f"/dev/{Path(blocks[0]).name}", f"/dev/{Path(generics[0]).name}"
            if os.path.exists(block) and os.path.exists(generic):
                return block, generic
    return None


