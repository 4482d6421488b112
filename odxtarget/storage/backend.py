"""The contract between the SCSI core and whatever stores a logical unit's bytes.

The core speaks bytes and offsets, never LBAs: block size, capacity and provisioning are the
core's business. Methods raise ``OSError`` on I/O failure; the core turns that into sense for
the one command (docs/errors.md), and the daemon keeps serving. A failure to make completed
writes durable is a ``WriteBackError``: it outlives the command (docs/errors.md, "Write-back
failed").

A backend whose bytes live in regular files or a block device may also offer ``FileBacked``,
the copy capability: the copy manager then moves data between files by reflink or
copy_file_range (docs/odx.md, "How copies run"), and to or from a block device by positional
reads and writes of its descriptor, instead of going through ``Backend``.
"""

from __future__ import annotations

from collections.abc import Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from odxtarget.storage.work import StorageWork


class WriteBackError(OSError):
    """Completed writes could not be made durable: syncing the backing storage failed.

    Linux reports a failed ``fdatasync`` once and may drop the dirty pages it could not write,
    so a later sync can succeed over data that never reached the disk ("fsyncgate"). Whoever
    sees this error must stop promising durability until an administrator intervenes.
    """


class CompareReadError(OSError):
    """The read half of ``compare_and_write`` failed (nothing was written): a read error to
    the initiator, not a write error (SBC-4 5.3)."""


@dataclass(frozen=True, slots=True)
class AllocationRun:
    """A run of bytes that is either mapped (holds data) or deallocated (reads as zeros)."""

    offset: int
    length: int
    mapped: bool


@runtime_checkable
class Backend(Protocol):
    """Byte-addressed storage behind one logical unit."""

    @property
    def size(self) -> int:
        """Capacity in bytes (a multiple of the LU's block size)."""

    @property
    def lane(self) -> Hashable:
        """Which pool of workers runs this backend's blocking calls: backends on one device
        share one (docs/execution.md)."""

    @property
    def can_deallocate(self) -> bool:
        """``deallocate`` frees space (it punches holes, or unmaps a device's blocks), so the
        LU may report thin provisioning (SBC-4 4.7); False where it could only write zeros."""

    def read_into(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` with the bytes at ``offset``; unmapped ranges read as zeros."""

    def read_work(self, offset: int, buf: bytearray | memoryview) -> StorageWork:
        """The storage work that fills ``buf`` from ``offset``: a ``FileRead`` where the bytes
        lie in one file and ``buf`` is a whole bytearray, else a plain call of ``read_into``."""

    def write_work(self, offset: int, data: memoryview | bytes, fua: bool = False) -> StorageWork:
        """The storage work that does ``write(offset, data, fua)``: a ``FileWrite`` where the
        backend can declare it, else a plain call of ``write``."""

    def try_read_into(self, offset: int, buf: memoryview) -> bool:
        """``read_into`` when it needs no wait for a disk (the bytes are cached), else False
        at once. The only call the core makes on its own thread; every other method is
        called from a worker thread, several at a time."""

    def write(self, offset: int, data: memoryview | bytes, fua: bool = False) -> None:
        """Write ``data`` at ``offset``; with ``fua`` it is durable before this returns.

        Raises ``WriteBackError`` when the data may have reached the backend but syncing it
        (or earlier writes) failed, a plain ``OSError`` when the write itself failed.
        """

    def compare_and_write(self, offset: int, expected: memoryview, data: memoryview, fua: bool = False) -> int:
        """Write ``data`` at ``offset`` if the bytes there equal ``expected`` (SBC-4 5.3),
        atomically with respect to every other ``write`` and ``deallocate``; returns the
        offset of the first differing byte, or -1 once written. A failed read raises
        ``CompareReadError``."""

    def flush(self, offset: int = 0, length: int | None = None) -> None:
        """Make every completed write of ``[offset, offset + length)`` (None: to the end)
        durable (SYNCHRONIZE CACHE); it may flush more. Any ``OSError`` from it means earlier
        writes may be lost (the core treats it as a ``WriteBackError``)."""

    def deallocate(self, offset: int, length: int) -> None:
        """Unmap a byte range: it reads as zeros afterwards (LBPRZ=1) and frees space."""

    def allocation_status(self, offset: int, length: int) -> list[AllocationRun]:
        """Mapped and deallocated runs covering ``[offset, offset+length)``, in order."""

    def close(self) -> None:
        """Flush and release file descriptors."""


class FileRange(NamedTuple):
    """Where a LUN byte range lives: a file (by open fd and path) and a byte range in it."""

    fd: int
    path: str
    file_offset: int
    length: int
    #: The range lies in a regular file, so the kernel may move it by reflink or
    #: copy_file_range; False for a block device, whose bytes move by read and write
    #: (copy_file_range(2) and FICLONERANGE take regular files only: EINVAL).
    regular: bool = True


@runtime_checkable
class FileBacked(Protocol):
    """The optional copy capability of a ``Backend`` whose bytes live in open files (regular
    files or block devices: ``FileRange.regular`` says which).

    The descriptors ``extents_for`` names stay owned by the backend and are valid only while
    the caller holds a ``lease``: every copy step that uses them holds one for as long as it
    runs, so an administrator replacing the storage (which closes the backend) never closes a
    descriptor under a running copy, let alone lets it be reused. Called on worker threads.
    """

    def lease(self) -> AbstractContextManager[None]:
        """Keep the files open until the context ends.

        Raises:
            OSError: EBADF, the backend is closed.
        """

    def extents_for(self, offset: int, length: int) -> list[FileRange]:
        """The file ranges that store LUN bytes ``[offset, offset + length)``, in LUN order."""

    def writing(self, offset: int, length: int) -> AbstractContextManager[None]:
        """Register ``[offset, offset + length)`` as being written through the descriptors, as
        ``Backend.write`` does, so COMPARE AND WRITE stays atomic against the copy (SBC-4 5.3)."""
