"""The cluster section of ``make bench`` (``--only cluster``): LUNs in RBD images.

On one one-node Ceph cluster started for the section (tests/support/ceph.py), with images of
the same size prefilled with the same data:

* odxtarget with an RBD storage object against tgtd with its rbd backing store (Debian's
  tgt-rbd), each alone in turn: 4 KiB random reads at QD32, 1 MiB sequential reads and writes
  at QD8, by the project's load generator;
* a 1 GiB copy from LUN 0 to LUN 1 of one gateway, by ODX (``odxtarget copy``'s copy routine)
  and by READ/WRITE through the same gateway (``--no-odx``), in the same run.

The cluster's OSD keeps objects in memory, so these figures measure the gateways and librbd,
not a disk. Prints a table and returns the figures for the JSON report.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.support.ceph import CephCluster, ceph_problem
from tests.support.daemon import DaemonProcess, DaemonSpec, LunSpec
from tests.support.tgt import TgtDaemon, TgtLun, tgt_available

CLUSTER_KEY = "cluster"
GIB = 1 << 30
MIB = 1 << 20
IMAGE_BYTES = GIB
BLOCK_SIZE = 512
PREFILL_CHUNK = 4 * MIB
TGT_LUN = 1
#: (key, title, transfer bytes, queue depth, random, write)
CLUSTER_WORKLOADS = (
    ("rbd-randread4k", "RBD: 4 KiB random read QD32", 4096, 32, True, False),
    ("rbd-seqread1m", "RBD: 1 MiB sequential read QD8", MIB, 8, False, False),
    ("rbd-seqwrite1m", "RBD: 1 MiB sequential write QD8", MIB, 8, False, True),
)


@dataclass(slots=True)
class ClusterResult:
    workloads: list[dict[str, Any]]
    host_copy_seconds: float | None
    odx_copy_seconds: float | None
    failure: str | None = None

    @property
    def copy_ratio(self) -> float | None:
        if self.host_copy_seconds and self.odx_copy_seconds:
            return self.host_copy_seconds / self.odx_copy_seconds
        return None


def cluster_bench_unavailable() -> str | None:
    problem = ceph_problem()
    if problem is not None:
        return problem
    if not tgt_available():
        return "tgtd is not installed (Debian package tgt)"
    return None


def _prefill(cluster: CephCluster, images: list[str]) -> None:
    """The same non-zero data in every image, written through librbd."""
    import rados
    import rbd

    pattern = bytes(range(1, 256)) * (PREFILL_CHUNK // 255 + 1)
    connection = rados.Rados(conffile=str(cluster.conf_path))
    connection.connect()
    try:
        with connection.open_ioctx("rbd") as ioctx:
            for name in images:
                with rbd.Image(ioctx, name) as image:
                    for offset in range(0, IMAGE_BYTES, PREFILL_CHUNK):
                        image.write(offset.to_bytes(8, "big") + pattern[8:PREFILL_CHUNK], offset)
    finally:
        connection.shutdown()


def _rbd_section(cluster: CephCluster, image: str) -> dict[str, Any]:
    return {"pool": "rbd", "image": image, "conf": str(cluster.conf_path)}


def run_cluster_bench(work: Path, seconds: float, run_loadgen, host_copy_seconds, odx_copy_seconds
                      ) -> ClusterResult:
    """Start the cluster, run every workload on both targets and the copies, stop it all."""
    work.mkdir(parents=True, exist_ok=True)
    cluster = CephCluster(work / "ceph")
    cluster.start()
    try:
        for name in ("odx0", "odx1", "tgt0"):
            cluster.create_image(name, IMAGE_BYTES)
        started = time.monotonic()
        _prefill(cluster, ["odx0", "tgt0"])
        print(f"bench: cluster: prefilled two {IMAGE_BYTES >> 20} MiB RBD images in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        odx = DaemonProcess(DaemonSpec(luns=[LunSpec(lun=0, size=IMAGE_BYTES, rbd=_rbd_section(cluster, "odx0")),
                                             LunSpec(lun=1, size=IMAGE_BYTES, rbd=_rbd_section(cluster, "odx1"))],
                                       iqn="iqn.2026-11.org.odxtarget:bench-rbd", log_level="warning"),
                            work / "odxtarget")
        tgt = TgtDaemon("iqn.2026-11.org.odxtarget:bench-tgt-rbd",
                        [TgtLun(TGT_LUN, "rbd/tgt0", bstype="rbd", bsopts=f"conf={cluster.conf_path}")],
                        work / "tgtd.log")
        log_path = work / "initiators.log"
        workloads: list[dict[str, Any]] = []
        for key, title, transfer, depth, random, write in CLUSTER_WORKLOADS:
            figures: dict[str, Any] = {}
            for name, start, stop, url in (
                    ("tgt", tgt.start, tgt.stop, lambda: tgt.url(TGT_LUN)),
                    ("odxtarget", odx.start, odx.stop, lambda: odx.url(0))):
                start()
                try:
                    measurement = run_loadgen(url(), transfer_bytes=transfer, queue_depth=depth, random=random,
                                              write=write, sessions=1, seconds=seconds, log_path=log_path)
                finally:
                    stop()
                figures[name] = asdict(measurement)
            ratio = (figures["odxtarget"]["iops"] / figures["tgt"]["iops"]
                     if figures["tgt"]["iops"] and figures["odxtarget"]["iops"] else None)
            workloads.append({"key": key, "title": title, "write": write, "transfer_bytes": transfer,
                              "ratio": ratio, **figures})
            print(f"bench: {key}: tgt {figures['tgt']['iops']:.0f} IOPS, odxtarget "
                  f"{figures['odxtarget']['iops']:.0f} IOPS" + (f", {ratio:.2f}x" if ratio else ""), flush=True)
        odx.start()
        try:
            source, destination = odx.url(0), odx.url(1)
            host = host_copy_seconds(source, destination)
            offloaded = odx_copy_seconds(source, destination)
        finally:
            odx.stop()
        return ClusterResult(workloads, host, offloaded)
    finally:
        cluster.stop()


def format_cluster_table(result: ClusterResult) -> str:
    lines = [f"{'cluster (one-node Ceph, memstore)':38}{'figure':>8}{'tgt-rbd':>12}{'odxtarget':>12}{'odx/tgt':>9}",
             "-" * 79]
    for workload in result.workloads:
        megabytes = workload["transfer_bytes"] >= MIB
        figure = "megabytes_per_second" if megabytes else "iops"
        ratio = f"{workload['ratio']:.2f}" if workload["ratio"] else "-"
        lines.append(f"{workload['title']:38}{'MB/s' if megabytes else 'IOPS':>8}"
                     f"{workload['tgt'][figure]:>12.1f}{workload['odxtarget'][figure]:>12.1f}{ratio:>9}")
    if result.copy_ratio is not None:
        lines.append(f"1 GiB copy LUN 0 -> LUN 1 of one gateway: READ/WRITE {result.host_copy_seconds:.2f} s, "
                     f"ODX {result.odx_copy_seconds:.2f} s: {result.copy_ratio:.1f}x")
    return "\n".join(lines)


def describe(result: ClusterResult) -> dict[str, Any]:
    return {**asdict(result), "copy_ratio": result.copy_ratio}
