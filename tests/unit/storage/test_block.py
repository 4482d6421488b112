"""BlockDeviceBackend on real loop devices (tests/support/loop.py): I/O, flush, deallocation,
the provisioning it reports, copies and the checks it makes when it opens a device."""

from __future__ import annotations

import errno
import os

import pytest

from odxtarget.storage import block, block_device
from odxtarget.storage.backend import AllocationRun, Backend, FileBacked
from odxtarget.storage.block import BlockDeviceBackend
from odxtarget.storage.block_device import DeviceFacts
from odxtarget.storage.copy_strategies import CopyMethod
from odxtarget.storage.copy_work import BackendEndpoint, CopyStep, Move, Place
from odxtarget.storage.extents import FileExtentBackend
from odxtarget.storage.work import FileRead, FileWrite
from odxtarget.config import ExtentConfig

MIB = 1 << 20


def pattern(length: int, seed: int = 1) -> bytes:
    period = bytes((i * 7 + seed) % 251 for i in range(251))
    return (period * (length // 251 + 1))[:length]


def read(backend, offset: int, length: int) -> bytes:
    buf = bytearray(length)
    backend.read_into(offset, memoryview(buf))
    return bytes(buf)


def read_device(path: str, offset: int, length: int) -> bytes:
    """The device's bytes as another opener sees them (through the shared page cache)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


@pytest.fixture
def device(loop_devices):
    return loop_devices(16 * MIB)


@pytest.fixture
def backend(device):
    backend = BlockDeviceBackend(device.path, 16 * MIB, block_size=512)
    yield backend
    backend.close()


def test_is_a_backend_with_the_copy_capability(backend, device):
    assert isinstance(backend, Backend) and isinstance(backend, FileBacked)
    assert backend.size == 16 * MIB
    assert backend.lane == ("device", os.stat(device.path).st_rdev)
    assert backend.facts.size == 16 * MIB and backend.facts.logical_sector_size == 512


def test_writes_read_back_and_reach_the_device(backend, device):
    data = pattern(MIB)
    backend.write(3 * MIB + 512, data)
    assert read(backend, 3 * MIB + 512, MIB) == data
    backend.flush()
    assert read_device(device.path, 3 * MIB + 512, MIB) == data


def test_a_fua_write_and_a_flush_are_durable_in_the_backing_file(backend, device):
    backend.write(0, pattern(4096, seed=3), fua=True)
    backend.write(8192, pattern(4096, seed=4))
    backend.flush(8192, 4096)
    with open(device.backing, "rb") as backing:   # the loop device wrote through to its file
        backing.seek(0)
        assert backing.read(4096) == pattern(4096, seed=3)
        backing.seek(8192)
        assert backing.read(4096) == pattern(4096, seed=4)


def test_reads_and_writes_are_declared_for_io_uring(backend, device):
    buf = bytearray(4096)
    work = backend.read_work(4096, buf)
    assert isinstance(work, FileRead) and work.fd >= 0 and work.offset == 4096
    work.run()
    write = backend.write_work(4096, pattern(4096, seed=9))
    assert isinstance(write, FileWrite)
    write.run()
    assert read(backend, 4096, 4096) == pattern(4096, seed=9)


def test_a_loop_device_over_a_sparse_file_is_thin_with_zeroing_unmap(backend, device):
    facts = backend.facts
    assert facts.discard_max_bytes > 0 and facts.write_zeroes_max_bytes > 0
    assert backend.can_deallocate


def test_deallocate_reads_back_zeros_and_frees_the_backing_blocks(backend, device):
    backend.write(0, pattern(4 * MIB))
    backend.flush()
    before = device.backing_blocks()
    backend.deallocate(MIB, 2 * MIB)
    assert read(backend, MIB, 2 * MIB) == bytes(2 * MIB)
    assert read(backend, 0, MIB) == pattern(4 * MIB)[:MIB]
    assert read(backend, 3 * MIB, MIB) == pattern(4 * MIB)[3 * MIB:]
    assert read_device(device.path, MIB, 4096) == bytes(4096)   # the page cache agrees
    assert device.backing_blocks() <= before - 2 * MIB // 512    # unmapped, not written


def test_zero_out_writes_zeros_but_keeps_the_blocks_mapped(backend, device):
    backend.write(0, pattern(2 * MIB))
    backend.flush()
    before = device.backing_blocks()
    fd = backend.extents_for(0, MIB)[0].fd
    block_device.zero_out(fd, 0, MIB)
    assert read_device(device.path, 0, MIB) == bytes(MIB)
    assert device.backing_blocks() >= before - 64       # BLKZEROOUT does not unmap


def test_without_zeroing_unmap_the_device_is_fully_provisioned_and_deallocate_zeroes(
        device, monkeypatch):
    """A device that cannot unmap, or cannot guarantee zeros after it, is not reported thin;
    deallocation (the zero ROD token) then writes zeros with BLKZEROOUT."""
    real = block_device.device_facts

    def discard_only(fd: int) -> DeviceFacts:
        facts = real(fd)
        return DeviceFacts(facts.size, facts.logical_sector_size, facts.discard_max_bytes, 0)

    monkeypatch.setattr(block, "device_facts", discard_only)
    backend = BlockDeviceBackend(device.path, 16 * MIB, block_size=512)
    try:
        assert not backend.can_deallocate
        backend.write(0, pattern(MIB))
        backend.flush()
        blocks = device.backing_blocks()
        backend.deallocate(0, MIB)
        assert read(backend, 0, MIB) == bytes(MIB)
        assert device.backing_blocks() >= blocks - 64
    finally:
        backend.close()


def test_allocation_status_is_mapped_or_unknown_everywhere(backend):
    backend.deallocate(0, MIB)
    assert backend.allocation_status(0, 4 * MIB) == [AllocationRun(0, 4 * MIB, True)]


def test_a_size_below_the_device_uses_its_first_bytes(device):
    backend = BlockDeviceBackend(device.path, 4 * MIB, block_size=512)
    try:
        backend.write(4 * MIB - 512, pattern(512))
        with pytest.raises(ValueError):
            backend.write(4 * MIB, pattern(512))
        backend.flush()
        assert read_device(device.path, 4 * MIB - 512, 512) == pattern(512)
    finally:
        backend.close()


def test_a_size_beyond_the_device_is_refused(device):
    with pytest.raises(ValueError, match="holds 16777216 bytes, fewer than the storage object's size"):
        BlockDeviceBackend(device.path, 32 * MIB, block_size=512)


def test_a_block_smaller_than_the_device_sector_is_refused(loop_devices):
    device = loop_devices(4 * MIB, sector_size=4096)
    with pytest.raises(ValueError, match="logical sector is 4096 bytes, larger than block_size 512"):
        BlockDeviceBackend(device.path, 4 * MIB, block_size=512)
    backend = BlockDeviceBackend(device.path, 4 * MIB, block_size=4096)
    backend.close()


def test_a_regular_file_is_not_a_block_device(tmp_path):
    path = tmp_path / "file.img"
    path.write_bytes(bytes(MIB))
    with pytest.raises(OSError) as raised:
        BlockDeviceBackend(str(path), MIB, block_size=512)
    assert raised.value.errno == errno.ENOTBLK and raised.value.filename == str(path)


def test_a_missing_device_is_not_created(tmp_path):
    path = tmp_path / "no-such-device"
    with pytest.raises(FileNotFoundError):
        BlockDeviceBackend(str(path), MIB, block_size=512)
    assert not path.exists()


def test_read_only_refuses_writes_and_deallocation(device):
    backend = BlockDeviceBackend(device.path, 16 * MIB, block_size=512, read_only=True)
    try:
        assert read(backend, 0, 512) == bytes(512)
        for call in (lambda: backend.write(0, bytes(512)), lambda: backend.deallocate(0, 512)):
            with pytest.raises(OSError) as raised:
                call()
            assert raised.value.errno == errno.EROFS
    finally:
        backend.close()


def test_probe_reports_missing_and_non_block_paths(tmp_path, device):
    with pytest.raises(OSError, match="not a block device"):
        block_device.probe(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        block_device.probe(str(tmp_path / "absent"))
    assert block_device.probe(device.path).size == 16 * MIB


def test_file_ranges_say_they_are_not_regular_files(backend, device):
    (piece,) = backend.extents_for(MIB, MIB)
    assert (piece.path, piece.file_offset, piece.length, piece.regular) == (device.path, MIB, MIB, False)


def test_copies_between_a_block_device_and_a_file_move_by_read_and_write(backend, tmp_path):
    """copy_file_range refuses block devices (EINVAL): the copy step does not try it."""
    files = FileExtentBackend([ExtentConfig(str(tmp_path / "file.img"))], 8 * MIB)
    try:
        data = pattern(2 * MIB, seed=5)
        backend.write(MIB, data)
        block_end, file_end = BackendEndpoint(backend), BackendEndpoint(files)
        outcome = CopyStep((Move(Place(block_end, MIB), Place(file_end, 0), 2 * MIB),
                            Move(Place(file_end, 0), Place(block_end, 8 * MIB), 2 * MIB),
                            Move(Place(block_end, 8 * MIB), Place(block_end, 12 * MIB), 2 * MIB)),
                           backend.lane, reflink_alignment=4096).run()
        assert outcome.error is None and outcome.completed == 6 * MIB
        assert outcome.moved == {CopyMethod.READ_WRITE: 6 * MIB}
        assert not outcome.reflink_refused
        assert read(files, 0, 2 * MIB) == data
        assert read(backend, 8 * MIB, 2 * MIB) == data
        assert read(backend, 12 * MIB, 2 * MIB) == data
    finally:
        files.close()


def test_the_kernel_refuses_copy_file_range_on_block_devices(backend, tmp_path):
    """Why ``FileRange.regular`` exists: on this kernel, as documented in copy_file_range(2)."""
    (piece,) = backend.extents_for(0, MIB)
    with pytest.raises(OSError) as raised:
        os.copy_file_range(piece.fd, piece.fd, 4096, 0, MIB)
    assert raised.value.errno in (errno.EINVAL, errno.EXDEV, errno.EOPNOTSUPP)


def test_a_refused_zeroing_unmap_still_reads_back_zeros(backend, monkeypatch, caplog):
    """A device that advertised WRITE ZEROES and then refuses it (EOPNOTSUPP): BLKZEROOUT."""
    def refused(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(block, "zero_unmapping", refused)
    backend.write(0, pattern(MIB))
    backend.deallocate(0, MIB)
    assert read(backend, 0, MIB) == bytes(MIB)
    assert "zeroing unmap refused" in caplog.text
