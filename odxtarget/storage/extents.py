"""A logical unit stored in an ordered list of byte ranges of regular files.

Theory of operation
-------------------
A LUN of ``size`` bytes is the concatenation of its extents: extent *i* covers LUN bytes
``[start_i, start_i + length_i)`` and stores them at ``[offset_i, offset_i + length_i)`` of its
file. Every distinct file is opened once; every request is split at extent boundaries and
served with positional vectored I/O (``os.preadv``/``os.pwritev``) straight into or out of the
caller's memoryview, so no byte is copied on the way.

Files are created sparse: ``ftruncate`` grows them to cover their extents and nothing is ever
written to pre-allocate, so a fresh 1 TiB LUN costs no disk space. A file that is already
longer is never shrunk. Deallocation (UNMAP, WRITE SAME with UNMAP) punches holes through
``fallocate(FALLOC_FL_PUNCH_HOLE)``, and provisioning status comes from ``SEEK_DATA``/
``SEEK_HOLE``, so the filesystem's own block map is the single source of truth: there is no
side table to keep consistent across crashes.

Durability: a FUA write is ``pwritev(RWF_DSYNC)`` (or ``pwritev`` then ``fdatasync``), a flush
is ``fdatasync`` of every file. Linux reports a failed sync once, through the file's writeback
error sequence (``errseq``), to each open file description; a later sync may succeed over pages
it could not write. So the first failed sync makes the backend refuse every later flush and FUA
write with ``WriteBackError`` (docs/errors.md, "Write-back failed"), and each file has a second,
never-written descriptor, its *witness*, opened with the first: when a write or deallocation
fails, syncing the witness tells whether a writeback error was recorded (by this failure's sync
half, or earlier) even if another call already consumed it on the main descriptor. Reopening
the storage (a new backend) is the only way back.

Concurrency (docs/execution.md): the front end's workers call one backend from several threads
at once. Positional I/O needs no lock. Every call that uses the files holds a *lease*, and so
does a copy step that uses them through ``extents_for`` (``lease``, the ``FileBacked`` copy
capability): ``close`` never closes a
file under a running call, it leaves that to the last lease to end, so a file descriptor is
never closed, let alone reused, under running work; COMPARE AND WRITE must be atomic against every other
write, so writes and deallocations register their byte range for as long as they run
(``RangeLock``), and ``compare_and_write`` holds its range alone while it reads, compares
and writes. ``try_read_into`` serves a read from the page cache without ever waiting for the
disk (``preadv`` with ``RWF_NOWAIT``), so cached reads need no worker at all.

A block device is this backend over one extent, the device, with its own opening, lane,
deallocation and provisioning status (the ``setup`` hooks; odxtarget/storage/block.py).
"""

from __future__ import annotations

import bisect
import errno
import functools
import logging
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

from odxtarget.storage.backend import AllocationRun, FileRange
from odxtarget.storage.extent_spec import ExtentSpec
from odxtarget.storage.fallocate import punch_hole
from odxtarget.storage.range_lock import RangeLock, compare_then_write
from odxtarget.storage.work import ZEROS, FileRead, FileWrite, StorageCall, StorageWork, read_fully, write_fully

log = logging.getLogger(__name__)


def _leased(method):
    """Run a backend method under a lease (see ``FileExtentBackend.lease``)."""
    @functools.wraps(method)
    def leased(self, *args, **kwargs):
        self._acquire()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._release()
    return leased


class _Extent(NamedTuple):
    lun_offset: int
    length: int
    fd: int
    path: str
    file_offset: int


def _with_path(error: OSError, path: str, action: str) -> OSError:
    """The same OSError, saying what we were doing and (as ``filename``) to which file.

    ``str()`` of the result reads ``[Errno 28] cannot write: No space left on device: '/p'``.
    """
    return OSError(error.errno, f"{action}: {error.strerror or error}", path)


def _new_write_back_error(code: int | None, message: str, path: str | None) -> OSError:
    """A ``WriteBackError`` (docs/errors.md, "Write-back failed")."""
    from odxtarget.storage.backend import WriteBackError

    return WriteBackError(code if code is not None else errno.EIO, message, path)


class FileExtentBackend:
    """Backend protocol implementation over file extents (see the module docstring).

    Args:
        extents: the LUN's extents in LUN order; only the last may have ``length=None``
            (the rest of ``size``). Paths should be absolute (the config loader resolves them).
        size: the LUN capacity in bytes; the extents must cover exactly this many bytes.
        read_only: open files ``O_RDONLY``, never create or grow them, and refuse writes and
            deallocation with EROFS. A file shorter than its extent reads as zeros past its end.

    Raises:
        ValueError: the extents are malformed or do not cover ``size`` exactly, or two
            extents overlap in the same file.
        OSError: a file cannot be opened, created or grown (the message names the file).
    """

    def __init__(self, extents: Sequence[ExtentSpec], size: int, *, read_only: bool = False):
        lengths = resolve_extent_lengths(extents, size)
        self._size = size
        self._ranges = RangeLock()
        self._nowait = _NOWAIT_READS
        self._hit_rate = 1.0        # of recent page-cache probes (try_read_into)
        self._skipped = 0
        self._lease_lock = threading.Lock()
        self._leases = 0
        self._closing = False
        self._read_only = read_only
        self._fds: dict[str, int] = {}
        #: main fd -> its witness fd (see the module docstring); none when read-only.
        self._witnesses: dict[int, int] = {}
        #: The first failed sync; set, it refuses every later flush and FUA write.
        self._write_back_error: OSError | None = None
        self._use_rwf_dsync = hasattr(os, "RWF_DSYNC")
        table: list[_Extent] = []
        try:
            lun_offset = 0
            for extent, length in zip(extents, lengths):
                fd = self._open(extent.path)
                table.append(_Extent(lun_offset, length, fd, extent.path, extent.offset))
                lun_offset += length
            _check_no_overlap(table)  # before growing anything: a bad map changes no file
            for extent in table:
                self._ensure_covers(extent.fd, extent.path, extent.file_offset + extent.length)
        except BaseException:
            self._close_fds()
            raise
        self._extents: tuple[_Extent, ...] = tuple(table)
        self._starts = [extent.lun_offset for extent in table]
        # The common case (one file) skips the extent lookup on the hot path.
        self._single: _Extent | None = table[0] if len(table) == 1 else None
        #: The device holding the first extent: work for one device shares its workers.
        self._lane = ("device", self._device_of(table[0].fd))
        #: Deallocation frees space (read-only storage never deallocates).
        self._can_deallocate = read_only or self._frees_space()

    # -- setup (what a block device does differently: odxtarget/storage/block.py) -----------

    #: Open flags for writable storage: regular files are created as needed.
    _CREATE = os.O_CREAT
    #: The storage is regular files (``FileRange.regular``).
    _REGULAR = True

    def _check_kind(self, fd: int, path: str) -> None:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)

    def _device_of(self, fd: int) -> int:
        """The device whose workers run this storage's calls: the file's filesystem."""
        return os.fstat(fd).st_dev

    def _frees_space(self) -> bool:
        """Every file's filesystem can punch holes."""
        return all(_punches_holes(fd) for fd in self._fds.values())

    def _deallocate_range(self, fd: int, offset: int, length: int) -> None:
        deallocate_file_range(fd, offset, length)

    def _allocation(self, fd: int, offset: int, length: int) -> list[tuple[int, int, bool]]:
        return _file_allocation(fd, offset, length)

    def _open(self, path: str) -> int:
        key = os.path.realpath(path)
        fd = self._fds.get(key)
        if fd is not None:
            return fd
        flags = os.O_CLOEXEC | (os.O_RDONLY if self._read_only else os.O_RDWR | self._CREATE)
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as error:
            raise _with_path(error, path, "cannot open") from None
        self._fds[key] = fd
        self._check_kind(fd, path)
        if not self._read_only:
            try:
                self._witnesses[fd] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as error:
                raise _with_path(error, path, "cannot open") from None
        return fd

    def _ensure_covers(self, fd: int, path: str, end: int) -> None:
        """Grow the file (sparse) to at least ``end`` bytes; never shrink it."""
        if self._read_only or os.fstat(fd).st_size >= end:
            return
        try:
            os.ftruncate(fd, end)
        except OSError as error:
            raise _with_path(error, path, f"cannot grow to {end} bytes") from None

    # -- Backend protocol -------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def lane(self) -> tuple:
        return self._lane

    @property
    def can_deallocate(self) -> bool:
        """Deallocation frees space (holes): the LU may report thin provisioning. Where a
        filesystem cannot punch holes, deallocating would mean writing zeros, which is not
        what UNMAP promises (docs/execution.md, "Long commands are sliced")."""
        return self._can_deallocate

    @property
    def write_back_error(self) -> OSError | None:
        """The failed sync that ended this backend's durability promises, if one did."""
        return self._write_back_error

    @_leased
    def read_into(self, offset: int, buf: memoryview) -> None:
        if not isinstance(buf, memoryview):
            buf = memoryview(buf)
        if buf.itemsize != 1 or buf.ndim != 1:
            buf = buf.cast("B")
        single = self._single
        if single is not None and offset >= 0 and offset + len(buf) <= single.length:
            _read_fully(single, single.file_offset + offset, buf)
            return
        done = 0
        for extent, file_offset, length in self._pieces(offset, len(buf)):
            _read_fully(extent, file_offset, buf[done:done + length])
            done += length

    def read_work(self, offset: int, buf: bytearray | memoryview) -> StorageWork:
        """A ``FileRead`` (which io_uring can run) when the bytes lie in one file and ``buf`` is a
        whole bytearray; the read then holds a lease until it ends. Else a call of ``read_into``."""
        single = self._single
        if (type(buf) is bytearray and single is not None and offset >= 0
                and offset + len(buf) <= single.length):
            self._acquire()
            return FileRead(self._lane, single.fd, single.file_offset + offset, buf, self._release,
                            self._hit_rate < NOWAIT_MIN_HIT_RATE)
        return StorageCall(self._lane, self.read_into, (offset, buf))

    def try_read_into(self, offset: int, buf: memoryview) -> bool:
        """``read_into`` if every byte is in the page cache; False (and ``buf`` undefined) when
        the read would have to wait for the disk.

        While fewer than ``NOWAIT_MIN_HIT_RATE`` of recent probes hit (a cold working set), only
        one read in ``NOWAIT_PROBE_INTERVAL`` tries: a miss costs a system call and an exception,
        and the read then goes to io_uring anyway (docs/execution.md, "Where the work runs")."""
        if not self._nowait:
            return False
        if self._hit_rate < NOWAIT_MIN_HIT_RATE:
            self._skipped += 1
            if self._skipped < NOWAIT_PROBE_INTERVAL:
                return False
            self._skipped = 0
        if not isinstance(buf, memoryview):
            buf = memoryview(buf)
        if buf.itemsize != 1 or buf.ndim != 1:
            buf = buf.cast("B")
        single = self._single
        if single is None or offset < 0 or offset + len(buf) > single.length:
            return False
        try:
            hit = os.preadv(single.fd, [buf], single.file_offset + offset, os.RWF_NOWAIT) == len(buf)
        except BlockingIOError:
            hit = False
        except OSError as error:
            if error.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._nowait = False           # this kernel or filesystem has no RWF_NOWAIT reads
                return False
            raise _with_path(error, single.path, "cannot read") from None
        self._hit_rate += ((1.0 if hit else 0.0) - self._hit_rate) * NOWAIT_RATE_WEIGHT
        return hit

    @_leased
    def write(self, offset: int, data: memoryview | bytes, fua: bool = False) -> None:
        if self._read_only:
            raise OSError(errno.EROFS, "write refused: the logical unit is read-only")
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.itemsize != 1 or view.ndim != 1:
            view = view.cast("B")
        with self._ranges.shared(offset, len(view)):
            self._write(offset, view, fua)

    def write_work(self, offset: int, data: memoryview | bytes, fua: bool = False) -> StorageWork:
        """A ``FileWrite`` (which io_uring can run) for a write within one file that can take
        its byte range now, holding a lease and the range until it ends; else a call of
        ``write``, which waits for the range on its worker."""
        single = self._single
        durable_form = not fua or (self._use_rwf_dsync and self._write_back_error is None)
        if (single is None or self._read_only or not durable_form or offset < 0
                or offset + len(data) > single.length):
            return StorageCall(self._lane, self.write, (offset, data, fua))
        self._acquire()
        span = self._ranges.try_share(offset, len(data))
        if span is None:
            self._release()
            return StorageCall(self._lane, self.write, (offset, data, fua))
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.itemsize != 1 or view.ndim != 1:
            view = view.cast("B")
        file_offset = single.file_offset + offset

        def perform() -> None:
            self._write_piece(single, file_offset, view, fua)

        def recover(error: OSError) -> None:
            if fua and error.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._write_piece(single, file_offset, view, fua)   # the way without RWF_DSYNC
                return
            raise self._failure(error, single, "cannot write")

        def release() -> None:
            self._ranges.unshare(span)
            self._release()

        return FileWrite(self._lane, single.fd, file_offset, data if type(data) in (bytes, bytearray) else view,
                         fua, perform, recover, release)

    @_leased
    def compare_and_write(self, offset: int, expected: memoryview, data: memoryview, fua: bool = False) -> int:
        """SBC-4 5.3 COMPARE AND WRITE: if the bytes at ``offset`` equal ``expected``, write
        ``data`` there; no other write of this backend touches the range meanwhile. Returns
        the offset of the first differing byte, or -1 once written."""
        if self._read_only:
            raise OSError(errno.EROFS, "write refused: the logical unit is read-only")
        view = data if isinstance(data, memoryview) else memoryview(data)
        view = view.cast("B") if view.itemsize != 1 else view
        return compare_then_write(self._ranges, offset, expected, max(len(expected), len(view)), self.read_into,
                                  lambda: self._write(offset, view, fua))

    def _write(self, offset: int, view: memoryview, fua: bool) -> None:
        single = self._single
        if single is not None and offset >= 0 and offset + len(view) <= single.length:
            self._write_piece(single, single.file_offset + offset, view, fua)
            return
        done = 0
        for extent, file_offset, length in self._pieces(offset, len(view)):
            self._write_piece(extent, file_offset, view[done:done + length], fua)
            done += length

    @_leased
    def flush(self, offset: int = 0, length: int | None = None) -> None:
        """``fdatasync`` each file that stores bytes of ``[offset, offset + length)`` (None:
        to the end of the LU); a durable sync of part of a file does not exist on Linux."""
        self._flush(offset, length)

    def _flush(self, offset: int = 0, length: int | None = None) -> None:
        if self._read_only:
            return
        self._refuse_after_write_back_failure()
        if length is None:
            length = self._size - offset
        fds = {extent.path: extent.fd for extent, _, _ in self._pieces(offset, length)} if length else {}
        failure: OSError | None = None
        for path, fd in fds.items():  # sync every file even if one fails
            try:
                os.fdatasync(fd)
            except OSError as error:
                failure = failure or self._write_back_failed(error, path)
        if failure is not None:
            raise failure

    @_leased
    def deallocate(self, offset: int, length: int) -> None:
        if self._read_only:
            raise OSError(errno.EROFS, "deallocate refused: the logical unit is read-only")
        with self._ranges.shared(offset, length):
            for extent, file_offset, piece_length in self._pieces(offset, length):
                try:
                    self._deallocate_range(extent.fd, file_offset, piece_length)
                except OSError as error:
                    raise self._failure(error, extent, "cannot deallocate") from None

    @_leased
    def allocation_status(self, offset: int, length: int) -> list[AllocationRun]:
        runs: list[AllocationRun] = []
        for extent, file_offset, piece_length in self._pieces(offset, length):
            shift = extent.lun_offset - extent.file_offset
            try:
                file_runs = self._allocation(extent.fd, file_offset, piece_length)
            except OSError as error:
                raise _with_path(error, extent.path, "cannot map") from None
            for run_start, run_length, mapped in file_runs:
                if runs and runs[-1].mapped == mapped:
                    previous = runs.pop()
                    runs.append(AllocationRun(previous.offset, previous.length + run_length, mapped))
                else:
                    runs.append(AllocationRun(run_start + shift, run_length, mapped))
        return runs

    def close(self) -> None:
        """Flush, then close every file; closing twice is harmless. With calls still running
        (leases held), the last of them closes the files when it ends, flushing first; a
        failure of that late flush is logged, since nobody waits for it any more."""
        with self._lease_lock:
            if self._closing:
                return
            self._closing = True
            busy = self._leases
        if not busy:
            self._release_files()

    @contextmanager
    def lease(self) -> Iterator[None]:
        """Keep the files open while the caller uses them (``extents_for``'s descriptors).

        Raises:
            OSError: EBADF, the backend is closed.
        """
        self._acquire()
        try:
            yield
        finally:
            self._release()

    def _acquire(self) -> None:
        with self._lease_lock:
            if self._closing:
                raise OSError(errno.EBADF, "the storage was closed (replaced by the administrator)")
            self._leases += 1

    def _release(self) -> None:
        with self._lease_lock:
            self._leases -= 1
            last = self._closing and self._leases == 0
        if last:
            try:
                self._release_files()
            except OSError as error:
                log.error("closing replaced storage %s: %s", ", ".join(self.paths), error)

    def _release_files(self) -> None:
        if not self._fds:
            return
        try:
            if self._extents:
                self._flush()
        finally:
            self._close_fds()
            self._extents = ()
            self._starts = []
            self._single = None

    # -- the copy capability (``storage.backend.FileBacked``) ------------------------------------

    def extents_for(self, offset: int, length: int) -> list[FileRange]:
        """The file ranges that store LUN bytes ``[offset, offset+length)``, in LUN order.

        Copies use them for reflink and ``copy_file_range`` between LUNs, under a ``lease``.
        The fds stay owned by this backend: do not close them.
        """
        return [
            FileRange(extent.fd, extent.path, file_offset, piece_length, self._REGULAR)
            for extent, file_offset, piece_length in self._pieces(offset, length)
        ]

    def writing(self, offset: int, length: int):
        """Hold ``[offset, offset+length)`` as a write does while a copy writes it through the
        descriptors of ``extents_for``: COMPARE AND WRITE waits for it (SBC-4 5.3)."""
        return self._ranges.shared(offset, length)

    @property
    def paths(self) -> list[str]:
        """Every distinct file this LUN uses, in first-use order."""
        return list(dict.fromkeys(extent.path for extent in self._extents))

    # -- internals ---------------------------------------------------------------------------

    def _pieces(self, offset: int, length: int):
        """Split ``[offset, offset+length)`` at extent boundaries: (extent, file offset, length)."""
        if offset < 0 or length < 0 or offset + length > self._size:
            raise ValueError(
                f"byte range [{offset}, {offset + length}) is outside the logical unit"
                f" (size {self._size})"
            )
        if not self._extents:
            raise ValueError("the backend is closed")
        end = offset + length
        index = bisect.bisect_right(self._starts, offset) - 1
        while offset < end:
            extent = self._extents[index]
            inside = offset - extent.lun_offset
            piece = min(end - offset, extent.length - inside)
            yield extent, extent.file_offset + inside, piece
            offset += piece
            index += 1

    def _write_piece(self, extent: _Extent, file_offset: int, view: memoryview, fua: bool) -> None:
        if fua:
            self._refuse_after_write_back_failure()
        fd = extent.fd
        try:
            if fua and self._use_rwf_dsync:
                try:
                    write_fully(fd, file_offset, view, os.RWF_DSYNC)
                    return
                except OSError as error:
                    if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    # Kernel or filesystem without per-write DSYNC: fall back for good.
                    self._use_rwf_dsync = False
            write_fully(fd, file_offset, view)
        except OSError as error:
            raise self._failure(error, extent, "cannot write") from None
        if fua:
            try:
                os.fdatasync(fd)
            except OSError as error:
                raise self._write_back_failed(error, extent.path) from None

    def _failure(self, error: OSError, extent: _Extent, action: str) -> OSError:
        """What to raise for a failed write or deallocation: a ``WriteBackError`` when the
        file's witness reports a writeback error (earlier data, or this write's sync half,
        was lost), else the error itself with the file named."""
        witness = self._witnesses.get(extent.fd)
        if witness is not None:
            try:
                os.fdatasync(witness)
            except OSError as sync_error:
                return self._write_back_failed(sync_error, extent.path)
        return _with_path(error, extent.path, action)

    def _write_back_failed(self, error: OSError, path: str) -> OSError:
        """Remember the first failed sync; from now on no flush or FUA write succeeds."""
        failure = _new_write_back_error(error.errno, f"cannot sync: {error.strerror or error}", path)
        if self._write_back_error is None:
            self._write_back_error = failure
        return failure

    def _refuse_after_write_back_failure(self) -> None:
        first = self._write_back_error
        if first is not None:
            raise _new_write_back_error(first.errno, f"an earlier sync failed ({first.strerror});"
                                        " durability cannot be promised until the storage is reopened",
                                        first.filename)

    def _close_fds(self) -> None:
        fds, self._fds = self._fds, {}
        witnesses, self._witnesses = self._witnesses, {}
        for fd in [*fds.values(), *witnesses.values()]:
            try:
                os.close(fd)
            except OSError:
                pass


#: Below this share of hits, ``try_read_into`` probes the page cache only now and then: a miss
#: costs about as much as a hit saves (measured with 4 KiB reads, docs/execution.md) ...
NOWAIT_MIN_HIT_RATE = 0.5
#: ... once in this many reads ...
NOWAIT_PROBE_INTERVAL = 16
#: ... and each probe moves the estimate by this share of the difference.
NOWAIT_RATE_WEIGHT = 1 / 16

#: ``preadv(RWF_NOWAIT)`` exists (Linux 4.14); without it every read goes to a worker.
_NOWAIT_READS = hasattr(os, "RWF_NOWAIT")


def resolve_extent_lengths(extents: Sequence[ExtentSpec], size: int) -> list[int]:
    """Each extent's length in bytes, the open-ended last one included.

    Raises:
        ValueError: no extents, a bad offset or length, an open length before the last
            extent, or lengths that do not add up to ``size``.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, not {size}")
    if not extents:
        raise ValueError("a logical unit needs at least one extent")
    lengths: list[int] = []
    for index, extent in enumerate(extents):
        if extent.offset < 0:
            raise ValueError(f"extent {index} ({extent.path}): offset {extent.offset} is negative")
        if extent.length is None:
            if index != len(extents) - 1:
                raise ValueError(
                    f"extent {index} ({extent.path}): only the last extent may omit its length"
                )
            rest = size - sum(lengths)
            if rest <= 0:
                raise ValueError(
                    f"extent {index} ({extent.path}): the earlier extents already cover"
                    f" {sum(lengths)} of {size} bytes, nothing is left for it"
                )
            lengths.append(rest)
        elif extent.length <= 0:
            raise ValueError(f"extent {index} ({extent.path}): length {extent.length} is not positive")
        else:
            lengths.append(extent.length)
    if sum(lengths) != size:
        raise ValueError(f"the extents cover {sum(lengths)} bytes but the size is {size}")
    return lengths


def _punches_holes(fd: int) -> bool:
    """Whether the file's filesystem supports ``FALLOC_FL_PUNCH_HOLE``: a punch past the end of
    the file changes nothing where it is supported and fails with EOPNOTSUPP where it is not."""
    try:
        punch_hole(fd, os.fstat(fd).st_size + (1 << 20), 4096)
    except OSError as error:
        return error.errno not in (errno.EOPNOTSUPP, errno.ENOSYS)
    return True


def _check_no_overlap(table: list[_Extent]) -> None:
    """Two extents of one LUN must not share bytes of the same file (same inode)."""
    by_file: dict[tuple[int, int], list[_Extent]] = {}
    for extent in table:
        info = os.fstat(extent.fd)
        by_file.setdefault((info.st_dev, info.st_ino), []).append(extent)
    for ranges in by_file.values():
        ranges.sort(key=lambda extent: extent.file_offset)
        for before, after in zip(ranges, ranges[1:]):
            if before.file_offset + before.length > after.file_offset:
                raise ValueError(
                    f"extents overlap in {after.path}: bytes [{before.file_offset},"
                    f" {before.file_offset + before.length}) and [{after.file_offset},"
                    f" {after.file_offset + after.length})"
                )


def _read_fully(extent: _Extent, file_offset: int, view: memoryview) -> None:
    """``read_fully`` with the file named in its error."""
    try:
        read_fully(extent.fd, file_offset, view)
    except OSError as error:
        raise _with_path(error, extent.path, "cannot read") from None


def deallocate_file_range(fd: int, offset: int, length: int) -> None:
    """Make ``[offset, offset+length)`` of a file read as zeros, freeing whole blocks.

    Whole filesystem blocks are punched out; the unaligned head and tail (if any) are
    overwritten with zeros, unless they already lie in a hole (writing would allocate them).
    A filesystem that cannot punch holes gets zeros written over the whole range.
    """
    if length <= 0:
        return
    block = os.fstat(fd).st_blksize or 4096
    end = offset + length
    aligned_start = -(-offset // block) * block
    aligned_end = end // block * block
    if aligned_start >= aligned_end:
        _zero_unless_hole(fd, offset, end)
        return
    try:
        punch_hole(fd, aligned_start, aligned_end - aligned_start)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        _write_zeros(fd, offset, end)
        return
    if offset < aligned_start:
        _zero_unless_hole(fd, offset, aligned_start)
    if aligned_end < end:
        _zero_unless_hole(fd, aligned_end, end)


def _zero_unless_hole(fd: int, start: int, end: int) -> None:
    if any(mapped for _, _, mapped in _file_allocation(fd, start, end - start)):
        _write_zeros(fd, start, end)


def _write_zeros(fd: int, start: int, end: int) -> None:
    while start < end:
        chunk = min(end - start, len(ZEROS))
        write_fully(fd, start, memoryview(ZEROS)[:chunk])
        start += chunk


def _file_allocation(fd: int, offset: int, length: int) -> list[tuple[int, int, bool]]:
    """(file offset, length, mapped) runs over a file range, from SEEK_DATA/SEEK_HOLE.

    Past the end of the file is a hole. A filesystem without SEEK_DATA support reports
    everything as mapped, which is the safe answer (GET LBA STATUS may say "mapped" for
    zeros; it must never say "deallocated" for data).
    """
    end = offset + length
    runs: list[tuple[int, int, bool]] = []
    position = offset
    while position < end:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # no data at or after position
                data = end
            elif error.errno == errno.EINVAL:  # SEEK_DATA unsupported
                runs.append((position, end - position, True))
                break
            else:
                raise
        if data > position:
            hole_end = min(data, end)
            runs.append((position, hole_end - position, False))
            position = hole_end
            if position >= end:
                break
        hole = min(os.lseek(fd, position, os.SEEK_HOLE), end)
        if hole <= position:  # defensive: a filesystem answering nonsense must not loop us
            hole = end
        runs.append((position, hole - position, True))
        position = hole
    return runs
