"""Moving byte ranges between open files, cheapest method first.

Theory of operation
-------------------
The copy manager (odxtarget/copy/) plans *what* to move, ``storage.copy_work`` runs the
plans on worker threads, and this module only knows *how*. For one piece
``(src_fd, src_offset) -> (dst_fd, dst_offset), length`` it tries, in order:

1. **reflink** (``FICLONERANGE``, Linux ``fs/remap_range.c``): the destination shares the
   source's blocks; no data moves. The kernel demands that both offsets and the length are
   multiples of the filesystem block size (the tail may stop at the source's EOF) and that
   both files live on the same reflink-capable filesystem (XFS with ``reflink=1``, btrfs,
   bcachefs, OCFS2). When only the offsets' *difference* is block-aligned, the unaligned
   head and tail are copied and the aligned middle is reflinked (``clone_or_copy``).
2. **copy_file_range(2)**: the kernel moves the data without a round trip through user
   space; NFS 4.2 turns it into a server-side COPY, CephFS into object copies, and XFS and
   btrfs into a reflink where alignment allows.
3. **pread/pwrite** through one bounded buffer: works everywhere.

Failures that only mean "this method cannot do this piece" (EXDEV, EOPNOTSUPP, EINVAL,
ENOSYS, ETXTBSY, EBADF for O_APPEND-style misuse) fall through to the next method; anything
else (EIO, ENOSPC) is raised, because trying harder would hide a real error.

Every method writes whole requested ranges in ascending order and never writes a staging
value (zeros, partial buffers) into the destination first, so an interrupted copy leaves
each destination block with either its old or its new contents (see docs/odx.md, "Crash
safety").

Zeroing (the block device zero ROD token) is UNMAP's: ``extents.deallocate_file_range``.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import struct


#: ``_IOW(0x94, 13, struct file_clone_range)`` from linux/fs.h.
FICLONERANGE = 0x4020940D
#: struct file_clone_range { __s64 src_fd; __u64 src_offset, src_length, dest_offset; }
_CLONE_RANGE = struct.Struct("=qQQQ")

#: Errors meaning "this method cannot do this piece here", not "the storage failed".
UNSUPPORTED_ERRNOS = frozenset({errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS,
                                errno.ETXTBSY, errno.ENOTTY, errno.EPERM})

#: Largest single pread/pwrite and copy_file_range call: bounds memory and how long one
#: call holds a storage worker (copies run on workers, docs/odx.md "How copies run").
MAX_CHUNK = 8 * 1024 * 1024


class CopyMethod(str, enum.Enum):
    """How bytes moved; the copy manager keeps counters per method."""

    REFLINK = "reflink"
    COPY_FILE_RANGE = "copy_file_range"
    READ_WRITE = "read_write"
    ZERO = "zero"


def reflink(src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, length: int) -> None:
    """Share ``length`` bytes of the source with the destination (one FICLONERANGE call).

    Raises:
        OSError: EXDEV/EOPNOTSUPP/EINVAL when the filesystem or alignment does not allow it.
    """
    fcntl.ioctl(dst_fd, FICLONERANGE, _CLONE_RANGE.pack(src_fd, src_offset, length, dst_offset))


def copy_range(src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, length: int) -> CopyMethod:
    """Copy with copy_file_range, falling back to pread/pwrite; returns the method used."""
    done = 0
    method = CopyMethod.COPY_FILE_RANGE
    while done < length:
        chunk = min(MAX_CHUNK, length - done)
        if method is CopyMethod.COPY_FILE_RANGE:
            try:
                moved = os.copy_file_range(src_fd, dst_fd, chunk, src_offset + done, dst_offset + done)
            except OSError as error:
                if error.errno not in UNSUPPORTED_ERRNOS:
                    raise
                method = CopyMethod.READ_WRITE
                continue
            if moved <= 0:  # source shorter than expected: the rest reads as zeros
                method = CopyMethod.READ_WRITE
                continue
            done += moved
        else:
            read_write(src_fd, src_offset + done, dst_fd, dst_offset + done, length - done)
            done = length
    return method


def read_write(src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, length: int) -> None:
    """Copy through a bounded user-space buffer; bytes past the source's EOF read as zeros."""
    done = 0
    buffer = bytearray(min(MAX_CHUNK, length))
    while done < length:
        chunk = min(len(buffer), length - done)
        view = memoryview(buffer)[:chunk]
        got = 0
        while got < chunk:
            count = os.preadv(src_fd, [view[got:]], src_offset + done + got)
            if count == 0:
                view[got:] = bytes(chunk - got)
                break
            got += count
        written = 0
        while written < chunk:
            written += os.pwritev(dst_fd, [view[written:]], dst_offset + done + written)
        done += chunk


def clone_or_copy(src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, length: int,
                  alignment: int) -> dict[CopyMethod, int]:
    """Reflink the aligned middle of a piece and copy its unaligned head and tail.

    ``alignment`` is the filesystem block size. Returns bytes moved per method. If the
    offsets are not congruent modulo ``alignment`` nothing can be reflinked and the whole
    piece is copied.

    Raises:
        OSError: from the copy; a failed reflink is reported as ``ReflinkUnsupported`` so
            the caller can stop trying on this filesystem.
    """
    moved: dict[CopyMethod, int] = {}

    def account(method: CopyMethod, count: int) -> None:
        if count:
            moved[method] = moved.get(method, 0) + count

    if (src_offset - dst_offset) % alignment:
        account(copy_range(src_fd, src_offset, dst_fd, dst_offset, length), length)
        return moved
    head = min(length, -src_offset % alignment)
    middle = (length - head) // alignment * alignment
    tail = length - head - middle
    if head:
        account(copy_range(src_fd, src_offset, dst_fd, dst_offset, head), head)
    if middle:
        try:
            reflink(src_fd, src_offset + head, dst_fd, dst_offset + head, middle)
        except OSError as error:
            if error.errno in UNSUPPORTED_ERRNOS:
                raise ReflinkUnsupported(error.errno, os.strerror(error.errno)) from None
            raise
        account(CopyMethod.REFLINK, middle)
    if tail:
        start = head + middle
        account(copy_range(src_fd, src_offset + start, dst_fd, dst_offset + start, tail), tail)
    return moved


class ReflinkUnsupported(OSError):
    """FICLONERANGE refused a correctly aligned range: this filesystem pair cannot reflink."""


def filesystem_block_size(path: str) -> int:
    """The block size reflink offsets must be aligned to on the filesystem holding ``path``."""
    return max(512, os.statvfs(path).f_bsize)


def probe_reflink(directory: str) -> bool:
    """Whether files in ``directory`` can be reflinked to each other (tries one FICLONERANGE)."""
    block = filesystem_block_size(directory)
    source_path = os.path.join(directory, f".reflink-probe-{os.getpid()}-a")
    target_path = os.path.join(directory, f".reflink-probe-{os.getpid()}-b")
    source = target = -1
    try:
        source = os.open(source_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        target = os.open(target_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.pwrite(source, b"\xa5" * block, 0)
        os.ftruncate(target, block)
        reflink(source, 0, target, 0, block)
        return os.pread(target, 1, 0) == b"\xa5"
    except OSError:
        return False
    finally:
        for fd in (source, target):
            if fd >= 0:
                os.close(fd)
        for path in (source_path, target_path):
            try:
                os.unlink(path)
            except OSError:
                pass
