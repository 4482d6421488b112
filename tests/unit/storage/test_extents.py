"""FileExtentBackend on the real filesystem (tmp_path): sparseness, splitting, holes, FUA."""

from __future__ import annotations

import errno
import os

import pytest

from odxtarget.config import ExtentConfig
from odxtarget.storage import extents as extents_module
from odxtarget.storage.backend import AllocationRun, Backend
from odxtarget.storage.extents import FileExtentBackend, FileRange
from odxtarget.storage.work import FileRead

MIB = 1 << 20
BLOCK = 4096  # ext4's block size on the test machine; tests read st_blksize where it matters


def pattern(length: int, seed: int = 1) -> bytes:
    """Bytes with a prime period (251), so data shifted by any whole number of sectors shows."""
    period = bytes((i * 7 + seed) % 251 for i in range(251))
    return (period * (length // 251 + 1))[:length]


def read(backend: FileExtentBackend, offset: int, length: int) -> bytes:
    buf = bytearray(length)
    backend.read_into(offset, memoryview(buf))
    return bytes(buf)


@pytest.fixture
def two_files(tmp_path):
    """A 3 MiB LUN: 1 MiB at offset 64 KiB of a.img, then 2 MiB at offset 0 of b.img."""
    backend = FileExtentBackend(
        [ExtentConfig(str(tmp_path / "a.img"), 64 * 1024, MIB), ExtentConfig(str(tmp_path / "b.img"))],
        3 * MIB,
    )
    yield backend
    backend.close()


def test_implements_the_backend_protocol(tmp_path):
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    try:
        assert isinstance(backend, Backend)
        assert backend.size == MIB
    finally:
        backend.close()


def test_files_are_created_sparse(tmp_path):
    path = tmp_path / "big.img"
    backend = FileExtentBackend([ExtentConfig(str(path))], 1 << 30)
    try:
        info = os.stat(path)
        assert info.st_size == 1 << 30
        assert info.st_blocks * 512 < 64 * 1024  # nothing written: no data blocks
        assert backend.allocation_status(0, 1 << 30) == [AllocationRun(0, 1 << 30, False)]
        assert read(backend, 512 * MIB, 4096) == bytes(4096)
    finally:
        backend.close()


def test_existing_longer_file_is_not_shrunk_and_keeps_its_data(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(pattern(3 * BLOCK))
    backend = FileExtentBackend([ExtentConfig(str(path))], 2 * BLOCK)
    try:
        assert read(backend, 0, 2 * BLOCK) == pattern(3 * BLOCK)[: 2 * BLOCK]
    finally:
        backend.close()
    assert path.read_bytes() == pattern(3 * BLOCK)


def test_shorter_file_is_grown_to_cover_its_extent(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\x01" * 512)
    FileExtentBackend([ExtentConfig(str(path), 4096, 8192)], 8192).close()
    assert os.path.getsize(path) == 4096 + 8192
    assert path.read_bytes()[:512] == b"\x01" * 512


def test_write_then_read_across_an_extent_boundary(two_files, tmp_path):
    data = pattern(3 * BLOCK)
    start = MIB - BLOCK - 100  # straddles the a.img/b.img boundary at LUN 1 MiB
    two_files.write(start, data)
    assert read(two_files, start, len(data)) == data
    # The bytes landed where the extent map says: a.img at 64 KiB + LUN offset, b.img at 0.
    in_a = MIB - start
    with open(tmp_path / "a.img", "rb") as a:
        a.seek(64 * 1024 + start)
        assert a.read(in_a) == data[:in_a]
    with open(tmp_path / "b.img", "rb") as b:
        assert b.read(len(data) - in_a) == data[in_a:]


def test_extents_for_splits_at_boundaries(two_files, tmp_path):
    ranges = two_files.extents_for(MIB - 512, 1024)
    assert [(r.path, r.file_offset, r.length) for r in ranges] == [
        (str(tmp_path / "a.img"), 64 * 1024 + MIB - 512, 512),
        (str(tmp_path / "b.img"), 0, 512),
    ]
    assert all(isinstance(r, FileRange) and os.fstat(r.fd).st_size > 0 for r in ranges)


def test_one_fd_per_distinct_file(tmp_path):
    path = str(tmp_path / "shared.img")
    backend = FileExtentBackend(
        [
            ExtentConfig(path, 0, BLOCK),
            ExtentConfig(str(tmp_path / "x.img"), 0, BLOCK),
            ExtentConfig(path, 2 * BLOCK, None),
        ],
        4 * BLOCK,
    )
    try:
        fds = {r.fd for r in backend.extents_for(0, 4 * BLOCK) if r.path == path}
        assert len(fds) == 1
        assert backend.paths == [path, str(tmp_path / "x.img")]
    finally:
        backend.close()


def test_read_into_a_non_byte_memoryview(tmp_path):
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    try:
        backend.write(0, pattern(16))
        words = memoryview(bytearray(16)).cast("I")
        backend.read_into(0, words)
        assert words.tobytes() == pattern(16)
    finally:
        backend.close()


def test_out_of_range_access_is_refused(two_files):
    with pytest.raises(ValueError, match="outside the logical unit"):
        two_files.read_into(3 * MIB - 512, memoryview(bytearray(1024)))
    with pytest.raises(ValueError, match="outside the logical unit"):
        two_files.write(-512, b"x" * 512)


def test_deallocate_punches_holes_that_read_as_zeros(two_files, tmp_path):
    two_files.write(0, pattern(3 * MIB))
    assert two_files.allocation_status(0, 3 * MIB) == [AllocationRun(0, 3 * MIB, True)]
    blocks_before = os.stat(tmp_path / "b.img").st_blocks
    two_files.deallocate(MIB - 64 * 1024, 128 * 1024)  # across the boundary
    assert read(two_files, MIB - 64 * 1024, 128 * 1024) == bytes(128 * 1024)
    assert read(two_files, MIB - 64 * 1024 - 512, 512) == pattern(3 * MIB)[MIB - 64 * 1024 - 512: MIB - 64 * 1024]
    assert two_files.allocation_status(0, 3 * MIB) == [
        AllocationRun(0, MIB - 64 * 1024, True),
        AllocationRun(MIB - 64 * 1024, 128 * 1024, False),
        AllocationRun(MIB + 64 * 1024, 2 * MIB - 64 * 1024, True),
    ]
    assert os.stat(tmp_path / "b.img").st_blocks < blocks_before  # space really freed


def test_unaligned_deallocate_zeroes_head_and_tail_and_frees_the_middle(tmp_path):
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    try:
        block = os.fstat(backend.extents_for(0, 1)[0].fd).st_blksize
        data = pattern(8 * block)
        backend.write(0, data)
        start, length = block + 512, 4 * block  # [1.125, 5.125) blocks
        backend.deallocate(start, length)
        expected = bytearray(data)
        expected[start:start + length] = bytes(length)
        assert read(backend, 0, 8 * block) == bytes(expected)
        # Blocks 2..4 are wholly inside: holes. Blocks 1 and 5 keep live bytes: mapped.
        assert backend.allocation_status(0, 8 * block) == [
            AllocationRun(0, 2 * block, True),
            AllocationRun(2 * block, 3 * block, False),
            AllocationRun(5 * block, 3 * block, True),
        ]
    finally:
        backend.close()


def test_deallocate_inside_one_block_writes_zeros_without_allocating_holes(tmp_path):
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    try:
        backend.deallocate(100 * 1024 + 512, 1024)  # a hole already: must stay one
        assert backend.allocation_status(0, MIB) == [AllocationRun(0, MIB, False)]
        backend.write(0, pattern(BLOCK))
        backend.deallocate(512, 1024)
        assert read(backend, 0, BLOCK) == pattern(BLOCK)[:512] + bytes(1024) + pattern(BLOCK)[1536:]
    finally:
        backend.close()


def test_deallocate_falls_back_to_writing_zeros_when_punching_is_unsupported(tmp_path, monkeypatch):
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "not here")

    monkeypatch.setattr(extents_module, "punch_hole", unsupported)
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    try:
        backend.write(0, pattern(4 * BLOCK))
        backend.deallocate(BLOCK, 2 * BLOCK)
        assert read(backend, 0, 4 * BLOCK) == pattern(BLOCK) + bytes(2 * BLOCK) + pattern(4 * BLOCK)[3 * BLOCK:]
    finally:
        backend.close()


def test_allocation_status_of_a_sub_range_is_clipped_and_merged(two_files):
    two_files.write(MIB - BLOCK, pattern(2 * BLOCK))  # last block of a.img, first of b.img
    assert two_files.allocation_status(MIB - 2 * BLOCK, 4 * BLOCK) == [
        AllocationRun(MIB - 2 * BLOCK, BLOCK, False),
        AllocationRun(MIB - BLOCK, 2 * BLOCK, True),  # merged across the two files
        AllocationRun(MIB + BLOCK, BLOCK, False),
    ]


def test_fua_write_uses_rwf_dsync(tmp_path, monkeypatch):
    calls = []
    real_pwritev = os.pwritev

    def spy(fd, buffers, offset, flags=0):
        calls.append(flags)
        return real_pwritev(fd, buffers, offset, flags)

    monkeypatch.setattr(extents_module.os, "pwritev", spy)
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    try:
        backend.write(0, pattern(BLOCK), fua=True)
        backend.write(BLOCK, pattern(BLOCK))
        assert calls == [os.RWF_DSYNC, 0]
        assert read(backend, 0, 2 * BLOCK) == pattern(BLOCK) * 2
    finally:
        backend.close()


def test_fua_falls_back_to_fdatasync_without_rwf_dsync(tmp_path, monkeypatch):
    synced = []
    real_pwritev, real_fdatasync = os.pwritev, os.fdatasync

    def no_dsync(fd, buffers, offset, flags=0):
        if flags:
            raise OSError(errno.EOPNOTSUPP, "no RWF_DSYNC")
        return real_pwritev(fd, buffers, offset, flags)

    def spy_sync(fd):
        synced.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(extents_module.os, "pwritev", no_dsync)
    monkeypatch.setattr(extents_module.os, "fdatasync", spy_sync)
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    try:
        fd = backend.extents_for(0, 1)[0].fd
        backend.write(0, pattern(BLOCK), fua=True)
        backend.write(BLOCK, pattern(BLOCK), fua=True)
        assert synced == [fd, fd]
        assert read(backend, 0, BLOCK) == pattern(BLOCK)
    finally:
        backend.close()


def test_short_writes_and_reads_are_continued(tmp_path, monkeypatch):
    real_pwritev, real_preadv = os.pwritev, os.preadv

    def dribble_write(fd, buffers, offset, flags=0):
        return real_pwritev(fd, [buffers[0][:1000]], offset, flags)

    def dribble_read(fd, buffers, offset):
        return real_preadv(fd, [buffers[0][:777]], offset)

    monkeypatch.setattr(extents_module.os, "pwritev", dribble_write)
    monkeypatch.setattr(extents_module.os, "preadv", dribble_read)
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    try:
        backend.write(4096, pattern(3 * BLOCK))
        assert read(backend, 4096, 3 * BLOCK) == pattern(3 * BLOCK)
    finally:
        backend.close()


def test_flush_syncs_every_file(two_files, monkeypatch):
    synced = []
    monkeypatch.setattr(extents_module.os, "fdatasync", synced.append)
    two_files.flush()
    assert sorted(synced) == sorted({r.fd for r in two_files.extents_for(0, 3 * MIB)})


def test_close_flushes_and_closes_and_is_idempotent(tmp_path):
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    fd = backend.extents_for(0, 1)[0].fd
    backend.write(0, b"x" * 512)
    backend.close()
    backend.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(OSError, match="closed"):
        backend.read_into(0, memoryview(bytearray(512)))


def test_close_under_a_lease_leaves_the_files_open_until_it_ends(tmp_path):
    """A copy step using the descriptors of ``extents_for`` keeps them valid: close() only
    marks the backend closing, and the last lease to end flushes and closes the files."""
    backend = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    fd = backend.extents_for(0, 1)[0].fd
    with backend.lease():
        backend.write(0, b"y" * 512)
        backend.close()
        assert os.pread(fd, 512, 0) == b"y" * 512          # still open under the lease
        with pytest.raises(OSError, match="closed"):       # but no new call may start
            backend.read_into(0, memoryview(bytearray(512)))
    with pytest.raises(OSError):
        os.fstat(fd)


def test_read_only_refuses_writes_and_does_not_create_files(tmp_path):
    path = tmp_path / "ro.img"
    with pytest.raises(OSError) as missing:
        FileExtentBackend([ExtentConfig(str(path))], MIB, read_only=True)
    assert missing.value.errno == errno.ENOENT and missing.value.filename == str(path)
    assert not path.exists()

    path.write_bytes(pattern(BLOCK))  # shorter than the LUN: the rest reads as zeros
    backend = FileExtentBackend([ExtentConfig(str(path))], MIB, read_only=True)
    try:
        assert read(backend, 0, 2 * BLOCK) == pattern(BLOCK) + bytes(BLOCK)
        assert backend.allocation_status(0, MIB)[-1] == AllocationRun(BLOCK, MIB - BLOCK, False)
        for attempt in (lambda: backend.write(0, b"x" * 512), lambda: backend.deallocate(0, BLOCK)):
            with pytest.raises(OSError) as refused:
                attempt()
            assert refused.value.errno == errno.EROFS
        backend.flush()
    finally:
        backend.close()
    assert os.path.getsize(path) == BLOCK  # never grown


@pytest.mark.parametrize(
    "extents, size, message",
    [
        ([], MIB, "at least one extent"),
        ([("a", 0, None), ("b", 0, None)], MIB, "only the last extent may omit its length"),
        ([("a", 0, MIB)], 2 * MIB, f"the extents cover {MIB} bytes but the size is {2 * MIB}"),
        ([("a", 0, MIB), ("b", 0, MIB)], MIB, f"the extents cover {2 * MIB} bytes but the size is {MIB}"),
        ([("a", 0, MIB), ("b", 0, None)], MIB, "nothing is left for it"),
        ([("a", -512, None)], MIB, "offset -512 is negative"),
        ([("a", 0, 0), ("b", 0, None)], MIB, "length 0 is not positive"),
        ([("a", 0, None)], 0, "size must be positive"),
        ([("a", 0, MIB), ("a", MIB - 512, None)], 2 * MIB, "extents overlap in"),
    ],
)
def test_invalid_extent_lists_are_rejected(tmp_path, extents, size, message):
    configs = [ExtentConfig(str(tmp_path / name), offset, length) for name, offset, length in extents]
    with pytest.raises(ValueError, match=message):
        FileExtentBackend(configs, size)


def test_open_errors_name_the_file(tmp_path):
    path = tmp_path / "no-such-dir" / "d.img"
    with pytest.raises(OSError) as failure:
        FileExtentBackend([ExtentConfig(str(path))], MIB)
    assert failure.value.errno == errno.ENOENT
    assert str(path) in str(failure.value) and "cannot open" in str(failure.value)


def test_a_directory_is_not_a_backing_file(tmp_path):
    with pytest.raises(OSError, match="not a regular file"):
        FileExtentBackend([ExtentConfig(str(tmp_path))], MIB, read_only=True)


def _declared_read(backend: FileExtentBackend) -> FileRead:
    work = backend.read_work(0, bytearray(4096))
    assert isinstance(work, FileRead)
    work.run()
    return work


def test_page_cache_probes_back_off_while_reads_miss_and_resume_when_they_hit(tmp_path):
    """``try_read_into``: a cold working set makes it try only one read in
    ``NOWAIT_PROBE_INTERVAL``; hits bring it back to trying every read."""
    size = 64 * MIB
    path = tmp_path / "cold.img"
    cold = list(range(MIB, size, MIB))
    with open(path, "wb") as file:
        file.truncate(size)
        for offset in cold:
            os.pwrite(file.fileno(), pattern(4096), offset)
        os.fsync(file.fileno())
        os.posix_fadvise(file.fileno(), 0, size, os.POSIX_FADV_DONTNEED)   # out of the page cache
    backend = FileExtentBackend([ExtentConfig(str(path))], size)
    try:
        buf = memoryview(bytearray(4096))
        backend.read_into(0, buf)                      # block 0 is cached from here on
        assert backend.try_read_into(0, buf)
        assert not _declared_read(backend).cold         # a cached working set: not for the polled ring
        misses = sum(not backend.try_read_into(offset, buf) for offset in cold)
        assert misses >= len(cold) - 2
        assert _declared_read(backend).cold             # mostly misses: the polled ring's work
        interval = extents_module.NOWAIT_PROBE_INTERVAL
        hits = [backend.try_read_into(0, buf) for _ in range(interval)]
        assert hits.count(True) == 1                   # only the probe went to the page cache
        for _ in range(interval * 64):
            backend.try_read_into(0, buf)
        assert all(backend.try_read_into(0, buf) for _ in range(interval))
        assert not _declared_read(backend).cold
    finally:
        backend.close()
