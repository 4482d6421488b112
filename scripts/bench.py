#!/usr/bin/env python3
"""``make bench``: odxtarget against tgtd (Debian tgt), the same workloads in the same run.

What is compared (docs/testing.md, "Benchmark", describes every workload):

* I/O workloads, run by the project's load generator ``iscsi-load`` (tools/loadgen, built here
  against libiscsi) against both targets: random and sequential reads and writes, QD1 latency,
  four sessions at once, and random reads with a cold page cache. The two historical read
  workloads are also run with libiscsi's ``iscsi-perf`` and printed next to them.
* The latency probe: one session of 4 KiB random reads at QD1 (the witness), alone and while
  another session copies 256 MiB ranges, writes then flushes, or unmaps half the LU.
* The ODX section (odxtarget only): 1 GiB copies by ODX and by READ/WRITE on XFS (reflink) and
  ext4 loop mounts, and one 256 MiB WRITE USING TOKEN.

Fairness: both targets serve one LUN backed by a file of the same size in the same directory
(so the same filesystem), prefilled with the same non-zero data, so reads hit real extents.
Each target gets the machine to itself: for every workload tgtd is started, measured and
stopped, then odxtarget (``python -m odxtarget serve --config`` with a generated configuration,
write cache at its default) likewise; dirty data is written back before each measurement and
the page cache is warm except for the cold-read workload. The CPU time that other processes
used during each measurement is recorded, because a shared machine skews the figures.

Results: a table on stdout (each figure with its ratio odxtarget/tgt, then the geometric mean of
the I/O workload ratios, then the latency probe), and the same as JSON under bench-results/.
Performance is information: nothing here is a test verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.daemon import DaemonProcess, DaemonSpec, LunSpec  # noqa: E402
from tests.support.tgt import TgtDaemon, TgtLun  # noqa: E402

if TYPE_CHECKING:
    from odxtarget.initiator.libiscsi import IscsiSession

GIB = 1024 ** 3
MIB = 1024 ** 2
KIB = 1024
BLOCK_SIZE = 512
PREFILL_CHUNK = 8 * MIB
ODX_LUN = 0
TGT_LUN = 1                     # tgt keeps LUN 0 for its controller
TGT_TARGET_ID = 1               # the target id tests/support/tgt.py creates
PERF = "iscsi-perf"
_AVERAGE = re.compile(r"iops average (\d+)")
RESULTS_DIR = REPO_ROOT / "bench-results"
LOADGEN_SOURCE = REPO_ROOT / "tools" / "loadgen" / "iscsi-load.c"
LOADGEN_BINARY = REPO_ROOT / "build" / "loadgen" / "iscsi-load"   # build/ is git-ignored
COLD_READ_MIN_BYTES = 2 * GIB   # smaller files are read back into the cache within seconds
TOOL_GRACE_SECONDS = 120        # on top of the run time, before a hung generator is killed
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- workloads --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Workload:
    key: str                    # what --only and --skip name
    title: str
    transfer_bytes: int
    queue_depth: int
    random: bool
    write: bool = False
    sessions: int = 1
    cold_cache: bool = False
    tool: str = "iscsi-load"    # or PERF, for the historical rows
    throughput_figure: bool = False   # headline figure MB/s rather than IOPS

    @property
    def in_geometric_mean(self) -> bool:
        """iscsi-perf rows repeat iscsi-load rows; counting both would weigh them twice."""
        return self.tool != PERF


WORKLOADS = (
    Workload("randread4k", "4 KiB random read QD32", 4 * KIB, 32, True),
    Workload("perf-randread4k", "  the same by iscsi-perf", 4 * KIB, 32, True, tool=PERF),
    Workload("seqread1m", "1 MiB sequential read QD8", MIB, 8, False, throughput_figure=True),
    Workload("perf-seqread1m", "  the same by iscsi-perf", MIB, 8, False, tool=PERF, throughput_figure=True),
    Workload("randwrite4k", "4 KiB random write QD32", 4 * KIB, 32, True, write=True),
    Workload("seqwrite1m", "1 MiB sequential write QD8", MIB, 8, False, write=True, throughput_figure=True),
    Workload("randread4k-qd1", "4 KiB random read QD1", 4 * KIB, 1, True),
    Workload("randread4k-4s", "4 KiB random read QD32 x4 sessions", 4 * KIB, 32, True, sessions=4),
    Workload("randwrite64k-4s", "64 KiB random write QD8 x4 sessions", 64 * KIB, 8, True, write=True, sessions=4,
             throughput_figure=True),
    # Last: it empties the whole page cache (the workloads above re-read their file first anyway).
    Workload("coldread", "4 KiB random read QD32, cold cache", 4 * KIB, 32, True, cold_cache=True),
)
PROBE_KEY = "probe"
ODX_KEY = "odx"
CLUSTER_KEY = "cluster"            # scripts/bench_cluster.py
ALL_KEYS = (*(workload.key for workload in WORKLOADS), PROBE_KEY, ODX_KEY, CLUSTER_KEY)


@dataclass(slots=True)
class CpuUse:
    """Where the CPU went during one measurement, in CPUs (CPU seconds per wall second)."""

    target: float               # the target daemon, all its threads
    initiator: float            # the load generator and this script (probe stressors)
    others: float               # everything else: other processes, kernel threads, interrupts


@dataclass(slots=True)
class Measurement:
    iops: float
    megabytes_per_second: float     # 10^6 bytes/s
    latency_us: dict[str, float] | None = None     # mean, p50, p90, p99, p99.9, max
    errors: int = 0
    failure: str | None = None      # the run did not complete; figures are 0
    cpu: CpuUse | None = None
    session_iops: list[float] = field(default_factory=list)
    runs_iops: list[float] = field(default_factory=list)    # every run's IOPS, with --repeat

    @classmethod
    def failed(cls, why: str) -> Measurement:
        return cls(0.0, 0.0, failure=why)

    @property
    def usable(self) -> bool:
        return self.failure is None and self.errors == 0 and self.iops > 0


# -- CPU accounting ---------------------------------------------------------------------------

def machine_busy_seconds() -> float:
    """CPU seconds spent by all CPUs outside idle and iowait since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def process_cpu_seconds(pid: int | None) -> float:
    """utime + stime of one process, all threads included; 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    after_name = text[text.rindex(")") + 2:].split()    # fields 3.. of proc(5)
    return (int(after_name[11]) + int(after_name[12])) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """This script and its reaped children (the load generator runs are reaped in the window)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class CpuWindow:
    """CPU counters at the start of a measurement; :meth:`close` turns them into a CpuUse."""

    def __init__(self, target_pid: int | None) -> None:
        self.target_pid = target_pid
        self.started = time.monotonic()
        self.busy = machine_busy_seconds()
        self.target = process_cpu_seconds(target_pid)
        self.own = own_cpu_seconds()

    def close(self) -> CpuUse:
        wall = max(time.monotonic() - self.started, 1e-6)
        busy = machine_busy_seconds() - self.busy
        target = process_cpu_seconds(self.target_pid) - self.target
        own = own_cpu_seconds() - self.own
        return CpuUse(round(target / wall, 2), round(own / wall, 2), round(max(busy - target - own, 0.0) / wall, 2))


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- files and page cache ---------------------------------------------------------------------

def prefill(paths: list[Path], size: int) -> None:
    """Write the same non-zero, non-repeating-per-chunk data to every file."""
    handles = [path.open("wb") for path in paths]
    try:
        pattern = bytes(range(1, 256)) * (PREFILL_CHUNK // 255 + 1)
        for offset in range(0, size, PREFILL_CHUNK):
            length = min(PREFILL_CHUNK, size - offset)
            stamp = offset.to_bytes(8, "big")
            chunk = (stamp + pattern[8:length]) if length > 8 else pattern[:length]
            for handle in handles:
                handle.write(chunk)
    finally:
        for handle in handles:
            handle.close()


def warm_page_cache(path: Path) -> None:
    """Read the whole file so that a warm-cache workload starts with every page cached."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        while os.read(descriptor, PREFILL_CHUNK):
            pass
    finally:
        os.close(descriptor)


def drop_page_cache() -> None:
    """``sync; echo 3 > /proc/sys/vm/drop_caches``: clean pages, dentries and inodes go."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def filesystem_type(path: Path) -> str:
    completed = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(path)], capture_output=True, text=True)
    return completed.stdout.strip() or "unknown"


# -- the targets ------------------------------------------------------------------------------

class BenchTarget(Protocol):
    name: str
    image: Path
    lun: int

    def start(self) -> None: ...
    def stop(self) -> None: ...
    @property
    def url(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def address(self) -> tuple[str, int, str]: ...   # host, port, IQN


class TgtTarget:
    """tgtd with one LUN on ``image``, thin provisioning on so that it accepts UNMAP as
    odxtarget does (tgt refuses UNMAP otherwise)."""

    name = "tgt"
    lun = TGT_LUN
    iqn = "iqn.2026-11.org.odxtarget:bench-tgt"

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.image = directory / "disk.img"
        self.daemon: TgtDaemon | None = None

    def start(self) -> None:
        self.daemon = TgtDaemon(self.iqn, [TgtLun(TGT_LUN, self.image)], self.directory / "tgtd.log")
        self.daemon.start()
        command = ["tgtadm", "-C", str(self.daemon.control_port), "--lld", "iscsi", "--mode", "logicalunit",
                   "--op", "update", "--tid", str(TGT_TARGET_ID), "--lun", str(TGT_LUN),
                   "--params", "thin_provisioning=1"]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            self.stop()
            raise RuntimeError(f"tgtadm thin_provisioning=1 failed: {completed.stderr.strip()}")

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    @property
    def url(self) -> str:
        assert self.daemon is not None
        return self.daemon.url(TGT_LUN)

    @property
    def pid(self) -> int | None:
        return self.daemon.process.pid if self.daemon and self.daemon.process else None

    @property
    def address(self) -> tuple[str, int, str]:
        assert self.daemon is not None
        return self.daemon.host, self.daemon.port, self.iqn


class OdxTarget:
    """The odxtarget daemon as users run it: ``python -m odxtarget serve --config`` on a generated
    configuration (tests/support/daemon.py) with the write cache at its default."""

    name = "odxtarget"
    lun = ODX_LUN

    def __init__(self, directory: Path, size: int) -> None:
        spec = DaemonSpec(luns=[LunSpec(lun=ODX_LUN, size=size, block_size=BLOCK_SIZE)],
                          iqn="iqn.2026-11.org.odxtarget:bench", log_level="warning")
        self.daemon = DaemonProcess(spec, directory)
        self.image = self.daemon.image_path(ODX_LUN)

    def start(self) -> None:
        self.daemon.start()

    def stop(self) -> None:
        self.daemon.stop()

    @property
    def url(self) -> str:
        return self.daemon.url(ODX_LUN)

    @property
    def pid(self) -> int | None:
        return self.daemon.pid

    @property
    def address(self) -> tuple[str, int, str]:
        return self.daemon.host, self.daemon.port, self.daemon.iqn


@contextlib.contextmanager
def serving(target: BenchTarget) -> Iterator[BenchTarget]:
    target.start()
    try:
        yield target
    finally:
        target.stop()


# -- load generators --------------------------------------------------------------------------

def build_loadgen() -> Path:
    """Compile tools/loadgen/iscsi-load.c when the binary is missing or older than its source."""
    if LOADGEN_BINARY.exists() and LOADGEN_BINARY.stat().st_mtime >= LOADGEN_SOURCE.stat().st_mtime:
        return LOADGEN_BINARY
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C compiler ({compiler}); run `make setup` (installs gcc and libiscsi-dev)")
    LOADGEN_BINARY.parent.mkdir(parents=True, exist_ok=True)
    partial = LOADGEN_BINARY.with_suffix(".partial")
    command = [compiler, "-O2", "-Wall", "-o", str(partial), str(LOADGEN_SOURCE), "-liscsi"]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"building the load generator failed (run `make setup` for libiscsi-dev):\n"
                           f"$ {' '.join(command)}\n{completed.stderr.strip()}")
    partial.replace(LOADGEN_BINARY)
    print(f"bench: built {LOADGEN_BINARY.relative_to(REPO_ROOT)}")
    return LOADGEN_BINARY


def _log_command(log_path: Path, command: list[str], completed: subprocess.CompletedProcess[str]) -> None:
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(command)}\nexit {completed.returncode}\n{completed.stdout}\n{completed.stderr}\n")


def run_loadgen(url: str, *, transfer_bytes: int, queue_depth: int, random: bool, write: bool, sessions: int,
                seconds: float, log_path: Path) -> Measurement:
    command = [str(LOADGEN_BINARY), "--json", "-b", str(transfer_bytes), "-q", str(queue_depth),
               "-s", str(sessions), "-t", str(seconds)]
    command += ["-r"] if random else []
    command += ["-w"] if write else []
    command.append(url)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + TOOL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        return Measurement.failed(f"iscsi-load did not finish within {seconds + TOOL_GRACE_SECONDS:.0f} s")
    _log_command(log_path, command, completed)
    if completed.returncode not in (0, 2) or not completed.stdout.strip():
        last_line = (completed.stderr.strip() or completed.stdout.strip() or "no output").splitlines()[-1]
        return Measurement.failed(f"iscsi-load exit {completed.returncode}: {last_line}")
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    return Measurement(report["iops"], report["megabytes_per_second"], report["latency_us"], report["errors"],
                       session_iops=report["session_iops"])


def run_perf(url: str, workload: Workload, seconds: float, log_path: Path) -> Measurement:
    command = [PERF, "-m", str(workload.queue_depth), "-b", str(workload.transfer_bytes // BLOCK_SIZE),
               "-t", str(max(1, round(seconds)))]
    if workload.random:
        command.append("-r")
    command.append(url)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + TOOL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        return Measurement.failed(f"iscsi-perf did not finish within {seconds + TOOL_GRACE_SECONDS:.0f} s")
    _log_command(log_path, command, completed)
    averages = _AVERAGE.findall(completed.stdout)
    if completed.returncode != 0 or not averages:
        last_line = (completed.stderr.strip() or completed.stdout.strip() or "no output").splitlines()[-1]
        return Measurement.failed(f"iscsi-perf exit {completed.returncode}: {last_line[-200:]}")
    iops = int(averages[-1])
    return Measurement(float(iops), iops * workload.transfer_bytes / 1e6)


def median_run(runs: list[Measurement]) -> Measurement:
    """The run with the median IOPS (the lower one of an even count), carrying every run's IOPS."""
    completed = sorted((run for run in runs if run.failure is None), key=lambda run: run.iops)
    chosen = completed[(len(completed) - 1) // 2] if completed else runs[-1]
    chosen.runs_iops = [run.iops for run in runs]
    return chosen


def measure_workload(target: BenchTarget, workload: Workload, seconds: float, log_path: Path) -> Measurement:
    """One target, one workload, the machine to itself: write back, (un)cache, start, run, stop."""
    os.sync()
    if not workload.cold_cache:
        warm_page_cache(target.image)
    try:
        with serving(target):
            if workload.cold_cache:
                drop_page_cache()    # after the start, so only the data is cold, not the daemon
            window = CpuWindow(target.pid)
            if workload.tool == PERF:
                result = run_perf(target.url, workload, seconds, log_path)
            else:
                result = run_loadgen(target.url, transfer_bytes=workload.transfer_bytes,
                                     queue_depth=workload.queue_depth, random=workload.random,
                                     write=workload.write, sessions=workload.sessions, seconds=seconds,
                                     log_path=log_path)
            result.cpu = window.close()
            return result
    except Exception as error:     # a target that does not start: record it, go on with the others
        return Measurement.failed(f"{type(error).__name__}: {str(error).splitlines()[0]}")


# -- latency probe ----------------------------------------------------------------------------

PROBE_TRANSFER = 4 * KIB
PROBE_COPY_BYTES = 256 * MIB
PROBE_WRITE_BYTES = 64 * MIB
PROBE_WRITE_CHUNK = MIB
UNMAP_START_DELAY_SECONDS = 1.0     # let the witness run alone a moment before the UNMAP
STRESSOR_JOIN_SECONDS = 600.0


@dataclass(slots=True)
class StressorReport:
    """What the second session did during a phase."""

    what: str                       # one operation, e.g. "ODX copy of 256 MiB"
    seconds: list[float] = field(default_factory=list)   # one entry per operation
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"{self.what}: FAILED ({self.error})"
        if not self.seconds:
            return f"{self.what}: none completed"
        if len(self.seconds) == 1:
            return f"1 x {self.what}: {self.seconds[0]:.3f} s"
        return (f"{len(self.seconds)} x {self.what}, mean {statistics.mean(self.seconds):.3f} s,"
                f" max {max(self.seconds):.3f} s")


@dataclass(frozen=True, slots=True)
class ProbeGeometry:
    """Where the stressors work on a LU of ``size`` bytes (all scaled down for small LUs)."""

    size: int

    @property
    def copy_bytes(self) -> int:
        return min(PROBE_COPY_BYTES, self.size // 4)

    @property
    def copy_destination(self) -> int:
        return self.size // 2

    @property
    def write_bytes(self) -> int:
        return min(PROBE_WRITE_BYTES, self.size // 4)

    @property
    def write_offset(self) -> int:
        return self.size // 4

    @property
    def unmap_offset(self) -> int:
        return self.size // 2


Stressor = Callable[[BenchTarget, ProbeGeometry, threading.Event], StressorReport]


def _copy_url(target: BenchTarget, offset: int, length: int | None = None) -> str:
    blocks = f"&blocks={length // BLOCK_SIZE}" if length is not None else ""
    return f"{target.url}?lba={offset // BLOCK_SIZE}{blocks}"


def copy_stressor(offload: bool) -> Stressor:
    """Copies of ``copy_bytes`` within the LU, back to back, as ``odxtarget copy`` does them: by
    ODX (POPULATE TOKEN, RRTI, WRITE USING TOKEN in OPTIMAL TRANSFER COUNT chunks), or by its
    READ(16)/WRITE(16) fallback of 1 MiB at a time when ``offload`` is False."""

    def stress(target: BenchTarget, geometry: ProbeGeometry, stop: threading.Event) -> StressorReport:
        from odxtarget.initiator import odx_copy

        size_text = f"{geometry.copy_bytes // MIB} MiB"
        report = StressorReport(f"ODX copy of {size_text}" if offload else f"READ+WRITE copy of {size_text}")
        source = odx_copy.parse_iscsi_url(_copy_url(target, 0, geometry.copy_bytes))
        destination = odx_copy.parse_iscsi_url(_copy_url(target, geometry.copy_destination))
        while not stop.is_set():
            started = time.perf_counter()
            try:
                summary = odx_copy.copy_range(source, destination, allow_fallback=not offload, offload=offload)
            except odx_copy.CopyError as error:
                report.error = str(error)
                break
            if summary.method != ("odx" if offload else "fallback"):
                report.error = f"copied by {summary.method}"
                break
            report.seconds.append(time.perf_counter() - started)
        return report

    return stress


def _probe_session(target: BenchTarget) -> IscsiSession:
    from odxtarget.initiator import libiscsi

    host, port, iqn = target.address
    session = libiscsi.connect(host, port, iqn, target.lun, initiator_name="iqn.2026-11.org.odxtarget:bench-stressor")
    for _ in range(8):    # clear unit attentions (power on, capacity data) on this nexus
        if session.test_unit_ready(target.lun).sense_key != 0x06:
            break
    return session


def flush_stressor(target: BenchTarget, geometry: ProbeGeometry, stop: threading.Event) -> StressorReport:
    """Write ``write_bytes`` in 1 MiB WRITE(16)s, then SYNCHRONIZE CACHE; repeat. The reported
    time is the SYNCHRONIZE CACHE's (the writes land in the write cache)."""
    report = StressorReport(f"SYNCHRONIZE CACHE after {geometry.write_bytes // MIB} MiB of writes")
    data = bytes((index * 13 + 1) % 251 for index in range(PROBE_WRITE_CHUNK))
    session = _probe_session(target)
    try:
        while not stop.is_set():
            for offset in range(geometry.write_offset, geometry.write_offset + geometry.write_bytes,
                                PROBE_WRITE_CHUNK):
                result = session.write(target.lun, offset // BLOCK_SIZE, data, BLOCK_SIZE)
                if not result.good:
                    report.error = f"WRITE(16): {result.describe()}"
                    return report
            started = time.perf_counter()
            result = session.synchronize_cache(target.lun)
            if not result.good:
                report.error = f"SYNCHRONIZE CACHE: {result.describe()}"
                return report
            report.seconds.append(time.perf_counter() - started)
    finally:
        session.close()
    return report


def _max_unmap_blocks(session: IscsiSession, lun: int) -> int:
    """MAXIMUM UNMAP LBA COUNT (Block Limits VPD, SBC-4 6.6.4); 0 when not reported."""
    result = session.inquiry(lun, 0xB0, 64)
    if not result.good or len(result.data) < 24:
        return 0
    return struct.unpack_from(">I", result.data, 20)[0]


def unmap_parameter_lists(first_block: int, blocks: int, max_blocks: int) -> list[bytes]:
    """UNMAP parameter lists (SBC-4 5.32.2) of one descriptor each, at most MAXIMUM UNMAP LBA
    COUNT blocks per command (the limit bounds a whole command, not one descriptor)."""
    per_command = min(max_blocks or 0xFFFF_FFFF, 0xFFFF_FFFF)
    lists = []
    for lba in range(first_block, first_block + blocks, per_command):
        count = min(per_command, first_block + blocks - lba)
        lists.append(struct.pack(">HH4xQI4x", 22, 16, lba, count))   # data lengths: 24 - 2, one descriptor
    return lists


def unmap_stressor(target: BenchTarget, geometry: ProbeGeometry, stop: threading.Event) -> StressorReport:
    """One UNMAP of the LU's second half (as many commands as the Block Limits VPD requires),
    a second into the phase; the time reported is all of them together."""
    half = (geometry.size - geometry.unmap_offset) // MIB
    report = StressorReport(f"UNMAP of {half} MiB (half the LU)")
    session = _probe_session(target)
    try:
        if stop.wait(UNMAP_START_DELAY_SECONDS):
            return report
        lists = unmap_parameter_lists(geometry.unmap_offset // BLOCK_SIZE,
                                      (geometry.size - geometry.unmap_offset) // BLOCK_SIZE,
                                      _max_unmap_blocks(session, target.lun))
        started = time.perf_counter()
        for parameters in lists:
            cdb = struct.pack(">BB4xBHB", 0x42, 0, 0, len(parameters), 0)
            result = session.scsi_command(target.lun, cdb, data_out=parameters)
            if not result.good:
                report.error = f"UNMAP: {result.describe()}"
                return report
        report.seconds.append(time.perf_counter() - started)
        if len(lists) > 1:
            report.what += f" in {len(lists)} commands"
    finally:
        session.close()
    return report


@dataclass(frozen=True, slots=True)
class ProbePhase:
    key: str
    title: str
    stressors: dict[str, Stressor | None]     # by target name; None: the witness alone


def probe_phases(geometry: ProbeGeometry) -> list[ProbePhase]:
    copy = f"{geometry.copy_bytes // MIB} MiB"
    odx, read_write = copy_stressor(offload=True), copy_stressor(offload=False)
    return [
        ProbePhase("alone", "witness alone", {"tgt": None, "odxtarget": None}),
        ProbePhase("copy", f"{copy} copies (odxtarget ODX; tgt READ+WRITE)", {"tgt": read_write, "odxtarget": odx}),
        ProbePhase("rw-copy", f"{copy} copies by READ+WRITE (both)", {"tgt": read_write, "odxtarget": read_write}),
        ProbePhase("flush", f"{geometry.write_bytes // MIB} MiB of writes, SYNCHRONIZE CACHE",
                   {"tgt": flush_stressor, "odxtarget": flush_stressor}),
        ProbePhase("unmap", "UNMAP of half the LU", {"tgt": unmap_stressor, "odxtarget": unmap_stressor}),
    ]


@dataclass(slots=True)
class PhaseResult:
    witness: Measurement
    stressor: StressorReport | None


def run_phase(target: BenchTarget, stressor: Stressor | None, geometry: ProbeGeometry, seconds: float,
              log_path: Path) -> PhaseResult:
    stop = threading.Event()
    reports: list[StressorReport] = []
    thread = None
    if stressor is not None:
        def run_stressor() -> None:
            try:
                reports.append(stressor(target, geometry, stop))
            except Exception as error:    # reported in the table; the witness figures still count
                reports.append(StressorReport("stressor", error=f"{type(error).__name__}: {error}"))

        thread = threading.Thread(target=run_stressor, name="probe-stressor", daemon=True)
        thread.start()
    window = CpuWindow(target.pid)
    witness = run_loadgen(target.url, transfer_bytes=PROBE_TRANSFER, queue_depth=1, random=True, write=False,
                          sessions=1, seconds=seconds, log_path=log_path)
    witness.cpu = window.close()
    stop.set()
    if thread is not None:
        thread.join(STRESSOR_JOIN_SECONDS)
        if thread.is_alive():
            return PhaseResult(witness, StressorReport("stressor", error="still running after the phase"))
    return PhaseResult(witness, reports[0] if reports else None)


def run_probe(target: BenchTarget, phases: list[ProbePhase], geometry: ProbeGeometry, seconds: float,
              log_path: Path) -> dict[str, PhaseResult]:
    """All phases on one daemon start, each from written-back, cached data; UNMAP last because
    it deallocates half the file."""
    results: dict[str, PhaseResult] = {}
    os.sync()
    warm_page_cache(target.image)
    try:
        with serving(target):
            for phase in phases:
                os.sync()
                results[phase.key] = result = run_phase(target, phase.stressors[target.name], geometry, seconds,
                                                        log_path)
                others = f" (others {result.witness.cpu.others:.2f} CPUs)" if result.witness.cpu else ""
                print(f"bench: probe {target.name:<9} {phase.key:<8} witness {format_latencies(result.witness)}"
                      f"{others}{'; ' + result.stressor.describe() if result.stressor else ''}", flush=True)
    except Exception as error:     # a target that does not start: record it, go on with the other
        failure = Measurement.failed(f"{type(error).__name__}: {str(error).splitlines()[0]}")
        print(f"bench: probe {target.name}: {failure.failure}", file=sys.stderr)
        for phase in phases:
            results.setdefault(phase.key, PhaseResult(failure, None))
    return results


# -- ODX section (odxtarget only) -------------------------------------------------------------

ODX_COPY_BYTES = GIB
WUT_BYTES = 256 * MIB
WUT_REPEATS = 5
ODX_GOALS = {"xfs": 100.0, "ext4": 3.0}
WUT_GOAL_SECONDS = 0.050
LOOP_IMAGE_BYTES = 8 * GIB
HASH_CHUNK = 16 * MIB


@dataclass(frozen=True, slots=True)
class CopyTiming:
    layout: str            # "within a LUN" / "across LUNs"
    host_seconds: float
    odx_seconds: float     # copy_range in process: what the ratio uses
    cli_seconds: float     # the same by `odxtarget copy`, interpreter start-up included

    @property
    def ratio(self) -> float:
        return self.host_seconds / self.odx_seconds if self.odx_seconds else float("inf")


@dataclass(frozen=True, slots=True)
class FilesystemResult:
    filesystem: str
    copies: list[CopyTiming]
    wut_seconds: list[float]


@contextlib.contextmanager
def loop_mount(kind: str, base: Path):
    """A fresh loop-mounted filesystem (``xfs`` with reflink=1, or ``ext4``) under ``base``."""
    image, mountpoint = base / f"{kind}.img", base / f"{kind}-mnt"
    mountpoint.mkdir(parents=True, exist_ok=True)
    mkfs = ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"] if kind == "xfs" else ["mkfs.ext4", "-q", "-F"]
    with image.open("wb") as handle:
        handle.truncate(LOOP_IMAGE_BYTES)
    subprocess.run([*mkfs, str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True, capture_output=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
        image.unlink(missing_ok=True)


def range_digest(path: Path, offset: int, length: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(offset)
        left = length
        while left:
            chunk = handle.read(min(HASH_CHUNK, left))
            if not chunk:
                raise RuntimeError(f"{path} ends before {offset + length}")
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def host_copy(source_url: str, destination_url: str) -> float:
    """READ(16)+WRITE(16) through the target: ``odxtarget copy --no-odx``, in process."""
    from odxtarget.initiator import odx_copy

    os.sync()
    started = time.perf_counter()                  # like the ODX timing: logins included
    summary = odx_copy.copy_range(odx_copy.parse_iscsi_url(source_url), odx_copy.parse_iscsi_url(destination_url),
                                  offload=False)
    elapsed = time.perf_counter() - started
    if summary.method != "fallback" or summary.bytes != ODX_COPY_BYTES:
        raise RuntimeError(f"host copy did not run by READ/WRITE alone: {summary.line()}")
    return elapsed


def odx_copy_seconds(source_url: str, destination_url: str) -> float:
    from odxtarget.initiator import odx_copy

    os.sync()
    started = time.perf_counter()
    summary = odx_copy.copy_range(odx_copy.parse_iscsi_url(source_url), odx_copy.parse_iscsi_url(destination_url),
                                  allow_fallback=False)
    elapsed = time.perf_counter() - started
    if summary.method != "odx" or summary.bytes != ODX_COPY_BYTES:
        raise RuntimeError(f"ODX copy did not run by ODX alone: {summary.line()}")
    return elapsed


def odx_cli_seconds(source_url: str, destination_url: str) -> float:
    """The same ODX copy by the ``odxtarget copy`` command: adds interpreter start-up."""
    os.sync()
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "odxtarget", "copy", "--no-fallback", source_url,
                                destination_url], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0 or "method: odx" not in completed.stdout:
        raise RuntimeError(f"odxtarget copy failed: {completed.stderr.strip() or completed.stdout.strip()}")
    return elapsed


def time_single_wut(daemon: DaemonProcess, before_each: Callable[[], None]) -> list[float]:
    """PT + RRTI for 256 MiB of LUN 0, then WUTs of all of it to LUN 1, each timed alone."""
    from odxtarget.copy.params import build_populate_token_list, build_write_using_token_list
    from odxtarget.initiator import libiscsi

    blocks = WUT_BYTES // BLOCK_SIZE
    session = libiscsi.connect(daemon.host, daemon.port, daemon.iqn, 0)
    try:
        for lun in (0, 1):
            for _ in range(8):
                if session.test_unit_ready(lun).sense_key != 0x06:
                    break
        parameters = build_populate_token_list([(0, blocks)])
        session.checked("POPULATE TOKEN", 0, struct.pack(">BB4xII2x", 0x83, 0x10, 1, len(parameters)), parameters)
        info = session.checked("RRTI", 0, struct.pack(">BBI4xI2x", 0x84, 0x07, 1, 1024), data_in_len=1024).data
        token = info[38:550]
        timings = []
        for attempt in range(WUT_REPEATS):
            parameters = build_write_using_token_list(token, [(0, blocks)])
            cdb = struct.pack(">BB4xII2x", 0x83, 0x11, 2 + attempt, len(parameters))
            before_each()
            started = time.perf_counter()
            session.checked("WRITE USING TOKEN", 1, cdb, parameters)
            timings.append(time.perf_counter() - started)
        return timings
    finally:
        session.close()


def fill_range(path: Path, offset: int, length: int, byte: int) -> None:
    """Write ``length`` bytes of ``byte`` at ``offset``: allocated, old data for a destination."""
    chunk = bytes((byte,)) * PREFILL_CHUNK
    with path.open("r+b") as handle:
        handle.seek(offset)
        for done in range(0, length, PREFILL_CHUNK):
            handle.write(chunk[:min(PREFILL_CHUNK, length - done)])


def settle(path: Path, offset: int, length: int) -> None:
    """Write everything back and drop the destination range from the page cache.

    Both methods then start alike: the source hot in the cache, the destination holding old
    data on disk only. (Left cached, the destination would make a reflink pay for dropping
    the cached pages it replaces, and a write overwrite them in place.)
    """
    os.sync()
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, offset, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def bench_odx_on(filesystem: str, directory: Path) -> FilesystemResult:
    """1 GiB within LUN 0 ([0, 1 GiB) to [1, 2 GiB)) and from LUN 0 to LUN 1, host then ODX
    onto the same prefilled destination range, then one 256 MiB WRITE USING TOKEN."""
    size = ODX_COPY_BYTES
    daemon = DaemonProcess(
        DaemonSpec(luns=[LunSpec(lun=0, size=2 * size, block_size=BLOCK_SIZE),
                         LunSpec(lun=1, size=size, block_size=BLOCK_SIZE)],
                   iqn=f"iqn.2026-11.org.odxtarget:bench-odx-{filesystem}", log_level="warning"),
        directory,
    )
    source_image, other_image = daemon.image_path(0), daemon.image_path(1)
    prefill([source_image], size)
    fill_range(source_image, size, size, 0x5A)
    fill_range(other_image, 0, size, 0xA5)
    os.sync()
    expected = range_digest(source_image, 0, size)
    blocks = size // BLOCK_SIZE
    source_url = f"{daemon.url(0)}?lba=0&blocks={blocks}"
    layouts = (  # (layout, destination URL, its image, its byte offset there)
        ("within a LUN", f"{daemon.url(0)}?lba={blocks}", source_image, size),
        ("across LUNs", f"{daemon.url(1)}?lba=0", other_image, 0),
    )
    copies = []
    try:
        daemon.start()
        for layout, destination_url, destination_image, destination_offset in layouts:
            settle(destination_image, destination_offset, size)
            host = host_copy(source_url, destination_url)
            settle(destination_image, destination_offset, size)
            odx = odx_copy_seconds(source_url, destination_url)
            if range_digest(destination_image, destination_offset, size) != expected:
                raise RuntimeError(f"{filesystem}, {layout}: the ODX copy differs from the source")
            settle(destination_image, destination_offset, size)
            cli = odx_cli_seconds(source_url, destination_url)
            copies.append(CopyTiming(layout, host, odx, cli))
            print(f"bench: ODX on {filesystem}, {layout}: host {host:.3f} s, ODX {odx:.4f} s "
                  f"({copies[-1].ratio:.0f}x)", flush=True)
        wut = time_single_wut(daemon, lambda: settle(other_image, 0, WUT_BYTES))
        print(f"bench: ODX on {filesystem}: one 256 MiB WRITE USING TOKEN, median "
              f"{statistics.median(wut) * 1000:.1f} ms", flush=True)
    finally:
        daemon.stop()
    return FilesystemResult(filesystem, copies, wut)


def format_odx_table(results: list[FilesystemResult]) -> str:
    header = (f"{'filesystem':<10} {'1 GiB copy':<14} {'host R+W (s)':>12} {'ODX (s)':>9} {'ratio':>8}"
              f" {'goal':>6}  met  {'CLI (s)':>8}")
    lines = ["ODX (odxtarget only; goals from docs/odx.md)", header, "-" * len(header)]
    for result in results:
        goal = ODX_GOALS[result.filesystem]
        for timing in result.copies:
            lines.append(f"{result.filesystem:<10} {timing.layout:<14} {timing.host_seconds:>12.3f}"
                         f" {timing.odx_seconds:>9.4f} {timing.ratio:>7.0f}x {goal:>5.0f}x"
                         f"  {'yes' if timing.ratio >= goal else 'NO ':<3}  {timing.cli_seconds:>8.3f}")
        median = statistics.median(result.wut_seconds)
        met = "yes" if result.filesystem != "xfs" or median < WUT_GOAL_SECONDS else "NO"
        goal_text = f"< {WUT_GOAL_SECONDS * 1000:.0f} ms" if result.filesystem == "xfs" else "-"
        lines.append(f"{result.filesystem:<10} 256 MiB WUT: median {median * 1000:.1f} ms, min"
                     f" {min(result.wut_seconds) * 1000:.1f} ms of {len(result.wut_seconds)}"
                     f" (goal {goal_text}) {met}")
    lines.append("(ODX = odxtarget copy's copy_range in process; CLI = `odxtarget copy` as a command,"
                 " Python start-up included; host = its READ(16)+WRITE(16) fallback, 1 MiB at a time)")
    return "\n".join(lines)


def odx_bench_unavailable() -> str | None:
    """Why the ODX section cannot run here, or None."""
    if os.geteuid() != 0:
        return "it needs root (loop mounts)"
    missing = [tool for tool in ("mkfs.xfs", "mkfs.ext4", "mount") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not found" if missing else None


def run_odx_bench(work: Path) -> list[FilesystemResult]:
    results = []
    for filesystem in ("xfs", "ext4"):
        with loop_mount(filesystem, work / "odx") as mountpoint:
            results.append(bench_odx_on(filesystem, mountpoint / "daemon"))
    return results


# -- output -----------------------------------------------------------------------------------

TARGET_NAMES = ("tgt", "odxtarget")


def ratio_of(by_target: dict[str, Measurement]) -> float | None:
    tgt, odx = by_target["tgt"], by_target["odxtarget"]
    if not (tgt.usable and odx.failure is None and odx.errors == 0):
        return None
    return odx.iops / tgt.iops


def geometric_mean(values: list[float]) -> float:
    if any(value <= 0 for value in values):
        return 0.0
    return math.exp(sum(math.log(value) for value in values) / len(values))


def format_figure(workload: Workload, measurement: Measurement) -> str:
    if measurement.failure:
        return "failed"
    figure = f"{measurement.megabytes_per_second:.1f}" if workload.throughput_figure else f"{measurement.iops:.0f}"
    return figure + (f" ({measurement.errors}E)" if measurement.errors else "")


def format_mean_p99(measurement: Measurement) -> str:
    if measurement.failure or not measurement.latency_us or not measurement.iops:
        return "-"
    return f"{measurement.latency_us['mean']:.0f}/{measurement.latency_us['p99']:.0f}"


def format_table(results: dict[Workload, dict[str, Measurement]]) -> str:
    header = (f"{'workload':<37} {'figure':<6} {'tgt':>11} {'odxtarget':>11} {'odx/tgt':>8}"
              f"   {'latency mean/p99 us: tgt':>24} {'odxtarget':>11}")
    lines = [header, "-" * len(header)]
    for workload, by_target in results.items():
        ratio = ratio_of(by_target)
        lines.append(f"{workload.title:<37} {'MB/s' if workload.throughput_figure else 'IOPS':<6}"
                     f" {format_figure(workload, by_target['tgt']):>11}"
                     f" {format_figure(workload, by_target['odxtarget']):>11}"
                     f" {f'{ratio:.2f}' if ratio is not None else '-':>8}"
                     f"   {format_mean_p99(by_target['tgt']):>24} {format_mean_p99(by_target['odxtarget']):>11}")
    ratios = [ratio for workload, by_target in results.items()
              if workload.in_geometric_mean and (ratio := ratio_of(by_target)) is not None]
    if ratios:
        lines.append(f"geometric mean of {len(ratios)} I/O workload ratios odxtarget/tgt (iscsi-load rows):"
                     f" {geometric_mean(ratios):.2f}")
    failures = [f"  {workload.key} on {name}: "
                + (measurement.failure or f"{measurement.errors} commands failed (NE in the table; initiators.log)")
                for workload, by_target in results.items()
                for name, measurement in by_target.items() if measurement.failure or measurement.errors]
    if failures:
        lines.append("failed runs (left out of the ratios):")
        lines.extend(failures)
    return "\n".join(lines)


def progress_line(workload: Workload, by_target: dict[str, Measurement]) -> str:
    parts = []
    for name, measurement in by_target.items():
        cpu = measurement.cpu
        usage = f" (CPUs: target {cpu.target:.2f}, others {cpu.others:.2f})" if cpu else ""
        runs = (f" [median of IOPS {', '.join(f'{iops:.0f}' for iops in measurement.runs_iops)}]"
                if len(measurement.runs_iops) > 1 else "")
        parts.append(f"{name} {format_figure(workload, measurement)}{runs}{usage}")
    return ", ".join(parts)


def format_latencies(measurement: Measurement) -> str:
    """p50 / p99 / max in ms."""
    if measurement.failure:
        return "failed"
    if not measurement.latency_us or not measurement.iops:
        return "no I/O completed"
    latency = measurement.latency_us
    errors = f" ({measurement.errors} err)" if measurement.errors else ""
    return f"{latency['p50'] / 1000:.2f} / {latency['p99'] / 1000:.2f} / {latency['max'] / 1000:.1f}{errors}"


def format_probe_table(phases: list[ProbePhase], results: dict[str, dict[str, PhaseResult]]) -> str:
    title = ("latency probe: witness = one session, 4 KiB random reads at QD1; "
             "latency p50 / p99 / max in ms (stressor below each phase)")
    header = f"{'phase':<50} {'tgt':>22} {'odxtarget':>22}"
    lines = [title, header, "-" * len(header)]
    for phase in phases:
        cells = []
        for name in TARGET_NAMES:
            result = results.get(name, {}).get(phase.key)
            cells.append("n/a" if result is None else format_latencies(result.witness))
        lines.append(f"{phase.title:<50} {cells[0]:>22} {cells[1]:>22}")
        for name in TARGET_NAMES:
            result = results.get(name, {}).get(phase.key)
            if result is not None and result.stressor is not None:
                lines.append(f"    {name}: {result.stressor.describe()}")
    return "\n".join(lines)


def format_cpu_note(samples: list[tuple[CpuUse | None, str]]) -> str | None:
    """Mean and peak CPU use of everything but the bench and the target, over (use, label)."""
    others = [(use.others, label) for use, label in samples if use is not None]
    if not others:
        return None
    mean = statistics.mean(value for value, _ in others)
    peak, label = max(others)
    return (f"CPU used by other processes during these measurements: mean {mean:.2f} of {os.cpu_count()} CPUs,"
            f" max {peak:.2f} ({label})")


def git_revision() -> str:
    """HEAD, and whether tracked files differ from it. GIT_OPTIONAL_LOCKS=0 keeps ``git status``
    from refreshing the index, which would take index.lock under other people's feet."""
    environment = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=environment)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                            capture_output=True, text=True, env=environment)
    return head.stdout.strip() + (" with uncommitted changes" if status.stdout.strip() else "")


# -- main -------------------------------------------------------------------------------------

def parse_keys(text: str | None) -> set[str]:
    if not text:
        return set()
    keys = {key.strip() for key in text.split(",") if key.strip()}
    unknown = keys - set(ALL_KEYS)
    if unknown:
        raise SystemExit(f"bench: unknown workload(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_KEYS)}")
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0, help="LUN size in GiB (default 2)")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="duration of each workload and each probe phase (default 8)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="work directory, on the filesystem to measure (default: bench-results/work-<time>;"
                             " LUN files are removed afterwards unless --dir is given)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per workload and target, alternating the targets; the table shows the"
                             " median run (default 1; 3 on a noisy machine)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(ALL_KEYS)}")
    parser.add_argument("--skip", help="comma-separated workloads to leave out")
    parser.add_argument("--no-prefill", action="store_true", help="leave the files sparse (reads hit holes)")
    parser.add_argument("--odx-only", action="store_true", help="the same as --only odx")
    parser.add_argument("--no-odx", action="store_true", help="the same as --skip odx")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the results (default bench-results/bench-<time>.json)")
    arguments = parser.parse_args(argv)
    if arguments.repeat < 1:
        parser.error("--repeat must be at least 1")

    selected = parse_keys("odx" if arguments.odx_only else arguments.only) or set(ALL_KEYS)
    selected -= parse_keys(arguments.skip) | ({ODX_KEY} if arguments.no_odx else set())
    workloads = [workload for workload in WORKLOADS if workload.key in selected]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = arguments.dir or RESULTS_DIR / f"work-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    json_path = arguments.json or RESULTS_DIR / f"bench-{stamp}.json"
    log_path = work / "initiators.log"
    size = int(arguments.size_gib * GIB) // MIB * MIB
    seconds = arguments.seconds

    needs_targets = bool(workloads) or PROBE_KEY in selected
    if needs_targets:
        for tool in ("tgtd", "tgtadm", "findmnt", *([PERF] if any(w.tool == PERF for w in workloads) else [])):
            if shutil.which(tool) is None:
                print(f"bench: {tool} not found; run `make setup`", file=sys.stderr)
                return 1
        try:
            build_loadgen()
        except RuntimeError as error:
            print(f"bench: {error}", file=sys.stderr)
            return 1
    if any(workload.cold_cache for workload in workloads) and os.geteuid() != 0:
        print("bench: coldread skipped: dropping the page cache needs root", file=sys.stderr)
        workloads = [workload for workload in workloads if not workload.cold_cache]

    filesystem = filesystem_type(work)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "revision": git_revision(),
        "cpus": os.cpu_count(), "kernel": os.uname().release, "load_average_at_start": load_average(),
        "work_dir": str(work), "filesystem": filesystem, "size_bytes": size, "seconds_per_workload": seconds,
        "repeat": arguments.repeat,
        "prefilled": not arguments.no_prefill, "workloads": [], "probe": {}, "odx": [],
    }
    print(f"bench: {os.cpu_count()} CPUs, load average {report['load_average_at_start']}; work directory {work}"
          f" on {filesystem}; {size // MIB} MiB LUN files; {seconds:g} s per workload; revision {report['revision']}",
          flush=True)
    if filesystem in ("tmpfs", "ramfs"):
        print("bench: warning: the work directory is in memory; coldread and flushes measure nothing there",
              file=sys.stderr)

    results: dict[Workload, dict[str, Measurement]] = {}
    probe_results: dict[str, dict[str, PhaseResult]] = {}
    geometry = ProbeGeometry(size)
    phases = probe_phases(geometry)
    if needs_targets:
        targets: list[BenchTarget] = [TgtTarget(work / "tgt"), OdxTarget(work / "odxtarget", size)]
        for target in targets:
            with target.image.open("wb") as handle:
                handle.truncate(size)
        if arguments.no_prefill:
            print(f"bench: {size // MIB} MiB sparse files (not prefilled: reads return holes)")
        else:
            started = time.monotonic()
            prefill([target.image for target in targets], size)
            os.sync()
            print(f"bench: prefilled two {size // MIB} MiB files with identical non-zero data "
                  f"in {time.monotonic() - started:.1f} s", flush=True)
        if any(workload.cold_cache for workload in workloads) and size < COLD_READ_MIN_BYTES:
            print(f"bench: note: coldread on {size // MIB} MiB, less than the 2 GiB it is meant for", file=sys.stderr)
        try:
            for workload in workloads:
                runs: dict[str, list[Measurement]] = {target.name: [] for target in targets}
                for _ in range(arguments.repeat):     # alternate the targets, so drift hits both
                    for target in targets:
                        runs[target.name].append(measure_workload(target, workload, seconds, log_path))
                results[workload] = {name: median_run(measurements) for name, measurements in runs.items()}
                print(f"bench: {workload.key}: {progress_line(workload, results[workload])}", flush=True)
            if PROBE_KEY in selected:
                for target in targets:
                    probe_results[target.name] = run_probe(target, phases, geometry, seconds, log_path)
        finally:
            if arguments.dir is None:
                for target in targets:
                    target.image.unlink(missing_ok=True)

    odx_results: list[FilesystemResult] = []
    if ODX_KEY in selected:
        unavailable = odx_bench_unavailable()
        if unavailable:
            print(f"bench: ODX section skipped: {unavailable}", file=sys.stderr)
        else:
            try:
                odx_results = run_odx_bench(work)
            except Exception as error:
                print(f"bench: ODX section: {error}", file=sys.stderr)

    cluster_result = None
    if CLUSTER_KEY in selected:
        from scripts.bench_cluster import cluster_bench_unavailable, run_cluster_bench

        unavailable = cluster_bench_unavailable()
        if unavailable:
            print(f"bench: cluster section skipped: {unavailable}", file=sys.stderr)
        else:
            try:
                cluster_result = run_cluster_bench(work / "cluster", seconds, run_loadgen, host_copy,
                                                   odx_copy_seconds)
            except Exception as error:
                print(f"bench: cluster section: {type(error).__name__}: {error}", file=sys.stderr)

    report["load_average_at_end"] = load_average()
    report["workloads"] = [
        {**asdict(workload), "ratio": ratio_of(by_target),
         **{name: asdict(measurement) for name, measurement in by_target.items()}}
        for workload, by_target in results.items()]
    ratios = [ratio for workload, by_target in results.items()
              if workload.in_geometric_mean and (ratio := ratio_of(by_target)) is not None]
    report["geometric_mean"] = geometric_mean(ratios) if ratios else None
    report["probe"] = {name: {key: asdict(result) for key, result in by_phase.items()}
                       for name, by_phase in probe_results.items()}
    report["odx"] = [asdict(result) for result in odx_results]
    if cluster_result is not None:
        from scripts.bench_cluster import describe
        report["cluster"] = describe(cluster_result)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")

    print()
    if results:
        print(format_table(results))
        print("(figure: IOPS, or MB/s = 10^6 bytes/s; odx/tgt compares IOPS; latency in microseconds; "
              f"files prefilled: {not arguments.no_prefill})")
        note = format_cpu_note([(measurement.cpu, f"{workload.key}, {name}")
                                for workload, by_target in results.items()
                                for name, measurement in by_target.items()])
        if note:
            print(note)
        print()
    if probe_results:
        print(format_probe_table(phases, probe_results))
        note = format_cpu_note([(result.witness.cpu, f"{key}, {name}") for name, by_phase in probe_results.items()
                                for key, result in by_phase.items()])
        if note:
            print(note)
        print()
    if odx_results:
        print(format_odx_table(odx_results))
        print()
    if cluster_result is not None:
        from scripts.bench_cluster import format_cluster_table
        print(format_cluster_table(cluster_result))
        print()
    print(f"bench: load average {report['load_average_at_start']} at start, {report['load_average_at_end']} at end;"
          f" results in {json_path.relative_to(REPO_ROOT) if json_path.is_relative_to(REPO_ROOT) else json_path};"
          f" logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
