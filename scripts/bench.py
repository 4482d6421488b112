#!/usr/bin/env python3
"""``make bench``: odxtarget against tgtd (Debian tgt) with libiscsi's iscsi-perf, same run.

Both targets serve one LUN backed by a file of the same size in the same directory (so the same
filesystem), both files prefilled with the same non-zero data so that reads hit real extents and
not holes. Both files are then in the page cache, so the numbers compare the targets' per-command
overhead, not the disk. Workloads (iscsi-perf, one session each):

* 4 KiB random reads, 32 commands in flight;
* 1 MiB sequential reads, 8 commands in flight.

Prints IOPS and MB/s (10^6 bytes/s) for both targets and the ratio odxtarget/tgt.

Then the ODX section: on an XFS (reflink=1) loop mount and on ext4, one daemon per filesystem
(LUN images and state_dir on it) copies 1 GiB within a LUN and across two LUNs, once by ODX
(``odxtarget copy``'s ``copy_range``: POPULATE TOKEN, RRTI, WRITE USING TOKEN, in process, so
no interpreter start-up is counted) and once host-based (``odxtarget copy``'s READ(16)/WRITE(16)
fallback, 1 MiB at a time through the same target), and times one 256 MiB WRITE USING TOKEN.
Every ODX copy is verified against the source by hashing both image ranges. Destinations are
prefilled (allocated old data, as on a LUN in use); before each timed copy the page cache is
written back and the destination range dropped from it, so both methods start alike, with
the source hot in the cache. Goals (the ODX issue):
XFS ODX >= 100x the host copy and a 256 MiB WUT under 50 ms; ext4 ODX >= 3x. Nothing is
asserted: performance is information, never a test verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import statistics
import struct
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.daemon import DaemonProcess, DaemonSpec, LunSpec  # noqa: E402
from tests.support.tgt import TgtDaemon, TgtLun  # noqa: E402

GIB = 1024 ** 3
MIB = 1024 ** 2
BLOCK_SIZE = 512
PREFILL_CHUNK = 8 * MIB
ODX_LUN = 0
TGT_LUN = 1                     # tgt keeps LUN 0 for its controller
PERF = "iscsi-perf"
_AVERAGE = re.compile(r"iops average (\d+)")


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    transfer_bytes: int
    queue_depth: int
    random: bool


WORKLOADS = (
    Workload("4 KiB random read, QD32", 4096, 32, True),
    Workload("1 MiB sequential read, QD8", MIB, 8, False),
)


@dataclass(frozen=True, slots=True)
class Measurement:
    iops: int
    transfer_bytes: int

    @property
    def megabytes_per_second(self) -> float:
        return self.iops * self.transfer_bytes / 1e6


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


def run_perf(url: str, workload: Workload, seconds: int, log_path: Path) -> Measurement:
    command = [PERF, "-m", str(workload.queue_depth), "-b", str(workload.transfer_bytes // BLOCK_SIZE),
               "-t", str(seconds)]
    if workload.random:
        command.append("-r")
    command.append(url)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(command)}\nexit {completed.returncode}\n{completed.stdout}\n{completed.stderr}\n")
    averages = _AVERAGE.findall(completed.stdout)
    if completed.returncode != 0 or not averages:
        raise RuntimeError(
            f"iscsi-perf failed (exit {completed.returncode}) against {url}: "
            f"{completed.stderr.strip() or completed.stdout.strip()[-500:]}"
        )
    return Measurement(int(averages[-1]), workload.transfer_bytes)


def format_table(results: dict[Workload, dict[str, Measurement]]) -> str:
    header = f"{'workload':<28} {'target':<10} {'IOPS':>9} {'MB/s':>9}   odxtarget/tgt"
    lines = [header, "-" * len(header)]
    for workload, by_target in results.items():
        tgt, odx = by_target["tgt"], by_target["odxtarget"]
        ratio = odx.iops / tgt.iops if tgt.iops else float("nan")
        lines.append(f"{workload.name:<28} {'tgt':<10} {tgt.iops:>9} {tgt.megabytes_per_second:>9.1f}")
        lines.append(f"{'':<28} {'odxtarget':<10} {odx.iops:>9} {odx.megabytes_per_second:>9.1f}   {ratio:.2f}")
    return "\n".join(lines)


# -- ODX ------------------------------------------------------------------------------------

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
                  f"({copies[-1].ratio:.0f}x)")
        wut = time_single_wut(daemon, lambda: settle(other_image, 0, WUT_BYTES))
        print(f"bench: ODX on {filesystem}: one 256 MiB WRITE USING TOKEN, median "
              f"{statistics.median(wut) * 1000:.1f} ms")
    finally:
        daemon.stop()
    return FilesystemResult(filesystem, copies, wut)


def format_odx_table(results: list[FilesystemResult]) -> str:
    header = (f"{'filesystem':<10} {'1 GiB copy':<14} {'host R+W (s)':>12} {'ODX (s)':>9} {'ratio':>8}"
              f" {'goal':>6}  met  {'CLI (s)':>8}")
    lines = [header, "-" * len(header)]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0, help="LUN size in GiB (default 2)")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each workload (default 10)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="work directory (default: a temporary directory, removed afterwards)")
    parser.add_argument("--no-prefill", action="store_true", help="leave the files sparse (reads hit holes)")
    parser.add_argument("--odx-only", action="store_true", help="run only the ODX section")
    parser.add_argument("--no-odx", action="store_true", help="skip the ODX section")
    arguments = parser.parse_args(argv)
    work = arguments.dir or Path(tempfile.mkdtemp(prefix="odxtarget-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    odx_results: list[FilesystemResult] = []
    unavailable = None if arguments.no_odx else odx_bench_unavailable()
    if unavailable:
        print(f"bench: ODX section skipped: {unavailable}", file=sys.stderr)
        if arguments.odx_only:
            return 1
    elif not arguments.no_odx:
        try:
            odx_results = run_odx_bench(work)
        except Exception as error:
            print(f"bench: ODX section: {error}", file=sys.stderr)
            return 1
        if arguments.odx_only:
            print()
            print(format_odx_table(odx_results))
            return 0

    for tool in (PERF, "tgtd", "tgtadm"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found; run `make setup`", file=sys.stderr)
            return 1
    size = int(arguments.size_gib * GIB) // MIB * MIB
    odx_dir = work / "odxtarget"
    odx_dir.mkdir(exist_ok=True)
    tgt_image = work / "tgt.img"
    odx_image = odx_dir / "disk0.img"            # the name DaemonProcess gives LUN 0's file
    perf_log = work / "iscsi-perf.log"

    for image in (tgt_image, odx_image):
        with image.open("wb") as handle:
            handle.truncate(size)
    if arguments.no_prefill:
        print(f"bench: {size // MIB} MiB sparse files (not prefilled: reads return holes)")
    else:
        started = time.monotonic()
        prefill([tgt_image, odx_image], size)
        print(f"bench: prefilled two {size // MIB} MiB files with identical non-zero data "
              f"in {time.monotonic() - started:.1f} s")

    tgt = TgtDaemon("iqn.2026-11.org.odxtarget:bench-tgt", [TgtLun(TGT_LUN, tgt_image)], work / "tgtd.log")
    odx = DaemonProcess(
        DaemonSpec(luns=[LunSpec(lun=ODX_LUN, size=size, block_size=BLOCK_SIZE)],
                   iqn="iqn.2026-11.org.odxtarget:bench", log_level="warning"),
        odx_dir,
    )
    results: dict[Workload, dict[str, Measurement]] = {}
    try:
        tgt.start()
        odx.start()
        print(f"bench: tgtd on 127.0.0.1:{tgt.port}, odxtarget on 127.0.0.1:{odx.port}; "
              f"{arguments.seconds} s per workload")
        for workload in WORKLOADS:
            results[workload] = {
                "tgt": run_perf(tgt.url(TGT_LUN), workload, arguments.seconds, perf_log),
                "odxtarget": run_perf(odx.url(ODX_LUN), workload, arguments.seconds, perf_log),
            }
            print(f"bench: {workload.name}: tgt {results[workload]['tgt'].iops} IOPS, "
                  f"odxtarget {results[workload]['odxtarget'].iops} IOPS")
    except Exception as error:
        print(f"bench: {error}", file=sys.stderr)
        print(f"bench: logs in {work}", file=sys.stderr)
        return 1
    finally:
        odx.stop()
        tgt.stop()
        if arguments.dir is None:
            for image in (tgt_image, odx_image):
                image.unlink(missing_ok=True)

    print()
    print(format_table(results))
    print(f"\n(MB/s = 10^6 bytes/s; files prefilled: {not arguments.no_prefill}; "
          f"logs: {work})")
    if odx_results:
        print()
        print(format_odx_table(odx_results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
