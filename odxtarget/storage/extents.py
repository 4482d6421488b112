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
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
from collections.abc import Sequence
from typing import NamedTuple

from odxtarget.storage.backend import AllocationRun
from odxtarget.storage.extent_spec import ExtentSpec
from odxtarget.storage.fallocate import punch_hole

# linux/falloc.h

#: Size of the zero buffer used for unaligned deallocation heads and tails and for the
#: zero-writing fallback on filesystems that cannot punch holes.
ZERO_CHUNK = 1 << 20

_ZEROS = bytes(ZERO_CHUNK)


class FileRange(NamedTuple):
    """Where a LUN byte range lives: a file (by open fd and path) and a byte range in it."""

    fd: int
    path: str
    file_offset: int
    length: int


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

    # -- setup -----------------------------------------------------------------------------

    def _open(self, path: str) -> int:
        key = os.path.realpath(path)
        fd = self._fds.get(key)
        if fd is not None:
            return fd
        flags = os.O_CLOEXEC | (os.O_RDONLY if self._read_only else os.O_RDWR | os.O_CREAT)
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as error:
            raise _with_path(error, path, "cannot open") from None
        self._fds[key] = fd
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
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
    def write_back_error(self) -> OSError | None:
        """The failed sync that ended this backend's durability promises, if one did."""
        return self._write_back_error

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

    def write(self, offset: int, data: memoryview | bytes, fua: bool = False) -> None:
        if self._read_only:
            raise OSError(errno.EROFS, "write refused: the logical unit is read-only")
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.itemsize != 1 or view.ndim != 1:
            view = view.cast("B")
        single = self._single
        if single is not None and offset >= 0 and offset + len(view) <= single.length:
            self._write_piece(single, single.file_offset + offset, view, fua)
            return
        done = 0
        for extent, file_offset, length in self._pieces(offset, len(view)):
            self._write_piece(extent, file_offset, view[done:done + length], fua)
            done += length

    def flush(self) -> None:
        if self._read_only:
            return
        self._refuse_after_write_back_failure()
        failure: OSError | None = None
        for path, fd in self._fds.items():  # sync every file even if one fails
            try:
                os.fdatasync(fd)
            except OSError as error:
                failure = failure or self._write_back_failed(error, path)
        if failure is not None:
            raise failure

    def deallocate(self, offset: int, length: int) -> None:
        if self._read_only:
            raise OSError(errno.EROFS, "deallocate refused: the logical unit is read-only")
        for extent, file_offset, piece_length in self._pieces(offset, length):
            try:
                deallocate_file_range(extent.fd, file_offset, piece_length)
            except OSError as error:
                raise self._failure(error, extent, "cannot deallocate") from None

    def allocation_status(self, offset: int, length: int) -> list[AllocationRun]:
        runs: list[AllocationRun] = []
        for extent, file_offset, piece_length in self._pieces(offset, length):
            shift = extent.lun_offset - extent.file_offset
            try:
                file_runs = _file_allocation(extent.fd, file_offset, piece_length)
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
        """Flush, then close every file; closing twice is harmless."""
        if not self._fds:
            return
        try:
            self.flush()
        finally:
            self._close_fds()
            self._extents = ()
            self._starts = []
            self._single = None

    # -- for the copy manager -----------------------------------------------------------------

    def extents_for(self, offset: int, length: int) -> list[FileRange]:
        """The file ranges that store LUN bytes ``[offset, offset+length)``, in LUN order.

        The copy manager uses them for ``copy_file_range``/reflink between LUNs. The fds stay
        owned by this backend: do not close them.
        """
        return [
            FileRange(extent.fd, extent.path, file_offset, piece_length)
            for extent, file_offset, piece_length in self._pieces(offset, length)
        ]

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
                    _write_fully(fd, file_offset, view, os.RWF_DSYNC)
                    return
                except OSError as error:
                    if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    # Kernel or filesystem without per-write DSYNC: fall back for good.
                    self._use_rwf_dsync = False
            _write_fully(fd, file_offset, view, 0)
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
    """preadv until ``view`` is full; bytes past the end of the file read as zeros."""
    try:
        got = os.preadv(extent.fd, [view], file_offset)
        while got < len(view):
            if got == 0:
                view[:] = _zeros_like(len(view))
                return
            view = view[got:]
            file_offset += got
            got = os.preadv(extent.fd, [view], file_offset)
    except OSError as error:
        raise _with_path(error, extent.path, "cannot read") from None


def _zeros_like(length: int) -> bytes | memoryview:
    return memoryview(_ZEROS)[:length] if length <= ZERO_CHUNK else bytes(length)


def _write_fully(fd: int, file_offset: int, view: memoryview, flags: int) -> None:
    """pwritev until every byte is written (a short write is not an error, only a pause)."""
    written = os.pwritev(fd, [view], file_offset, flags)
    while written < len(view):
        if written == 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]
        file_offset += written
        written = os.pwritev(fd, [view], file_offset, flags)


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
        chunk = min(end - start, ZERO_CHUNK)
        _write_fully(fd, start, memoryview(_ZEROS)[:chunk], 0)
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
