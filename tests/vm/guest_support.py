"""Helpers shared by the guest tests and their fixtures (tests/vm)."""

from __future__ import annotations

import glob
import hashlib
import mmap
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

WORKDIR = Path(os.environ.get("ODXTARGET_VM_WORKDIR", "/tmp/odxtarget-vm"))
RESULTS_DIR = Path(os.environ.get("RESULTS_DIR", str(WORKDIR)))
REPO_ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
BLOCK_SIZE = 512

# LIO mode: one target with two LUNs for the open-iscsi tests, one more target whose only LUN
# iscsi-test-cu may destroy (--dataloss).
TARGET_IQN = "iqn.2026-11.org.odxtarget:vm"
CU_TARGET_IQN = "iqn.2026-11.org.odxtarget:vm-cu"
LIO_PORT = 3260
PORTAL = f"127.0.0.1:{LIO_PORT}"
STORAGE_OBJECT = "vmdisk0"
LUN_BYTES = 64 * MIB
SECOND_STORAGE_OBJECT = "vmdisk1"
SECOND_LUN_BYTES = 32 * MIB
CU_STORAGE_OBJECT = "vmcu"
CU_LUN_BYTES = 64 * MIB
CU_PATTERN = "SCSI"
CU_TIMEOUT_SECONDS = 960          # ~14 min under TCG, started with the daemon

# the native front end, started inside the guest next to LIO
NATIVE_TARGET_IQN = "iqn.2026-11.org.odxtarget:vm-native"
NATIVE_PORT = 3262

START_TIMEOUT = 120.0
DEVICE_TIMEOUT = 60.0


def run(*argv: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


def storage_object(name: str, size: int, directory: Path) -> dict:
    return {"name": name, "size": size, "block_size": BLOCK_SIZE,
            "extents": [{"path": str(directory / f"{name}.img")}]}


class OdxtargetDaemon:
    """``python -m odxtarget serve`` as a child process, restartable.

    Ready means the control socket exists: the daemon creates it only after its front end
    started (for LIO: configfs objects applied and rings attached). The socket of a killed
    daemon is removed before the next start, so a stale one cannot look like readiness."""

    def __init__(self, config_path: Path, name: str):
        self.config_path = config_path
        self.name = name
        self.control_socket = WORKDIR / f"{name}.sock"
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.log_path: Path | None = None

    def start(self) -> None:
        self.starts += 1
        self.control_socket.unlink(missing_ok=True)
        self.log_path = WORKDIR / f"{self.name}-{self.starts}.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "odxtarget", "serve", "--config", str(self.config_path),
                 "--log-level", "info", "--control-socket", str(self.control_socket)],
                stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))
        deadline = time.monotonic() + START_TIMEOUT
        while not self.control_socket.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"odxtarget exited with {self.process.returncode}; see "
                                   f"{self.log_path}:\n{self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"odxtarget did not become ready; see {self.log_path}")
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


class BackgroundCu:
    """iscsi-test-cu started early (it is the longest guest test) on its own LUN, with its
    verbose output written to the results share as it comes; parsed by the host suite's
    harness (tests/support/iscsi_test_cu.py) once finished."""

    def __init__(self, urls: list[str], pattern: str, log_path: Path, timeout: float):
        from tests.support import iscsi_test_cu as cu

        self.cu, self.pattern, self.log_path, self.timeout = cu, pattern, log_path, timeout
        self.command = [cu.BINARY, "--verbose", f"--test={pattern}", "--dataloss", *urls]
        self.errors_path = log_path.with_suffix(".stderr")
        self.started = time.monotonic()
        with open(log_path, "wb") as log, open(self.errors_path, "wb") as errors:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=errors,
                                            env={**os.environ, "LC_ALL": "C"})
        self._result = None

    def result(self):
        if self._result is None:
            cu = self.cu
            timed_out, returncode = False, None
            try:
                returncode = self.process.wait(
                    timeout=max(1.0, self.timeout - (time.monotonic() - self.started)))
            except subprocess.TimeoutExpired:
                timed_out = True
                self.process.kill()
                self.process.wait()
            output = self.log_path.read_bytes().decode(errors="replace")
            outcomes = cu.parse_verbose_output(output, self.pattern.split(".")[0])
            for name in cu.list_tests(self.pattern):
                outcomes.setdefault(name, cu.CaseOutcome(name, cu.NOT_RUN, ["absent from iscsi-test-cu output"]))
            errors = self.errors_path.read_bytes().decode(errors="replace")
            self._result = cu.RunResult(self.command, returncode, output, errors, outcomes, timed_out,
                                        self.log_path)
        return self._result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class IscsiDisk:
    block: str       # /dev/sdX
    generic: str     # /dev/sgN
    image: Path      # the backing file of the LUN
    size: int        # bytes


def session_disks(target_iqn: str) -> dict[int, tuple[str, str]]:
    """LUN -> (/dev/sdX, /dev/sgN) of every disk of the open-iscsi session(s) to ``target_iqn``.

    Never hard-code /dev/sgN: QEMU's CD-ROM takes sg0 (shared/vm/README.md)."""
    found: dict[int, tuple[str, str]] = {}
    for session in glob.glob("/sys/class/iscsi_session/session*"):
        try:
            name = Path(session, "targetname").read_text().strip()
        except OSError:
            continue
        if name != target_iqn:
            continue
        for lun_dir in glob.glob(f"{session}/device/target*/*:*:*:*"):
            blocks = glob.glob(f"{lun_dir}/block/*")
            generics = glob.glob(f"{lun_dir}/scsi_generic/*")
            if blocks and generics:
                block, generic = f"/dev/{Path(blocks[0]).name}", f"/dev/{Path(generics[0]).name}"
                if os.path.exists(block) and os.path.exists(generic):
                    found[int(Path(lun_dir).name.rsplit(":", 1)[1])] = (block, generic)
    return found


def wait_for_disks(target_iqn: str, luns: int) -> dict[int, tuple[str, str]]:
    deadline = time.monotonic() + DEVICE_TIMEOUT
    found = session_disks(target_iqn)
    while len(found) < luns and time.monotonic() < deadline:
        time.sleep(0.5)
        found = session_disks(target_iqn)
    return found


def login(target_iqn: str, portal: str) -> None:
    run("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", portal)
    run("iscsiadm", "-m", "node", "-T", target_iqn, "-p", portal, "--login")


def logout(target_iqn: str, portal: str) -> subprocess.CompletedProcess:
    return run("iscsiadm", "-m", "node", "-T", target_iqn, "-p", portal, "--logout", check=False)


def aligned(data: bytes) -> memoryview:
    """A page-aligned buffer (O_DIRECT) holding ``data``."""
    buffer = mmap.mmap(-1, max(len(data), mmap.PAGESIZE))
    buffer[:len(data)] = data
    return memoryview(buffer)[:len(data)]


def direct_write(device: str, offset: int, data: bytes) -> None:
    fd = os.open(device, os.O_RDWR | os.O_DIRECT)
    try:
        assert os.pwrite(fd, aligned(data), offset) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def direct_read(device: str, offset: int, length: int) -> bytes:
    fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
    try:
        buffer = aligned(bytes(length))
        assert os.preadv(fd, [buffer], offset) == length
        return bytes(buffer)
    finally:
        os.close(fd)


def image_bytes(disk: IscsiDisk) -> bytes:
    """The whole LUN as odxtarget stored it (its backing file)."""
    return disk.image.read_bytes()


def blocks(data: bytes, lba: int, count: int) -> bytes:
    return data[lba * BLOCK_SIZE:(lba + count) * BLOCK_SIZE]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_unchanged_outside(before: bytes, after: bytes, ranges: list[tuple[int, int]]) -> None:
    """Every block outside ``ranges`` ((lba, count) pairs) is as it was."""
    assert len(before) == len(after)
    position = 0
    for lba, count in sorted(ranges):
        assert digest(before[position:lba * BLOCK_SIZE]) == digest(after[position:lba * BLOCK_SIZE]), (
            f"blocks {position // BLOCK_SIZE}..{lba - 1} changed")
        position = max(position, (lba + count) * BLOCK_SIZE)
    assert digest(before[position:]) == digest(after[position:]), (
        f"blocks from {position // BLOCK_SIZE} to the end changed")
