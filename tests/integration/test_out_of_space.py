"""A real ENOSPC through the real daemon and libiscsi: a LUN larger than the 1 MiB tmpfs holding
its file answers writes past the space with DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT
(07h/27h/07h) and the LBA, keeps serving, and takes writes again once UNMAP frees space
(docs/errors.md, "Out of space").

Needs root (mount -t tmpfs): where the mount fails, the test fails; it never skips."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from odxtarget.scsi.sense import SenseData
from tests.support import libiscsi
from tests.support.daemon import MIB, DaemonProcess, DaemonSpec, LunSpec

pytestmark = pytest.mark.integration

BLOCK = 512
TMPFS_BYTES = MIB
LUN_BYTES = 8 * MIB                       # much larger than the filesystem under it
CHUNK_BLOCKS = 128                        # 64 KiB per WRITE
SPACE_ALLOCATION_FAILED = (0x7, 0x27, 0x07)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES // 1024}k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the test needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture
def daemon_on_tmpfs(small_tmpfs: Path, daemon_factory) -> DaemonProcess:
    image = small_tmpfs / "disk0.img"
    storage = [{"name": "disk0", "size": LUN_BYTES, "block_size": BLOCK,
                "extents": [{"path": str(image), "offset": 0, "length": None}]}]
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(size=LUN_BYTES)], extra_config={"storage_objects": storage}))
    yield daemon
    daemon.stop()                         # before the tmpfs is unmounted under its open file


def unmap(session: libiscsi.IscsiSession, lba: int, blocks: int) -> libiscsi.Result:
    descriptors = struct.pack(">QI4x", lba, blocks)
    parameters = struct.pack(">HH4x", 6 + len(descriptors), len(descriptors)) + descriptors
    cdb = struct.pack(">BB4xBHB", 0x42, 0, 0, len(parameters), 0)
    return session.scsi_command(0, cdb, data_out=parameters)


def pattern(lba: int) -> bytes:
    return bytes((lba + i) & 0xFF for i in range(CHUNK_BLOCKS * BLOCK))


def test_writes_past_the_space_get_space_allocation_failed_and_the_daemon_keeps_serving(daemon_on_tmpfs):
    daemon = daemon_on_tmpfs
    with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0) as session:
        failed_lba = None
        for lba in range(0, LUN_BYTES // BLOCK, CHUNK_BLOCKS):
            result = session.write(0, lba, pattern(lba), BLOCK)
            if not result.good:
                failed_lba = lba
                break
        assert failed_lba is not None, "the 1 MiB tmpfs took 8 MiB of writes"
        assert (result.sense_key, result.asc, result.ascq) == SPACE_ALLOCATION_FAILED, result.describe()
        assert SenseData.parse(result.sense_raw).information == failed_lba
        assert failed_lba * BLOCK <= TMPFS_BYTES

        # The daemon keeps serving: reads, flushes and overwrites of allocated blocks.
        assert session.test_unit_ready(0).good
        assert session.read(0, 0, CHUNK_BLOCKS, BLOCK).data == pattern(0)
        assert session.synchronize_cache(0).good            # out of space is not a failed flush
        assert session.write(0, 0, pattern(0), BLOCK).good
        again = session.write(0, failed_lba, pattern(failed_lba), BLOCK)
        assert (again.sense_key, again.asc, again.ascq) == SPACE_ALLOCATION_FAILED

        # Free space (as a host that UNMAPs, or an administrator would) and the write goes through.
        assert unmap(session, 0, 4 * CHUNK_BLOCKS).good
        assert session.write(0, failed_lba, pattern(failed_lba), BLOCK, fua=True).good
        assert session.read(0, failed_lba, CHUNK_BLOCKS, BLOCK).data == pattern(failed_lba)
        assert session.synchronize_cache(0).good
    with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0) as second:
        assert second.test_unit_ready(0).good
    assert daemon.running
    log = daemon.log_text()
    assert f"disk0: write at LBA {failed_lba} failed, out of space (DATA PROTECT 27h/07h)" in log
    assert "No space left on device" in log and "WRITE-BACK FAILED" not in log
