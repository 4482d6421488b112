"""The kernel's dm-multipath over two odxtarget gateways of one RBD image, in the guest
(docs/cluster.md, "Linux dm-multipath"): open-iscsi logs in to both gateways, dm-multipath
makes one disk of the two paths (one path group, Debian's default service-time selector),
and a gateway killed with SIGKILL while the application writes through the disk costs the
application no error and no write.

Everything runs in the guest: a one-node Ceph cluster (tests/support/ceph.py), the two
gateways (tests/support/gateways.py), iscsid and the multipath map.
"""

from __future__ import annotations

import glob
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.support.ceph import CephCluster, ceph_problem
from tests.support.gateways import CLUSTER_IQN, gateways
from tests.vm.guest_support import direct_read, direct_write, run

MIB = 1 << 20
SIZE = 64 * MIB
WRITE_BYTES = 64 * 1024
WRITES_BEFORE_KILL = 30
WRITES_AFTER_KILL = 30
#: Seconds open-iscsi waits for a lost session to come back before failing its commands up to
#: dm-multipath (open-iscsi's node.session.timeo.replacement_timeout; its default is 120).
REPLACEMENT_TIMEOUT = "5"
#: A gateway starts far slower under QEMU's TCG than on the host.
GATEWAY_START_SECONDS = 300.0


def pattern(sequence: int) -> bytes:
    return struct.pack(">QQ", 0x6D70617468, sequence) * (WRITE_BYTES // 16)


def path_devices(target_iqn: str) -> list[str]:
    """/dev/sdX of LUN 0 in every open-iscsi session to ``target_iqn``."""
    found = []
    for session in glob.glob("/sys/class/iscsi_session/session*"):
        if Path(session, "targetname").read_text().strip() != target_iqn:
            continue
        for block in glob.glob(f"{session}/device/target*/*:*:*:0/block/*"):
            found.append(f"/dev/{Path(block).name}")
    return sorted(found)


def multipath_map() -> str:
    """The one multipath map's /dev/mapper node."""
    listing = run("dmsetup", "ls", "--target", "multipath").stdout
    maps = [line.split()[0] for line in listing.splitlines() if line.strip() and not line.startswith("No ")]
    assert len(maps) == 1, f"expected one multipath map, got {listing!r}"
    return f"/dev/mapper/{maps[0]}"


def group_sizes(table: str) -> list[int]:
    """The number of paths in each priority group of a multipath target's table line
    (the kernel's dm-mpath table format: features, hardware handler, then the groups)."""
    words = table.split()[3:]
    position = 1 + int(words[0])                      # the features
    position += 1 + int(words[position])              # the hardware handler
    groups = int(words[position])
    position += 2                                     # number of groups, first group to use
    sizes = []
    for _ in range(groups):
        position += 2 + int(words[position + 1])      # selector name and its arguments
        paths, path_arguments = int(words[position]), int(words[position + 1])
        sizes.append(paths)
        position += 2 + paths * (1 + path_arguments)
    return sizes


@pytest.fixture
def cluster(tmp_path):
    problem = ceph_problem()
    if problem is not None:
        pytest.fail(f"no Ceph cluster in the guest: {problem}")
    started = CephCluster(tmp_path / "ceph").start()
    try:
        yield started
    finally:
        started.stop()


def test_dm_multipath_carries_writes_across_a_gateway_sigkill(cluster, tmp_path):
    if shutil.which("multipath") is None:
        pytest.fail("multipath-tools is not installed (scripts/vm-test installs it)")
    run("modprobe", "-a", "dm_multipath", "dm_round_robin", "scsi_dh_alua")
    rbd = {"pool": "rbd", "image": cluster.create_image("mpath", SIZE), "conf": str(cluster.conf_path)}
    with gateways(rbd, SIZE, tmp_path, start_timeout=GATEWAY_START_SECONDS) as (first, second):
        portals = [f"{daemon.host}:{daemon.port}" for daemon in (first, second)]
        for portal in portals:
            run("iscsiadm", "-m", "node", "-o", "new", "-T", CLUSTER_IQN, "-p", portal)
            run("iscsiadm", "-m", "node", "-T", CLUSTER_IQN, "-p", portal, "-o", "update",
                "-n", "node.session.timeo.replacement_timeout", "-v", REPLACEMENT_TIMEOUT)
            run("iscsiadm", "-m", "node", "-T", CLUSTER_IQN, "-p", portal, "--login")
        try:
            run("udevadm", "settle", check=False)
            paths = path_devices(CLUSTER_IQN)
            assert len(paths) == 2, paths
            # -i: no wwids file (the root is read-only); -p multibus: both paths in one group,
            # what group_by_prio gives for two active/optimized groups (docs/cluster.md).
            made = subprocess.run(["multipath", "-v2", "-i", "-p", "multibus", "-b", str(tmp_path / "bindings"),
                                   *paths], capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "DM_DISABLE_UDEV": "1"})
            assert made.returncode == 0, made.stdout + made.stderr
            run("dmsetup", "mknodes", check=False)
            device = multipath_map()
            table = run("dmsetup", "table", device.rsplit("/", 1)[1]).stdout
            assert group_sizes(table) == [2], table          # one path group holding both paths

            for sequence in range(WRITES_BEFORE_KILL + WRITES_AFTER_KILL):
                if sequence == WRITES_BEFORE_KILL:
                    first.kill()
                direct_write(device, sequence * WRITE_BYTES, pattern(sequence))   # raises on an error
            for sequence in range(WRITES_BEFORE_KILL + WRITES_AFTER_KILL):
                assert direct_read(device, sequence * WRITE_BYTES, WRITE_BYTES) == pattern(sequence)
            status = run("dmsetup", "status", device.rsplit("/", 1)[1]).stdout
            assert " F " in status and " A " in status, status     # one path failed, one active
        finally:
            subprocess.run(["multipath", "-F"], capture_output=True, timeout=60,
                           env={**os.environ, "DM_DISABLE_UDEV": "1"})
            for portal in portals:
                subprocess.run(["iscsiadm", "-m", "node", "-T", CLUSTER_IQN, "-p", portal, "--logout"],
                               capture_output=True, timeout=60)
                subprocess.run(["iscsiadm", "-m", "node", "-o", "delete", "-T", CLUSTER_IQN, "-p", portal],
                               capture_output=True, timeout=60)
