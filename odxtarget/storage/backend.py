"""The contract between the SCSI core and whatever stores a logical unit's bytes.

The core speaks bytes and offsets, never LBAs: block size, capacity and provisioning are the
core's business. Methods raise ``OSError`` on I/O failure; the core turns that into sense for
the one command (docs/errors.md), and the daemon keeps serving. A failure to make completed
writes durable is a ``WriteBackError``: it outlives the command (docs/errors.md, "Write-back
failed").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class WriteBackError(OSError):
    """Completed writes could not be made durable: syncing the backing storage failed.

    Linux reports a failed ``fdatasync`` once and may drop the dirty pages it could not write,
    so a later sync can succeed over data that never reached the disk ("fsyncgate"). Whoever
    sees this error must stop promising durability until an administrator intervenes.
    """


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

    def read_into(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` with the bytes at ``offset``; unmapped ranges read as zeros."""

    def write(self, offset: int, data: memoryview | bytes, fua: bool = False) -> None:
        """Write ``data`` at ``offset``; with ``fua`` it is durable before this returns.

        Raises ``WriteBackError`` when the data may have reached the backend but syncing it
        (or earlier writes) failed, a plain ``OSError`` when the write itself failed.
        """

    def flush(self) -> None:
        """Make every completed write durable (SYNCHRONIZE CACHE); any ``OSError`` from it
        means earlier writes may be lost (the core treats it as a ``WriteBackError``)."""

    def deallocate(self, offset: int, length: int) -> None:
        """Unmap a byte range: it reads as zeros afterwards (LBPRZ=1) and frees space."""

    def allocation_status(self, offset: int, length: int) -> list[AllocationRun]:
        """Mapped and deallocated runs covering ``[offset, offset+length)``, in order."""

    def close(self) -> None:
        """Flush and release file descriptors."""
