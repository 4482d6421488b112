#!/usr/bin/env python3
"""``make bench``: odxtarget against tgtd (Debian tgt) with libiscsi's iscsi-perf, same run.

Both targets serve one LUN backed by a file of the same size in the same directory (so the same
filesystem), both files prefilled with the same non-zero data so that reads hit real extents and
not holes. Both files are then in the page cache, so the numbers compare the targets' per-command
overhead, not the disk. Workloads (iscsi-perf, one session each):

* 4 KiB random reads, 32 commands in flight;
* 1 MiB sequential reads, 8 commands in flight.

Prints IOPS and MB/s (10^6 bytes/s) for both targets and the ratio odxtarget/tgt. Nothing is
asserted: performance is information, never a test verdict.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0, help="LUN size in GiB (default 2)")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each workload (default 10)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="work directory (default: a temporary directory, removed afterwards)")
    parser.add_argument("--no-prefill", action="store_true", help="leave the files sparse (reads hit holes)")
    arguments = parser.parse_args(argv)

    for tool in (PERF, "tgtd", "tgtadm"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found; run `make setup`", file=sys.stderr)
            return 1
    size = int(arguments.size_gib * GIB) // MIB * MIB
    work = arguments.dir or Path(tempfile.mkdtemp(prefix="odxtarget-bench-"))
    work.mkdir(parents=True, exist_ok=True)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
