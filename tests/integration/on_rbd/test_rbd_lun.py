"""LUNs stored in RBD images, served by the real daemon and used through libiscsi."""

from __future__ import annotations

import struct

import pytest

from odxtarget.config import RbdConfig
from odxtarget.storage.rbd import RbdBackend
from tests.support import libiscsi
from tests.support.daemon import MIB, DaemonSpec, DaemonStartError, LunSpec

BLOCK = 512
LUN_BYTES = 16 * MIB
LBPME = 0x80
READ_CAPACITY_16 = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)


def get_lba_status(lba: int) -> bytes:
    return bytes([0x9E, 0x12]) + lba.to_bytes(8, "big") + (64).to_bytes(4, "big") + bytes(2)


def unmap(lba: int, blocks: int) -> tuple[bytes, bytes]:
    descriptors = struct.pack(">QI4x", lba, blocks)
    parameters = struct.pack(">HH4x", 6 + len(descriptors), len(descriptors)) + descriptors
    return struct.pack(">BB4xBHB", 0x42, 0, 0, len(parameters), 0), parameters


def image_bytes(rbd: dict, offset: int, length: int) -> bytes:
    """Read the image directly through librbd, as another gateway would."""
    backend = RbdBackend(RbdConfig(**rbd), LUN_BYTES, read_only=True)
    try:
        buffer = bytearray(length)
        backend.read_into(offset, memoryview(buffer))
        return bytes(buffer)
    finally:
        backend.close()


def test_an_rbd_lun_stores_writes_in_its_image_and_deallocates_thinly(rbd_image, daemon_factory):
    rbd = rbd_image(LUN_BYTES)
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(size=LUN_BYTES, rbd=rbd)]))
    with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0) as session:
        session.test_unit_ready(0)
        assert session.read_capacity(0) == (LUN_BYTES // BLOCK, BLOCK)
        capacity = session.scsi_command(0, READ_CAPACITY_16, data_in_len=32)
        assert capacity.good and capacity.data[14] & LBPME           # thin: RBD discards
        data = bytes(range(256)) * 32                                 # 16 blocks
        assert session.write(0, 100, data, BLOCK).good
        assert session.write(0, 200, data, BLOCK, fua=True).good
        assert session.read(0, 100, 16, BLOCK).data == data
        assert image_bytes(rbd, 100 * BLOCK, len(data)) == data       # in the image, not in a cache
        assert session.synchronize_cache(0).good
        cdb, parameters = unmap(100, 8)
        assert session.scsi_command(0, cdb, data_out=parameters).good
        assert session.read(0, 100, 16, BLOCK).data == bytes(8 * BLOCK) + data[8 * BLOCK:]
        assert image_bytes(rbd, 100 * BLOCK, 8 * BLOCK) == bytes(8 * BLOCK)
        status = session.scsi_command(0, get_lba_status(LUN_BYTES // BLOCK - 1024), data_in_len=64)
        assert status.good
        lba, blocks, provisioning = struct.unpack_from(">QIB", status.data, 8)
        assert (lba, provisioning & 0x0F) == (LUN_BYTES // BLOCK - 1024, 1)   # never written: deallocated
        assert blocks == 1024


def test_acknowledged_writes_survive_a_sigkill(rbd_image, daemon_factory):
    """librbd acknowledges a write once the OSDs committed it; the gateway holds nothing."""
    rbd = rbd_image(LUN_BYTES)
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(size=LUN_BYTES, rbd=rbd)]))
    written = {}
    with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0) as session:
        session.test_unit_ready(0)
        for number in range(32):
            data = struct.pack(">Q", number) * (BLOCK // 8) * 4
            assert session.write(0, number * 64, data, BLOCK).good
            written[number * 64] = data
        session.abandon()
    daemon.kill()
    daemon.start()
    with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0) as session:
        session.test_unit_ready(0)
        for lba, data in written.items():
            assert session.read(0, lba, 4, BLOCK).data == data, f"LBA {lba} lost"


def test_two_daemons_on_one_image_read_each_others_writes(rbd_image, daemon_factory):
    """The footing of several gateways per LU: no gateway caches image data."""
    rbd = rbd_image(LUN_BYTES)
    first = daemon_factory(DaemonSpec(luns=[LunSpec(size=LUN_BYTES, rbd=rbd)]))
    second = daemon_factory(DaemonSpec(luns=[LunSpec(size=LUN_BYTES, rbd=rbd)]))
    with (libiscsi.connect(first.host, first.port, first.iqn, lun=0) as a,
          libiscsi.connect(second.host, second.port, second.iqn, lun=0) as b):
        a.test_unit_ready(0)
        b.test_unit_ready(0)
        assert b.read(0, 8, 8, BLOCK).data == bytes(8 * BLOCK)        # read before: nothing to go stale
        assert a.write(0, 8, b"A" * (8 * BLOCK), BLOCK).good
        assert b.read(0, 8, 8, BLOCK).data == b"A" * (8 * BLOCK)
        assert b.write(0, 12, b"B" * (4 * BLOCK), BLOCK).good
        assert a.read(0, 8, 8, BLOCK).data == b"A" * (4 * BLOCK) + b"B" * (4 * BLOCK)


@pytest.mark.parametrize(("section", "message"), [
    ({"image": "no-such-image"}, "rbd image rbd/no-such-image"),
    ({"image": "no-such-image", "pool": "no-such-pool"}, "rbd image no-such-pool/no-such-image"),
])
def test_storage_that_cannot_be_opened_stops_the_start_with_its_name(ceph_cluster, daemon_factory,
                                                                     section, message):
    rbd = {**section, "conf": str(ceph_cluster.conf_path)}
    with pytest.raises(DaemonStartError) as raised:
        daemon_factory(DaemonSpec(luns=[LunSpec(size=LUN_BYTES, rbd=rbd)]))
    assert 'storage object "disk0"' in str(raised.value) and message in str(raised.value)


def test_an_image_smaller_than_the_lun_is_refused(rbd_image, daemon_factory):
    rbd = rbd_image(LUN_BYTES // 2)
    with pytest.raises(DaemonStartError, match="less than the storage object's"):
        daemon_factory(DaemonSpec(luns=[LunSpec(size=LUN_BYTES, rbd=rbd)]))
