"""A LUN stored on a block device (a loop device over a sparse file, tests/support/loop.py),
through the real daemon and libiscsi: reads and writes, the logical block provisioning it
reports, UNMAP and WRITE SAME, GET LBA STATUS, and ODX copies within the block LUN and between
it and a file LUN, verified by reading back (docs/block.md)."""

from __future__ import annotations

import struct

import pytest

from tests.integration.odx.odx_support import GOOD, TOKEN_CANCELLED, OdxSession, check, pattern
from tests.support import libiscsi
from tests.support.daemon import MIB, DaemonSpec, LunSpec

pytestmark = pytest.mark.integration

BLOCK = 512
DEVICE_BYTES = 40 * MIB
LUN_BYTES = 32 * MIB
LBPME_LBPRZ = 0xC0
LBPU_LBPWS_LBPWS10 = 0xE0
LBPRZ_ONE = 0x04
READ_CAPACITY_16 = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)
VPD_B2 = bytes([0x12, 0x01, 0xB2, 0, 64, 0])
SYNCHRONIZE_CACHE_10 = bytes([0x35]) + bytes(9)


def unmap(lba: int, blocks: int) -> tuple[bytes, bytes]:
    descriptors = struct.pack(">QI4x", lba, blocks)
    parameters = struct.pack(">HH4x", 6 + len(descriptors), len(descriptors)) + descriptors
    return struct.pack(">BB4xBHB", 0x42, 0, 0, len(parameters), 0), parameters


def write_same_16(lba: int, blocks: int, unmap_bit: bool) -> bytes:
    return bytes([0x93, 0x08 if unmap_bit else 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + bytes(2)


def get_lba_status(lba: int) -> bytes:
    return bytes([0x9E, 0x12]) + lba.to_bytes(8, "big") + (1024).to_bytes(4, "big") + bytes(2)


def test_a_block_lun_reads_writes_and_deallocates_to_zeros(loop_devices, daemon_factory):
    device = loop_devices(DEVICE_BYTES)
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(size=LUN_BYTES, block=device.path)]))
    with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0) as session:
        session.test_unit_ready(0)
        capacity = session.scsi_command(0, READ_CAPACITY_16, data_in_len=32)
        assert capacity.good
        assert struct.unpack_from(">QI", capacity.data) == (LUN_BYTES // BLOCK - 1, BLOCK)
        assert capacity.data[14] & LBPME_LBPRZ == LBPME_LBPRZ
        b2 = session.scsi_command(0, VPD_B2, data_in_len=64)
        assert b2.data[5] & LBPU_LBPWS_LBPWS10 == LBPU_LBPWS_LBPWS10 and b2.data[5] & LBPRZ_ONE

        data = pattern(MIB, seed=1)
        assert session.write(0, 1000, data, BLOCK).good
        assert session.read(0, 1000, MIB // BLOCK, BLOCK).data == data
        assert session.scsi_command(0, SYNCHRONIZE_CACHE_10).good
        with open(device.backing, "rb") as backing:             # it is on the device
            backing.seek(1000 * BLOCK)
            assert backing.read(MIB) == data

        cdb, parameters = unmap(1000, 512)
        assert session.scsi_command(0, cdb, data_out=parameters).good
        assert session.read(0, 1000, 512, BLOCK).data == bytes(512 * BLOCK)       # LBPRZ=1
        assert session.read(0, 1512, 1536, BLOCK).data == data[512 * BLOCK:]      # the rest stays

        filler = b"\x5a" * BLOCK
        assert session.scsi_command(0, write_same_16(20000, 64, unmap_bit=False), data_out=filler).good
        assert session.read(0, 20000, 64, BLOCK).data == filler * 64
        assert session.scsi_command(0, write_same_16(20000, 32, unmap_bit=True), data_out=bytes(BLOCK)).good
        assert session.read(0, 20000, 64, BLOCK).data == bytes(32 * BLOCK) + filler * 32

        status = session.scsi_command(0, get_lba_status(1000), data_in_len=1024)
        assert status.good
        first_lba, blocks, provisioning = struct.unpack_from(">QIB", status.data, 8)
        assert first_lba == 1000 and blocks > 0 and provisioning == 0   # mapped or unknown (SBC-4 5.6)
    daemon.stop()


def test_odx_copies_within_a_block_lun_and_to_and_from_a_file_lun(loop_devices, daemon_factory):
    device = loop_devices(DEVICE_BYTES)
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(lun=0, size=LUN_BYTES, block=device.path),
                                             LunSpec(lun=1, size=LUN_BYTES)]))
    blocks = 2 * MIB // BLOCK
    with OdxSession(daemon) as session:
        source = session.fill(0, 2048, 2 * MIB, seed=7)
        token = session.token(0, [(2048, blocks)])
        check(session.write_using(0, token, [(40000, blocks)])[1], GOOD, "WUT within the block LUN")
        assert session.read(0, 40000, 2 * MIB) == source
        check(session.write_using(1, token, [(100, blocks)])[1], GOOD, "WUT block -> file")
        assert session.read(1, 100, 2 * MIB) == source

        other = session.fill(1, 9000, 2 * MIB, seed=8)
        file_token = session.token(1, [(9000, blocks)])
        check(session.write_using(0, file_token, [(20000, blocks)])[1], GOOD, "WUT file -> block")
        assert session.read(0, 20000, 2 * MIB) == other

        # Source and destination overlap in the block LUN: the copy reads the source as it was.
        overlapping = session.fill(0, 50000, 2 * MIB, seed=10)
        overlap_token = session.token(0, [(50000, blocks)])
        check(session.write_using(0, overlap_token, [(50000 + blocks // 2, blocks)])[1], GOOD,
              "WUT onto its own source")
        assert session.read(0, 50000 + blocks // 2, 2 * MIB) == overlapping
        assert session.read(0, 50000, MIB) == overlapping[:MIB]

        # No point-in-time snapshot of a block device: a write to the source cancels its token.
        session.write(0, 2048, pattern(BLOCK, seed=9))
        check(session.write_using(1, token, [(30000, blocks)])[1], TOKEN_CANCELLED, "WUT after a source write")
        assert session.read(1, 30000, 2 * MIB) == bytes(2 * MIB)
    daemon.stop()
