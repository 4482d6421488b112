"""Reads that miss the page cache, through io_uring on the event loop (docs/execution.md).

A ``FileRead`` submitted here becomes one io_uring read SQE; the ring's eventfd is watched by
the event loop, which drains the completions in batches. No thread and no GIL hand-off is
involved, so a burst of cold reads reaches the disk at full queue depth for a fraction of the
CPU a worker thread per read costs. A read the ring cannot take (no free SQE) or that came back
short (mid-file, which local filesystems do not do; the end of the file reads as zeros here)
goes to the worker threads instead.

The binding is liburing from PyPI. ``UringReads.open`` returns None where it is missing or the
kernel refuses io_uring (``kernel.io_uring_disabled``, seccomp), and reads then use the worker
threads like every other piece of storage work.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from odxtarget.storage.work import FileRead, read_fully

log = logging.getLogger(__name__)

#: Submission queue entries: more than one connection's queue depth, so a full ring is rare.
RING_ENTRIES = 256

Completion = Callable[[object, BaseException | None], None]
Fallback = Callable[[FileRead, Completion], None]


class UringReads:
    """One io_uring instance for the reads of one event loop; see the module docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop, liburing, ring, event_fd: int, fallback: Fallback):
        self._loop = loop
        self._lib = liburing
        self._ring = ring
        self._cqe = liburing.Cqe()
        self._event_fd = event_fd
        self._fallback = fallback
        self._in_flight: dict[int, tuple[FileRead, Completion]] = {}
        self._next_tag = 1
        loop.add_reader(event_fd, self._drain)

    @classmethod
    def open(cls, loop: asyncio.AbstractEventLoop, fallback: Fallback) -> "UringReads | None":
        """An io_uring for ``loop``, or None (logged once) where io_uring cannot be used."""
        try:
            import liburing
        except ImportError as error:
            log.info("io_uring reads off: liburing is not installed (%s); reads use worker threads", error)
            return None
        ring = liburing.Ring()
        try:
            liburing.io_uring_queue_init(RING_ENTRIES, ring)
        except OSError as error:
            log.info("io_uring reads off: the kernel refuses io_uring (%s); reads use worker threads", error)
            return None
        event_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            liburing.io_uring_register_eventfd(ring, event_fd)
        except OSError as error:
            os.close(event_fd)
            liburing.io_uring_queue_exit(ring)
            log.info("io_uring reads off: %s; reads use worker threads", error)
            return None
        return cls(loop, liburing, ring, event_fd, fallback)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def submit(self, read: FileRead, completion: Completion) -> None:
        """Start ``read``; ``completion(None, error)`` runs on the loop when it is done."""
        lib = self._lib
        sqe = lib.io_uring_get_sqe(self._ring)
        if sqe is None:                       # the ring is full: a worker thread takes it
            self._fallback(read, completion)
            return
        tag = self._next_tag
        self._next_tag = tag + 1 if tag < (1 << 62) else 1
        lib.io_uring_prep_read(sqe, read.fd, read.buffer, read.offset)
        lib.io_uring_sqe_set_data64(sqe, tag)
        self._in_flight[tag] = (read, completion)
        lib.io_uring_submit(self._ring)

    def close(self) -> None:
        """Stop watching the ring and free it (every read must have completed)."""
        self._loop.remove_reader(self._event_fd)
        self._lib.io_uring_unregister_eventfd(self._ring)
        self._lib.io_uring_queue_exit(self._ring)
        os.close(self._event_fd)

    def _drain(self) -> None:
        try:
            os.eventfd_read(self._event_fd)
        except BlockingIOError:
            pass
        lib, ring, cqe = self._lib, self._ring, self._cqe
        finished: list[tuple[FileRead, Completion, int | OSError]] = []
        # One entry at a time: after a peek the binding's cqe[0] is the ring's head, while
        # cqe[i > 0] does not wrap around the end of the completion ring.
        while lib.io_uring_cq_ready(ring):        # reads the ring's indexes: no system call
            lib.io_uring_peek_cqe(ring, cqe)
            entry = cqe[0]
            tag = entry.user_data
            try:
                outcome: int | OSError = entry.res
            except OSError as error:          # the binding raises for a negative result
                outcome = error
            lib.io_uring_cq_advance(ring, 1)
            read, completion = self._in_flight.pop(tag)
            finished.append((read, completion, outcome))
        for read, completion, outcome in finished:
            self._complete(read, completion, outcome)

    def _complete(self, read: FileRead, completion: Completion, outcome: int | OSError) -> None:
        if isinstance(outcome, OSError):
            read.release()
            completion(None, outcome)
            return
        wanted = len(read.buffer)
        if outcome == wanted:
            read.release()
            completion(None, None)
        elif outcome == 0:                    # at or past the end of the file: zeros
            read.buffer[:] = bytes(wanted)
            read.release()
            completion(None, None)
        else:                                 # short: the worker form reads the rest
            rest = _ReadRest(read, outcome)
            self._fallback(rest, completion)


class _ReadRest(FileRead):
    """What a short read left: the worker reads it and releases the lease."""

    __slots__ = ("done",)

    def __init__(self, read: FileRead, done: int):
        super().__init__(read.lane, read.fd, read.offset, read.buffer, read.release)
        self.done = done

    def run(self) -> None:
        try:
            read_fully(self.fd, self.offset + self.done, memoryview(self.buffer)[self.done:])
        finally:
            self.release()
