"""Storage work: the blocking calls the core hands to its front end (docs/execution.md).

The core never waits for a disk; it yields these to the front end, which runs them off its
event loop. ``StorageCall`` is any blocking call; ``FileRead`` and ``FileWrite`` are a read and
a write declared as data (file, offset, buffer), so a front end may run them through io_uring
rather than a worker thread.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol


class StorageWork(Protocol):
    """One blocking storage call the core hands to its front end to run off its thread."""

    @property
    def lane(self) -> Hashable:
        """Work of one lane shares one pool of workers (the backing device of a backend)."""
        ...

    def run(self) -> object:
        """Do the work (on a worker thread); raises ``OSError`` when the storage fails."""
        ...


@dataclass(frozen=True, slots=True)
class StorageCall:
    """``function(*arguments)`` as ``StorageWork``."""

    lane: Hashable
    function: Callable[..., object]
    arguments: tuple = ()

    def run(self) -> object:
        return self.function(*self.arguments)


@dataclass(eq=False, slots=True)
class FileRead:
    """Storage work: fill ``buffer`` with the bytes at ``offset`` of the file ``fd``; bytes past
    the end of the file read as zeros. A declared form of read, so a front end may run it
    through io_uring instead of a worker thread (docs/execution.md); ``run`` is the worker
    form. ``release`` ends the lease that keeps ``fd`` open (``FileExtentBackend.lease``) and
    must be called exactly once, after the read, whichever way it ran."""

    lane: Hashable
    fd: int
    offset: int
    buffer: bytearray
    release: Callable[[], None]
    #: The backend expects the disk: most of its recent reads missed the page cache. A front
    #: end keeps its polled ring (docs/execution.md) for these, so that a rare miss in a
    #: cached working set does not keep a polling thread spinning.
    cold: bool = False

    def run(self) -> None:
        try:
            read_fully(self.fd, self.offset, memoryview(self.buffer))
        finally:
            self.release()


@dataclass(eq=False, slots=True)
class FileWrite:
    """Storage work: write ``data`` at ``offset`` of the file ``fd`` (with ``dsync``, durable when
    it completes, ``RWF_DSYNC``). Declared as data like ``FileRead``, so a front end may submit it
    to io_uring; ``run`` is the worker form. ``perform`` does the whole write the backend's way
    (blocking); ``recover`` gets the error an io_uring write ended with and either finishes the
    write another way or raises what the command must report (both blocking, on a worker).
    ``release`` ends the lease and the write's hold on its byte range, exactly once."""

    lane: Hashable
    fd: int
    offset: int
    data: memoryview | bytes | bytearray
    dsync: bool
    perform: Callable[[], None]
    recover: Callable[[OSError], None]
    release: Callable[[], None]

    def run(self) -> None:
        try:
            self.perform()
        finally:
            self.release()


def read_fully(fd: int, offset: int, view: memoryview) -> None:
    """``preadv`` until ``view`` is full; bytes past the end of the file read as zeros."""
    got = os.preadv(fd, [view], offset)
    while got < len(view):
        if got == 0:
            view[:] = _zeros(len(view))
            return
        view = view[got:]
        offset += got
        got = os.preadv(fd, [view], offset)


def write_fully(fd: int, offset: int, view: memoryview, flags: int = 0) -> None:
    """``pwritev`` until every byte is written (a short write is not an error, only a pause)."""
    written = os.pwritev(fd, [view], offset, flags)
    while written < len(view):
        if written == 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]
        offset += written
        written = os.pwritev(fd, [view], offset, flags)


#: One MiB of zeros, shared by whatever writes or returns zeros.
ZEROS = bytes(1 << 20)


def _zeros(length: int) -> bytes | memoryview:
    return memoryview(ZEROS)[:length] if length <= len(ZEROS) else bytes(length)
