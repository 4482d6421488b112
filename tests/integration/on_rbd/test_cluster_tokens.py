"""ROD tokens across gateways (docs/rbd.md, "ROD tokens across gateways"): two daemons serve
the same target from the same RBD images; a token made through one is written through the
other. Every token is an RBD snapshot plus a record in the pool's ``odxtarget.rod``
namespace; DEL_TKN, expiry and the garbage collection of a killed gateway's tokens remove
both, which the tests check with the ``rbd`` and ``rados`` tools."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest

from odxtarget.admin.client import AdminClient
from tests.integration.odx.odx_support import (
    COPY_TARGET_UNDERRUN, GOOD, MIB, STATUS_COMPLETED, STATUS_IN_BACKGROUND, TOKEN_CANCELLED, TOKEN_CORRUPT, TOKEN_DELETED, TOKEN_EXPIRED,
    TOKEN_UNKNOWN, OdxSession, check, information,
)
from tests.support.ceph import POOL, CephCluster
from tests.support.daemon import DaemonProcess, DaemonSpec, LunSpec

LUN_BYTES = 32 * MIB
SIZE = 2 * MIB
BLOCKS = SIZE // 512
SNAPSHOT_PREFIX = "odx-rod-"
RECORD_NAMESPACE = "odxtarget.rod"
#: Long enough for a gateway's garbage collection (inactivity timeout + 5 s clock skew
#: allowance + a 5 s sweep interval, twice: claim, then the record's tombstone).
COLLECTION_WAIT_SECONDS = 90.0


class Cluster:
    """Two gateways on two images, and views of what the cluster holds."""

    def __init__(self, ceph: CephCluster, images: list[dict], gateways: list[DaemonProcess]):
        self.ceph = ceph
        self.images = [image["image"] for image in images]
        self.gateways = gateways

    def snapshots(self, image: str) -> list[str]:
        listed = json.loads(self.ceph.rbd("snap", "ls", "--format", "json", f"{POOL}/{image}"))
        return [snap["name"] for snap in listed if snap["name"].startswith(SNAPSHOT_PREFIX)]

    def all_snapshots(self) -> list[str]:
        return [name for image in self.images for name in self.snapshots(image)]

    def _rados(self, *arguments: str) -> str:
        return subprocess.run(["rados", "-c", str(self.ceph.conf_path), "-p", POOL, "-N", RECORD_NAMESPACE,
                               *arguments], capture_output=True, text=True, timeout=30, check=True).stdout

    def records(self) -> list[dict]:
        """The token records of this test's images (the pool's namespace holds every test's)."""
        found = []
        for name in self._rados("ls").split():
            try:
                record = json.loads(self._rados("get", name, "/dev/stdout"))
            except subprocess.CalledProcessError:
                continue                    # removed between the listing and the read
            if record["image"] in self.images:
                found.append(record)
        return found


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.5)


@pytest.fixture
def cluster(ceph_cluster, rbd_image, daemon_factory) -> Callable[..., Cluster]:
    """``cluster(**odx)``: two gateways, each serving LUN 0 and LUN 1 from the same two images
    under the same storage names (so the same LU identity); ``odx`` goes to gateway B."""

    def start(**odx) -> Cluster:
        images = [rbd_image(LUN_BYTES), rbd_image(LUN_BYTES)]

        def spec(extra: dict) -> DaemonSpec:
            return DaemonSpec(luns=[LunSpec(lun=0, size=LUN_BYTES, rbd=images[0]),
                                    LunSpec(lun=1, size=LUN_BYTES, rbd=images[1])],
                              extra_config={"odx": extra} if extra else {})

        return Cluster(ceph_cluster, images, [daemon_factory(spec({})), daemon_factory(spec(odx))])

    return start


def test_a_token_made_on_one_gateway_is_written_through_the_other(cluster):
    c = cluster()
    a, b = c.gateways
    with OdxSession(a) as first, OdxSession(b) as second:
        data = first.fill(0, 1000, SIZE, seed=11)
        token = first.token(0, [(1000, BLOCKS)])
        assert len(c.snapshots(c.images[0])) == 1 and len(c.records()) == 1
        # Within one LU, and across LUs, through gateway B; read back through both.
        check(second.write_using(0, token, [(30000, BLOCKS)])[1], GOOD, "WUT on B within LUN 0")
        check(second.write_using(1, token, [(500, BLOCKS)])[1], GOOD, "WUT on B into LUN 1")
        assert second.read(0, 30000, SIZE) == data
        assert first.read(1, 500, SIZE) == data
        # The gateway that made it resolves it the same way.
        check(first.write_using(1, token, [(9000, BLOCKS)])[1], GOOD, "WUT on A")
        assert second.read(1, 9000, SIZE) == data


def test_the_token_keeps_the_data_of_the_moment_it_was_made(cluster):
    c = cluster()
    a, b = c.gateways
    with OdxSession(a) as first, OdxSession(b) as second:
        old = first.fill(0, 0, SIZE, seed=21)
        token = first.token(0, [(0, BLOCKS)])
        new = second.fill(0, 0, SIZE, seed=22)       # overwritten through the other gateway
        assert new != old
        check(second.write_using(1, token, [(0, BLOCKS)])[1], GOOD, "WUT after the overwrite")
        assert second.read(1, 0, SIZE) == old
        assert first.read(0, 0, SIZE) == new


def test_del_tkn_removes_the_snapshot_and_the_token_then_says_deleted(cluster):
    c = cluster()
    a, b = c.gateways
    with OdxSession(a) as first, OdxSession(b) as second:
        data = first.fill(0, 0, SIZE, seed=31)
        token = first.token(0, [(0, BLOCKS)])
        assert c.snapshots(c.images[0])
        check(second.write_using(1, token, [(0, BLOCKS)], delete_token=True)[1], GOOD, "WUT with DEL_TKN on B")
        assert second.read(1, 0, SIZE) == data
        wait_for(lambda: not c.snapshots(c.images[0]), 30, "the snapshot removed after DEL_TKN")
        assert [record["state"] for record in c.records()] == ["deleted"]
        check(first.write_using(1, token, [(0, BLOCKS)])[1], TOKEN_DELETED, "the deleted token on A")
        check(second.write_using(1, token, [(0, BLOCKS)])[1], TOKEN_DELETED, "the deleted token on B")


def test_an_expired_token_is_refused_and_its_snapshot_and_record_are_collected(cluster):
    c = cluster()
    a, b = c.gateways
    with OdxSession(a) as first, OdxSession(b) as second:
        first.fill(0, 0, SIZE, seed=41)
        token = first.token(0, [(0, BLOCKS)], inactivity_timeout=1)
        assert c.snapshots(c.images[0]) and c.records()
        time.sleep(1.5)
        check(second.write_using(1, token, [(0, BLOCKS)])[1], TOKEN_EXPIRED, "WUT on B after the timeout")
        wait_for(lambda: not c.all_snapshots(), COLLECTION_WAIT_SECONDS, "the expired token's snapshot removed")
        assert [record["state"] for record in c.records()] == ["expired"]
        wait_for(lambda: not c.records(), COLLECTION_WAIT_SECONDS, "the expired token's record removed")


def test_tokens_of_a_killed_gateway_are_collected_by_the_other(cluster):
    c = cluster()
    a, b = c.gateways
    with OdxSession(a) as first:
        first.fill(0, 0, SIZE, seed=51)
        first.fill(1, 0, SIZE, seed=52)
        for lun in (0, 1, 0):
            first.token(lun, [(0, BLOCKS)], inactivity_timeout=2)
    assert len(c.all_snapshots()) == 3 and len(c.records()) == 3
    a.kill()
    # Only gateway B is left to notice the tokens expired and remove them.
    wait_for(lambda: not c.all_snapshots(), COLLECTION_WAIT_SECONDS, "the dead gateway's snapshots removed")
    wait_for(lambda: not c.records(), COLLECTION_WAIT_SECONDS, "the dead gateway's records removed")
    assert b.running


def test_a_forged_or_altered_token_is_refused_by_the_other_gateway(cluster):
    c = cluster()
    a, b = c.gateways
    with OdxSession(a) as first, OdxSession(b) as second:
        first.fill(0, 0, SIZE, seed=61)
        token = first.token(0, [(0, BLOCKS)])
        altered = bytearray(token)
        altered[300] ^= 0x01                      # the random part: the digest no longer matches
        check(second.write_using(1, bytes(altered), [(0, BLOCKS)])[1], TOKEN_CORRUPT, "altered token bytes")
        other_id = bytearray(token)
        other_id[15] ^= 0x01                      # another identifier: no such record
        check(second.write_using(1, bytes(other_id), [(0, BLOCKS)])[1], TOKEN_UNKNOWN, "altered identifier")
        assert second.read(1, 0, SIZE) == bytes(SIZE)
        check(second.write_using(1, token, [(0, BLOCKS)])[1], GOOD, "the genuine token still works")


def test_the_time_budget_truncates_a_copy_from_a_cluster_token(cluster):
    """A tiny budget on gateway B: its WRITE USING TOKEN stops after the first step with COPY
    ABORTED 0Dh/04h and the blocks written; continuing from there completes the copy."""
    c = cluster(write_using_token_budget=1e-6, background_step_bytes="1M")
    a, b = c.gateways
    size, blocks = 16 * MIB, 16 * MIB // 512
    with OdxSession(a) as first, OdxSession(b) as second:
        data = first.fill(0, 0, size, seed=71)
        token = first.token(0, [(0, blocks)])
        _, result = second.write_using(1, token, [(0, blocks)])
        check(result, COPY_TARGET_UNDERRUN, "truncated by the time budget")
        done = information(result)
        assert 0 < done < blocks
        for _ in range(blocks):
            if done == blocks:
                break
            _, result = second.write_using(1, token, [(done, blocks - done)], offset_into_rod=done)
            if result.status == 0:
                done = blocks
            else:
                check(result, COPY_TARGET_UNDERRUN, "continuation")
                done += information(result)
        assert done == blocks
        assert first.read(1, 0, size) == data


def test_a_background_copy_from_a_cluster_token(cluster):
    c = cluster()
    a, b = c.gateways
    with OdxSession(a) as first, OdxSession(b) as second:
        data = first.fill(0, 0, SIZE, seed=81)
        token = first.token(0, [(0, BLOCKS)])
        list_id, result = second.write_using(1, token, [(100, BLOCKS)], immed=True)
        check(result, GOOD, "WUT with IMMED=1 on B")
        info = second.wait_status(1, list_id, lambda info: info.status == STATUS_COMPLETED)
        assert (info.status, info.transfer_count) == (STATUS_COMPLETED, BLOCKS)
        assert first.read(1, 100, SIZE) == data


def test_an_admin_change_of_the_source_storage_on_one_gateway_cancels_its_tokens_everywhere(cluster):
    c = cluster()
    a, b = c.gateways
    with OdxSession(a) as first, OdxSession(b) as second:
        first.fill(0, 0, SIZE, seed=91)
        token = second.token(0, [(0, BLOCKS)])            # made on B
        other = second.token(1, [(0, BLOCKS)])            # of the other image: unaffected
        with AdminClient(str(a.directory / "state" / "control.sock")) as admin:
            admin.call("extent.reopen", name="disk0", confirm=True)
        wait_for(lambda: not c.snapshots(c.images[0]), 30, "the snapshot of the reopened storage removed")
        check(second.write_using(1, token, [(0, BLOCKS)])[1], TOKEN_CANCELLED, "the token on B")
        check(first.write_using(1, token, [(0, BLOCKS)])[1], TOKEN_CANCELLED, "the token on A")
        check(first.write_using(0, other, [(0, BLOCKS)])[1], GOOD, "the other image's token")


def test_a_token_dies_when_its_image_shrinks(cluster):
    c = cluster()
    a, b = c.gateways
    with OdxSession(a) as first, OdxSession(b) as second:
        first.fill(0, 0, SIZE, seed=95)
        token = first.token(0, [(0, BLOCKS)])
        c.ceph.rbd("resize", "--size", f"{LUN_BYTES // 2}B", "--allow-shrink", f"{POOL}/{c.images[0]}")
        check(second.write_using(1, token, [(0, BLOCKS)])[1], TOKEN_CANCELLED, "the token of a shrunk image")
        assert not c.snapshots(c.images[0])
        assert [record["state"] for record in c.records()] == ["cancelled"]


def test_a_snapshot_that_a_copy_reads_outlives_the_token_timeout_and_the_sweeps(cluster):
    """A background copy in 16 KiB steps, which takes longer (about 12 s on the test machine)
    than its token's 1 s inactivity timeout plus the 5 s skew allowance plus a 5 s sweep: its
    lease keeps the snapshot from gateway B's sweeps, the copy completes with the source's data,
    and the snapshot goes only after the copy is done. Without the lease the sweep removes the
    snapshot mid-copy and the copy ends short."""
    c = cluster(background_step_bytes="16K")
    a, b = c.gateways
    size, blocks = 32 * MIB, 32 * MIB // 512
    with OdxSession(a) as first, OdxSession(b) as second:
        data = first.fill(0, 0, size, seed=99)
        token = first.token(0, [(0, blocks)], inactivity_timeout=1)
        list_id, result = second.write_using(1, token, [(0, blocks)], immed=True)
        check(result, GOOD, "WUT with IMMED=1 on B")
        info = second.wait_status(1, list_id, lambda info: info.status != STATUS_IN_BACKGROUND, timeout=600,
                                  interval=0.5)
        assert (info.status, info.transfer_count) == (STATUS_COMPLETED, blocks)
        assert first.read(1, 0, size) == data
        wait_for(lambda: not c.all_snapshots(), COLLECTION_WAIT_SECONDS, "the snapshot collected after the copy")


def test_a_snapshot_left_without_its_record_is_removed(cluster):
    """A gateway that died between marking a record dead and removing its snapshot, or a
    record removed by hand, leaves an ``odx-rod-*`` snapshot without a live record: any
    gateway serving the image removes it. Other snapshots are never touched."""
    c = cluster()
    image = c.images[1]
    c.ceph.rbd("snap", "create", f"{POOL}/{image}@{SNAPSHOT_PREFIX}00000000deadbeef")
    c.ceph.rbd("snap", "create", f"{POOL}/{image}@nightly")
    wait_for(lambda: not c.snapshots(image), COLLECTION_WAIT_SECONDS, "the orphaned snapshot removed")
    listed = json.loads(c.ceph.rbd("snap", "ls", "--format", "json", f"{POOL}/{image}"))
    assert [snap["name"] for snap in listed] == ["nightly"]
