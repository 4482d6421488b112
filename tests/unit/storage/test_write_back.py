"""FileExtentBackend durability (docs/errors.md, "Write-back failed"): the first failed sync makes
every later flush and FUA write fail although the OS would now report success; a failed write is
a write-back failure only when the file's witness descriptor reports a writeback error."""

from __future__ import annotations

import errno
import os

import pytest

from odxtarget.config import ExtentConfig
from odxtarget.storage import extents as extents_module
from odxtarget.storage.backend import WriteBackError
from odxtarget.storage.extents import FileExtentBackend

MIB = 1 << 20
BLOCK = 4096


class SyncFaults:
    """Replaces ``os.fdatasync`` in the extents module: fails for the fds in ``failing``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.real = os.fdatasync
        self.failing: set[int] = set()
        self.calls: list[int] = []
        monkeypatch.setattr(extents_module.os, "fdatasync", self.fdatasync)

    def fdatasync(self, fd: int) -> None:
        self.calls.append(fd)
        if fd in self.failing:
            self.failing.discard(fd)          # Linux reports a writeback error once
            raise OSError(errno.EIO, "Input/output error")
        self.real(fd)


@pytest.fixture
def backend(tmp_path):
    opened = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    yield opened
    if opened.write_back_error is None:
        opened.close()
    else:
        with pytest.raises(WriteBackError):                 # closing syncs, and says it cannot
            opened.close()


def main_fd(backend: FileExtentBackend) -> int:
    return backend.extents_for(0, 1)[0].fd


def witness_fd(backend: FileExtentBackend) -> int:
    fds = {int(name) for name in os.listdir("/proc/self/fd")}
    path = backend.paths[0]
    candidates = [fd for fd in fds if fd != main_fd(backend) and _points_at(fd, path)]
    assert len(candidates) == 1, candidates
    return candidates[0]


def _points_at(fd: int, path: str) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == os.path.realpath(path)
    except OSError:
        return False


def read(backend: FileExtentBackend, offset: int, length: int) -> bytes:
    buffer = bytearray(length)
    backend.read_into(offset, memoryview(buffer))
    return bytes(buffer)


def test_a_failed_flush_is_sticky_although_the_next_sync_would_succeed(backend, monkeypatch):
    faults = SyncFaults(monkeypatch)
    backend.write(0, b"a" * BLOCK)
    faults.failing.add(main_fd(backend))
    with pytest.raises(WriteBackError) as first:
        backend.flush()
    assert first.value.errno == errno.EIO and first.value.filename == backend.paths[0]
    assert backend.write_back_error is not None
    calls = len(faults.calls)
    for _ in range(2):
        with pytest.raises(WriteBackError, match="an earlier sync failed"):
            backend.flush()
        with pytest.raises(WriteBackError):
            backend.write(BLOCK, b"f" * BLOCK, fua=True)
    assert len(faults.calls) == calls                        # refused without asking the OS again
    assert read(backend, BLOCK, BLOCK) == bytes(BLOCK)       # the refused FUA write wrote nothing
    backend.write(2 * BLOCK, b"c" * BLOCK)                   # cached writes and reads keep working
    assert read(backend, 0, BLOCK) == b"a" * BLOCK and read(backend, 2 * BLOCK, BLOCK) == b"c" * BLOCK


def test_reopening_the_files_is_the_way_back(backend, tmp_path, monkeypatch):
    faults = SyncFaults(monkeypatch)
    faults.failing.add(main_fd(backend))
    with pytest.raises(WriteBackError):
        backend.flush()
    reopened = FileExtentBackend([ExtentConfig(str(tmp_path / "d.img"))], MIB)
    try:
        assert reopened.write_back_error is None
        reopened.write(0, b"r" * BLOCK, fua=True)
        reopened.flush()
    finally:
        reopened.close()


def test_a_fua_write_whose_sync_fails_is_a_write_back_failure(backend, monkeypatch):
    def no_rwf_dsync(fd, buffers, offset, flags=0):
        if flags:
            raise OSError(errno.EOPNOTSUPP, "no RWF_DSYNC")
        return real_pwritev(fd, buffers, offset, flags)

    real_pwritev = os.pwritev
    monkeypatch.setattr(extents_module.os, "pwritev", no_rwf_dsync)
    faults = SyncFaults(monkeypatch)
    faults.failing.add(main_fd(backend))
    with pytest.raises(WriteBackError):
        backend.write(0, b"x" * BLOCK, fua=True)
    with pytest.raises(WriteBackError):
        backend.flush()


def test_an_rwf_dsync_failure_is_a_write_back_failure_when_the_witness_reports_one(backend, monkeypatch):
    """pwritev(RWF_DSYNC) does not say whether its write or its sync half failed: the witness does."""
    witness = witness_fd(backend)
    faults = SyncFaults(monkeypatch)

    def dsync_fails(fd, buffers, offset, flags=0):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(extents_module.os, "pwritev", dsync_fails)
    faults.failing.add(witness)
    with pytest.raises(WriteBackError):
        backend.write(0, b"x" * BLOCK, fua=True)
    assert witness in faults.calls and backend.write_back_error is not None


def test_a_writeback_error_another_call_consumed_still_reaches_the_witness(backend, monkeypatch):
    """NFS returns an earlier writeback error from a plain write() and consumes it on that
    descriptor; the witness still reports it, so the failure is not mistaken for a full disk."""
    witness = witness_fd(backend)
    faults = SyncFaults(monkeypatch)

    def no_space(fd, buffers, offset, flags=0):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(extents_module.os, "pwritev", no_space)
    faults.failing.add(witness)
    with pytest.raises(WriteBackError) as failure:
        backend.write(0, b"x" * BLOCK)
    assert failure.value.errno == errno.EIO
    monkeypatch.undo()
    with pytest.raises(WriteBackError):
        backend.flush()


def test_a_full_filesystem_is_an_ordinary_error_and_not_sticky(backend, monkeypatch):
    real_pwritev = os.pwritev

    def no_space(fd, buffers, offset, flags=0):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(extents_module.os, "pwritev", no_space)
    for fua in (False, True):
        with pytest.raises(OSError) as failure:
            backend.write(0, b"x" * BLOCK, fua=fua)
        assert not isinstance(failure.value, WriteBackError)
        assert failure.value.errno == errno.ENOSPC and failure.value.filename == backend.paths[0]
    monkeypatch.setattr(extents_module.os, "pwritev", real_pwritev)
    assert backend.write_back_error is None
    backend.write(0, b"y" * BLOCK, fua=True)
    backend.flush()
    assert read(backend, 0, BLOCK) == b"y" * BLOCK


def test_a_failed_deallocation_checks_the_witness_too(backend, monkeypatch):
    witness = witness_fd(backend)
    faults = SyncFaults(monkeypatch)

    def punch_fails(fd, offset, length):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(extents_module, "punch_hole", punch_fails)
    with pytest.raises(OSError) as plain:
        backend.deallocate(0, 4 * BLOCK)
    assert not isinstance(plain.value, WriteBackError)
    faults.failing.add(witness)
    with pytest.raises(WriteBackError):
        backend.deallocate(0, 4 * BLOCK)


def test_witnesses_are_closed_with_the_backend_and_absent_when_read_only(tmp_path):
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    writable = FileExtentBackend([ExtentConfig(str(tmp_path / "w.img"))], MIB)
    assert open_fds() == before + 2                          # the file and its witness
    writable.close()
    assert open_fds() == before
    read_only = FileExtentBackend([ExtentConfig(str(tmp_path / "w.img"))], MIB, read_only=True)
    assert open_fds() == before + 1
    read_only.close()
    assert open_fds() == before
