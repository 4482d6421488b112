"""Helpers shared by the guest tests and their fixtures (tests/vm)."""

from __future__ import annotations

import glob
import hashlib
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

WORKDIR = Path(os.environ.get("ODXTARGET_VM_WORKDIR", "/tmp/odxtarget-vm"))
RESULTS_DIR = Path(os.environ.get("RESULTS_DIR", str(WORKDIR)))
REPO_ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
BLOCK_SIZE = 512

# LIO mode: one target with two LUNs for the open-iscsi tests; the iscsi-test-cu LUNs
# (CU_LUNS) come on targets of their own.
TARGET_IQN = "iqn.2026-11.org.odxtarget:vm"
LIO_PORT = 3260
PORTAL = f"127.0.0.1:{LIO_PORT}"
STORAGE_OBJECT = "vmdisk0"
LUN_BYTES = 64 * MIB
SECOND_STORAGE_OBJECT = "vmdisk1"
SECOND_LUN_BYTES = 32 * MIB
CU_LUN_BYTES = 64 * MIB
CU_TIMEOUT_SECONDS = 960          # for all iscsi-test-cu runs together, started with the daemon

# The Reserve6 suite's LUN is on a portal of its own whose packets the guest delays by
# RESERVE_PORT_DELAY each way (tc netem on lo, delay_port): a network hop instead of bare
# loopback, so that LIO has finished a logged-out session before libiscsi's next login gets
# through (see _RESERVE_ON_LOOPBACK).
RESERVE_PORT = 3261
RESERVE_PORT_DELAY = "2ms"

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


@dataclass(frozen=True)
class CuLun:
    """A LUN that iscsi-test-cu may destroy (--dataloss), alone on its own LIO target so each
    run sees one LU with the properties its tests need, as on the host (tests/conformance)."""

    target_iqn: str
    storage_object: str
    options: tuple[tuple[str, object], ...] = ()    # extra storage-object settings
    port: int = LIO_PORT                             # the LIO portal of its target

    def url(self) -> str:
        return f"iscsi://127.0.0.1:{self.port}/{self.target_iqn}/0"


@dataclass(frozen=True)
class CuRun:
    """One invocation of iscsi-test-cu against LIO and how its results are judged."""

    name: str
    pattern: str
    lun: CuLun
    expected_tests: int                  # iscsi-test-cu 1.19.0's count for the pattern
    multipath: bool = False              # give the LU twice (MultipathIO wants two sessions)
    extra_allowed_skips: tuple[tuple[str, str], ...] = ()   # (pattern, reason)
    known_failures: tuple[tuple[str, str], ...] = ()        # (pattern, reason), strict


# iscsi-test-cu in the guest is split like the host's conformance run (tests/conformance):
# the SCSI family on a plain LU, and the tests that need a removable, 512e or read-only LU on
# one that is. Two suites get plain LUs of their own, for reasons LIO imposes:
# ReceiveCopyResults (_SHARED_NEXUS_SUITES) and Reserve6 (_RESERVE_ON_LOOPBACK).
CU_PLAIN = CuLun("iqn.2026-11.org.odxtarget:vm-cu", "vmcu")
CU_512E = CuLun("iqn.2026-11.org.odxtarget:vm-cu-512e", "vmcu512e", (("physical_block_size", 4096),))
CU_REMOVABLE = CuLun("iqn.2026-11.org.odxtarget:vm-cu-removable", "vmcurmb", (("removable", True),))
CU_READ_ONLY = CuLun("iqn.2026-11.org.odxtarget:vm-cu-readonly", "vmcuro", (("read_only", True),))
CU_COPY_RESULTS = CuLun("iqn.2026-11.org.odxtarget:vm-cu-copyresults", "vmcucopy")
CU_RESERVE = CuLun("iqn.2026-11.org.odxtarget:vm-cu-reserve", "vmcursv", port=RESERVE_PORT)
CU_LUNS = (CU_PLAIN, CU_512E, CU_REMOVABLE, CU_READ_ONLY, CU_COPY_RESULTS, CU_RESERVE)

#: Reserve6.Logout takes RESERVE(6) in one session, logs it out, logs in again and at once
#: expects the other session's RESERVE(6) to succeed. LIO releases the reservation when it
#: deregisters the logged-out session, which on bare loopback in the guest always comes
#: after that: with LIO's own fileio backstore and no odxtarget at all the test failed 8 of
#: 8 times on 127.0.0.1, and passed 8 of 8 with 2 ms of netem delay on lo. So its suite runs
#: on CU_RESERVE, behind RESERVE_PORT's delay.
_RESERVE_ON_LOOPBACK = ("Reserve6",)
_LIO_TARGET_RESETS = (
    ("SCSI.*.TargetColdReset", "LIO answers TARGET COLD RESET with FUNCTION REJECTED (kernel; a TCMU "
                               "handler never sees task management for the target)"),
    ("SCSI.*.TargetWarmReset", "LIO answers TARGET WARM RESET with FUNCTION REJECTED (kernel; a TCMU "
                               "handler never sees task management for the target)"),
)
#: ReceiveCopyResults.CopyStatus first asks for list identifier 1 "with no copy in progress".
#: Behind LIO every initiator of an LU shares one nexus (docs/lio.md), so on the plain LU it
#: would see the results that the ExtendedCopy suite's copies with list identifier 1 left
#: there, for as long as they are kept (120 s): a timing race. Its suite runs on an LU where
#: no copy ran before.
_SHARED_NEXUS_SUITES = ("ReceiveCopyResults",)
_NO_NEXUS = ("a prevention ends with its I_T nexus, and odxtarget never learns of LIO's nexuses: a TCMU "
             "command carries none (docs/lio.md)")


def _suites(names: tuple[str, ...]) -> str:
    return ",".join(f"SCSI.{name}" for name in names)


def cu_runs() -> list[CuRun]:
    from tests.support.iscsi_test_cu import MULTI_BLOCK_PHYSICAL_PATTERNS, REMOVABLE_PATTERNS, suites_except

    main = CuRun(
        name="scsi", pattern=suites_except("SCSI", (*_SHARED_NEXUS_SUITES, *_RESERVE_ON_LOOPBACK)),
        lun=CU_PLAIN, expected_tests=206, multipath=True,
        extra_allowed_skips=(
            ("SCSI.ReadOnly.*", "needs a write-protected LU: covered by the 'readonly' run"),
            *((pattern, "needs removable media (RMB=1): covered by a 'removable' run")
              for pattern in REMOVABLE_PATTERNS),
            *((pattern, "needs 2+ logical blocks per physical block: covered by a '512e' run")
              for pattern in MULTI_BLOCK_PHYSICAL_PATTERNS),
        ))
    reserve = CuRun(name="reserve6", pattern=_suites(_RESERVE_ON_LOOPBACK), lun=CU_RESERVE, expected_tests=7,
                    multipath=True, extra_allowed_skips=_LIO_TARGET_RESETS)
    removable = [
        CuRun(name=f"removable-{pattern.split('.')[1]}", pattern=pattern, lun=CU_REMOVABLE,
              expected_tests=count,
              extra_allowed_skips=(
                  ("SCSI.PreventAllow.ColdReset", _LIO_TARGET_RESETS[0][1]),
                  ("SCSI.PreventAllow.WarmReset", _LIO_TARGET_RESETS[1][1]),
              ) if "PreventAllow" in pattern else (),
              known_failures=(
                  ("SCSI.PreventAllow.ITNexusLoss", _NO_NEXUS),
                  ("SCSI.PreventAllow.Logout", _NO_NEXUS),
              ) if "PreventAllow" in pattern else ())
        for pattern, count in REMOVABLE_PATTERNS.items()
    ]
    multi_block = [
        CuRun(name=f"512e-{pattern.split('.')[-1]}", pattern=pattern, lun=CU_512E, expected_tests=count)
        for pattern, count in MULTI_BLOCK_PHYSICAL_PATTERNS.items()
    ]
    read_only = CuRun(name="readonly", pattern="SCSI.ReadOnly*", lun=CU_READ_ONLY, expected_tests=1)
    copy_results = CuRun(name="copyresults", pattern=_suites(_SHARED_NEXUS_SUITES), lun=CU_COPY_RESULTS,
                         expected_tests=2)
    return [main, reserve, copy_results, *multi_block, read_only, *removable]


#: Tests that race with LIO's asynchronous session teardown, rerun alone if they fail. LIO
#: releases a session's SPC-2 reservation when it deregisters the session
#: (transport_deregister_session): after sending the Logout Response (Logout), or after
#: noticing the closed connection (ITNexusLoss). The tests try RESERVE(6) from the other
#: session right after logging in again, or 3 s after the disconnect. RESERVE_PORT's delay
#: makes Logout pass; the reruns guard against a guest so loaded that teardown takes longer.
CU_RERUN_ON_FAILURE = {
    "SCSI.Reserve6.Logout": "LIO releases the SPC-2 reservation of a logged-out session "
                            "asynchronously, after the Logout Response",
    "SCSI.Reserve6.ITNexusLoss": "LIO releases the SPC-2 reservation of a dropped connection's "
                                 "session when its own teardown gets to it; the test waits 3 s",
}


def delay_port(port: int, delay: str) -> None:
    """Delay every packet to or from ``port`` on lo by ``delay`` (tc netem under a prio qdisc,
    so the other ports keep bare loopback)."""
    commands = [
        ["tc", "qdisc", "replace", "dev", "lo", "root", "handle", "1:", "prio", "bands", "4"],
        ["tc", "qdisc", "replace", "dev", "lo", "parent", "1:4", "handle", "40:", "netem", "delay", delay],
        ["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
         "match", "ip", "dport", str(port), "0xffff", "flowid", "1:4"],
        ["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
         "match", "ip", "sport", str(port), "0xffff", "flowid", "1:4"],
    ]
    for command in commands:
        run(*command)


def undelay_ports() -> None:
    run("tc", "qdisc", "del", "dev", "lo", "root", check=False)


class BackgroundCuRuns:
    """The guest's iscsi-test-cu runs, one after another in a background thread started with
    the daemon (they are the longest guest tests), each with its verbose output written to the
    results share as it comes; parsed by the host suite's harness (tests/support/iscsi_test_cu.py).

    ``rerun_on_failure`` names tests that race with LIO's asynchronous session teardown: when
    one fails in its run, it is run again alone, up to ``RERUNS`` times, and every attempt is
    kept, so the judgement can say exactly what happened."""

    RERUNS = 3

    def __init__(self, runs: list[CuRun], rerun_on_failure: dict[str, str], timeout: float):
        from tests.support import iscsi_test_cu as cu

        self.cu, self.runs, self.timeout = cu, runs, timeout
        self.rerun_on_failure = rerun_on_failure
        self.results: dict[str, object] = {}         # run name -> cu.RunResult
        self.reruns: dict[str, list[object]] = {}    # test name -> [cu.RunResult, ...]
        self.started = time.monotonic()
        self._stopping = threading.Event()
        self._process: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run_all, name="iscsi-test-cu", daemon=True)
        self._thread.start()

    def _remaining(self) -> float:
        return self.timeout - (time.monotonic() - self.started)

    def _run_all(self) -> None:
        for run in self.runs:
            urls = [run.lun.url()] * (2 if run.multipath else 1)
            result = self._invoke(run.pattern, urls, RESULTS_DIR / f"iscsi-test-cu-{run.name}.log")
            self.results[run.name] = result
            for test, outcome in result.outcomes.items():
                if outcome.status == self.cu.FAILED and test in self.rerun_on_failure:
                    self._rerun(test, urls)

    def _rerun(self, test: str, urls: list[str]) -> None:
        attempts = self.reruns.setdefault(test, [])
        for attempt in range(1, self.RERUNS + 1):
            result = self._invoke(test, urls, RESULTS_DIR / f"iscsi-test-cu-rerun-{test}-{attempt}.log")
            attempts.append(result)
            if result.outcomes.get(test) is not None and result.outcomes[test].status == self.cu.PASSED:
                return

    def _invoke(self, pattern: str, urls: list[str], log_path: Path):
        cu = self.cu
        command = [cu.BINARY, "--verbose", f"--test={pattern}", "--dataloss", *urls]
        timed_out, returncode = False, None
        errors_path = log_path.with_suffix(".stderr")
        if self._stopping.is_set() or self._remaining() <= 0:
            log_path.write_text("not started: the guest's iscsi-test-cu time was used up or stopped\n")
            errors_path.write_text("")
        else:
            with open(log_path, "wb") as log, open(errors_path, "wb") as errors:
                self._process = subprocess.Popen(command, stdout=log, stderr=errors,
                                                 env={**os.environ, "LC_ALL": "C"})
            try:
                returncode = self._process.wait(timeout=max(1.0, self._remaining()))
            except subprocess.TimeoutExpired:
                timed_out = True
                self._process.kill()
                self._process.wait()
        return cu.result_of(command, pattern, returncode, log_path.read_bytes().decode(errors="replace"),
                            errors_path.read_bytes().decode(errors="replace"), timed_out, log_path)

    def wait(self) -> None:
        self._thread.join(timeout=max(1.0, self._remaining() + 30))

    def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
        self._thread.join(timeout=30)


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
