"""``RbdBackend`` against a real cluster: the ``storage.Backend`` contract on an RBD image."""

from __future__ import annotations

import errno
import threading

import pytest

from odxtarget.config import RbdConfig
from odxtarget.storage.backend import AllocationRun, Backend, WriteBackError
from odxtarget.storage.rbd import RbdBackend
from odxtarget.storage.work import StorageCall

MIB = 1 << 20
SIZE = 16 * MIB
OBJECT = 4 * MIB      # RBD's default object size


@pytest.fixture
def backend(rbd_image):
    opened = RbdBackend(RbdConfig(**rbd_image(SIZE)), SIZE)
    try:
        yield opened
    finally:
        opened.close()


def _read(backend: RbdBackend, offset: int, length: int) -> bytes:
    buffer = bytearray(length)
    backend.read_into(offset, memoryview(buffer))
    return bytes(buffer)


def test_it_is_a_backend_whose_work_runs_on_the_workers(backend):
    assert isinstance(backend, Backend)
    assert backend.size == SIZE and backend.can_deallocate
    assert backend.try_read_into(0, memoryview(bytearray(512))) is False   # nothing cached here
    work = backend.write_work(0, b"w" * 512)
    assert isinstance(work, StorageCall) and work.lane == backend.lane
    work.run()
    buffer = bytearray(512)
    backend.read_work(0, buffer).run()
    assert bytes(buffer) == b"w" * 512


def test_writes_read_back_across_objects_and_a_new_image_reads_zeros(backend):
    assert _read(backend, 0, 4096) == bytes(4096)
    data = bytes(range(256)) * 64                  # 16 KiB across an object boundary
    backend.write(OBJECT - 8192, memoryview(data))
    assert _read(backend, OBJECT - 8192, len(data)) == data
    assert _read(backend, OBJECT - 8704, 512) == bytes(512)


def test_a_second_client_sees_every_acknowledged_write(backend, rbd_image):
    """No gateway-side cache: what one client wrote, another reads at once."""
    backend.write(MIB, b"first" * 100)
    other = RbdBackend(backend._spec, SIZE)
    try:
        assert _read(other, MIB, 500) == b"first" * 100
        other.write(MIB, b"second" * 50)
        assert _read(backend, MIB, 300) == b"second" * 50
    finally:
        other.close()


def test_deallocated_bytes_read_as_zeros_even_inside_an_object(backend):
    backend.write(0, b"\xff" * (2 * OBJECT))
    backend.deallocate(512, 1024)                      # part of an object: zeroed
    backend.deallocate(OBJECT, OBJECT)                 # a whole object: removed
    assert _read(backend, 0, 2048) == b"\xff" * 512 + bytes(1024) + b"\xff" * 512
    assert _read(backend, OBJECT, OBJECT) == bytes(OBJECT)
    runs = backend.allocation_status(0, SIZE)
    assert runs[0] == AllocationRun(0, runs[0].length, True) and runs[0].length <= OBJECT
    assert AllocationRun(OBJECT, SIZE - OBJECT, False) in runs
    assert sum(run.length for run in runs) == SIZE


def test_allocation_status_covers_exactly_the_range_asked(backend):
    backend.write(3 * OBJECT, b"x" * 4096)
    runs = backend.allocation_status(OBJECT, 3 * OBJECT)
    assert runs[0] == AllocationRun(OBJECT, 2 * OBJECT, False)
    assert runs[1].mapped and runs[1].offset == 3 * OBJECT and runs[1].length >= 4096
    assert runs[-1].offset + runs[-1].length == 4 * OBJECT
    assert sum(run.length for run in runs) == 3 * OBJECT
    assert all(a.offset + a.length == b.offset and a.mapped != b.mapped for a, b in zip(runs, runs[1:]))


def test_compare_and_write_writes_only_on_a_match(backend):
    backend.write(8192, b"a" * 512)
    assert backend.compare_and_write(8192, memoryview(b"a" * 512), memoryview(b"b" * 512)) == -1
    assert _read(backend, 8192, 512) == b"b" * 512
    expected = b"b" * 100 + b"a" * 412
    assert backend.compare_and_write(8192, memoryview(expected), memoryview(b"c" * 512)) == 100
    assert _read(backend, 8192, 512) == b"b" * 512


def test_compare_and_write_is_atomic_against_writes_of_this_gateway(backend):
    """Writers racing a stream of COMPARE AND WRITEs never make one of them write over a
    changed range: each either sees its expected bytes and writes, or reports a miscompare."""
    backend.write(0, b"\x00" * 512)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            backend.write(0, b"\x01" * 512)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        outcomes = [backend.compare_and_write(0, memoryview(b"\x01" * 512), memoryview(b"\x02" * 512))
                    for _ in range(50)]
    finally:
        stop.set()
        thread.join()
    assert all(outcome in (-1, 0) for outcome in outcomes)
    assert -1 in outcomes


def test_flush_succeeds_and_read_only_refuses_writes(backend, rbd_image):
    backend.flush()
    backend.flush(0, 4096)
    read_only = RbdBackend(RbdConfig(**rbd_image(SIZE)), SIZE, read_only=True)
    try:
        for call in (lambda: read_only.write(0, b"x" * 512), lambda: read_only.deallocate(0, 512),
                     lambda: read_only.compare_and_write(0, memoryview(bytes(512)), memoryview(b"y" * 512))):
            with pytest.raises(OSError) as raised:
                call()
            assert raised.value.errno == errno.EROFS
        assert _read(read_only, 0, 512) == bytes(512)
    finally:
        read_only.close()


def test_out_of_range_and_closed_calls_fail_with_errno(backend):
    with pytest.raises(OSError) as raised:
        backend.write(SIZE - 512, b"x" * 1024)
    assert raised.value.errno == errno.EINVAL
    backend.close()
    with pytest.raises(OSError) as raised:
        _read(backend, 0, 512)
    assert raised.value.errno == errno.EBADF
    backend.close()                                    # twice is harmless


def test_a_sticky_flush_failure_is_reported_again(backend, monkeypatch):
    """A failed flush may have lost acknowledged writes: every later flush fails too."""
    def failing_flush() -> None:
        raise backend._rbd.IOError("injected", errno=errno.EIO)

    monkeypatch.setattr(backend, "_image", _ImageWithFlush(backend._image, failing_flush))
    with pytest.raises(WriteBackError):
        backend.flush()
    monkeypatch.undo()
    with pytest.raises(WriteBackError):
        backend.flush()
    assert backend.write_back_error is not None


class _ImageWithFlush:
    """The image, with ``flush`` replaced (librbd's Image class cannot be patched)."""

    def __init__(self, image, flush) -> None:
        self._image = image
        self.flush = flush

    def __getattr__(self, name):
        return getattr(self._image, name)


def test_missing_images_small_images_and_unreachable_clusters_are_clear_errors(ceph_cluster, rbd_image, tmp_path):
    conf = str(ceph_cluster.conf_path)
    with pytest.raises(OSError) as raised:
        RbdBackend(RbdConfig(image="no-such-image", conf=conf), SIZE)
    assert raised.value.errno == errno.ENOENT and "rbd/no-such-image" in str(raised.value)
    with pytest.raises(ValueError, match="less than the storage object's"):
        RbdBackend(RbdConfig(**rbd_image(SIZE)), 2 * SIZE)
    with pytest.raises(OSError) as raised:
        RbdBackend(RbdConfig(image="x", pool="no-such-pool", conf=conf), SIZE)
    assert raised.value.errno == errno.ENOENT
    unreachable = tmp_path / "ceph.conf"
    unreachable.write_text("[global]\nmon host = 127.0.0.1:9\nauth client required = none\n"
                           "client mount timeout = 2\nrados mon op timeout = 2\n")
    with pytest.raises(OSError):
        RbdBackend(RbdConfig(image="x", conf=str(unreachable)), SIZE)
