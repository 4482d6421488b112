"""Logical block provisioning is reported as the storage really has it (SBC-4 4.7): a LUN whose
file lies on a filesystem that cannot punch holes (ramfs) is fully provisioned -- LBPME=0 in
READ CAPACITY(16), no UNMAP support in VPD B2h/B0h, UNMAP an unsupported command and WRITE SAME
with UNMAP an invalid field -- so no deallocation turns into gigabytes of zeros written; the
same LUN on ext4 is thin provisioned. Through the real daemon and libiscsi.

Needs root (mount -t ramfs): where the mount fails, the test fails; it never skips."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from tests.support import libiscsi
from tests.support.daemon import MIB, DaemonProcess, DaemonSpec, LunSpec

pytestmark = pytest.mark.integration

BLOCK = 512
LUN_BYTES = 4 * MIB
LBPME = 0x80
LBPU_LBPWS_LBPWS10 = 0xE0
READ_CAPACITY_16 = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)
VPD_B2 = bytes([0x12, 0x01, 0xB2, 0, 64, 0])
VPD_B0 = bytes([0x12, 0x01, 0xB0, 0, 64, 0])


@pytest.fixture
def ramfs(tmp_path: Path):
    mount_point = tmp_path / "ramfs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a ramfs (the test needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def daemon_with_file(daemon_factory, image: Path) -> DaemonProcess:
    storage = [{"name": "disk0", "size": LUN_BYTES, "block_size": BLOCK,
                "extents": [{"path": str(image), "offset": 0, "length": None}]}]
    return daemon_factory(DaemonSpec(luns=[LunSpec(size=LUN_BYTES)], extra_config={"storage_objects": storage}))


def unmap_cdb_and_list(lba: int, blocks: int) -> tuple[bytes, bytes]:
    descriptors = struct.pack(">QI4x", lba, blocks)
    parameters = struct.pack(">HH4x", 6 + len(descriptors), len(descriptors)) + descriptors
    return struct.pack(">BB4xBHB", 0x42, 0, 0, len(parameters), 0), parameters


def write_same_16(lba: int, blocks: int, unmap: bool) -> bytes:
    return bytes([0x93, 0x08 if unmap else 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + bytes(2)


def test_storage_that_cannot_punch_holes_is_reported_fully_provisioned(ramfs, daemon_factory):
    daemon = daemon_with_file(daemon_factory, ramfs / "disk0.img")
    with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0) as session:
        session.test_unit_ready(0)
        capacity = session.scsi_command(0, READ_CAPACITY_16, data_in_len=32)
        assert capacity.good and capacity.data[14] & LBPME == 0
        b2 = session.scsi_command(0, VPD_B2, data_in_len=64)
        assert b2.good and b2.data[5] & LBPU_LBPWS_LBPWS10 == 0 and b2.data[6] & 0x07 == 0   # fully provisioned
        b0 = session.scsi_command(0, VPD_B0, data_in_len=64)
        assert struct.unpack_from(">II", b0.data, 20) == (0, 0)        # MAXIMUM UNMAP LBA / DESCRIPTOR COUNT
        assert session.write(0, 0, b"\x11" * (8 * BLOCK), BLOCK).good
        cdb, parameters = unmap_cdb_and_list(0, 8)
        refused = session.scsi_command(0, cdb, data_out=parameters)
        assert (refused.sense_key, refused.asc, refused.ascq) == (0x05, 0x20, 0x00)   # INVALID COMMAND OPERATION CODE
        refused = session.scsi_command(0, write_same_16(0, 8, unmap=True), data_out=bytes(BLOCK))
        assert (refused.sense_key, refused.asc, refused.ascq) == (0x05, 0x24, 0x00)   # INVALID FIELD IN CDB
        assert session.read(0, 0, 8, BLOCK).data == b"\x11" * (8 * BLOCK)                # nothing was changed
        assert session.scsi_command(0, write_same_16(0, 8, unmap=False), data_out=bytes(BLOCK)).good
        assert session.read(0, 0, 8, BLOCK).data == bytes(8 * BLOCK)
    daemon.stop()


def test_the_same_lun_on_ext4_is_thin_provisioned(tmp_path, daemon_factory):
    daemon = daemon_with_file(daemon_factory, tmp_path / "disk0.img")
    with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0) as session:
        session.test_unit_ready(0)
        capacity = session.scsi_command(0, READ_CAPACITY_16, data_in_len=32)
        assert capacity.good and capacity.data[14] & LBPME
        b2 = session.scsi_command(0, VPD_B2, data_in_len=64)
        assert b2.data[5] & LBPU_LBPWS_LBPWS10 == LBPU_LBPWS_LBPWS10
        assert session.write(0, 0, b"\x22" * (8 * BLOCK), BLOCK).good
        cdb, parameters = unmap_cdb_and_list(0, 8)
        assert session.scsi_command(0, cdb, data_out=parameters).good
        assert session.read(0, 0, 8, BLOCK).data == bytes(8 * BLOCK)
