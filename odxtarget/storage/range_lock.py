"""Byte ranges of one backend in use by writes, so COMPARE AND WRITE can be atomic (SBC-4 5.3),
and the compare-then-write every backend runs under it.

Many writers may share overlapping ranges (SAM-5 leaves the order of overlapping SIMPLE writes
to the initiator); an exclusive holder (COMPARE AND WRITE) waits for every overlapping writer.
From the moment it starts waiting, new overlapping writers wait behind it, so a stream of
writes cannot hold it off for ever. Called from worker threads and, without waiting, from the
event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from odxtarget.storage.backend import CompareReadError


class RangeLock:
    """Shared and exclusive holds on byte ranges."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._shared: list[tuple[int, int]] = []
        self._exclusive: list[tuple[int, int]] = []     # held, or waiting for writers to end

    @contextmanager
    def shared(self, offset: int, length: int) -> Iterator[None]:
        span = (offset, offset + length)
        with self._condition:
            while self._exclusive and _overlaps(span, self._exclusive):
                self._condition.wait()
            self._shared.append(span)
        try:
            yield
        finally:
            self.unshare(span)

    def try_share(self, offset: int, length: int) -> tuple[int, int] | None:
        """``shared`` without waiting (the event loop's form): the held span, or None when an
        exclusive holder overlaps it. ``unshare`` the span when the write is done."""
        span = (offset, offset + length)
        with self._condition:
            if self._exclusive and _overlaps(span, self._exclusive):
                return None
            self._shared.append(span)
        return span

    def unshare(self, span: tuple[int, int]) -> None:
        with self._condition:
            self._shared.remove(span)
            if self._exclusive:
                self._condition.notify_all()

    @contextmanager
    def exclusive(self, offset: int, length: int) -> Iterator[None]:
        span = (offset, offset + length)
        with self._condition:
            while _overlaps(span, self._exclusive):
                self._condition.wait()
            self._exclusive.append(span)         # from here on, new writers wait
            try:
                while _overlaps(span, self._shared):
                    self._condition.wait()
            except BaseException:
                self._exclusive.remove(span)
                self._condition.notify_all()
                raise
        try:
            yield
        finally:
            with self._condition:
                self._exclusive.remove(span)
                self._condition.notify_all()


def _overlaps(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    start, end = span
    return any(other_start < end and start < other_end for other_start, other_end in spans)


def compare_then_write(ranges: RangeLock, offset: int, expected: memoryview, length: int,
                       read_into: Callable[[int, memoryview], None], write: Callable[[], None]) -> int:
    """SBC-4 5.3 COMPARE AND WRITE on a backend: with ``[offset, offset + length)`` held alone,
    read the bytes at ``offset``; if they equal ``expected``, ``write()``. Returns the offset of
    the first differing byte, or -1 once written. A failed read raises ``CompareReadError``."""
    with ranges.exclusive(offset, length):
        current = bytearray(len(expected))
        try:
            read_into(offset, memoryview(current))
        except OSError as error:
            raise CompareReadError(error.errno, error.strerror, error.filename) from error
        if current != expected:
            return first_difference(current, expected)
        write()
    return -1


def first_difference(left, right, chunk: int = 4096) -> int:
    """Offset of the first differing byte of two equally long buffers, or -1: whole chunks are
    compared first, so only one chunk is walked byte by byte."""
    left = memoryview(left).cast("B")
    right = memoryview(right).cast("B")
    if left == right:
        return -1
    for start in range(0, len(left), chunk):
        end = start + chunk
        if left[start:end] != right[start:end]:
            for offset in range(start, min(end, len(left))):
                if left[offset] != right[offset]:
                    return offset
    return -1  # pragma: no cover - unreachable when the views differ
