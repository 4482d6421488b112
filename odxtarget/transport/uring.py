"""Reads and writes through io_uring on the event loop (docs/execution.md).

A ``FileRead`` or ``FileWrite`` submitted here becomes one io_uring SQE (a write with
``RWF_DSYNC`` when it must be durable). Submissions are sent to the kernel once per loop
iteration, and the ring's eventfd is watched by the event loop, which drains the completions in
batches. No thread and no GIL hand-off is involved, so a queue-depth-32 burst reaches the disk
at full depth for a fraction of the CPU a worker thread per command costs; the kernel runs
whatever would block (a cold read, a write that must allocate) on its own workers.

What the ring cannot finish cleanly goes to the worker threads: work it cannot take (no free
SQE), a read that came back short (mid-file, which local filesystems do not do; the end of the
file reads as zeros here), and a write that failed or came back short (``FileWrite.recover``
decides, on a worker, whether it is a write error, a lost flush or just a filesystem without
``RWF_DSYNC``).

The binding is liburing from PyPI. ``UringIo.open`` returns None where it is missing, cannot
run on this CPU (it is probed in a child process first, see ``binding_problem``) or the kernel
refuses io_uring (``kernel.io_uring_disabled``, seccomp), and the work then goes to the worker
threads like every other piece of storage work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable

from odxtarget.storage.work import FileRead, FileWrite, read_fully

log = logging.getLogger(__name__)

#: Submission queue entries: more than one connection's queue depth, so a full ring is rare.
RING_ENTRIES = 256

Completion = Callable[[object, BaseException | None], None]
Fallback = Callable[[object, Completion], None]
Work = FileRead | FileWrite


#: What ``binding_problem`` found, once per process.
_binding_verdict: list[str | None] = []

_PROBE = "import liburing; ring = liburing.Ring(); liburing.io_uring_queue_init(8, ring)"


def binding_problem() -> str | None:
    """Why the liburing binding cannot be used here, or None. The binding is compiled code
    from PyPI: on a CPU without the instructions it was built for, importing it kills the
    process with SIGILL, which no ``except`` catches. So it is tried first in a child process,
    once (about 0.1 s at start-up)."""
    if not _binding_verdict:
        try:
            probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            _binding_verdict.append(f"the liburing probe could not run ({error})")
        else:
            if probe.returncode == 0:
                _binding_verdict.append(None)
            elif probe.returncode < 0:
                _binding_verdict.append(f"the liburing binding dies with signal {-probe.returncode} on this CPU or"
                                        " kernel")
            else:
                last = (probe.stderr.strip().splitlines() or ["failed"])[-1]
                _binding_verdict.append(f"liburing cannot be used: {last}")
    return _binding_verdict[0]


class UringIo:
    """One io_uring instance for the reads and writes of one event loop; see the module docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop, liburing, ring, event_fd: int, fallback: Fallback):
        self._loop = loop
        self._lib = liburing
        self._ring = ring
        self._cqe = liburing.Cqe()
        self._event_fd = event_fd
        self._fallback = fallback
        self._in_flight: dict[int, tuple[Work, Completion, object]] = {}
        self._next_tag = 1
        self._unsubmitted = 0
        loop.add_reader(event_fd, self._drain)

    @classmethod
    def open(cls, loop: asyncio.AbstractEventLoop, fallback: Fallback, *,
             polled: bool = False) -> "UringIo | None":
        """An io_uring for ``loop``, or None (logged) where io_uring cannot be used.

        ``polled``: a kernel thread polls the submission queue (``IORING_SETUP_SQPOLL``) until
        it has been idle for the kernel's default of one second: submitting then costs the loop
        no system call, and the block layer's submission work runs on another CPU. Where the
        kernel refuses that, the ring is an ordinary one."""
        problem = binding_problem()
        if problem is not None:
            log.info("io_uring off: %s; storage work uses worker threads", problem)
            return None
        import liburing
        ring = liburing.Ring()
        try:
            if polled:
                try:
                    liburing.io_uring_queue_init(RING_ENTRIES, ring, liburing.IORING_SETUP_SQPOLL)
                except OSError as error:
                    log.info("io_uring without a polling kernel thread (%s)", error)
                    ring = liburing.Ring()
                    liburing.io_uring_queue_init(RING_ENTRIES, ring)
            else:
                liburing.io_uring_queue_init(RING_ENTRIES, ring)
        except OSError as error:
            log.info("io_uring off: the kernel refuses io_uring (%s); storage work uses worker threads", error)
            return None
        event_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            liburing.io_uring_register_eventfd(ring, event_fd)
        except OSError as error:
            os.close(event_fd)
            liburing.io_uring_queue_exit(ring)
            log.info("io_uring off: %s; storage work uses worker threads", error)
            return None
        return cls(loop, liburing, ring, event_fd, fallback)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def submit(self, work: Work, completion: Completion) -> None:
        """Start ``work``; ``completion(None, error)`` runs on the loop when it is done."""
        lib = self._lib
        sqe = lib.io_uring_get_sqe(self._ring)
        if sqe is None:                       # the ring is full: a worker thread takes it
            self._fallback(work, completion)
            return
        tag = self._next_tag
        self._next_tag = tag + 1 if tag < (1 << 62) else 1
        keep: object = None
        if type(work) is FileRead:
            lib.io_uring_prep_read(sqe, work.fd, work.buffer, work.offset)
        else:
            data = work.data
            if type(data) in (bytes, bytearray) and not work.dsync:
                lib.io_uring_prep_write(sqe, work.fd, data, work.offset)
            else:
                keep = lib.Iovec([data])      # the kernel reads it until the write completes
                lib.io_uring_prep_writev(sqe, work.fd, keep, work.offset, os.RWF_DSYNC if work.dsync else 0)
        lib.io_uring_sqe_set_data64(sqe, tag)
        self._in_flight[tag] = (work, completion, keep)
        if not self._unsubmitted:
            self._loop.call_soon(self._submit)
        self._unsubmitted += 1

    def _submit(self) -> None:
        """Hand every SQE prepared since the last call to the kernel with one system call."""
        if self._unsubmitted:
            self._unsubmitted = 0
            self._lib.io_uring_submit(self._ring)

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
        finished: list[tuple[Work, Completion, int | OSError]] = []
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
            work, completion, _ = self._in_flight.pop(tag)
            finished.append((work, completion, outcome))
        for work, completion, outcome in finished:
            if type(work) is FileRead:
                self._read_done(work, completion, outcome)
            else:
                self._write_done(work, completion, outcome)

    def _write_done(self, write: FileWrite, completion: Completion, outcome: int | OSError) -> None:
        if type(outcome) is int and outcome == len(write.data):
            write.release()
            completion(None, None)
        elif isinstance(outcome, OSError):
            self._fallback(_WriteRecovery(write, outcome), completion)
        else:                                 # short: write it again, whole, the worker's way
            self._fallback(write, completion)

    def _read_done(self, read: FileRead, completion: Completion, outcome: int | OSError) -> None:
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


class _WriteRecovery:
    """After an io_uring write failed: on a worker, let the backend decide what it means."""

    __slots__ = ("write", "error", "lane")

    def __init__(self, write: FileWrite, error: OSError):
        self.write = write
        self.error = error
        self.lane = write.lane

    def run(self) -> None:
        try:
            self.write.recover(self.error)
        finally:
            self.write.release()
